"""The stream run end to end on a small event file: result files, their fixed shape, and the CLI's errors."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from models.eval.metrics import BUCKETS
from models.eval.registry import parse_methods
from models.eval.stream_runner import run_stream
from stream.cli_evaluate import evaluate
from tests.unit.eval.conftest import planted_stream


@pytest.fixture
def event_file(tmp_path: Path) -> Path:
    log = planted_stream(seed=5)
    path = tmp_path / "planted.csv"
    lines = ["user,item,timestamp"]
    lines += [f"{log.user_ids[u]},{log.item_ids[i]},{t}" for u, i, t in zip(log.users, log.items, log.ts)]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_result_files_have_the_fixed_shape(event_file, tmp_path):
    out = tmp_path / "results"
    result = run_stream(event_file, out=out, seed=1, methods=["popularity", "item-knn"], max_events=500)
    saved = json.loads((out / "stream-planted.json").read_text())
    assert saved == result
    assert saved["dataset"] == "planted" and saved["events"] == 500
    assert list(saved["bucket_events"]) == list(BUCKETS)
    assert sum(saved["bucket_events"].values()) == saved["evaluation_points"] == 400
    for block in saved["methods"].values():
        assert list(block) == ["hr@10", "ndcg@10", "mae", "rmse", "mae_on_scale", "rmse_on_scale",
                               "candidate_recall"]
        assert list(block["hr@10"]) == ["all", *BUCKETS] == list(block["ndcg@10"])
        assert block["mae"] is None and block["mae_on_scale"] is None  # implicit data
        assert block["candidate_recall"] is None  # neither retrieves
    assert saved["methods"]["item-knn"]["hr@10"]["all"] > saved["methods"]["popularity"]["hr@10"]["all"]
    assert "| item-knn |" in (out / "stream-planted.md").read_text()
    assert (out / "stream-planted.png").read_bytes()[:4] == b"\x89PNG"


def test_a_seed_fixes_the_result(event_file):
    runs = [run_stream(event_file, out=None, seed=2, methods=["isgd", "popularity"]) for _ in range(2)]
    assert runs[0]["methods"] == runs[1]["methods"]


def test_method_lists_are_validated():
    assert parse_methods("isgd, popularity,isgd") == ["isgd", "popularity"]
    assert "metarec" in parse_methods(None)
    with pytest.raises(ValueError, match="unknown method"):
        parse_methods("isgd,knn")


def invoke(*args: str):
    return CliRunner().invoke(evaluate, list(args))


def test_cli_writes_results(event_file, tmp_path):
    result = invoke("--dataset", str(event_file), "--methods", "popularity", "--out", str(tmp_path / "r"),
                    "--max-events", "200")
    assert result.exit_code == 0, result.output
    assert (tmp_path / "r" / "stream-planted.json").exists()


@pytest.mark.parametrize(("args", "needle"), [
    (("--dataset", "synthetic", "--methods", "knn"), "unknown method"),
    (("--dataset", "/nonexistent/data"), "not found"),
    (("--dataset", "synthetic", "--protocol", "offline"), "--protocol"),
    (("--dataset", "synthetic", "--max-events", "-3"), "--max-events"),
])
def test_cli_bad_arguments_are_usage_errors(args, needle):
    result = invoke(*args)
    assert result.exit_code == 2
    assert needle in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)


def test_cli_bad_event_file_is_a_usage_error(tmp_path):
    path = tmp_path / "bad.csv"
    path.write_text("user,item\na,b\n")
    result = invoke("--dataset", str(path), "--methods", "popularity")
    assert result.exit_code == 2 and "timestamp" in result.output


def test_cli_coldstart_missing_is_one_line(monkeypatch):
    monkeypatch.setitem(sys.modules, "models.eval.coldstart.protocol", None)  # as if not built yet
    result = invoke("--dataset", "synthetic", "--protocol", "coldstart")
    assert result.exit_code == 2
    assert "coldstart is not available" in result.output
