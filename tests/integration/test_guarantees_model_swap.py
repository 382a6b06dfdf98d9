"""Model swap: bad checkpoints are refused (log line + metric) while the running version serves on; a good one
is swapped in while events flow, and not one event is lost."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from models.data.synthetic import generate
from models.serving.recommender import Recommender
from schemas.decode import encode
from stream import versions
from stream.replay import interactions
from tests.integration.kafka_helpers import produce
from tests.integration.workers import (
    WorkerProcess,
    WorkerSpec,
    assert_states_equal,
    await_recommendations,
    read_user_states,
    reference_states,
    scrape,
    wait_until,
)

pytestmark = pytest.mark.integration


def swaps(port: int, result: str) -> float:
    return scrape(port).get(("metarec_model_swaps_total", (("result", result),)), 0.0)


def point_latest(root: Path, name: str) -> None:
    """Publish ``name`` the way `metarec train` does: replace LATEST atomically."""
    tmp = root / f".LATEST.{name}"
    tmp.write_text(name + "\n")
    os.replace(tmp, root / versions.LATEST)


def bad_versions(root: Path, good: Path) -> dict[str, Path]:
    """Three unusable versions next to ``good``: corrupt weights, shapes that do not fit, a future format."""
    made = {}
    for name in ("corrupt", "incompatible", "future-format"):
        folder = root / f"v-{name}"
        shutil.copytree(good, folder)
        made[name] = folder
    weights = made["corrupt"] / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])  # truncated mid-tensor
    meta = json.loads((good / "config.json").read_text())
    meta["config"]["head_dim"] += 8  # the weights no longer fit the config
    (made["incompatible"] / "config.json").write_text(json.dumps(meta))
    meta = json.loads((good / "config.json").read_text())
    meta["format_version"] = 99
    (made["future-format"] / "config.json").write_text(json.dumps(meta))
    return made


def user_phases(sizes: list[int]) -> list[list]:
    """Consecutive slices of 30 users' histories: phase i holds ``sizes[i]`` events of every user."""
    log = generate(seed=29, n_users=200, n_items=200, mean_events=40).sorted_by_time()
    by_user: dict[str, list] = {}
    for e in interactions(log, id_prefix="sw"):
        by_user.setdefault(e.user_id, []).append(e)
    users = [u for u, evs in by_user.items() if len(evs) >= sum(sizes)][:30]
    assert len(users) == 30
    cuts = [sum(sizes[:i]) for i in range(len(sizes) + 1)]
    return [sorted((e for u in users for e in by_user[u][cuts[i]:cuts[i + 1]]), key=lambda e: e.ts)
            for i in range(len(sizes))]


@pytest.mark.timeout(300)
def test_bad_checkpoints_are_refused_and_a_good_one_swapped_without_loss(broker, topic_prefix, tmp_path,
                                                                          checkpoint):
    root = tmp_path / "models"
    shutil.copytree(checkpoint, root)
    first = versions.resolve(root)
    spec = WorkerSpec(broker.bootstrap, topic_prefix, root, tmp_path / "state").create_topics()
    settings = spec.settings()
    before, during_refusals, during_swap, after = user_phases([4, 3, 20, 1])
    rec_topic = settings.recommendations_topic

    def send(events: list) -> None:
        produce(broker.bootstrap, settings.interactions_topic, [(e.user_id.encode(), encode(e)) for e in events])

    def recs_for(events: list, alive: list) -> list:
        return await_recommendations(broker.bootstrap, rec_topic, {e.user_id: e.event_id for e in events}, 120,
                                     alive=alive)

    worker = WorkerProcess(spec, tmp_path / "worker.log")
    try:
        send(before)
        assert {r.model_version for r in recs_for(before, [worker])} == {first.name}
        for i, (name, folder) in enumerate(bad_versions(root, first).items(), start=1):
            point_latest(root, folder.name)
            wait_until(lambda: swaps(worker.metrics_port, "refused") >= i, 60, f"the {name} version refused",
                       alive=[worker])
            assert f"refused model at {folder}" in worker.log_text(), f"no clear log line for the {name} version"
        send(during_refusals)
        served = [r for r in recs_for(during_refusals, [worker]) if r.event_id.startswith("sw")]
        assert {r.model_version for r in served} == {first.name}, "the running version kept serving"

        send(during_swap)  # events in flight while the new version is loaded and swapped in
        new = versions.publish(root, Recommender.load(first), version="v-second")
        wait_until(lambda: swaps(worker.metrics_port, "swapped") >= 1, 60, "the good version swapped in",
                   alive=[worker])
        send(after)
        latest = {r.user_id: r for r in recs_for(after, [worker])}
        assert swaps(worker.metrics_port, "refused") == 3
    finally:
        assert worker.stop() == 0, worker.log_text()[-3000:]
    assert {latest[e.user_id].model_version for e in after} == {new.name}, "lists after the swap name it"
    assert_states_equal(read_user_states(spec.data_dir),
                        reference_states(before + during_refusals + during_swap + after), "RocksDB")
