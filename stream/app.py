"""Builds the Faust app — topics, the per-user table, the agent — from one Settings object.

The agent is thin: it takes a batch of raw messages, lets ``stream.pipeline`` decide what they mean, asks the
model worker for everyone's fresh top-K in one micro-batch, writes state and sends. Offsets of a batch are acked
only after its state writes and sends are handed to the producer, so output is at-least-once, and the event ids
kept in state make the state effectively-once.
"""

from __future__ import annotations

import logging
import os
import ssl
import sys
import time
from typing import Any, Sequence

import faust

from schemas.decode import encode
from schemas import records
from stream.faust_compat import UserTable, use_real_highwaters
from stream.items import install_item_agent
from stream.metrics import Metrics, install_app_metrics
from stream.model_worker import ModelWorker
from stream.output import OutputProducer
from stream.pipeline import BatchPlan, DeadLetter, RawMessage, Rules, UserWork, adapt_request, plan_batch
from stream.pipeline import recommendation
from stream.settings import Settings
from stream.state import Limits, UserState, decode_state, encode_state

log = logging.getLogger(__name__)

USERS_TABLE = "users"
EXIT_BATCH_FAILED = 70  # EX_SOFTWARE: a batch could not be processed; it was not committed


def build_app(settings: Settings, worker: ModelWorker, metrics: Metrics) -> faust.App:
    """A Faust app wired to ``worker``; nothing connects until it is started."""
    datadir = settings.data_dir / settings.app_id
    datadir.parent.mkdir(parents=True, exist_ok=True)
    app = faust.App(
        settings.app_id,
        broker=settings.faust_broker_url,
        broker_credentials=_credentials(settings),
        store=settings.store,
        datadir=str(datadir),
        topic_partitions=settings.partitions,
        topic_replication_factor=settings.replication_factor,
        broker_session_timeout=settings.session_timeout_s,
        broker_heartbeat_interval=max(0.5, settings.session_timeout_s / 6),
        broker_commit_interval=settings.commit_interval_s,
        recovery_consistency_check=settings.recovery_consistency_check,
        consumer_auto_offset_reset="earliest",
        stream_buffer_maxsize=max(4096, 2 * settings.take_max),
        producer_linger=0.001,
        web_enabled=False,
        autodiscover=False,
        worker_redirect_stdouts=False,
        env={},  # Faust reads BROKER_URL, APP_DATADIR, ... from the environment; only Settings may configure us
    )
    use_real_highwaters(app, settings.kafka_config(), fetch_max_wait_ms=settings.fetch_max_wait_ms)
    interactions_topic = app.topic(
        settings.interactions_topic, partitions=settings.partitions, key_serializer="raw", value_serializer="raw"
    )
    # Keys and values are plain bytes (msgpack we encode ourselves). Saying so through the types, not by setting
    # serializers afterwards, is what makes the changelog topic raw too: otherwise recovery decodes it as JSON.
    table = app.Table(
        USERS_TABLE,
        key_type=bytes,
        value_type=bytes,
        partitions=settings.partitions,
        help="Per-user state (msgpack UserState).",
    )
    output = OutputProducer(settings.kafka_config())
    handler = BatchHandler(settings, worker, metrics, UserTable(table, output), output)

    @app.agent(interactions_topic, name="interactions")
    async def interactions(stream: faust.StreamT) -> None:
        async for events in stream.take_events(settings.take_max, within=settings.take_within_s):
            try:
                await handler.handle(events)
            except Exception:  # noqa: BLE001 - see fail_stop: nothing may ack a batch that was not processed
                fail_stop(len(events))

    if settings.checkpoint:
        @app.task
        async def watch_model() -> None:
            await worker.watch(settings.checkpoint, settings.model_poll_s)

    install_app_metrics(app, metrics, [settings.interactions_topic])
    install_item_agent(app, settings, worker, metrics)
    return app


def fail_stop(batch_size: int) -> None:
    """Exit at once, committing nothing, after a batch failed to process (an infrastructure or model error).

    Why not raise: ``take_events`` acks a batch's events in a ``finally``, also when the agent raised, and the
    next commit would then skip events that never reached state or the output. Exiting here is a crash like
    ``kill -9``, which the state's event ids and the changelog are built to survive (tests/integration/
    test_guarantees_crash.py): a supervisor restarts the worker and the batch is read again.
    """
    log.critical("a batch of %d events failed; exiting without committing it", batch_size, exc_info=True)
    for handler in logging.getLogger().handlers:
        handler.flush()
    sys.stderr.flush()
    os._exit(EXIT_BATCH_FAILED)


class BatchHandler:
    """Turns one batch of consumed events into state writes, dead letters and recommendations.

    State goes through the Faust table (RocksDB + changelog); recommendations and dead letters through our own
    librdkafka producer, flushed before the batch is acked (stream/output.py says why).
    """

    def __init__(self, settings: Settings, worker: ModelWorker, metrics: Metrics, table: UserTable,
                 output: OutputProducer):
        self._worker = worker
        self._metrics = metrics
        self._table = table
        self._output = output
        self._recs_topic = settings.recommendations_topic
        self._dead_topic = settings.dead_letters_topic
        self._rules = Rules(
            limits=Limits(settings.support_size, settings.seen_max, settings.recent_event_ids),
            max_event_bytes=settings.max_event_bytes,
            max_future_skew_s=settings.max_future_skew_s,
        )

    async def handle(self, events: Sequence[Any]) -> None:
        messages = [
            RawMessage(e.key, e.value, e.message.topic, e.message.partition, e.message.offset,
                       e.message.timestamp, e)
            for e in events
        ]
        plan = plan_batch(messages, self._load, self._rules, time.time())
        for dead in plan.dead:
            self._send_dead_letter(dead)
        self._metrics.observe_plan(plan)
        await self._serve(plan)
        await self._output.flush()  # every output of the batch acknowledged before its offsets are acked
        self._table.persist_offsets()

    def _load(self, user_id: str, msg: RawMessage) -> UserState:
        return decode_state(self._table.get(msg.partition, user_id.encode()))

    async def _serve(self, plan: BatchPlan) -> None:
        objective = self._worker.model.config.objective
        wanted = [w for w in plan.users.values() if w.trigger is not None]
        served = await self._worker.recommend([adapt_request(w.user_id, w.state, objective) for w in wanted])
        self._worker.observe_losses(served)
        self._metrics.observe_served([w.state for w in wanted], [s.result for s in served], self._worker.version)
        by_user = {w.user_id: s for w, s in zip(wanted, served)}
        for work in plan.users.values():
            key = work.user_id.encode()
            if work.deleted:
                self._output.produce(self._recs_topic, key, None)  # tombstone: forget the old list
                self._metrics.deletions.inc()
            result = by_user.get(work.user_id)
            if result is not None:
                work.state.head = result.result.head.tobytes()
                work.state.model_version = result.version
                work.state.last_recs = list(result.result.items)
            partition = work.ref.message.partition
            if work.deleted and result is None and not work.state.recent_ids:
                self._table.put(partition, key, None)  # deletes from the store and tombstones the changelog
            else:
                self._table.put(partition, key, encode_state(work.state))
            if result is not None:
                self._send_recommendation(work, result.result.items, result.result.scores, result.version)

    def _send_recommendation(self, work: UserWork, items: list[str], scores: list[float], version: str):
        assert work.trigger is not None
        now = time.time()
        rec = recommendation(work.user_id, items, scores, version, work.trigger, now)
        self._output.produce(self._recs_topic, work.user_id.encode(), encode(rec))
        self._metrics.recommendations.labels(model_version=version).inc()
        self._metrics.latency.observe(max(0.0, now - work.trigger_timestamp))

    def _send_dead_letter(self, dead: DeadLetter) -> None:
        msg = dead.message
        headers = [
            (records.HEADER_REASON, dead.reason.encode()),
            (records.HEADER_ERROR, dead.detail[:1000].encode("utf-8", "replace")),
            (records.HEADER_SOURCE_TOPIC, msg.topic.encode()),
            (records.HEADER_SOURCE_PARTITION, str(msg.partition).encode()),
            (records.HEADER_SOURCE_OFFSET, str(msg.offset).encode()),
        ]
        self._output.produce(self._dead_topic, msg.key, msg.value, headers)
        self._metrics.dead_letters.labels(reason=dead.reason).inc()


def _credentials(settings: Settings) -> Any:
    """SASL/SSL settings passed through to Faust's own clients, as to every other client."""
    context = None
    if settings.security_protocol.upper() in {"SSL", "SASL_SSL"}:
        context = ssl.create_default_context(cafile=settings.ssl_cafile or None)
        if settings.ssl_certfile:
            context.load_cert_chain(settings.ssl_certfile, settings.ssl_keyfile or None)
    if settings.sasl_mechanism:
        return faust.SASLCredentials(
            username=settings.sasl_username,
            password=settings.sasl_password.reveal(),
            mechanism=settings.sasl_mechanism,
            ssl_context=context,
        )
    if context is not None:
        return faust.SSLCredentials(context)
    return None
