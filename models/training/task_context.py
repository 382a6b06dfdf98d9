"""Context features for meta-training tasks, from item statistics as they were before each task's query.

A task cut at event g of the time-ordered log must not see what happened from g on: its query events (and
every later event of any user) would leak into the popularity and co-occurrence features it is scored with.
So the trainer draws a bank of task batches first, then replays the log once through an ``ItemStats``, taking
snapshots every ``SNAPSHOT_EVERY`` events; a task gets the features of the last snapshot at or before its cut,
so its statistics stop strictly before its first query event (tests/unit/models/test_task_context.py checks
it). The statistics after the whole log go to the trained model, to serve from.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from itertools import groupby
from typing import Callable, Sequence

import numpy as np
import torch

from models.data.events import EventLog
from models.features.context import N_CONTEXT
from models.features.item_stats import ItemStats

log = logging.getLogger(__name__)

SNAPSHOT_EVERY = 64  # events between snapshots: features may lag a cut by this much (the worker's batches do too)
BANK_BYTES = 2e8  # the most memory the bank's float16 context features may take


def bank_batches(n_items: int, batch: int, steps: int, most: int = 64) -> int:
    """How many task batches to draw for ``steps`` outer steps: each used about three times, within memory.

    ``n_items``: how many items' features a task keeps (``models.training.implicit_loss.context_width``)."""
    fits = int(BANK_BYTES // max(1, batch * n_items * N_CONTEXT * 2))
    return max(1, min(most, -(-steps // 3), fits))


def replay_stats(log_: EventLog, upto: int | None = None, stats: ItemStats | None = None,
                 ratings: np.ndarray | None = None) -> ItemStats:
    """``stats`` (a new one by default) after observing the first ``upto`` events of the time-sorted ``log_``;
    ``ratings`` (E,) (NaN: not a rating) also feed the item means (``models.training.task_rating_context``)."""
    stats = stats or ItemStats(log_.n_items)
    begin, end = stats.events, len(log_) if upto is None else upto
    users = [log_.user_ids[u] for u in log_.users[begin:end].tolist()]
    stats.observe(users, log_.items[begin:end].tolist(), log_.ts[begin:end].tolist(),
                  None if ratings is None else ratings[begin:end].tolist())
    return stats


def attach_snapshots(log_: EventLog, batches: Sequence, n_items: int, shapes: Sequence[tuple[int, int]],
                     features: Callable[[ItemStats, list[tuple[int, int]]], Sequence[np.ndarray]],
                     ratings: np.ndarray | None = None) -> tuple[list, ItemStats]:
    """The replay both kinds of context share: each batch's tasks get ``features(stats, [(batch, row)])`` of
    the last snapshot at or before their cut, as float16 ``shapes[batch]`` (width, features) per task; the
    statistics after the whole log come back with the batches."""
    entries = sorted((int(cut), k, row) for k, tb in enumerate(batches) for row, cut in enumerate(tb.cut_at))
    contexts = [np.zeros((tb.sup_items.shape[0], *shape), np.float16) for tb, shape in zip(batches, shapes)]
    stats = ItemStats(n_items)
    for snapshot, group in groupby(entries, key=lambda e: e[0] - e[0] % SNAPSHOT_EVERY):
        replay_stats(log_, snapshot, stats, ratings)  # events [0, snapshot): all before every cut in the group
        tasks = [(k, row) for _, k, row in group]
        for (k, row), f in zip(tasks, features(stats, tasks)):
            contexts[k][row] = f
    replay_stats(log_, None, stats, ratings)
    out = [replace(tb, context=torch.from_numpy(ctx)) for tb, ctx in zip(batches, contexts)]
    return out, stats


def attach_context(log_: EventLog, batches: Sequence, n_items: int) -> tuple[list, ItemStats]:
    """Each task batch with its context features (B, N, C) float16, and the statistics after the whole log.

    ``log_`` must be sorted by time and its items mapped to the model's catalogue (``n_items`` wide); every
    batch carries ``cut_at`` (B,), the log position of each task's first query event. A batch with
    ``candidates`` (a sample of a large catalogue, ``models.training.implicit_loss``) keeps only the features of the
    items ``context_items`` names: (B, S + Q + M, C).
    """
    keep = [context_items(tb) for tb in batches]
    seen = [_seen_lists(tb) for tb in batches]

    def features(stats: ItemStats, tasks: list[tuple[int, int]]) -> list[np.ndarray]:
        recent = [batches[k].sup_items[row][batches[k].sup_mask[row]].tolist() for k, row in tasks]
        users = [log_.user_ids[int(batches[k].users[row])] for k, row in tasks]  # ``replay_stats``'s keys
        feats = stats.context([seen[k][row] for k, row in tasks], recent, users, recent)  # (T, N, C)
        return [f if keep[k] is None else f[keep[k][row]] for (k, row), f in zip(tasks, feats)]

    shapes = [(n_items if items is None else items.shape[1], N_CONTEXT) for items in keep]
    return attach_snapshots(log_, batches, n_items, shapes, features)


def context_items(tb) -> np.ndarray | None:
    """The items whose features a task batch keeps, per task: all (None), or for a batch with ``candidates``
    its support items, query items, then the candidates (B, S + Q + M), padding included."""
    if getattr(tb, "candidates", None) is None:
        return None
    cand = np.broadcast_to(tb.candidates.numpy(), (tb.sup_items.shape[0], len(tb.candidates)))
    return np.concatenate([tb.sup_items.numpy(), tb.qry_items.numpy(), cand], axis=1)


def _seen_lists(tb) -> list[list[int]]:
    """The items each task's user had before its cut, from the batch's (row, item) pairs."""
    rows: list[list[int]] = [[] for _ in range(tb.sup_items.shape[0])]
    for row, item in zip(tb.seen[0].tolist(), tb.seen[1].tolist()):
        rows[row].append(item)
    return rows
