"""The item path: ``items`` topic -> decoded ItemEvent -> text vector -> RocksDB -> the serving catalogue.

A brand-new item published on ``items`` is recommendable as soon as its batch is handled: its feature row
(text vector plus category flags, :mod:`models.features.item_features`) places it in the item space by content alone,
and ``Recommender.add_items`` swaps in the grown catalogue without stopping the worker's compute thread.

Why a thread with its own consumer rather than a Faust agent:

* every worker needs every item, while a Faust agent gets only the partitions its consumer group assigns it.
  The follower assigns itself all partitions of ``items`` (no group, no rebalances), from the offsets kept in
  its :class:`stream.item_store.ItemStore`;
* embedding is CPU work (MiniLM: tens of milliseconds per text on a CPU). On its own thread, batched, it never
  blocks the event loop that serves interactions: the embedding is off the hot path.

Items and offsets are written to the store together, then added to the model, so a restart reloads the
catalogue from disk and reads on from where the store is. When the worker swaps in a new model version, the
follower adds the stored items the new version lacks (rows recomputed if its feature layout differs). An
update
to a known item is stored, but the serving vector of an item already in the catalogue is not replaced
(``add_items`` only grows it). Undecodable payloads go to the dead-letter topic with the usual headers.

Availability: an event with ``available`` false takes the item out of every list from the next ranking on
(``Recommender.availability``), true brings it back; it is stored with the item, so a restart starts from it.
An event that says nothing but its availability (no title, text, categories or attributes) keeps the item's
stored description and row.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any, Protocol, Sequence

import msgspec
import numpy as np
from confluent_kafka import OFFSET_BEGINNING, Consumer, Message, Producer, TopicPartition
from prometheus_client import CollectorRegistry, Counter, Histogram

from models.features.item_features import ItemDescription, feature_rows
from models.features.text import EmbeddingCache
from models.serving.recommender import Recommender
from schemas import records
from schemas.decode import DecodeError, decode_item_event
from schemas.records import ItemEvent
from stream.item_store import ItemStore, StoredItem, feature_space
from stream.settings import Settings

log = logging.getLogger(__name__)

ITEM_STORE_DIR = "items.rocksdb"


class ServingWorker(Protocol):
    """What the follower needs of the model worker: the model serving now and its version."""

    @property
    def model(self) -> Recommender: ...

    @property
    def version(self) -> str: ...


class ItemMetrics:
    """The item path's metrics, on the worker's registry."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.items = Counter(
            "metarec_items",
            "Item events, by result (added, updated, dead_letter).",
            ["result"],
            registry=registry,
        )
        self.embed_seconds = Histogram(
            "metarec_item_embedding_seconds", "Wall time to featurise one item batch.", registry=registry
        )


def describe(event: ItemEvent) -> ItemDescription:
    return ItemDescription(event.item_id, event.title, event.text, tuple(event.categories))


def decode_item(msg: Message, max_bytes: int) -> ItemEvent:
    """Decode one ``items`` record; its key must be its item id (a key mismatch would split an item's
    history)."""
    event = decode_item_event(msg.value(), max_bytes)
    key = msg.key()
    if key is not None and key != event.item_id.encode():
        raise DecodeError("key_mismatch", f"key {key[:64]!r} is not item_id {event.item_id[:64]!r}")
    return event


class ItemFollower:
    """Reads all of ``items`` on a thread, featurises batches, stores them, grows the serving catalogue."""

    def __init__(
        self,
        settings: Settings,
        worker: ServingWorker,
        store: ItemStore,
        metrics: ItemMetrics,
        *,
        batch_max: int = 256,
        poll_s: float = 0.2,
        cache: EmbeddingCache | None = None,
    ) -> None:
        self._settings = settings
        self._worker = worker
        self.store = store
        self._metrics = metrics
        self._batch_max = batch_max
        self._poll_s = poll_s
        self._cache = cache or EmbeddingCache()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._synced: str | None = None
        self.handled = 0  # item events handled (stored or dead-lettered), for tests and logs
        # category -> the ids of the items whose latest event lists it (the read API's ``category`` filter);
        # replaced whole on every change, so readers on other threads see one consistent mapping
        self.categories: dict[str, frozenset[str]] = {}
        self._item_categories: dict[str, tuple[str, ...]] = {}

    # --- lifecycle ------------------------------------------------------------------------------------------
    def start(self) -> "ItemFollower":
        self.sync_catalogue()  # the stored catalogue serves before anything new is read
        self._thread = threading.Thread(target=self._run, name="metarec-items", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def _run(self) -> None:
        consumer = Consumer(
            {
                **self._settings.kafka_config(),
                "group.id": f"{self._settings.app_id}-items",
                "enable.auto.commit": False,
                "auto.offset.reset": "earliest",
            }
        )
        producer = Producer({**self._settings.kafka_config(), "linger.ms": 5})
        try:
            self._assign(consumer)
            while not self._stop.is_set():
                self.sync_catalogue()
                msgs = consumer.consume(num_messages=self._batch_max, timeout=self._poll_s)
                if msgs:
                    self.handle(msgs, producer)
        except Exception:  # noqa: BLE001 - a dying follower must say why in the worker's log
            log.exception("item follower stopped")
            raise
        finally:
            producer.flush(5)
            consumer.close()

    def _assign(self, consumer: Consumer) -> None:
        """All partitions of the items topic, from the stored offsets (or the beginning)."""
        topic = self._settings.items_topic
        while not self._stop.is_set():
            meta = consumer.list_topics(topic, timeout=5.0).topics.get(topic)
            if meta is not None and meta.error is None and meta.partitions:
                break
            self._stop.wait(0.5)  # the topic is created by the worker's startup; poll until it exists
        else:
            return
        stored = self.store.offsets()
        parts = [TopicPartition(topic, p, stored.get(p, OFFSET_BEGINNING)) for p in sorted(meta.partitions)]
        consumer.assign(parts)
        log.info("following %s: %d partitions, %d stored items", topic, len(parts), len(stored))

    # --- one batch
    # --------------------------------------------------------------------------------------------
    def handle(self, msgs: Sequence[Message], producer: Any) -> None:
        """Decode, keep the latest event per item, featurise, store with offsets, then grow the catalogue."""
        latest: dict[str, ItemEvent] = {}
        offsets: dict[int, int] = {}
        for msg in msgs:
            if msg.error() is not None:
                log.warning("items consumer: %s", msg.error())
                continue
            offsets[msg.partition()] = msg.offset() + 1
            try:
                event = decode_item(msg, self._settings.max_event_bytes)
            except DecodeError as exc:
                self._dead_letter(producer, msg, exc)
                continue
            latest[event.item_id] = event
        model = self._worker.model
        space = feature_space(model.item_feature_names)
        before = {i: self.store.get(i) for i in latest}
        toggles = {i: e for i, e in latest.items() if _availability_only(e) and before[i] is not None}
        events = [e for i, e in latest.items() if i not in toggles]
        began = time.perf_counter()
        rows = feature_rows(
            [describe(e) for e in events], model.item_feature_names, cache=self._cache
        )  # (M, F)
        self._metrics.embed_seconds.observe(time.perf_counter() - began)
        stored = [_stored(e, r, space, _available(e, before[e.item_id])) for e, r in zip(events, rows)]
        stored += [msgspec.structs.replace(before[i], available=bool(e.available))  # type: ignore[arg-type]
                   for i, e in toggles.items()]
        self.store.put_many(stored, offsets)
        model.availability.set({s.item_id: s.available for s in stored})
        self._index_categories(stored)
        known = set(model.item_ids)
        fresh = [n for n, e in enumerate(events) if e.item_id not in known]
        if fresh:
            model.add_items([events[n].item_id for n in fresh], rows[fresh])
        self._metrics.items.labels(result="added").inc(len(fresh))
        self._metrics.items.labels(result="updated").inc(len(stored) - len(fresh))
        self.handled += len(msgs)

    def sync_catalogue(self) -> None:
        """Add the stored items the serving model lacks (at start, and after each model version swap)."""
        model = self._worker.model
        if model.version == self._synced:
            return
        if self._synced is None:
            self._index_categories(list(self.store.items()))
        known = set(model.item_ids)
        missing = [s for s in self.store.items() if s.item_id not in known]
        if missing:
            space = feature_space(model.item_feature_names)
            if all(s.feature_space == space for s in missing):
                rows = np.stack([s.row() for s in missing])
            else:
                descs = [ItemDescription(s.item_id, s.title, s.text, tuple(s.categories)) for s in missing]
                rows = feature_rows(descs, model.item_feature_names, cache=self._cache)
            model.add_items([s.item_id for s in missing], rows)
            log.info("model %s: added %d stored items", model.version, len(missing))
        model.availability.reset(self.store.unavailable())
        self._synced = model.version

    def _index_categories(self, items: Sequence[StoredItem]) -> None:
        """Fold the items' categories into ``categories`` (a new mapping replaces the old one)."""
        changed = {s.item_id: tuple(s.categories) for s in items if self._item_categories.get(s.item_id) !=
                   tuple(s.categories)}
        if not changed:
            return
        index = {c: set(ids) for c, ids in self.categories.items()}
        for item_id, cats in changed.items():
            for c in self._item_categories.get(item_id, ()):
                index.get(c, set()).discard(item_id)
            for c in cats:
                index.setdefault(c, set()).add(item_id)
            self._item_categories[item_id] = cats
        self.categories = {c: frozenset(ids) for c, ids in index.items() if ids}

    def _dead_letter(self, producer: Any, msg: Message, exc: DecodeError) -> None:
        headers = records.dead_letter_headers(exc.reason, exc.detail, msg.topic(), msg.partition(),
                                              msg.offset())
        producer.produce(self._settings.dead_letters_topic, key=msg.key(), value=msg.value(), headers=headers)
        producer.poll(0)
        self._metrics.items.labels(result="dead_letter").inc()


def _availability_only(event: ItemEvent) -> bool:
    """The event only says whether the item is available (nothing to describe it with)."""
    return event.available is not None and not (event.title or event.text or event.categories or event.attributes)


def _available(event: ItemEvent, before: StoredItem | None) -> bool:
    """The item's availability after ``event``: as it says, else as it was (a new item is available)."""
    if event.available is not None:
        return event.available
    return True if before is None else before.available


def _stored(event: ItemEvent, row: np.ndarray, space: str, available: bool = True) -> StoredItem:
    return StoredItem(
        event.item_id,
        event.event_id,
        event.ts,
        event.title,
        event.text,
        list(event.categories),
        space,
        np.asarray(row, "<f4").tobytes(),
        available,
    )


def install_item_agent(app: Any, settings: Settings, worker: ServingWorker, metrics: Any) -> ItemFollower:
    """Follow ``items`` for as long as ``app`` runs; call from ``build_app``. Returns the follower."""
    from mode import Service

    store = ItemStore(settings.data_dir / settings.app_id / ITEM_STORE_DIR)
    follower = ItemFollower(settings, worker, store, ItemMetrics(metrics.registry))

    class ItemService(Service):
        async def on_start(self) -> None:
            follower.start()

        async def on_stop(self) -> None:
            follower.stop()
            store.close()

    app.service(ItemService)
    return follower
