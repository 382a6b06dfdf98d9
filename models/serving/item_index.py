"""The items a user's adapted taste scores highest: top-k inner products over the catalogue, in bounded time.

A candidate source for retrieve-then-rank (``models.serving.candidates``): w . z_i + bias_i for the adapted taste
vector w. Up to ``BRUTE_MAX`` items one batched matrix product is cheapest; beyond, an inverted-file index
(faiss ``IndexIVFFlat``, inner product) scores only the ``NPROBE`` clusters nearest each query, so the cost per
user stops growing with the catalogue. The index is built when a model version or a grown catalogue is
snapshotted, never on the hot path, and items added later are appended to it.
"""

from __future__ import annotations

import logging
import math

import numpy as np
import torch
from torch import Tensor

log = logging.getLogger(__name__)

BRUTE_MAX = 16384  # items up to which a batched matmul is cheaper than an index
NPROBE = 16  # clusters searched per query
CLUSTERS_PER_SQRT = 4  # nlist = 4 sqrt(N)

try:  # faiss-cpu is a dependency; without it every catalogue is searched by brute force
    import faiss
except ImportError:  # pragma: no cover - exercised only where faiss is missing
    faiss = None


class ItemIndex:
    """Top-k of [w, 1] . [z_i, bias_i] over the catalogue."""

    def __init__(self, vecs: Tensor, bias: Tensor, brute_max: int = BRUTE_MAX) -> None:
        self._vecs, self._bias = vecs, bias  # (N, H), (N,)
        self._ivf = None
        if len(vecs) > brute_max and faiss is not None:
            self._ivf = _build_ivf(_augmented(vecs, bias))
        elif len(vecs) > brute_max:
            log.warning("faiss is not installed: top-k over %d items by brute force", len(vecs))

    @property
    def approximate(self) -> bool:
        return self._ivf is not None

    def top(self, w: Tensor, k: int) -> np.ndarray:
        """(B, k) item indices with the highest w . z_i + bias_i, best first, for tastes w (B, H)."""
        k = min(k, len(self._vecs))
        if k <= 0 or not len(w):
            return np.zeros((len(w), 0), np.int64)
        if self._ivf is None:
            with torch.inference_mode():
                scores = w @ self._vecs.T + self._bias[None, :]  # (B, N)
                return scores.topk(k, dim=1).indices.cpu().numpy()
        queries = torch.cat([w, w.new_ones(len(w), 1)], dim=1).detach().cpu().numpy().astype(np.float32)
        _, ids = self._ivf.search(np.ascontiguousarray(queries), k)
        return ids.astype(np.int64)  # -1 where a probed cluster set held fewer than k items

    def grown(self, vecs: Tensor, bias: Tensor) -> "ItemIndex":
        """An index over ``vecs`` (N', H) whose first N rows are this one's: only the new rows are added."""
        out = ItemIndex.__new__(ItemIndex)
        out._vecs, out._bias, out._ivf = vecs, bias, None
        if self._ivf is not None:
            out._ivf = faiss.clone_index(self._ivf)
            out._ivf.add(_augmented(vecs[len(self._vecs):], bias[len(self._vecs):]))
        elif len(vecs) > BRUTE_MAX and faiss is not None:
            out._ivf = _build_ivf(_augmented(vecs, bias))
        return out


def _augmented(vecs: Tensor, bias: Tensor) -> np.ndarray:
    """(N, H + 1) float32 rows [z_i, bias_i]."""
    return np.ascontiguousarray(torch.cat([vecs, bias[:, None]], dim=1).detach().cpu().numpy(), np.float32)


def _build_ivf(rows: np.ndarray):
    """An IVF-Flat inner-product index over ``rows``, its clusters trained on them."""
    n, d = rows.shape
    nlist = max(1, int(CLUSTERS_PER_SQRT * math.sqrt(n)))
    quantizer = faiss.IndexFlatIP(d)
    index = faiss.IndexIVFFlat(quantizer, d, nlist, faiss.METRIC_INNER_PRODUCT)
    index.train(rows)
    index.add(rows)
    index.nprobe = NPROBE
    return index
