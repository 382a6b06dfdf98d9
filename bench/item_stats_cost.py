"""What the item statistics behind the context features cost the worker: CPU per observed event, memory per user.

The worker counts every new interaction into ``models.features.item_stats.ItemStats`` on its event loop
(``stream/handler.py``). This replays the throughput bench's workload shape (250k events, ~55k active users,
1,000 items) through ``ItemStats.observe`` alone, timing it and measuring its Python allocations (tracemalloc).

    .venv/bin/python -m bench.item_stats_cost   # writes bench/results/item-stats.json
"""

from __future__ import annotations

import logging
import time
import tracemalloc

import numpy as np

from bench.common import RESULTS, machine_info, write_results
from models.features.item_stats import ItemStats

log = logging.getLogger("bench.item_stats_cost")


def main(events: int = 250_000, users: int = 55_000, items: int = 1000, seed: int = 0) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    rng = np.random.default_rng(seed)
    user_ids = [f"user-{u}" for u in rng.integers(0, users, events)]
    item_ids = rng.integers(0, items, events).tolist()
    ts = np.sort(rng.uniform(0, 86_400, events)).tolist()
    timed = ItemStats(items)  # timed without tracemalloc, which slows allocation down
    started = time.perf_counter()
    timed.observe(user_ids, item_ids, ts)
    seconds = time.perf_counter() - started
    del timed
    tracemalloc.start()
    stats = ItemStats(items)
    stats.observe(user_ids, item_ids, ts)
    current, _peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    n_users = len(stats.history)
    out = {
        "machine": machine_info(),
        "events": events,
        "users": n_users,
        "items": items,
        "us_per_event": round(seconds / events * 1e6, 1),
        "bytes_per_user": round(current / n_users),
        "mib_per_100k_users": round(current / n_users * 100_000 / 2**20, 1),
    }
    log.info("%s", {k: v for k, v in out.items() if k != "machine"})
    write_results(RESULTS / "item-stats.json", out)


if __name__ == "__main__":
    main()
