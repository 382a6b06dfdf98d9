"""Evaluation adapters for a model trained once, on whatever the protocol allows, then frozen while it serves.

The transfer and privacy evaluations compare *training recipes* (target-only, zero-shot from another domain,
pre-train then fine-tune, differentially private), so each method here is "a recipe + the serving path":

* :class:`PrefixTrained` (stream order): ``fit_prefix`` runs the recipe on the warm-up events, then every
user is
  adapted on their own events so far by ``Recommender.recommend``, exactly as the stream worker does. The
  meta-parameters stay fixed through the replay, so a chunk of distinct users ranks the same at once as one by
  one, and the class is a ``BatchRanker``
  (each query brings the user's pending events of the chunk, added to the support here).
* :class:`TaskTrained` (the cold-start split): ``fit`` runs the recipe on the training tasks' events,
``predict``
  adapts on each test task's support and predicts its query ratings with ``Recommender.predict``.
"""

from __future__ import annotations

import logging
import math
from typing import Callable, Sequence

import numpy as np

from models.core.targets import event_target
from models.data.events import EVENT_TYPES, EventLog
from models.eval.coldstart.methods import TaskData
from models.eval.methods import Query
from models.serving.recommender import AdaptRequest, Recommender

log = logging.getLogger(__name__)

Recipe = Callable[[EventLog], Recommender]  # a training log -> a model whose catalogue is that log's item ids


class PrefixTrained:
    """A stream method: ``recipe`` on the warm-up prefix, then per-user adaptation with frozen meta-
    parameters."""

    def __init__(self, name: str, recipe: Recipe) -> None:
        self.name = name
        self._recipe = recipe
        self.model: Recommender | None = None
        self._item_ids: list[str] = []
        self._index: dict[str, int] = {}
        self._max_support = 1
        self._support: dict[int, list[tuple[str, float]]] = {}  # user -> (item id, target), oldest first

    def fit_prefix(self, log_: EventLog) -> None:
        self.model = self._recipe(log_)
        known = set(self.model.item_ids)
        missing = [i for i in log_.item_ids if i not in known]
        if missing:
            raise ValueError(f"{self.name}: the trained model lacks {len(missing)} of the log's items")
        self._item_ids = list(log_.item_ids)
        self._index = {item: n for n, item in enumerate(self._item_ids)}
        self._max_support = self.model.config.max_support
        for n in range(len(log_)):
            self.learn(int(log_.users[n]), int(log_.items[n]), float(log_.values[n]), int(log_.types[n]), 0.0)

    def _request(self, query: Query) -> AdaptRequest:
        """The user's support so far, plus the chunk's pending events the protocol has not handed over yet."""
        support = list(self._support.get(query.user, ()))
        for p in query.pending:
            target = self._target(p.value, p.type_code)
            if target is not None:
                support.append((self._item_ids[p.item], target))
        support = support[-self._max_support :]
        return AdaptRequest(str(query.user), support, [self._item_ids[i] for i in query.exclude])

    def rank(self, user: int, k: int, exclude: set[int]) -> list[int]:
        return self.rank_many([Query(user, exclude)], k)[0]

    def rank_many(self, queries: Sequence[Query], k: int) -> list[list[int]]:
        assert self.model is not None, "fit_prefix first"
        results = self.model.recommend([self._request(q) for q in queries], k)
        return [[self._index[i] for i in r.items] for r in results]

    def events_until_refresh(self) -> int | None:
        return None

    def predict_rating(self, user: int, item: int) -> float | None:
        return self.predict_many([Query(user, set())], [item])[0]

    def predict_many(self, queries: Sequence[Query], items: Sequence[int]) -> list[float | None]:
        """Ratings after adapting on the same events as the ranking (None on an implicit objective)."""
        assert self.model is not None, "fit_prefix first"
        if self.model.config.objective != "rating":
            return [None] * len(queries)
        wanted = sorted(set(items))
        column = {item: n for n, item in enumerate(wanted)}
        scores = self.model.predict([self._request(q) for q in queries], [self._item_ids[i] for i in wanted])
        return [float(scores[b, column[item]]) for b, item in enumerate(items)]

    def _target(self, value: float, type_code: int) -> float | None:
        assert self.model is not None
        return event_target(
            EVENT_TYPES[type_code], None if math.isnan(value) else value, self.model.config.objective
        )

    def learn(self, user: int, item: int, value: float, type_code: int, ts: float) -> None:
        target = self._target(value, type_code)
        if target is not None:
            history = self._support.setdefault(user, [])
            history.append((self._item_ids[item], float(target)))
            del history[: -self._max_support]


class TaskTrained:
    """A cold-start method: ``recipe`` on the training tasks' events, then adaptation on each test support."""

    def __init__(self, name: str, recipe: Recipe, item_ids: Sequence[str], chunk: int = 256) -> None:
        self.name = name
        self._recipe = recipe
        self._item_ids = list(item_ids)
        self._chunk = chunk
        self.model: Recommender | None = None

    def fit(self, train_log: EventLog, train_tasks: list[TaskData]) -> None:
        self.model = self._recipe(train_log)

    def predict(self, tasks: list[TaskData]) -> list[np.ndarray] | None:
        """Each task's query ratings, or None when the model predicts no ratings (an implicit objective)."""
        assert self.model is not None, "fit first"
        if self.model.config.objective != "rating":
            return None
        out: list[np.ndarray] = []
        for start in range(0, len(tasks), self._chunk):
            chunk = tasks[start : start + self._chunk]
            wanted = sorted({int(i) for t in chunk for i in t.query_items})
            column = {item: n for n, item in enumerate(wanted)}
            requests = [
                AdaptRequest(
                    str(t.user),
                    [(self._item_ids[int(i)], float(v)) for i, v in zip(t.support_items, t.support_values)],
                    (),
                )
                for t in chunk
            ]
            scores = self.model.predict(requests, [self._item_ids[i] for i in wanted])  # (B, M)
            out.extend(scores[b, [column[int(i)] for i in t.query_items]] for b, t in enumerate(chunk))
        return out
