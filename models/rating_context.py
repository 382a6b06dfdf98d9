"""The rating model's context features for meta-training tasks: item means as they were before each cut.

A rating model without context learns an item's quality only when it is re-trained, and its item biases are
fitted to every training rating, the tasks' query ratings included: it learns to trust them more than a
served model, whose items keep being rated after it was trained, should. With context features
(``ItemStats.rating_context``: shrunk item means, how little is known, and the user's support residuals
spread to similar items) the stream tells it an item's quality with every rating, and training must then read
each task's features from the ratings seen strictly before its first query event, or the query's own ratings
would leak into its features. As for the implicit
model (``models.task_context``), the log is replayed once through an ``ItemStats``, with snapshots every
``SNAPSHOT_EVERY`` events; a task gets the snapshot at or before its cut (tests/unit/models/
test_rating_context.py checks it). The statistics after the whole log go to the trained model.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import replace
from itertools import groupby

import numpy as np
import torch

from models.data.events import EVENT_TYPES, EventLog
from models.item_stats import N_RATING_CONTEXT, ItemStats
from models.task_context import SNAPSHOT_EVERY

log = logging.getLogger(__name__)


def event_ratings(log_: EventLog) -> np.ndarray:
    """(E,) each event's rating, NaN where it is not a rating event."""
    rated = (log_.types == EVENT_TYPES.index("rating")) & np.isfinite(log_.values)
    return np.where(rated, log_.values.astype(np.float64), np.nan)


def replay_ratings(log_: EventLog, upto: int | None, stats: ItemStats, ratings: np.ndarray) -> ItemStats:
    """``stats`` after observing the first ``upto`` events of the time-sorted ``log_``, ratings included."""
    end = len(log_) if upto is None else upto
    begin = stats.events
    users = [log_.user_ids[u] for u in log_.users[begin:end].tolist()]
    stats.observe(users, log_.items[begin:end].tolist(), log_.ts[begin:end].tolist(),
                  ratings[begin:end].tolist())
    return stats


def attach_rating_context(log_: EventLog, batches: Sequence, n_items: int) -> tuple[list, ItemStats]:
    """Each task batch with its rating context (B, N, R) float16, and the statistics after the whole log.

    ``log_`` must be sorted by time and its items mapped to the model's catalogue (``n_items`` wide); every
    batch carries ``cut_at`` (B,), the log position of each task's first query event.
    """
    ratings = event_ratings(log_)
    entries = sorted((int(cut), k, row) for k, tb in enumerate(batches) for row, cut in enumerate(tb.cut_at))
    contexts = [np.zeros((tb.sup_items.shape[0], n_items, N_RATING_CONTEXT), np.float16) for tb in batches]
    stats = ItemStats(n_items)
    for snapshot, group in groupby(entries, key=lambda e: e[0] - e[0] % SNAPSHOT_EVERY):
        replay_ratings(log_, snapshot, stats, ratings)  # events [0, snapshot): before every cut in the group
        tasks = [(k, row) for _, k, row in group]
        supports = [_support(batches[k], row) for k, row in tasks]
        feats = stats.rating_context(supports)  # (T, N, R)
        for (k, row), f in zip(tasks, feats):
            contexts[k][row] = f
    replay_ratings(log_, None, stats, ratings)
    out = [replace(tb, context=torch.from_numpy(ctx)) for tb, ctx in zip(batches, contexts)]
    return out, stats


def _support(tb, row: int) -> list[tuple[int, float]]:
    """One task's support as (item, rating) pairs: what the user had rated before the cut."""
    mask = tb.sup_mask[row]
    return list(zip(tb.sup_items[row][mask].tolist(), tb.sup_targets[row][mask].tolist()))
