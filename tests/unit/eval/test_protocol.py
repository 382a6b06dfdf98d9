"""The replay never lets a method see an event before predicting it; buckets and metrics add up by hand."""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import pytest

from models.data.events import EventLog
from models.eval.methods import Query
from models.eval.metrics import Accumulator, history_bucket, hit_and_ndcg, rating_scale, snap_to_scale
from models.eval.stream_protocol import plan_stream, replay
from tests.unit.eval.conftest import make_log, planted_stream


class CheatingDetector:
    """An oracle that knows the whole time-ordered stream and asserts it is only asked about the future.

    It records how many events it has learned (which must be exactly the stream's first ``learned`` events, in
    order), and at every rank call asserts that the event being predicted is the next unlearned one of that
    user and that nothing at or after it has been learned. It answers with the true item, so a correctly
    aligned replay scores HR = 1 exactly.
    """

    name = "detector"

    def __init__(self, ordered: EventLog) -> None:
        self.events = list(zip(ordered.users.tolist(), ordered.items.tolist(), ordered.ts.tolist()))
        self.learned = 0

    def fit_prefix(self, log: EventLog) -> None:
        for u, i, ts in zip(log.users.tolist(), log.items.tolist(), log.ts.tolist()):
            self.learn(u, i, math.nan, 0, ts)

    def _predicted(self, user: int) -> int:
        """Position of the event being predicted for ``user``: their first event not learned yet."""
        later = [n for n in range(self.learned, len(self.events)) if self.events[n][0] == user]
        assert later, f"rank for user {user}, who has no unlearned event left: the replay leaked"
        return later[0]

    def rank(self, user: int, k: int, exclude: set[int]) -> list[int]:
        n = self._predicted(user)
        assert n == self.learned, f"predicting event {n} after learning {self.learned}: order leaked"
        return self._answer(user, n, exclude)

    def _answer(self, user: int, n: int, exclude: set[int]) -> list[int]:
        before = {i for u, i, _ in self.events[:n] if u == user}
        assert exclude == before, "exclude must be exactly the user's items before the predicted event"
        return [self.events[n][1]]

    def predict_rating(self, user: int, item: int) -> float | None:
        return None

    def learn(self, user: int, item: int, value: float, type_code: int, ts: float) -> None:
        assert self.learned < len(self.events), "learned more events than the stream has"
        assert (user, item, ts) == self.events[self.learned], "events learned out of time order"
        self.learned += 1


class BatchCheatingDetector(CheatingDetector):
    """The same oracle through ``rank_many``, with its frozen state refreshed every ``period`` events.

    A query's pending events must be exactly the user's unlearned events before the predicted one: the events
    the one-by-one replay would have learned by then, and nothing later.
    """

    def __init__(self, ordered: EventLog, period: int = 7) -> None:
        super().__init__(ordered)
        self.period = period
        self.batches = 0

    def events_until_refresh(self) -> int | None:
        return self.period - self.learned % self.period

    def _check(self, query: Query) -> int:
        later = [n for n in range(self.learned, len(self.events)) if self.events[n][0] == query.user]
        assert len(later) > len(query.pending), f"no event left to predict for user {query.user}: leaked"
        n = later[len(query.pending)]
        expected = [(self.events[m][1], self.events[m][2]) for m in later[: len(query.pending)]]
        pending = [(p.item, p.ts) for p in query.pending]
        assert pending == expected, "pending events are not the user's earlier ones"
        assert n < self.learned + self.events_until_refresh(), "a chunk spans a refresh of the frozen state"
        return n

    def rank_many(self, queries: Sequence[Query], k: int) -> list[list[int]]:
        self.batches += 1
        out = []
        for query in queries:
            n = self._check(query)
            out.append(self._answer(query.user, n, query.exclude))
        return out

    def predict_many(self, queries: Sequence[Query], items: Sequence[int]) -> list[float | None]:
        for query, item in zip(queries, items):
            assert self.events[self._check(query)][1] == item
        return [None] * len(queries)


def leaky_replay(method: CheatingDetector, log: EventLog) -> None:
    """A deliberately wrong protocol (learn, then predict) that the detector must catch."""
    for u, i, ts in zip(log.users.tolist(), log.items.tolist(), log.ts.tolist()):
        method.learn(u, i, math.nan, 0, ts)
        method.rank(u, 10, set())


@pytest.mark.parametrize("detector", [CheatingDetector, BatchCheatingDetector])
@pytest.mark.parametrize("warmup", [0.0, 0.3])
def test_replay_never_shows_an_event_before_it_is_predicted(detector, warmup):
    plan = plan_stream(planted_stream(seed=3), warmup)
    method = detector(plan.log)
    acc = replay(method, plan)
    assert method.learned == len(plan.log)
    assert sum(acc.count.values()) == int(plan.scored.sum())
    assert acc.summary()["hr@10"]["all"] == 1.0  # every list was asked for the right event
    if detector is BatchCheatingDetector:
        assert method.batches < int(plan.scored.sum())  # really chunked


def test_the_detector_catches_a_leaky_replay():
    plan = plan_stream(planted_stream(seed=3), 0.0)
    with pytest.raises(AssertionError, match="leaked"):
        leaky_replay(CheatingDetector(plan.log), plan.log)


class FixedOrder:
    """Ranks items by index, lowest first; predicts a constant rating; records what it learned."""

    name = "fixed"

    def __init__(self) -> None:
        self.learned: list[tuple[int, int]] = []

    def fit_prefix(self, log: EventLog) -> None:
        self.n_items = log.n_items

    def rank(self, user: int, k: int, exclude: set[int]) -> list[int]:
        return [i for i in range(self.n_items) if i not in exclude][:k]

    def predict_rating(self, user: int, item: int) -> float | None:
        return 3.0

    def learn(self, user: int, item: int, value: float, type_code: int, ts: float) -> None:
        self.learned.append((user, item))


def tiny_stream(explicit: bool = False) -> EventLog:
    """Written out of time order on purpose; indices follow first appearance in the file: i2=0, i0=1, i1=2."""
    rows = [
        ("u1", "i2", 3.0, 2.0),  # 3rd in time
        ("u0", "i0", 1.0, 4.0),  # 1st
        ("u0", "i2", 2.0, 5.0),  # 2nd
        ("u0", "i0", 4.0, 1.0),  # 4th: a repeat
        ("u1", "i1", 5.0, 3.0),  # 5th
    ]
    return make_log(rows, explicit=explicit)


def test_buckets_hits_and_ndcg_by_hand():
    plan = plan_stream(tiny_stream(), 0.0)
    assert plan.n_before.tolist() == [0, 1, 0, 2, 1]
    assert plan.repeat.tolist() == [False, False, False, True, False]
    method = FixedOrder()
    acc = replay(method, plan, k=2)
    # t1 u0 i0 (idx 1): [0, 1] hit at 1.  t2 u0 i2 (idx 0): excl {1} -> [0, 2] hit at 0.
    # t3 u1 i2 (idx 0): [0, 1] hit at 0.  t4 repeat.  t5 u1 i1 (idx 2): excl {0} -> [1, 2] hit at 1.
    result = acc.summary()
    g = 1 / math.log2(3)
    assert plan.bucket_events() == {"0": 2, "1-4": 2, "5-9": 0, "10-49": 0, "50+": 0}
    assert result["hr@2"] == {"all": 1.0, "0": 1.0, "1-4": 1.0, "5-9": None, "10-49": None, "50+": None}
    assert result["ndcg@2"]["0"] == pytest.approx((1 + g) / 2)
    assert result["ndcg@2"]["1-4"] == pytest.approx((1 + g) / 2)
    assert result["ndcg@2"]["all"] == pytest.approx((2 + 2 * g) / 4)
    assert len(method.learned) == 5  # the repeat is learned although not scored
    assert result["mae"] is None  # implicit data: no rating error


def test_rating_errors_on_explicit_data_skip_repeats():
    acc = replay(FixedOrder(), plan_stream(tiny_stream(explicit=True), 0.0))
    errors = np.array([4.0, 5.0, 2.0, 3.0]) - 3.0  # the repeat (rating 1) is not an evaluation point
    assert acc.summary()["mae"] == pytest.approx(np.abs(errors).mean())
    assert acc.summary()["rmse"] == pytest.approx(math.sqrt((errors**2).mean()))


def test_errors_on_scale_move_each_prediction_to_the_nearest_level():
    acc = Accumulator(k=10, scale=rating_scale([1, 2, 3, 4, 5, 5, 3]))
    for predicted, actual in [(3.6, 4.0), (1.2, 2.0), (4.5, 5.0), (7.0, 5.0)]:
        acc.add_rating(predicted, actual)
    s = acc.summary()
    assert s["mae"] == pytest.approx((0.4 + 0.8 + 0.5 + 2.0) / 4)  # as predicted
    assert s["mae_on_scale"] == pytest.approx((0 + 1 + 1 + 0) / 4)  # 4, 1, 4 (tie goes down), 5
    assert s["rmse_on_scale"] == pytest.approx(math.sqrt(2 / 4))


def test_rating_scale_is_read_only_from_discrete_ratings():
    assert rating_scale([4.0, 1.0, np.nan, 4.0, 2.5]) == (1.0, 2.5, 4.0)
    assert rating_scale(np.linspace(0, 1, 50)) is None  # a continuous target has no scale
    assert rating_scale([np.nan]) is None
    assert snap_to_scale(np.array([0.2, 2.9, 9.0]), (1.0, 2.5, 4.0)).tolist() == [1.0, 2.5, 4.0]


def test_scale_comes_from_the_warmup_and_scores_explicit_replays():
    acc = replay(FixedOrder(), plan_stream(tiny_stream(explicit=True), 0.4))
    assert acc.scale == (4.0, 5.0)  # the warm-up's two ratings only, never a later event's
    assert acc.summary()["mae"] == pytest.approx((1.0 + 0.0) / 2)  # 3 against ratings 2 and 3
    assert acc.summary()["mae_on_scale"] == pytest.approx((2.0 + 1.0) / 2)  # 3 moved to 4
    assert replay(FixedOrder(), plan_stream(tiny_stream(), 0.4)).scale is None  # implicit: no scale


def test_kept_pairs_are_each_scored_rating_in_stream_order():
    plan = plan_stream(tiny_stream(explicit=True), 0.4)
    assert replay(FixedOrder(), plan).pairs == [(3.0, 2.0), (3.0, 3.0)]


def test_warmup_events_are_not_scored_but_count_as_history():
    plan = plan_stream(tiny_stream(), 0.4)  # the first two events (both u0's) warm up
    assert plan.start == 2
    assert plan.bucket_events() == {"0": 1, "1-4": 1, "5-9": 0, "10-49": 0, "50+": 0}


@pytest.mark.parametrize(("n", "bucket"), [(0, "0"), (1, "1-4"), (4, "1-4"), (5, "5-9"), (9, "5-9"),
                                           (10, "10-49"), (49, "10-49"), (50, "50+"), (700, "50+")])
def test_history_bucket_edges(n, bucket):
    assert history_bucket(n) == bucket


def test_hit_and_ndcg_positions():
    assert hit_and_ndcg([5, 3, 7], 5, 10) == (1.0, 1.0)
    assert hit_and_ndcg([5, 3, 7], 7, 10) == (1.0, pytest.approx(0.5))
    assert hit_and_ndcg([5, 3, 7], 7, 2) == (0.0, 0.0)
    assert hit_and_ndcg([], 1, 10) == (0.0, 0.0)


def test_pooled_first_ten_weights_by_count():
    acc = Accumulator(k=10)
    for bucket, hit in [("0", 1), ("0", 0), ("1-4", 1), ("5-9", 1), ("10-49", 0)]:
        acc.add_ranking(bucket, [1] if hit else [2], 1)
    assert acc.pooled_hr() == pytest.approx(3 / 4)


def test_bad_warmup_is_refused():
    with pytest.raises(ValueError, match="warmup_fraction"):
        plan_stream(tiny_stream(), 1.0)
