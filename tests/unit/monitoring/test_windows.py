"""The pure figures behind the drift and exposure gauges: PSI, Gini, coverage, and the bounded windows."""

from __future__ import annotations

from collections import deque

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stream.monitoring import (
    Monitor,
    MonitorConfig,
    Reference,
    RingBuffer,
    SlidingCounts,
    coverage,
    gini,
    histogram,
    psi,
    quantile_edges,
    stable_bins,
)


def test_psi_is_zero_for_identical_shares_and_grows_with_the_shift():
    ref = np.array([100, 200, 300, 400])
    assert psi(ref, ref * 3) == pytest.approx(0.0, abs=1e-5)  # the pseudo-counts weigh a little
    small = psi(ref, np.array([110, 190, 300, 400]))
    large = psi(ref, np.array([400, 300, 200, 100]))
    assert 0 < small < 0.1 < 0.25 < large


def test_psi_matches_the_textbook_formula_on_a_worked_example():
    ref, cur = np.array([50.0, 50.0]), np.array([80.0, 20.0])
    expected = (0.8 - 0.5) * np.log(0.8 / 0.5) + (0.2 - 0.5) * np.log(0.2 / 0.5)
    assert psi(ref, cur, smoothing=0.0) == pytest.approx(expected)


def test_psi_stays_finite_when_a_bin_empties():
    assert np.isfinite(psi(np.array([100, 0]), np.array([0, 100])))


def test_gini_of_even_exposure_is_zero_and_of_one_item_is_near_one():
    assert gini(np.array([5, 5, 5, 5]), 4) == pytest.approx(0.0)
    assert gini(np.array([10]), 100) == pytest.approx(0.99)


def test_gini_counts_never_recommended_items_as_zeros():
    padded = np.array([0, 0, 0, 1, 2, 7], dtype=float)
    n = len(padded)
    by_definition = np.abs(padded[:, None] - padded[None, :]).sum() / (2 * n * n * padded.mean())
    assert gini(np.array([7, 1, 2]), n) == pytest.approx(by_definition)


def test_coverage_is_the_share_of_the_catalogue_recommended():
    assert coverage(np.array([3, 0, 1]), 10) == pytest.approx(0.2)
    assert coverage(np.array([1]), 0) == 0.0


def test_quantile_edges_split_a_sample_into_equal_bins():
    sample = np.arange(1000, dtype=float)
    counts = histogram(sample, quantile_edges(sample, 10))
    assert len(counts) == 10 and counts.min() >= 99 and counts.max() <= 101


def test_stable_bins_do_not_depend_on_the_process_hash_seed():
    assert stable_bins(["i1", "i2", "i1"], 32).tolist()[0] == stable_bins(["i1"], 32)[0]
    assert 0 <= stable_bins(["x"] * 5, 7).max() < 7


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 9), st.lists(st.lists(st.integers(0, 5), max_size=12), max_size=12))
def test_ring_buffer_keeps_the_last_values_and_returns_the_evicted(capacity, pushes):
    ring, model = RingBuffer(capacity), deque(maxlen=capacity)
    for batch in pushes:
        before = list(model)
        evicted = ring.push(np.array(batch, dtype=np.int64))
        model.extend(batch)
        kept = before + batch
        assert sorted(evicted.tolist()) == sorted(before[: max(0, len(kept) - capacity)])
        assert ring.values().tolist() == list(model)


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 9), st.lists(st.lists(st.integers(0, 3), max_size=12), max_size=12))
def test_sliding_counts_equal_a_recount_of_the_window(capacity, pushes):
    counts, model = SlidingCounts(4, capacity), deque(maxlen=capacity)
    for batch in pushes:
        counts.push(np.array(batch, dtype=np.int64))
        model.extend(batch)
        assert counts.counts.tolist() == np.bincount(list(model), minlength=4).tolist()


def test_reference_freezes_after_its_first_values():
    ref = Reference(3)
    ref.push(np.array([1, 2]))
    ref.push(np.array([3, 4, 5]))
    assert ref.full and ref.values().tolist() == [1, 2, 3]


def zipf_items(rng: np.random.Generator, order: list[str], n: int) -> list[str]:
    weights = 1.0 / np.arange(1, len(order) + 1) ** 1.1
    return list(rng.choice(order, size=n, p=weights / weights.sum()))


CONFIG = MonitorConfig(reference_events=1000, window_events=1000, reference_slots=2000, window_slots=2000)


def feed_events(monitor: Monitor, items: list[str], types: list[int], chunk: int = 50) -> None:
    for i in range(0, len(items), chunk):
        monitor.observe_events(items[i:i + chunk], types[i:i + chunk])


def test_item_popularity_psi_stays_low_without_drift_and_crosses_the_threshold_with_it():
    rng = np.random.default_rng(0)
    catalogue = [f"i{k}" for k in range(200)]
    shuffled = list(rng.permutation(catalogue))
    monitor = Monitor(CONFIG)
    feed_events(monitor, zipf_items(rng, catalogue, 2500), [1] * 2500)
    before = monitor.snapshot(200).psi["item_popularity"]
    feed_events(monitor, zipf_items(rng, shuffled, 1000), [1] * 1000)
    after = monitor.snapshot(200).psi["item_popularity"]
    assert before < 0.1 < 0.25 < after


def test_event_type_mix_drift_and_shares():
    rng = np.random.default_rng(1)
    monitor = Monitor(CONFIG)
    items = [f"i{k}" for k in range(3000)]
    feed_events(monitor, items[:2000], list(rng.choice([0, 1], size=2000, p=[0.8, 0.2])))
    assert monitor.snapshot(10).psi["event_type"] < 0.1
    feed_events(monitor, items[2000:], list(rng.choice([0, 3], size=1000, p=[0.2, 0.8])))
    snap = monitor.snapshot(10)
    assert snap.psi["event_type"] > 0.25
    assert snap.event_type_share is not None and snap.event_type_share[3] > 0.6
    assert snap.event_type_share.sum() == pytest.approx(1.0)


def test_score_psi_compares_the_current_scores_with_the_reference_deciles():
    rng = np.random.default_rng(2)
    monitor = Monitor(CONFIG)
    for _ in range(400):
        monitor.observe_lists([["a"] * 10], [rng.normal(0, 1, 10)])
    assert monitor.snapshot(10).psi["score"] < 0.1
    for _ in range(200):
        monitor.observe_lists([["a"] * 10], [rng.normal(1.5, 1, 10)])
    assert monitor.snapshot(10).psi["score"] > 0.25


def test_nothing_is_reported_before_the_windows_hold_enough():
    monitor = Monitor(CONFIG)
    monitor.observe_events(["a"] * 10, [0] * 10)
    snap = monitor.snapshot(100)
    assert snap.psi == {} and snap.coverage is None and snap.gini is None


def test_coverage_and_gini_follow_the_sliding_window_of_recommended_items():
    monitor = Monitor(MonitorConfig(window_slots=20))
    monitor.observe_lists([["a", "b"]] * 10, [np.zeros(2)] * 10)  # 20 slots on 2 items
    snap = monitor.snapshot(10)
    assert snap.coverage == pytest.approx(0.2) and snap.gini == pytest.approx(gini(np.array([10, 10]), 10))
    monitor.observe_lists([[c] for c in "cdefghijklmnopqrstuv"], [np.zeros(1)] * 20)  # a and b slide out
    snap = monitor.snapshot(20)
    assert snap.coverage == pytest.approx(1.0) and snap.gini == pytest.approx(0.0)


def test_non_finite_scores_are_left_out():
    monitor = Monitor(MonitorConfig(reference_slots=4, window_slots=4))
    monitor.observe_lists([["a", "b", "c", "d", "e", "f"]], [np.array([1, 2, -np.inf, np.nan, 3, 4.0])])
    assert "score" in monitor.snapshot(6).psi


def test_the_item_index_is_bounded():
    monitor = Monitor(MonitorConfig(max_items=50, window_slots=100))
    for k in range(10):
        monitor.observe_lists([[f"i{k}-{j}" for j in range(10)]], [np.zeros(10)])
    assert len(monitor._index) <= 50
    assert monitor.snapshot(1000).coverage is not None
