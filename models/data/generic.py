"""A user's own event file as an EventLog: CSV with a header, or JSON lines, plus optional side tables.

Events need ``user``, ``item`` and ``timestamp`` (seconds since the epoch, or an ISO 8601 date-time);
``value`` and ``type`` (one of ``EVENT_TYPES``) are optional. Without a ``type`` column an event is a
``rating`` when the file has a ``value`` column (the usual user,item,rating,timestamp export) and a ``view``
otherwise. The log is explicit when every event is a rating.

Side tables are CSV files found beside the event file (``events.csv`` -> ``events.items.csv``,
``events.users.csv``) or passed explicitly:

- items: ``item`` plus optional ``title`` or ``text`` and ``categories`` ("Drama|Comedy", multi-hot features);
- users: ``user`` plus any columns: numbers become features as they are, other values one-hot
  ``column=value``.

Side-table rows for items or users without events are ignored: the catalogue is what the events name.
"""

from __future__ import annotations

import csv
import json
import math
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterator

import numpy as np

from models.data.events import EVENT_TYPES, EventLog, build_log

REQUIRED = ("user", "item", "timestamp")


class EventFileError(ValueError):
    """The file cannot be read as events; the message names the file, the line and what was expected."""


def _csv_records(path: Path) -> Iterator[tuple[int, dict[str, str]]]:
    with path.open(encoding="utf-8", newline="") as fh:
        reader = csv.DictReader(fh)
        missing = [c for c in REQUIRED if c not in (reader.fieldnames or [])]
        if missing:
            raise EventFileError(f"{path}: header lacks column(s) {', '.join(missing)} "
                                 f"(need {', '.join(REQUIRED)}[,value][,type]; got {reader.fieldnames})")
        for n, row in enumerate(reader, start=2):
            yield n, row


def _jsonl_records(path: Path) -> Iterator[tuple[int, dict[str, object]]]:
    with path.open(encoding="utf-8") as fh:
        for n, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise EventFileError(f"{path}:{n}: not JSON ({exc.msg})") from None
            if not isinstance(row, dict):
                raise EventFileError(f"{path}:{n}: expected a JSON object per line")
            missing = [c for c in REQUIRED if c not in row]
            if missing:
                raise EventFileError(f"{path}:{n}: missing field(s) {', '.join(missing)}")
            yield n, row


def _timestamp(raw: object, where: str) -> float:
    if isinstance(raw, (int, float)) and not isinstance(raw, bool):
        return float(raw)
    text = str(raw).strip()
    try:
        return float(text)
    except ValueError:
        pass
    try:
        stamp = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise EventFileError(f"{where}: timestamp {text!r} is neither seconds nor ISO 8601") from None
    if stamp.tzinfo is None:
        stamp = stamp.replace(tzinfo=timezone.utc)
    return stamp.timestamp()


def _value(raw: object, where: str) -> float:
    if raw is None or raw == "":
        return math.nan
    try:
        return float(raw)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise EventFileError(f"{where}: value {raw!r} is not a number") from None


def load_event_file(
    path: str | Path, *, items_path: str | Path | None = None, users_path: str | Path | None = None
) -> EventLog:
    """Read events (CSV with a header, or ``.jsonl``/``.json`` lines) and the optional side tables."""
    path = Path(path)
    jsonl = path.suffix.lower() in (".jsonl", ".json", ".ndjson")
    records = _jsonl_records(path) if jsonl else _csv_records(path)
    users, items, ts, values, types = [], [], [], [], []
    has_value = False
    for n, row in records:
        where = f"{path}:{n}"
        users.append(str(row["user"]))
        items.append(str(row["item"]))
        ts.append(_timestamp(row["timestamp"], where))
        values.append(_value(row.get("value"), where))
        has_value |= "value" in row
        kind = row.get("type") or None  # an empty cell means: no type given
        if kind is not None and kind not in EVENT_TYPES:
            raise EventFileError(f"{where}: type {kind!r} is not one of {', '.join(EVENT_TYPES)}")
        types.append(kind)
    if not users:
        raise EventFileError(f"{path}: no events")
    default = "rating" if has_value else "view"
    kinds = [k if k is not None else default for k in types]
    events = build_log(users, items, ts, values=values, types=kinds, name=path.stem,
                       explicit=all(k == "rating" for k in kinds))
    _attach_items(events, _side_path(path, "items", items_path))
    _attach_users(events, _side_path(path, "users", users_path))
    return events


def _side_path(path: Path, kind: str, given: str | Path | None) -> Path | None:
    if given is not None:
        if not Path(given).exists():
            raise EventFileError(f"{given}: {kind} table not found")
        return Path(given)
    sibling = path.with_name(f"{path.stem}.{kind}.csv")
    return sibling if sibling.exists() else None


def _table(path: Path, key: str) -> dict[str, dict[str, str]]:
    with path.open(encoding="utf-8", newline="") as fh:
        reader = csv.DictReader(fh)
        if key not in (reader.fieldnames or []):
            raise EventFileError(f"{path}: header lacks column {key!r} (got {reader.fieldnames})")
        return {row[key]: row for row in reader}


def _attach_items(events: EventLog, path: Path | None) -> None:
    """Item text and multi-hot categories, in the log's item index order."""
    if path is None:
        return
    rows = _table(path, "item")
    per_item = [rows.get(i, {}) for i in events.item_ids]
    events.item_text = [(r.get("title") or r.get("text") or "") for r in per_item]
    cats = [[c.strip() for c in (r.get("categories") or "").split("|") if c.strip()] for r in per_item]
    vocab = sorted({c for cs in cats for c in cs})
    if vocab:
        column = {c: j for j, c in enumerate(vocab)}
        features = np.zeros((events.n_items, len(vocab)), np.float32)  # (n_items, C)
        for row, cs in enumerate(cats):
            features[row, [column[c] for c in cs]] = 1.0
        events.item_features, events.item_feature_names = features, [f"category:{c}" for c in vocab]


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _attach_users(events: EventLog, path: Path | None) -> None:
    """Numeric columns as they are, other columns one-hot; users missing from the table get zeros."""
    if path is None:
        return
    rows = _table(path, "user")
    present = [r for u in events.user_ids if (r := rows.get(u))]
    columns = [c for c in (next(iter(rows.values())).keys() if rows else []) if c != "user"]
    names: list[str] = []
    extract = []
    for col in columns:
        cells = [r.get(col) or "" for r in present]
        if cells and all(_is_number(c) for c in cells if c):
            names.append(col)
            extract.append((col, None))
        else:
            for level in sorted({c for c in cells if c}):
                names.append(f"{col}={level}")
                extract.append((col, level))
    features = np.zeros((events.n_users, len(names)), np.float32)  # (n_users, G)
    for u, user in enumerate(events.user_ids):
        row = rows.get(user)
        if row is None:
            continue
        for j, (col, level) in enumerate(extract):
            cell = row.get(col) or ""
            if level is None:
                features[u, j] = float(cell) if cell else 0.0
            else:
                features[u, j] = float(cell == level)
    events.user_features, events.user_feature_names = features, names
