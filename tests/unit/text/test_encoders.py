"""Text encoders, the embedding cache and text item features."""

from __future__ import annotations

import numpy as np
import pytest

from models.data.synthetic import generate
from models.features.item_features import ItemDescription, encoder_for, feature_rows, item_text
from models.features.text import (
    EmbeddingCache,
    HashedEncoder,
    embed_texts,
    minilm_available,
    with_text_features,
)


class CountingEncoder(HashedEncoder):
    """The hashed encoder, counting how many texts it was asked to encode."""

    def __init__(self) -> None:
        super().__init__(32)
        self.encoded = 0

    def encode(self, texts):
        self.encoded += len(texts)
        return super().encode(texts)


def test_hashed_vectors_are_deterministic_unit_rows_and_close_for_shared_words() -> None:
    enc = HashedEncoder()
    a, b, c = enc.encode(["jazz saxophone album", "jazz trumpet album", "garden shovel"])
    assert np.allclose(HashedEncoder().encode(["jazz saxophone album"])[0], a)
    assert np.allclose([np.linalg.norm(v) for v in (a, b, c)], 1.0, atol=1e-5)
    assert a @ b > a @ c + 0.2


def test_an_empty_text_has_no_direction() -> None:
    assert not HashedEncoder().encode([""]).any()


def test_embed_texts_encodes_each_distinct_text_once_and_the_disk_cache_survives(tmp_path) -> None:
    enc = CountingEncoder()
    texts = ["a b", "c d", "a b", "e"]
    first = embed_texts(texts, enc, EmbeddingCache(tmp_path, enc.name), batch_size=2)
    assert enc.encoded == 3
    assert np.allclose(first[0], first[2]) and first[0].any()
    again = embed_texts(texts, enc, EmbeddingCache(tmp_path, enc.name))  # a new process reading the shards
    assert enc.encoded == 3
    assert np.allclose(first, again)


def test_text_features_append_or_replace_the_logs_own() -> None:
    log = generate(n_users=20, n_items=30, n_categories=4, mean_events=5, seed=0)
    enc = HashedEncoder(16)
    both = with_text_features(log, enc)
    assert both.item_features.shape == (30, 4 + 16)
    assert both.item_feature_names[:4] == log.item_feature_names
    only = with_text_features(log, enc, replace_features=True)
    assert only.item_features.shape == (30, 16)
    assert all(n.startswith(f"text:{enc.name}:") for n in only.item_feature_names)


def test_feature_rows_fill_text_columns_and_category_flags() -> None:
    names = ["genre:Jazz", "year"] + [f"text:hashed-bow-16:{j}" for j in range(16)]
    item = ItemDescription("x", title="Kind of Blue", categories=("jazz", "unknown-cat"))
    rows = feature_rows([item], names)
    assert rows.shape == (1, 18)
    assert rows[0, 0] == 1.0 and rows[0, 1] == 0.0
    assert np.allclose(rows[0, 2:], HashedEncoder(16).encode([item_text(item)])[0])
    assert item_text(item) == "Kind of Blue | jazz, unknown-cat"


def test_a_model_without_text_features_needs_no_encoder() -> None:
    assert encoder_for(["genre:Jazz", "year"]) is None


@pytest.mark.skipif(not minilm_available(), reason="metarec[text] not installed")
def test_minilm_loads_offline_from_the_package_and_embeds_by_meaning(monkeypatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    from models.features.text import default_encoder

    enc = default_encoder("minilm")
    a, b, c = enc.encode(["jazz saxophone record", "bebop trumpet album", "garden shovel"])
    assert enc.dim == 384 and a.shape == (384,)
    assert a @ b > a @ c + 0.2
