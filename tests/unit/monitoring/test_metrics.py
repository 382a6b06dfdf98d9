"""Metrics: what one batch does to the counters and window gauges, bounded labels, lag, the Faust sensor."""

from __future__ import annotations

from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import NamedTuple

import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from stream.metrics import Metrics, consumer_lag, install_app_metrics
from stream.monitoring import MonitorConfig, gini
from stream.state import SupportEvent, UserState


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@dataclass
class Work:
    """What observe_plan reads of stream.pipeline.UserWork."""

    state: UserState
    applied: int = 0
    hits: list[tuple[str, bool]] = field(default_factory=list)


@dataclass
class Plan:
    users: dict[str, Work]
    dead: list = field(default_factory=list)
    processed: int = 0
    duplicates: int = 0


def make_metrics(**monitor) -> tuple[Metrics, Clock]:
    clock = Clock()
    config = MonitorConfig(**{"reference_events": 20, "window_events": 20, "reference_slots": 20,
                              "window_slots": 20, **monitor})
    return Metrics(CollectorRegistry(), monitor=config, refresh_s=1.0, clock=clock), clock


def value(metrics: Metrics, name: str, **labels: str) -> float | None:
    return metrics.registry.get_sample_value(name, labels)


def state_with(items: list[str], type_code: int = 1, version: str = "v1", recs=()) -> UserState:
    support = [SupportEvent(i, type_code, None, float(k)) for k, i in enumerate(items)]
    return UserState(support=support, seen=list(items), interactions=len(items), model_version=version,
                     last_recs=list(recs))


def result(items: list[str], scores: list[float]):
    return SimpleNamespace(items=items, scores=np.array(scores, dtype=np.float32))


def test_fixed_label_sets_exist_at_zero_before_anything_happens():
    metrics, _ = make_metrics()
    metrics.serving("v1")
    assert value(metrics, "metarec_dead_letters_total", reason="not_json") == 0.0
    assert value(metrics, "metarec_events_total", result="duplicate") == 0.0
    assert value(metrics, "metarec_online_trials_total", bucket="0", model_version="v1") == 0.0
    assert value(metrics, "metarec_served_lists_total", bucket="50+", model_version="v1") == 0.0


def test_observe_plan_counts_results_and_hits_by_the_version_of_the_list_that_was_hit():
    metrics, _ = make_metrics()
    work = Work(state_with(["a", "b"], version="v7"), applied=1, hits=[("1-4", True), ("1-4", False)])
    metrics.observe_plan(Plan({"u1": work}, dead=[object()], processed=1, duplicates=2))
    assert value(metrics, "metarec_events_total", result="processed") == 1
    assert value(metrics, "metarec_events_total", result="duplicate") == 2
    assert value(metrics, "metarec_events_total", result="dead_letter") == 1
    assert value(metrics, "metarec_online_trials_total", bucket="1-4", model_version="v7") == 2
    assert value(metrics, "metarec_online_hits_total", bucket="1-4", model_version="v7") == 1


def test_served_lists_are_bucketed_by_history_before_the_trigger():
    metrics, _ = make_metrics()
    states = [state_with(["a"]), state_with(["a", "b"]), state_with([f"i{k}" for k in range(60)])]
    metrics.observe_served(states, [result(["x"], [1.0])] * 3, "v1")
    assert value(metrics, "metarec_served_lists_total", bucket="0", model_version="v1") == 1
    assert value(metrics, "metarec_served_lists_total", bucket="1-4", model_version="v1") == 1
    assert value(metrics, "metarec_served_lists_total", bucket="50+", model_version="v1") == 1


def serve(metrics: Metrics, n: int, version: str = "v1", items=("a", "b")) -> None:
    metrics.observe_served([state_with(["z"])] * n, [result(list(items), [1.0, 0.5])] * n, version)


def test_window_gauges_refresh_at_most_once_per_interval():
    metrics, clock = make_metrics()
    metrics.catalogue_size.set(8)
    serve(metrics, 5)  # the first call refreshes: a and b, 2 of 8 items
    assert value(metrics, "metarec_recommended_coverage", model_version="v1") == pytest.approx(0.25)
    serve(metrics, 3, items=("c", "d"))
    assert value(metrics, "metarec_recommended_coverage", model_version="v1") == pytest.approx(0.25), "throttled"
    clock.now += 1.0
    serve(metrics, 1, items=("c", "d"))  # 18 slots: a, b five times each, c, d four times each
    assert value(metrics, "metarec_recommended_coverage", model_version="v1") == pytest.approx(0.5)
    expected = gini(np.array([5, 5, 4, 4]), 8)
    assert value(metrics, "metarec_recommended_gini", model_version="v1") == pytest.approx(expected)


def test_plan_events_feed_the_item_and_event_type_drift():
    metrics, _ = make_metrics()
    for k in range(40):  # one new event per user per batch
        work = Work(state_with([f"old{k}", f"i{k % 3}"], type_code=0), applied=1)
        metrics.observe_plan(Plan({f"u{k}": work}))
    metrics.observe_served([], [], "v1")
    assert value(metrics, "metarec_drift_psi", signal="event_type", model_version="v1") == pytest.approx(0, abs=1e-6)
    assert value(metrics, "metarec_drift_psi", signal="item_popularity", model_version="v1") is not None
    assert value(metrics, "metarec_event_type_share", type="view") == pytest.approx(1.0)
    assert value(metrics, "metarec_event_type_share", type="purchase") == 0.0


def test_only_this_batchs_events_are_taken_from_the_support_set():
    metrics, _ = make_metrics(reference_events=3)
    work = Work(state_with(["old1", "old2", "new1"]), applied=1)
    metrics.observe_plan(Plan({"u": work}))
    assert metrics.monitor._items_ref.size == 1


def test_a_new_model_version_starts_the_windows_over_and_drops_the_old_gauges():
    metrics, clock = make_metrics()
    metrics.catalogue_size.set(10)
    serve(metrics, 30)
    assert value(metrics, "metarec_drift_psi", signal="score", model_version="v1") is not None
    clock.now += 5
    serve(metrics, 1, version="v2")
    assert value(metrics, "metarec_drift_psi", signal="score", model_version="v1") is None
    assert value(metrics, "metarec_recommended_coverage", model_version="v1") is None
    assert value(metrics, "metarec_recommended_coverage", model_version="v2") == pytest.approx(0.2)


def test_label_cardinality_does_not_grow_with_users_or_items():
    metrics, clock = make_metrics()
    metrics.catalogue_size.set(1000)
    names = lambda: {(s.name, tuple(sorted(s.labels.items())))  # noqa: E731
                     for m in metrics.registry.collect() for s in m.samples}
    rng = np.random.default_rng(0)

    def round_() -> None:
        clock.now += 2
        items = [f"i{k}" for k in rng.integers(0, 10**6, 2)]
        metrics.observe_plan(Plan({f"u{rng.integers(10**9)}": Work(state_with(items), applied=2)}))
        serve(metrics, 2, items=items)

    for _ in range(15):  # the windows fill: every gauge has its series
        round_()
    before = len(names())
    for _ in range(50):
        round_()
    assert len(names()) == before


def test_lag_series_follow_the_assignment():
    metrics, _ = make_metrics()
    metrics.observe_lag({("interactions", 0): 5, ("interactions", 1): 0})
    metrics.observe_lag({("interactions", 1): 7})
    assert value(metrics, "metarec_consumer_lag", topic="interactions", partition="0") is None
    assert value(metrics, "metarec_consumer_lag", topic="interactions", partition="1") == 7


class TP(NamedTuple):
    topic: str
    partition: int


class FakeConsumer:
    def __init__(self, highwaters):
        self._hw = highwaters

    def assignment(self):
        return set(self._hw)

    def highwater(self, tp):
        return self._hw[tp]


class FakeMonitor:
    def __init__(self, read, committed):
        self.tp_read_offsets, self.tp_committed_offsets, self.ends = read, committed, {}

    def track_tp_end_offset(self, tp, offset):
        self.ends[tp] = offset


def test_consumer_lag_is_highwater_minus_position_for_the_wanted_topics_only():
    read, committed, unknown, other = TP("in", 0), TP("in", 1), TP("in", 2), TP("in-changelog", 0)
    consumer = FakeConsumer({read: 100, committed: 50, unknown: None, other: 9})
    monitor = FakeMonitor({read: 89}, {committed: 60})
    assert consumer_lag(consumer, monitor, ["in"]) == {("in", 0): 10, ("in", 1): 0}
    assert monitor.ends == {read: 100, committed: 50}, "Faust's end-offset gauge is fed too"


def test_install_app_metrics_puts_faust_figures_on_our_registry_and_adds_the_lag_timer():
    import faust

    metrics, _ = make_metrics()
    app = faust.App("metrics-unit", broker="kafka://127.0.0.1:1", store="memory://", web_enabled=False,
                    autodiscover=False)
    tasks = len(app._app_tasks)
    install_app_metrics(app, metrics, ["interactions"])
    names = {m.name for m in metrics.registry.collect()}
    assert {"faust_messages_received", "faust_topic_partition_offset_commited", "faust_total_rebalances"} <= names
    assert len(app._app_tasks) == tasks + 1, "the lag timer is one more app task"
