"""Categorical fields for MeLU, recovered from an EventLog's dense side-feature tables by their column names.

MeLU embeds one 32-d vector per field. The loaders store fields as columns named ``prefix:value`` (one-hot or
multi-hot groups) or as bare names (scaled numbers such as ``year`` and ``age``), so:

* a ``prefix:`` group whose rows hold at most one 1 is a categorical field (code = the hot column, or a final
  "none" code for an all-zero row): gender, occupation, zip prefix;
* a ``prefix:`` group with several 1s in some row is a multi-hot field, embedded as the mean of its values'
  vectors, as MeLU does for genres: genres, Last.fm tags;
* a bare column is cut into ``bins`` equal-width buckets over its range, each bucket a category: year, age.

A side without features gets one constant field, so the network still has an input there.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class FieldTable:
    """One side's fields: integer codes per categorical field, a matrix per multi-hot field."""

    names: list[str]  # field names, categorical ones first
    codes: np.ndarray  # (N, C) int64, one column per categorical field
    vocab: list[int]  # (C,) number of codes per categorical field
    multi: list[np.ndarray]  # each (N, V) float32 multi-hot

    @property
    def n_fields(self) -> int:
        return len(self.vocab) + len(self.multi)


def _groups(names: list[str]) -> dict[str, list[int]]:
    """Column indices per field: ``prefix`` for ``prefix:value`` columns, the bare name otherwise."""
    groups: dict[str, list[int]] = {}
    for j, name in enumerate(names):
        groups.setdefault(name.split(":", 1)[0], []).append(j)
    return groups


def _bucket(column: np.ndarray, bins: int) -> np.ndarray:
    lo, hi = float(np.min(column)), float(np.max(column))
    if hi <= lo:
        return np.zeros(len(column), np.int64)
    return np.minimum(((column - lo) / (hi - lo) * bins).astype(np.int64), bins - 1)


def field_table(features: np.ndarray | None, names: list[str], n_rows: int, bins: int = 10) -> FieldTable:
    """The fields of one side table (see the module docstring); ``n_rows`` sizes the constant fallback."""
    if features is None or features.shape[1] == 0:
        return FieldTable(["constant"], np.zeros((n_rows, 1), np.int64), [1], [])
    cat_names, codes, vocab, multi_names, multi = [], [], [], [], []
    for field, cols in _groups(names).items():
        block = features[:, cols]  # (N, len(cols))
        if len(cols) == 1 and ":" not in names[cols[0]]:
            cat_names.append(field)
            codes.append(_bucket(block[:, 0], bins))
            vocab.append(bins)
        elif block.sum(axis=1).max() <= 1.0:
            hot = np.where(block.sum(axis=1) > 0, block.argmax(axis=1), len(cols))
            cat_names.append(field)
            codes.append(hot.astype(np.int64))
            vocab.append(len(cols) + 1)
        else:
            multi_names.append(field)
            multi.append(block.astype(np.float32))
    stacked = np.stack(codes, axis=1) if codes else np.zeros((features.shape[0], 0), np.int64)
    return FieldTable(cat_names + multi_names, stacked, vocab, multi)
