"""Item availability through the item follower: stored with the item, applied to the serving model at once,
restored on a restart; an availability-only event keeps the item's description."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from prometheus_client import CollectorRegistry

from models.core.config import ModelConfig
from models.core.metalearner import MetaRec
from models.serving.recommender import AdaptRequest, Recommender
from schemas.decode import encode
from schemas.records import ItemEvent
from stream.item_store import ItemStore
from stream.items import ItemFollower, ItemMetrics
from stream.settings import Settings

TS = 1_700_000_000.0
NAMES = ("jazz", "garden")


@dataclass
class FakeMessage:
    """The parts of a confluent-kafka Message the follower reads."""

    payload: bytes
    key_: bytes
    offset_: int

    def error(self):
        return None

    def value(self) -> bytes:
        return self.payload

    def key(self) -> bytes:
        return self.key_

    def partition(self) -> int:
        return 0

    def offset(self) -> int:
        return self.offset_

    def topic(self) -> str:
        return "items"


@dataclass
class Worker:
    model: Recommender

    @property
    def version(self) -> str:
        return self.model.version


def model() -> Recommender:
    torch.manual_seed(0)
    cfg = ModelConfig(n_items=20, n_item_features=2, dim=8, head_dim=8, n_negatives=4, max_support=8)
    return Recommender(MetaRec(cfg), [f"i{n}" for n in range(20)], version="v1", item_feature_names=NAMES)


def item(n: int, item_id: str, **fields) -> FakeMessage:
    event = ItemEvent(event_id=f"e{n}", item_id=item_id, ts=TS + n, **fields)
    return FakeMessage(encode(event), item_id.encode(), n)


def follower(tmp_path, worker) -> ItemFollower:
    return ItemFollower(Settings(), worker, ItemStore(tmp_path / "items"), ItemMetrics(CollectorRegistry()))


def served(m: Recommender) -> set[str]:
    return set(m.recommend([AdaptRequest("u", [], ())], 20)[0].items)


def test_withdrawn_items_leave_every_list_come_back_and_survive_a_restart(tmp_path):
    worker = Worker(model())
    f = follower(tmp_path, worker)
    f.sync_catalogue()
    f.handle([item(0, "new", title="jazz record", categories=["jazz"]), item(1, "i3", available=False),
              item(2, "i4", available=False)], producer=None)
    assert {"i3", "i4"} == worker.model.availability.unavailable
    assert "new" in worker.model.item_ids and not {"i3", "i4"} & served(worker.model)
    f.handle([item(3, "i4", available=True), item(4, "new", available=False)], producer=None)
    assert worker.model.availability.unavailable == {"i3", "new"}
    stored = f.store.get("new")
    assert stored is not None and stored.title == "jazz record" and stored.categories == ["jazz"], \
        "an availability-only event keeps the description"
    assert f.categories == {"jazz": frozenset({"new"})}
    f.store.close()

    restarted = Worker(model())  # a new process: its model knows neither the new item nor the withdrawals
    again = follower(tmp_path, restarted)
    again.sync_catalogue()
    assert restarted.model.availability.unavailable == {"i3", "new"}
    assert "i4" in served(restarted.model) and not {"i3", "new"} & served(restarted.model)
    assert again.categories == {"jazz": frozenset({"new"})}
    again.store.close()


def test_an_item_withdrawn_before_it_was_described_stays_withdrawn_when_it_is(tmp_path):
    worker = Worker(model())
    f = follower(tmp_path, worker)
    f.handle([item(0, "later", available=False)], producer=None)
    f.handle([item(1, "later", title="garden tool", categories=["garden"])], producer=None)
    assert "later" in worker.model.item_ids and "later" in worker.model.availability.unavailable
    assert f.store.get("later").available is False
    f.store.close()
