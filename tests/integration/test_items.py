"""The item path on the embedded broker: a published item joins the serving catalogue at once, placed by its
text exactly as offline; it survives a restart; a bad payload goes to dead letters. (That a text-similar new
item outranks unrelated ones is tested in tests/unit/text/test_new_item.py.)"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace

import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from models.data.synthetic import generate
from models.features.item_features import feature_rows
from models.features.text import HashedEncoder, with_text_features
from models.serving.recommender import AdaptRequest, Recommender
from models.training.train import default_config, meta_train
from schemas.decode import encode
from schemas.records import HEADER_REASON, ItemEvent
from stream.item_store import ItemStore
from stream.items import ITEM_STORE_DIR, ItemFollower, ItemMetrics, describe
from stream.topics import app_topic_specs, ensure_topics
from tests.integration.kafka_helpers import consume_until, headers_of, produce

pytestmark = pytest.mark.integration


@dataclass
class StubWorker:
    """The two things the follower reads from the model worker."""

    model: Recommender

    @property
    def version(self) -> str:
        return self.model.version


@pytest.fixture(scope="module")
def trained():
    log = with_text_features(
        generate(n_users=120, n_items=60, n_categories=6, mean_events=12, seed=0),
        HashedEncoder(64),
        replace_features=True,
    )
    cfg = replace(default_config(log), dim=16, head_dim=16)
    return log, meta_train(log, cfg, steps=10, batch_users=32)


def _fresh(trained) -> Recommender:
    """A copy of the trained model (the follower grows the catalogue of the one it is given)."""
    _log, model = trained
    return Recommender(
        model.model, model.item_ids, version=model.version, item_feature_names=model.item_feature_names
    )


def _wait_for(condition, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.05)  # polling a condition with a deadline, not synchronising on time


def _item(item_id: str, title: str, categories: list[str] | None = None) -> ItemEvent:
    return ItemEvent(
        event_id=f"e-{item_id}", item_id=item_id, ts=1_700_000_000.0, title=title, categories=categories or []
    )


def test_a_published_item_is_recommendable_at_once_and_survives_a_restart(settings, trained) -> None:
    log, _ = trained
    ensure_topics(settings.kafka_config(), app_topic_specs(settings))
    worker = StubWorker(_fresh(trained))
    store_path = settings.data_dir / settings.app_id / ITEM_STORE_DIR
    follower = ItemFollower(settings, worker, ItemStore(store_path), ItemMetrics(CollectorRegistry())).start()
    try:
        new = [
            _item("new-jazz", "jazz vintage album"),
            _item("new-garden", "garden rustic tool"),
            _item("new-kitchen", "kitchen deluxe set"),
        ]
        records = [(e.item_id.encode(), encode(e)) for e in new] + [(b"broken", b"{not json")]
        produce(settings.brokers, settings.items_topic, records)
        _wait_for(lambda: follower.handled >= len(records))
    finally:
        follower.stop()
        follower.store.close()
    ids = worker.model.item_ids
    assert {"new-jazz", "new-garden", "new-kitchen"} <= set(ids)
    # the stream placed each item exactly where the offline feature path places it
    reference = _fresh(trained)
    reference.add_items(
        [e.item_id for e in new], feature_rows([describe(e) for e in new], reference.item_feature_names)
    )
    # (at the meta-init: adaptation draws negatives by catalogue position, and partitions interleave arrivals)
    user = [AdaptRequest("u", [], ())]
    names = [e.item_id for e in new]
    served = worker.model.predict(user, names, steps=0)
    assert np.allclose(served, reference.predict(user, names, steps=0), atol=1e-5)
    assert len(set(np.round(served[0], 5))) == len(names)  # the text sets them apart

    dead = consume_until(settings.brokers, settings.dead_letters_topic, 1)
    assert headers_of(dead[0])[HEADER_REASON] == b"not_json"

    restarted = StubWorker(_fresh(trained))  # a new process: the model knows none of the new items
    assert "new-jazz" not in restarted.model.item_ids
    again = ItemFollower(settings, restarted, ItemStore(store_path), ItemMetrics(CollectorRegistry()))
    again.sync_catalogue()  # what start() does first: the stored catalogue, before reading anything
    assert {"new-jazz", "new-garden", "new-kitchen"} <= set(restarted.model.item_ids)
    assert sum(again.store.offsets().values()) == len(records)  # it will read on after the last one
    again.store.close()
