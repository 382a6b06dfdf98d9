"""Turning produce times and downstream arrivals into latencies, and a RocksDB folder into bytes per user.

An event is served by the first recommendation for its user whose trigger is that event or a later one (a
micro-batch coalesces a user's events into one refresh, triggered by the latest), so a coalesced event's
latency runs until that refresh arrives: nothing is credited with a list computed before it was applied.
"""

from __future__ import annotations

import bisect
from collections import defaultdict
from pathlib import Path
from typing import Sequence

import numpy as np

from bench.kafka_tools import Arrivals


def event_latencies_ms(
    event_ids: Sequence[str],
    users: Sequence[str],
    produced_at: np.ndarray,  # (E,) wall-clock produce time per event, seconds
    arrivals: Arrivals,
) -> tuple[np.ndarray, int]:
    """Per event (in order), milliseconds from produce to its serving recommendation; NaN if never served.

    Also returns how many recommendations among ``arrivals`` were triggered by these events.
    """
    position = {e: i for i, e in enumerate(event_ids)}
    recs: dict[str, list[tuple[int, float]]] = defaultdict(list)  # user -> (trigger position, arrival)
    for t, user, event in zip(arrivals.times, arrivals.users, arrivals.events):
        pos = position.get(event)
        if pos is not None:
            recs[user].append((pos, t))
    served = sum(len(v) for v in recs.values())
    first_after: dict[str, tuple[list[int], list[float]]] = {}
    for user, got in recs.items():
        got.sort()
        positions = [p for p, _ in got]
        suffix_min = [t for _, t in got]
        for j in range(len(suffix_min) - 2, -1, -1):
            suffix_min[j] = min(suffix_min[j], suffix_min[j + 1])
        first_after[user] = (positions, suffix_min)
    out = np.full(len(event_ids), np.nan)
    for i, user in enumerate(users):
        found = first_after.get(user)
        if found is None:
            continue
        positions, suffix_min = found
        j = bisect.bisect_left(positions, i)
        if j < len(positions):
            out[i] = (suffix_min[j] - produced_at[i]) * 1000.0
    return out, served


def last_event_per_user(event_ids: Sequence[str], users: Sequence[str]) -> dict[str, str]:
    """Each user's last event id: once a recommendation for each has arrived, every event was served."""
    return dict(zip(users, event_ids))


def rocksdb_footprint(data_dir: Path) -> dict[str, int]:
    """Users, live key+value bytes, and on-disk bytes after a full compaction of a stopped worker's tables."""
    from rocksdict import Options, Rdict

    users = live = 0
    for db_path in sorted(data_dir.rglob("users-*.db")):
        db = Rdict(str(db_path), options=Options(raw_mode=True))
        try:
            for key, value in db.items():
                users += 1
                live += len(key) + len(value)
            db.flush(True)
            db.compact_range(None, None)
        finally:
            db.close()
    disk = sum(p.stat().st_size for p in data_dir.rglob("*") if p.is_file())
    return {"users": users, "live_bytes": live, "disk_bytes_compacted": disk}
