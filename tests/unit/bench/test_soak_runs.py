"""The soak's results file keeps every run's figures (bench/soak.py), so a losing run stays on record."""

from __future__ import annotations

import json
from pathlib import Path

from bench.soak import earlier_runs, run_summary

FIGURES = {"events": 100, "kills": 2, "lost": 3, "doubled": 0, "missing_lists": 0, "stalls": 0,
           "run_time_s": 1.5, "seed": 7, "command": "python -m bench.soak",
           "machine": {"git_commit": "abc1234", "when": "then"}, "worker_logs": "var/soak/x", "kill_log": []}


def test_no_earlier_file_means_no_earlier_runs(tmp_path: Path) -> None:
    assert earlier_runs(tmp_path / "soak.json") == []


def test_a_file_from_before_runs_existed_counts_as_its_one_run(tmp_path: Path) -> None:
    path = tmp_path / "soak.json"
    path.write_text(json.dumps(FIGURES))
    (run,) = earlier_runs(path)
    assert run["lost"] == 3 and run["git_commit"] == "abc1234" and "kill_log" not in run


def test_runs_accumulate_oldest_first(tmp_path: Path) -> None:
    path = tmp_path / "soak.json"
    first = {**FIGURES, "runs": [run_summary(FIGURES)]}
    path.write_text(json.dumps(first))
    second = {**FIGURES, "lost": 0, "machine": {"git_commit": "def5678", "when": "now"}}
    runs = [*earlier_runs(path), run_summary(second)]
    assert [(r["lost"], r["git_commit"]) for r in runs] == [(3, "abc1234"), (0, "def5678")]
