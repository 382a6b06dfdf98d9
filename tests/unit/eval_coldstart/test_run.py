"""run_coldstart end to end with cheap methods: what methods are fitted on, and the files it writes."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest

from models.data.events import EventLog
from models.eval.coldstart import protocol as coldstart
from models.eval.coldstart.methods import TaskData
from models.eval.coldstart.split import SCENARIOS, coldstart_split

LogFactory = Callable[..., EventLog]


class Spy:
    """Records what it is fitted on and asked to predict; predicts the support mean."""

    name = "spy"
    seen: ClassVar[dict[str, object]] = {}

    def fit(self, train_log: EventLog, train_tasks: list[TaskData]) -> None:
        Spy.seen["train_log"], Spy.seen["train_tasks"] = train_log, train_tasks

    def predict(self, tasks: list[TaskData]) -> list[np.ndarray]:
        Spy.seen.setdefault("predicted", []).extend(tasks)  # type: ignore[union-attr]
        return [np.full(len(t.query_items), t.support_values.mean()) for t in tasks]


@pytest.fixture
def spy(monkeypatch: pytest.MonkeyPatch) -> type[Spy]:
    Spy.seen = {}
    monkeypatch.setitem(coldstart.METHODS, "spy", lambda seed, progress: Spy())
    return Spy


def test_methods_train_only_on_warm_training_events(
    make_ratings_log: LogFactory, spy: type[Spy], tmp_path: Path
):
    log = make_ratings_log(n_users=60, n_items=80, per_user=78)
    coldstart.run_coldstart(log, tmp_path, "tiny", methods=["spy"], progress=False)
    split = coldstart_split(log)
    train_log: EventLog = spy.seen["train_log"]  # type: ignore[assignment]
    assert len(train_log) == len(split.train_events()) > 0
    assert split.existing_users[train_log.users].all(), "a new user's rating leaked into training"
    assert split.existing_items[train_log.items].all(), "a new item's rating leaked into training"
    for task in spy.seen["train_tasks"]:  # type: ignore[union-attr]
        assert split.existing_users[task.user] and split.existing_items[task.query_items].all()
    predicted = spy.seen["predicted"]
    assert predicted and all(t.query_values is None for t in predicted)  # query labels never reach predict
    assert len(predicted) == sum(len(split.test_tasks[s]) for s in SCENARIOS)


def test_result_files_and_shape(make_ratings_log: LogFactory, tmp_path: Path) -> None:
    log = make_ratings_log(n_users=60, n_items=80, per_user=78)
    result = coldstart.run_coldstart(
        log, tmp_path, "tiny", methods=["global_mean", "user_median"], progress=False
    )
    on_disk = json.loads((tmp_path / "coldstart-tiny.json").read_text())
    assert on_disk["dataset"] == "tiny" and set(on_disk["methods"]) == {"global_mean", "user_median"}
    for scores in on_disk["methods"].values():
        assert set(scores) == set(SCENARIOS)
        keys = {"mae", "rmse", "ndcg@3", "mae_on_scale", "rmse_on_scale"}
        assert all(set(s) == keys for s in scores.values())
    assert result["methods"] == on_disk["methods"]
    assert "| user_median |" in (tmp_path / "coldstart-tiny.md").read_text()
    assert (tmp_path / "coldstart-tiny.png").read_bytes()[:4] == b"\x89PNG"


def test_unknown_method_and_implicit_data_refused(make_ratings_log: LogFactory, tmp_path: Path) -> None:
    log = make_ratings_log(n_users=10, n_items=20, per_user=15)
    with pytest.raises(ValueError, match="unknown"):
        coldstart.run_coldstart(log, tmp_path, "tiny", methods=["nope"], progress=False)
    log.explicit = False
    with pytest.raises(ValueError, match="explicit"):
        coldstart.run_coldstart(log, tmp_path, "tiny", methods=["global_mean"], progress=False)
