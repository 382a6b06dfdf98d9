"""The committed JSON Schema files must match the code; --check must notice when they do not."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from schemas import export


def test_committed_schema_files_match_the_code() -> None:
    assert export.drifted() == [], "run `python -m schemas.export` and commit the schema files"


def test_check_fails_on_drift_and_passes_after_write(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert export.main(["--check", "--dir", str(tmp_path)]) == 1
    assert "out of date" in capsys.readouterr().err
    assert export.main(["--dir", str(tmp_path)]) == 0
    assert export.main(["--check", "--dir", str(tmp_path)]) == 0
    target = tmp_path / "item-event.schema.json"
    target.write_text(target.read_text().replace("maxLength", "maxLen"))
    assert export.main(["--check", "--dir", str(tmp_path)]) == 1


def test_user_event_schema_documents_the_union_and_bounds() -> None:
    doc = json.loads(export.rendered()["user-event.schema.json"])
    assert doc["discriminator"]["propertyName"] == "kind"
    assert set(doc["discriminator"]["mapping"]) == {"interaction", "impression", "user", "delete"}
    ts = doc["$defs"]["Interaction"]["properties"]["ts"]
    assert ts["minimum"] == 631152000.0 and ts["maximum"] == 4102444800.0


def test_the_dead_letter_headers_schema_lists_every_reason_the_worker_gives() -> None:
    from schemas.decode import REASONS

    doc = json.loads(export.rendered()["dead-letter-headers.schema.json"])
    reason = doc["$defs"]["DeadLetterHeaders"]["properties"]["metarec-reason"]
    assert set(reason["enum"]) == set(REASONS) and "model_error" in REASONS
