"""What a cold-start method sees, the contract it keeps, and the two reference baselines.

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
