"""SASRec as a stream method: trained on the warm-up, re-trained on the stream's past on metarec's schedule.

The first fit trains ``epochs`` passes from scratch; every ``retrain_period`` learned events the network is
re-trained for ``refit_epochs`` passes over every user's sequence so far, warm-started from the previous fit
(the same network, a fresh Adam). Between fits the weights are frozen and a user's list depends only on their
own items, so a chunk is ranked in one batched forward (``BatchRanker``), each query bringing its pending
events. A user without items gets the position popularity, whose counts are brought up to date every
``STATS_EVERY`` learned events (as metarec's item statistics are). CPU only, one torch thread while serving;
fit times and epochs are kept in ``notes``.
"""

from __future__ import annotations

import logging
import math
import time
from typing import Any, Sequence

import numpy as np
import torch

from models.data.events import EventLog
from models.eval.methods import Query, retrain_period, top_k
from models.eval.peers.position_popularity import DEFAULT, PositionCounts
from models.eval.peers.sasrec_net import SASRecConfig, SASRecNet, train_epochs

log = logging.getLogger(__name__)

STATS_EVERY = 32
# Dropout 0.2 as the paper's MovieLens setting; two blocks and lr 3e-3 won on ML-100K's validation part
# when 1 or 2 blocks and 1e-3 or 3e-3 were tried (seed 0), so only the epochs are chosen now: a refit cost
# up to 15 minutes on the shared 2-core machine; each is warm-started, so 2 epochs a refit (refit_epochs).
GRID: tuple[dict[str, Any], ...] = tuple(
    {"blocks": 2, "lr": 3e-3, "epochs": epochs, "refit_epochs": 2} for epochs in (20, 40)
)


class SASRec:
    """SASRec (d = 64, max length 50) re-trained along the stream, with the position fallback."""

    name = "sasrec"

    def __init__(self, seed: int = 0, blocks: int = 2, dropout: float = 0.2, epochs: int = 40,
                 refit_epochs: int | None = None, dim: int = 64, max_len: int = 50, lr: float = 1e-3,
                 retrain_every: int | None = None, fallback: dict[str, Any] | None = None) -> None:
        self.seed, self.epochs, self.lr, self.retrain_every = seed, epochs, lr, retrain_every
        self.refit_epochs = max(1, epochs // 4) if refit_epochs is None else refit_epochs
        self.shape = {"blocks": blocks, "dropout": dropout, "dim": dim, "max_len": max_len}
        self.fallback_settings = dict(fallback or DEFAULT)
        self.notes: dict[str, Any] = {"fits": 0, "epochs": [], "fit_seconds": [], "last_loss": None}

    def fit_prefix(self, log_: EventLog) -> None:
        self.n_items = log_.n_items
        self.priority = np.random.default_rng(self.seed).random(self.n_items)  # (N,) tie-break order
        self.fallback = PositionCounts(self.n_items, **self.fallback_settings)
        self.sequences: dict[int, list[int]] = {}
        self.has: set[tuple[int, int]] = set()
        for u, i, ts in zip(log_.users.tolist(), log_.items.tolist(), log_.ts.tolist()):
            self._remember(u, i)
            self.fallback.learn(u, i, ts)
        self.unobserved: list[tuple[int, int, float]] = []
        self.period, self.since = retrain_period(len(log_), self.retrain_every), 0
        with torch.random.fork_rng():
            torch.manual_seed(self.seed)
            self.net = SASRecNet(SASRecConfig(self.n_items, **self.shape))
        self._fit(self.epochs)

    def _remember(self, user: int, item: int) -> None:
        if (user, item) not in self.has:  # a sequence of distinct items, as the protocol scores them
            self.has.add((user, item))
            self.sequences.setdefault(user, []).append(item)

    def _fit(self, epochs: int) -> None:
        began = time.perf_counter()
        with _threads(1):
            loss = train_epochs(self.net, list(self.sequences.values()), epochs,
                                seed=self.seed * 1000 + self.notes["fits"], lr=self.lr)
        self.notes["fits"] += 1
        self.notes["epochs"].append(epochs)
        self.notes["fit_seconds"].append(round(time.perf_counter() - began, 2))
        self.notes["last_loss"] = None if math.isnan(loss) else round(loss, 4)
        log.debug("sasrec: fit %d, %d epochs, loss %.4f", self.notes["fits"], epochs, loss)

    # --- the stream -----------------------------------------------------------------------------------------
    def learn(self, user: int, item: int, value: float, type_code: int, ts: float) -> None:
        self._remember(user, item)
        self.unobserved.append((user, item, ts))
        if len(self.unobserved) >= STATS_EVERY:
            self._observe()
        self.since += 1
        if self.since >= self.period:
            self.since = 0
            self._observe()
            self._fit(self.refit_epochs)

    def _observe(self) -> None:
        for user, item, ts in self.unobserved:
            self.fallback.learn(user, item, ts)
        self.unobserved = []

    def events_until_refresh(self) -> int | None:
        return min(self.period - self.since, STATS_EVERY - len(self.unobserved))

    # --- serving --------------------------------------------------------------------------------------------
    def _sequence(self, query: Query) -> list[int]:
        seq = list(self.sequences.get(query.user, []))
        for p in query.pending:
            if p.item not in seq:
                seq.append(p.item)
        return seq[-self.net.cfg.max_len:]

    def rank_many(self, queries: Sequence[Query], k: int) -> list[list[int]]:
        seqs = [self._sequence(q) for q in queries]
        warm = [n for n, s in enumerate(seqs) if s]
        out: list[list[int]] = [[] for _ in queries]
        if warm:
            length = self.net.cfg.max_len
            batch = np.zeros((len(warm), length), np.int64)  # (B, L) left-padded, item + 1
            for row, n in enumerate(warm):
                batch[row, length - len(seqs[n]):] = np.asarray(seqs[n]) + 1
            with _threads(1), torch.no_grad():
                scores = self.net.last_scores(torch.from_numpy(batch)).numpy()  # (B, N)
            for row, n in enumerate(warm):
                out[n] = top_k(scores[row], k, queries[n].exclude, self.priority)
        for n, seq in enumerate(seqs):
            if not seq:  # no items at all: what users take first
                out[n] = top_k(self.fallback.scores(0), k, queries[n].exclude, self.priority)
        return out

    def predict_many(self, queries: Sequence[Query], items: Sequence[int]) -> list[float | None]:
        return [None] * len(queries)

    def rank(self, user: int, k: int, exclude: set[int]) -> list[int]:
        return self.rank_many([Query(user, exclude)], k)[0]

    def predict_rating(self, user: int, item: int) -> float | None:
        return None


class _threads:
    """Run with ``n`` torch threads, then restore the previous setting (tiny tensors: one thread is fastest
    on a shared CPU, as for metarec)."""

    def __init__(self, n: int) -> None:
        self.n = n

    def __enter__(self) -> None:
        self.previous = torch.get_num_threads()
        torch.set_num_threads(self.n)

    def __exit__(self, *exc: object) -> None:
        torch.set_num_threads(self.previous)
