"""The rating model's context features for meta-training tasks: item means as they were before each cut.

A rating model without context learns an item's quality only when it is re-trained, and its item biases are
fitted to every training rating, the tasks' query ratings included: it learns to trust them more than a
served model, whose items keep being rated after it was trained, should. With context features
(``ItemStats.rating_context``: shrunk item means, how little is known, and the user's support residuals
spread to similar items) the stream tells it an item's quality with every rating, and training must then read
each task's features from the ratings seen strictly before its first query event, or the query's own ratings
would leak into its features. As for the implicit
model (``models.training.task_context``), the log is replayed once through an ``ItemStats``, with snapshots every
``SNAPSHOT_EVERY`` events (``models.training.task_context.attach_snapshots``); a task gets the snapshot at or before its cut (tests/unit/models/
test_rating_context.py checks it). The statistics after the whole log go to the trained model.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np

from models.data.events import EVENT_TYPES, EventLog
from models.features.item_stats import ItemStats
from models.features.rating_context import N_RATING_CONTEXT
from models.training.task_context import attach_snapshots

log = logging.getLogger(__name__)


def event_ratings(log_: EventLog) -> np.ndarray:
    """(E,) each event's rating, NaN where it is not a rating event."""
    rated = (log_.types == EVENT_TYPES.index("rating")) & np.isfinite(log_.values)
    return np.where(rated, log_.values.astype(np.float64), np.nan)


def attach_rating_context(log_: EventLog, batches: Sequence, n_items: int) -> tuple[list, ItemStats]:
    """Each task batch with its rating context (B, N, R) float16, and the statistics after the whole log.

    ``log_`` must be sorted by time and its items mapped to the model's catalogue (``n_items`` wide); every
    batch carries ``cut_at`` (B,), the log position of each task's first query event.
    """
    def features(stats: ItemStats, tasks: list[tuple[int, int]]) -> np.ndarray:
        return stats.rating_context([_support(batches[k], row) for k, row in tasks])  # (T, N, R)

    shapes = [(n_items, N_RATING_CONTEXT)] * len(batches)
    return attach_snapshots(log_, batches, n_items, shapes, features, ratings=event_ratings(log_))


def _support(tb, row: int) -> list[tuple[int, float]]:
    """One task's support as (item, rating) pairs: what the user had rated before the cut."""
    mask = tb.sup_mask[row]
    return list(zip(tb.sup_items[row][mask].tolist(), tb.sup_targets[row][mask].tolist()))
