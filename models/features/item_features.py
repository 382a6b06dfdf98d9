"""A catalogue item described by text and categories -> the feature row a trained model expects.

A model's item features are named (``models.core.checkpoint`` keeps the names): ``text:<encoder>:<j>`` columns hold
a text vector, other names are categories (``genre:Action``, ``tag:rock``, or a bare word such as ``jazz`` in
the synthetic data), and anything else (``year``, ...) is left at 0. The offline loaders and the stream's item
path both build rows through :func:`feature_rows`, so a brand-new item is placed the way training saw items.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from models.features.text import EmbeddingCache, HashedEncoder, TextEncoder, default_encoder, embed_texts

_TEXT = re.compile(r"^text:(?P<encoder>.+):(?P<j>\d+)$")


@dataclass(frozen=True)
class ItemDescription:
    """What the catalogue says about one item."""

    item_id: str
    title: str = ""
    text: str = ""
    categories: tuple[str, ...] = ()


def item_text(item: ItemDescription) -> str:
    """The text that is embedded, in the loaders' shape: "title | category, category | description"."""
    parts = [item.title or item.item_id]
    if item.categories:
        parts.append(", ".join(item.categories))
    if item.text:
        parts.append(item.text)
    return " | ".join(parts)


def text_encoder_name(feature_names: Sequence[str]) -> str | None:
    """The encoder whose vectors the model's ``text:`` columns hold, or None if it has no text features."""
    for name in feature_names:
        match = _TEXT.match(name)
        if match:
            return match.group("encoder")
    return None


def encoder_for(feature_names: Sequence[str]) -> TextEncoder | None:
    """The encoder that made the model's text columns (MiniLM or the hashed fallback of that width)."""
    name = text_encoder_name(feature_names)
    if name is None:
        return None
    if name.startswith("hashed-bow-"):
        return HashedEncoder(int(name.rsplit("-", 1)[1]))
    encoder = default_encoder("minilm")
    if encoder.name != name:
        raise ValueError(f"the model's text features come from {name!r}, which is not available here")
    return encoder


def _category_columns(feature_names: Sequence[str]) -> dict[str, int]:
    """Lower-cased category name -> column, for every non-text, non-numeric feature name."""
    columns: dict[str, int] = {}
    for j, name in enumerate(feature_names):
        if _TEXT.match(name) or name == "year":
            continue
        columns[name.split(":", 1)[-1].lower()] = j
    return columns


def feature_rows(
    items: Sequence[ItemDescription],
    feature_names: Sequence[str],
    encoder: TextEncoder | None = None,
    cache: EmbeddingCache | None = None,
) -> np.ndarray:
    """(M, F) float32 rows in the model's feature layout: text vectors, category flags, zeros elsewhere."""
    rows = np.zeros((len(items), len(feature_names)), np.float32)  # (M, F)
    text_cols = [j for j, n in enumerate(feature_names) if _TEXT.match(n)]
    if text_cols and items:
        encoder = encoder or encoder_for(feature_names)
        assert encoder is not None
        if encoder.dim != len(text_cols):
            raise ValueError(
                f"the model has {len(text_cols)} text columns, encoder {encoder.name} gives {encoder.dim}"
            )
        rows[:, text_cols] = embed_texts([item_text(i) for i in items], encoder, cache)  # (M, D)
    columns = _category_columns(feature_names)
    for m, item in enumerate(items):
        for category in item.categories:
            j = columns.get(category.lower())
            if j is not None:
                rows[m, j] = 1.0
    return rows
