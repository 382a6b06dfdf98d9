"""Write the JSON Schema files that document metarec's topics for producers in any language (and the read API's
OpenAPI document).

The files are generated from the msgspec types in :mod:`schemas.records` and committed, so a diff shows every
schema change in review. ``python -m schemas.export`` rewrites them; ``--check`` exits 1 when the committed
files no longer match the code (CI and a unit test run it).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any

import msgspec

from schemas.read_api import openapi
from schemas.records import DeadLetterHeaders, ItemEvent, Recommendation, UserEvent

log = logging.getLogger(__name__)

SCHEMA_DIR = Path(__file__).resolve().parent

#: file name -> (type, title, description)
SCHEMAS: dict[str, tuple[Any, str, str]] = {
    "user-event.schema.json": (
        UserEvent,
        "metarec user event",
        "A value on the `interactions` topic (key: user_id), tagged on `kind`.",
    ),
    "item-event.schema.json": (
        ItemEvent,
        "metarec item event",
        "A value on the `items` topic (key: item_id).",
    ),
    "recommendation.schema.json": (
        Recommendation,
        "metarec recommendation",
        "A value on the `recommendations` topic (key: user_id).",
    ),
    "dead-letter-headers.schema.json": (
        DeadLetterHeaders,
        "metarec dead-letter headers",
        "The Kafka headers of a record on the `dead-letters` topic (its key and value are the refused message's).",
    ),
}


def render(type_: Any, title: str, description: str) -> str:
    """The JSON Schema of ``type_`` as stable, pretty text (sorted keys, trailing newline)."""
    schema = msgspec.json.schema(type_)
    doc = {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": title,
        "description": description,
    }
    doc.update(schema)
    return json.dumps(doc, indent=2, sort_keys=True) + "\n"


#: file name -> a function returning a whole document (the read API's OpenAPI document)
DOCUMENTS: dict[str, Any] = {"read-api.openapi.json": openapi}


def rendered() -> dict[str, str]:
    """All schema files as they should be, by file name."""
    out = {name: render(*spec) for name, spec in SCHEMAS.items()}
    out.update({name: json.dumps(build(), indent=2, sort_keys=True) + "\n" for name, build in DOCUMENTS.items()})
    return out


def drifted(directory: Path = SCHEMA_DIR) -> list[str]:
    """Names of the schema files in ``directory`` that are missing or differ from the code."""
    out = []
    for name, text in rendered().items():
        path = directory / name
        if not path.is_file() or path.read_text(encoding="utf-8") != text:
            out.append(name)
    return out


def write(directory: Path = SCHEMA_DIR) -> list[Path]:
    """Write every schema file into ``directory``; returns the paths written."""
    paths = []
    for name, text in rendered().items():
        path = directory / name
        path.write_text(text, encoding="utf-8")
        paths.append(path)
    return paths


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m schemas.export", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--check", action="store_true", help="exit 1 if the committed files drift from the code"
    )
    parser.add_argument("--dir", type=Path, default=SCHEMA_DIR, help="where the schema files live")
    args = parser.parse_args(argv)
    if args.check:
        stale = drifted(args.dir)
        if stale:
            sys.stderr.write(
                f"schema files out of date: {', '.join(stale)}; "
                "run `python -m schemas.export` and commit them\n"
            )
            return 1
        return 0
    for path in write(args.dir):
        log.info("wrote %s", path)
    return 0


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    sys.exit(main())
