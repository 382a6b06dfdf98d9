"""The worker's item catalogue on disk: one RocksDB (rocksdict) store under the data dir.

Why rocksdict and not a Faust table: every worker must know every item (any user may be recommended any item),
while a Faust table is partitioned by the consumer group's assignment; a GlobalTable would replicate, but only
its changelog, not the position in the ``items`` topic that the rows were computed from. Here the item rows
and the next offset of every ``items`` partition are written in ONE WriteBatch, so after a crash the store and
the position agree: a restart loads the catalogue from disk and resumes reading, without re-embedding anything
or skipping an item.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Iterable, Iterator

import msgspec
import numpy as np
from rocksdict import Options, Rdict, WriteBatch

log = logging.getLogger(__name__)

OFFSETS_KEY = b"\x00offsets"  # not a valid item key: item keys are b"i:" + item id
_ITEM_PREFIX = b"i:"


class StoredItem(msgspec.Struct, frozen=True):
    """One catalogue item as last described on the ``items`` topic, with the feature row computed for it."""

    item_id: str
    event_id: str
    ts: float
    title: str
    text: str
    categories: list[str]
    feature_space: str  # which feature layout ``features`` follows (see ``feature_space``)
    features: bytes  # float32 row, little-endian
    available: bool = True  # false: never recommended (``available`` on the item's events)

    def row(self) -> np.ndarray:
        return np.frombuffer(self.features, dtype="<f4").copy()


_encoder = msgspec.msgpack.Encoder()
_item_decoder = msgspec.msgpack.Decoder(StoredItem)
_offsets_decoder = msgspec.msgpack.Decoder(dict[int, int])


def feature_space(feature_names: Iterable[str]) -> str:
    """A short fingerprint of a feature layout: rows are only reused by a model with the same layout."""
    import hashlib

    return hashlib.sha1("\n".join(feature_names).encode()).hexdigest()[:16]


class ItemStore:
    """Items by id plus the ``items`` topic offsets they reflect; opened by one worker at a time."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = Rdict(str(self.path), options=Options(raw_mode=True))

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> "ItemStore":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def offsets(self) -> dict[int, int]:
        """Next offset to read per partition (partitions never read are absent)."""
        raw = self._db.get(OFFSETS_KEY)
        return {} if raw is None else _offsets_decoder.decode(raw)

    def get(self, item_id: str) -> StoredItem | None:
        raw = self._db.get(_ITEM_PREFIX + item_id.encode())
        return None if raw is None else _item_decoder.decode(raw)

    def items(self) -> Iterator[StoredItem]:
        """Every stored item (key order)."""
        for key, value in self._db.items(from_key=_ITEM_PREFIX):
            if not bytes(key).startswith(_ITEM_PREFIX):
                break
            yield _item_decoder.decode(value)

    def unavailable(self) -> list[str]:
        """The ids of the stored items that may not be recommended now."""
        return [item.item_id for item in self.items() if not item.available]

    def put_many(self, items: Iterable[StoredItem], offsets: dict[int, int]) -> None:
        """Write the items and the new offsets atomically (offsets merge with those of other partitions)."""
        merged = {**self.offsets(), **offsets}
        batch = WriteBatch(raw_mode=True)
        for item in items:
            batch.put(_ITEM_PREFIX + item.item_id.encode(), _encoder.encode(item))
        batch.put(OFFSETS_KEY, _encoder.encode(merged))
        self._db.write(batch)
