"""A small synthetic explicit log whose item first-appearance order is known."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest

from models.data.events import EventLog, build_log


@pytest.fixture
def make_ratings_log() -> Callable[..., EventLog]:
    """Factory: ``n_users`` users rating ``per_user`` distinct items out of ``n_items``.

    Item ``i`` (id ``"i{i}"``) is first rated at time ``i`` exactly (every later rating is later), so the
    earliest items by first appearance are the low ids, whatever the dense index order.
    """

    def make(n_users: int = 60, n_items: int = 50, per_user: int = 30, seed: int = 0) -> EventLog:
        rng = np.random.default_rng(seed)
        users, items, ts, values = [], [], [], []
        for u in range(n_users):
            for i in rng.choice(n_items, size=per_user, replace=False):
                users.append(f"u{u}")
                items.append(f"i{i}")
                ts.append(1000.0 + float(rng.integers(0, 10_000)))
                values.append(float(rng.integers(1, 6)))
        order = rng.permutation(len(users))  # file order unrelated to time
        users, items = [users[k] for k in order], [items[k] for k in order]
        ts_arr, vals = np.asarray(ts)[order], np.asarray(values)[order]
        seen: set[str] = set()
        for k in np.argsort(ts_arr, kind="stable"):  # stamp each item's first rating with its number
            if items[k] not in seen:
                seen.add(items[k])
                ts_arr[k] = float(items[k][1:])
        log = build_log(users, items, ts_arr, vals, ["rating"] * len(users), name="tiny", explicit=True)
        n = log.n_items
        genre = np.zeros((n, 3), np.float32)
        genre[np.arange(n), np.arange(n) % 3] = 1.0
        genre[::4, (np.arange(n)[::4] + 1) % 3] = 1.0  # some items have two genres
        log.item_features = np.concatenate([genre, rng.random((n, 1), np.float32)], axis=1)
        log.item_feature_names = ["genre:a", "genre:b", "genre:c", "year"]
        g = np.zeros((log.n_users, 3), np.float32)
        g[np.arange(log.n_users), np.arange(log.n_users) % 2 + 1] = 1.0
        g[:, 0] = rng.random(log.n_users)
        log.user_features, log.user_feature_names = g, ["age", "gender:F", "gender:M"]
        return log

    return make
