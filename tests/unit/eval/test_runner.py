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
    assert "metarec" in parse_methods(None) and "metarec-full" not in parse_methods(None)
    assert parse_methods("metarec-full") == ["metarec-full"]  # an ablation runs when named
    with pytest.raises(ValueError, match="unknown method"):
        parse_methods("isgd,knn")


def invoke(*args: str):
    return CliRunner().invoke(evaluate, list(args))


def test_cli_writes_results(event_file, tmp_path):
    result = invoke("--dataset", str(event_file), "--methods", "popularity", "--out", str(tmp_path / "r"),
                    "--max-events", "200", "--note", "EASE left out: too slow")
    assert result.exit_code == 0, result.output
    written = json.loads((tmp_path / "r" / "stream-planted.json").read_text())
    assert written["note"] == "EASE left out: too slow"
    assert "Note: EASE left out: too slow" in (tmp_path / "r" / "stream-planted.md").read_text()


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


def test_seeds_pool_into_one_file_with_the_choices_and_the_protocol(event_file):
    result = run_stream(event_file, out=None, seed=0, seeds=2, methods=["popularity", "position-popularity"],
                        max_events=400)
    assert result["seeds"] == 2 and result["seed_list"] == [0, 1]
    assert "read once, at the end" in result["protocol"] and "decided nothing" in result["protocol"]
    tried = result["tuning"]["position-popularity"]
    assert len(tried["grid"]) == 8 and [s["seed"] for s in tried["by_seed"]] == [0, 1]
    assert all(len(s["scores"]) == 8 and s["picked"] in tried["grid"] for s in tried["by_seed"])
    by_seed = [s["hr@10"]["position-popularity"] for s in result["by_seed"]]
    assert result["methods"]["position-popularity"]["hr@10"]["all"] == pytest.approx(sum(by_seed) / 2)
    assert result["settings"]["1"]["position-popularity"] == tried["by_seed"][1]["picked"]


def test_the_command_records_shared_data_relative_to_the_repository(tmp_path):
    from stream.cli_evaluate import portable_path

    data = tmp_path / "work" / "shared" / "data" / "ml-100k"
    data.mkdir(parents=True)
    assert portable_path(str(data)) == "../shared/data/ml-100k"
    assert portable_path("synthetic") == "synthetic"


def test_parts_resume_a_run_without_replaying_and_give_the_same_file(event_file, tmp_path, monkeypatch):
    from models.eval import registry

    args = dict(out=None, seed=0, seeds=2, methods=["popularity", "position-popularity"], max_events=300,
                parts=tmp_path / "parts", code_version="abc")
    first = run_stream(event_file, **args)
    assert (tmp_path / "parts" / "planted" / "seed1" / "position-popularity.json").exists()

    def no_build(*_: object) -> None:
        raise AssertionError("a saved part was replayed again")

    monkeypatch.setattr(registry, "build", no_build)
    again = run_stream(event_file, **args)
    for key in ("methods", "by_seed", "tuning", "settings", "ci95"):
        assert again[key] == first[key]
    assert again["code_versions"] == {"popularity": ["abc"], "position-popularity": ["abc"]}
    with pytest.raises(AssertionError, match="replayed again"):  # another key: nothing is reused
        run_stream(event_file, **{**args, "max_events": 250})


def test_tune_once_methods_serve_the_tune_seeds_choice_on_every_seed(event_file, tmp_path, monkeypatch):
    from models.eval import stream_runner

    args = dict(out=None, methods=["position-popularity", "sasrec"], max_events=300, tune_seed=0)
    result = run_stream(event_file, seed=0, seeds=2, parts=tmp_path / "parts", **args)
    assert result["tuned_once"]["seed"] == 0 and result["tuned_once"]["methods"] == ["sasrec"]
    tuning = result["tuning"]
    sasrec, position = tuning["sasrec"]["by_seed"], tuning["position-popularity"]["by_seed"]
    assert [s["chosen_on_seed"] for s in sasrec] == [0, 0] and sasrec[1]["scores"] == sasrec[0]["scores"]
    assert [s["chosen_on_seed"] for s in position] == [0, 1]  # the cheap ones choose on each seed
    for seed in ("0", "1"):  # each seed's fallback is its own position-popularity pick
        setting = result["settings"][seed]["sasrec"]
        assert setting["fallback"] == result["settings"][seed]["position-popularity"]

    with pytest.raises(RuntimeError, match="run that seed first"):  # another process, no choice to serve
        run_stream(event_file, seed=1, seeds=1, parts=tmp_path / "empty", **args)
    (tmp_path / "parts" / "planted" / "seed1" / "sasrec.json").unlink()
    real = stream_runner.tune_method

    def tune_cheap_only(source: str, *rest: object) -> dict:
        assert source != "sasrec", "a tune-once method was chosen again on another seed"
        return real(source, *rest)

    monkeypatch.setattr(stream_runner, "tune_method", tune_cheap_only)
    alone = run_stream(event_file, seed=1, seeds=1, parts=tmp_path / "parts", **args)
    assert alone["settings"]["1"]["sasrec"] == result["settings"]["1"]["sasrec"]
    assert alone["methods"]["sasrec"]["hr@10"]["all"] == result["by_seed"][1]["hr@10"]["sasrec"]
