"""What a cold-start method sees, the contract it keeps, and the reference baselines.

A method is fitted once on the training tasks (and a log holding only their events), then predicts the query
ratings of test tasks from each task's support alone. ``TaskData.query_values`` is filled for training tasks
and None for test tasks, so a method cannot peek at what it is scored on.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np

from models.data.events import EventLog
from models.eval.coldstart.split import Task


@dataclass(frozen=True)
class TaskData:
    """One user's task as a method sees it (dense item and user indices of the full log)."""

    user: int
    support_items: np.ndarray  # (S,) int64
    support_values: np.ndarray  # (S,) float32 ratings
    support_ts: np.ndarray  # (S,) float64
    query_items: np.ndarray  # (Q,) int64
    query_values: np.ndarray | None  # (Q,) float32 for training tasks, None for test tasks


def task_data(log: EventLog, task: Task, *, with_labels: bool) -> TaskData:
    """A ``Task``'s arrays; query ratings only when ``with_labels`` (training)."""
    return TaskData(
        user=task.user,
        support_items=log.items[task.support],
        support_values=log.values[task.support],
        support_ts=log.ts[task.support],
        query_items=log.items[task.query],
        query_values=log.values[task.query] if with_labels else None,
    )


class ColdStartMethod(Protocol):
    """Fit on training tasks, then predict each test task's query ratings from its support."""

    name: str

    def fit(self, train_log: EventLog, train_tasks: list[TaskData]) -> None: ...

    def predict(self, tasks: list[TaskData]) -> list[np.ndarray]: ...


class GlobalMean:
    """Every query rating predicted as the mean training rating: the floor every method must beat."""

    name = "global_mean"

    def __init__(self) -> None:
        self.mean = 0.0

    def fit(self, train_log: EventLog, train_tasks: list[TaskData]) -> None:
        self.mean = float(np.nanmean(train_log.values)) if len(train_log) else 0.0

    def predict(self, tasks: list[TaskData]) -> list[np.ndarray]:
        return [np.full(len(t.query_items), self.mean, np.float32) for t in tasks]


class UserMedian:
    """The median of the user's own support ratings: a strong per-user baseline with no learning at all."""

    name = "user_median"

    def __init__(self) -> None:
        self.fallback = 0.0

    def fit(self, train_log: EventLog, train_tasks: list[TaskData]) -> None:
        self.fallback = float(np.nanmedian(train_log.values)) if len(train_log) else 0.0

    def predict(self, tasks: list[TaskData]) -> list[np.ndarray]:
        out = []
        for t in tasks:
            value = float(np.median(t.support_values)) if len(t.support_values) else self.fallback
            out.append(np.full(len(t.query_items), value, np.float32))
        return out


class ItemBiasUserOffset:
    """A training-only item bias plus the user's offset from their own support: the bias model, folded in.

    Item biases come from the training ratings alone (alternating shrunk means of the user and item biases,
    so a harsh training user does not pull the items they rated down); a test user's offset is their
    support's mean residual from the global mean plus those item biases, shrunk towards 0 by ``user_shrink``
    pseudo-ratings. An item without training ratings has bias 0. A strong reference in ``new_user``: it knows
    item quality as well as the training data says it, and the user's level as well as the support says it.
    The shrinkages were chosen on the training tasks' user folds (``bench/coldstart_cv.py --no-metarec --bias
    '{"item_shrink": 2}' ...``, seed 0; user_median 0.8316 there): item/user shrink 5/2 0.8075, 5/0 0.8090,
    5/5 0.8091, 1/2 0.8066, 2/2 0.8058, 2/1 0.8059, 2/3 0.8061, 3/2 0.8060, 10/2 0.8119, 25/2 0.8219.
    """

    name = "item_bias_user_offset"

    def __init__(self, item_shrink: float = 2.0, user_shrink: float = 2.0, rounds: int = 10) -> None:
        self.item_shrink, self.user_shrink, self.rounds = item_shrink, user_shrink, rounds
        self.mean = 0.0
        self.item_bias = np.zeros(0)

    def fit(self, train_log: EventLog, train_tasks: list[TaskData]) -> None:
        rated = np.isfinite(train_log.values)
        users, items = train_log.users[rated], train_log.items[rated]
        values = train_log.values[rated].astype(np.float64)
        self.mean = float(values.mean()) if len(values) else 0.0
        n_users, n_items = train_log.n_users, train_log.n_items
        item_n = np.bincount(items, minlength=n_items).astype(np.float64)  # (N,)
        user_n = np.bincount(users, minlength=n_users).astype(np.float64)  # (U,)
        item_bias, user_bias = np.zeros(n_items), np.zeros(n_users)
        for _ in range(self.rounds):
            res = values - self.mean - user_bias[users]
            item_bias = np.bincount(items, res, n_items) / np.maximum(item_n + self.item_shrink, 1e-9)
            res = values - self.mean - item_bias[items]
            user_bias = np.bincount(users, res, n_users) / np.maximum(user_n + self.user_shrink, 1e-9)
        self.item_bias = item_bias

    def predict(self, tasks: list[TaskData]) -> list[np.ndarray]:
        out = []
        for t in tasks:
            res = t.support_values.astype(np.float64) - self.mean - self._bias(t.support_items)
            offset = res.sum() / max(len(res) + self.user_shrink, 1e-9)
            out.append((self.mean + offset + self._bias(t.query_items)).astype(np.float32))
        return out

    def _bias(self, items: np.ndarray) -> np.ndarray:
        """Training item biases of ``items`` (0 for items the training log does not have)."""
        inside = items < len(self.item_bias)
        return np.where(inside, self.item_bias[np.minimum(items, len(self.item_bias) - 1)], 0.0)
