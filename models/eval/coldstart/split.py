"""The MeLU cold-start split (Lee et al., KDD 2019) of an explicit EventLog into per-user tasks.

Why these rules, in the order they are applied:

1. Items are split by first appearance in time: the earliest ``item_fraction`` of items (by the timestamp of
   their first rating; ties by dense index) are "existing", the rest "new" -- new items arrive after the model
   is built.
2. Users are split at random (seeded) into ``user_fraction`` "existing" and the rest "new"; the model never
   sees a new user's ratings before test time.
3. A scenario pairs a user group with an item group: ``warm`` (existing users, existing items), ``new_user``
   (new users, existing items), ``new_item`` (existing users, new items) and ``new_user_new_item``.
4. A user's task in a scenario is built from their ratings restricted to the scenario's items. As in MeLU's
   own data generation, the 13-100 ratings filter applies to that restricted set: a user with fewer than 13
   (or more than 100) ratings in a scenario has no task there and is counted in ``skipped`` (so a heavy user
   who rated few new items still gives a ``new_item`` task, and a user with 12 new-item ratings gives none).
5. Each task's ratings, put in (time, item) order first so that the draw does not depend on the file's row
   order, are shuffled (seeded per user and scenario); 10 become the query, the rest (>= 3) the support that
   a method may adapt on.
6. The existing users' warm tasks are the only training data. A seeded ``warm_holdout`` share of them is kept
   out of training and scores the ``warm`` scenario, so even the warm figures are on unseen query ratings.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from models.data.events import EventLog

SCENARIOS: tuple[str, ...] = ("warm", "new_user", "new_item", "new_user_new_item")
_GROUPS: dict[str, tuple[bool, bool]] = {  # scenario -> (existing users?, existing items?)
    "warm": (True, True),
    "new_user": (False, True),
    "new_item": (True, False),
    "new_user_new_item": (False, False),
}


@dataclass(frozen=True)
class SplitConfig:
    """The protocol's numbers; the defaults are MeLU's."""

    item_fraction: float = 0.8
    user_fraction: float = 0.8
    min_ratings: int = 13
    max_ratings: int = 100
    query_size: int = 10
    warm_holdout: float = 0.1
    seed: int = 0

    def __post_init__(self) -> None:
        if self.min_ratings < self.query_size + 1:
            raise ValueError("min_ratings must leave at least one support rating after the query")
        for name in ("item_fraction", "user_fraction", "warm_holdout"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1]")


@dataclass(frozen=True)
class Task:
    """One user's task: positions of support and query events in the full log."""

    user: int
    support: np.ndarray  # (S,) int64 event positions
    query: np.ndarray  # (Q,) int64 event positions


@dataclass
class ColdStartSplit:
    """The item and user groups, the training tasks and each scenario's test tasks."""

    existing_items: np.ndarray  # (n_items,) bool
    existing_users: np.ndarray  # (n_users,) bool
    train_tasks: list[Task]
    test_tasks: dict[str, list[Task]]
    skipped: dict[str, int] = field(default_factory=dict)  # users of the scenario's group without a task

    def train_events(self) -> np.ndarray:
        """Positions of every event a method may train on (support and query of the training tasks)."""
        parts = [np.concatenate([t.support, t.query]) for t in self.train_tasks]
        return np.sort(np.concatenate(parts)) if parts else np.zeros(0, np.int64)

    def counts(self) -> dict[str, dict[str, int]]:
        """Tasks and query ratings per scenario, plus training tasks: for the result file."""
        out = {"train": {"tasks": len(self.train_tasks), "events": len(self.train_events())}}
        for name, tasks in self.test_tasks.items():
            out[name] = {
                "tasks": len(tasks),
                "query_ratings": int(sum(len(t.query) for t in tasks)),
                "support_ratings": int(sum(len(t.support) for t in tasks)),
                "skipped_users": self.skipped.get(name, 0),
            }
        return out


def existing_items_by_first_appearance(log: EventLog, fraction: float) -> np.ndarray:
    """(n_items,) bool: the earliest ``fraction`` of items by first-rating time; unrated ones are new."""
    first = np.full(log.n_items, np.inf)
    np.minimum.at(first, log.items, log.ts)
    order = np.argsort(first, kind="stable")  # ties by dense index
    existing = np.zeros(log.n_items, bool)
    existing[order[: int(fraction * log.n_items)]] = True
    return existing


def existing_users_at_random(n_users: int, fraction: float, rng: np.random.Generator) -> np.ndarray:
    """(n_users,) bool: a seeded random ``fraction`` of the users."""
    existing = np.zeros(n_users, bool)
    existing[rng.permutation(n_users)[: round(fraction * n_users)]] = True
    return existing


def _user_task(user: int, positions: np.ndarray, cfg: SplitConfig, rng: np.random.Generator) -> Task | None:
    """Shuffle a user's restricted ratings and cut the query off, or None if the count is out of range."""
    if not cfg.min_ratings <= len(positions) <= cfg.max_ratings:
        return None
    shuffled = rng.permutation(positions)
    return Task(user=user, support=np.sort(shuffled[cfg.query_size :]), query=shuffled[: cfg.query_size])


def _scenario_tasks(
    log: EventLog, name: str, existing_users: np.ndarray, existing_items: np.ndarray, cfg: SplitConfig
) -> tuple[list[Task], int]:
    """Every task of one scenario, users in index order; also how many users of its group had none."""
    want_users, want_items = _GROUPS[name]
    rated = np.flatnonzero(
        (existing_users[log.users] == want_users) & (existing_items[log.items] == want_items)
    )
    rated = rated[np.lexsort((log.items[rated], log.ts[rated]))]  # by time, then item, not by file row
    by_user: dict[int, list[int]] = {}
    for pos in rated:
        by_user.setdefault(int(log.users[pos]), []).append(int(pos))
    tasks: list[Task] = []
    stream = SCENARIOS.index(name)
    for user in sorted(by_user):
        rng = np.random.default_rng((cfg.seed, stream, user))
        task = _user_task(user, np.asarray(by_user[user], np.int64), cfg, rng)
        if task is not None:
            tasks.append(task)
    group_size = int((existing_users == want_users).sum())
    return tasks, group_size - len(tasks)


def coldstart_split(log: EventLog, cfg: SplitConfig | None = None) -> ColdStartSplit:
    """Split ``log`` into training tasks and the four scenarios' test tasks (see the module docstring)."""
    cfg = cfg or SplitConfig()
    rng = np.random.default_rng(cfg.seed)
    existing_items = existing_items_by_first_appearance(log, cfg.item_fraction)
    existing_users = existing_users_at_random(log.n_users, cfg.user_fraction, rng)
    test_tasks: dict[str, list[Task]] = {}
    skipped: dict[str, int] = {}
    for name in SCENARIOS:
        test_tasks[name], skipped[name] = _scenario_tasks(log, name, existing_users, existing_items, cfg)
    warm = test_tasks["warm"]
    held = rng.permutation(len(warm))[: round(cfg.warm_holdout * len(warm))]
    held_set = set(held.tolist())
    test_tasks["warm"] = [warm[i] for i in sorted(held_set)]
    train = [t for i, t in enumerate(warm) if i not in held_set]
    return ColdStartSplit(existing_items, existing_users, train, test_tasks, skipped)
