"""One results file from a baseline run and a final run of :mod:`bench.throughput`: the final run's figures at
the top level, both runs kept whole, and the before/after ratios (CPU-normalised ones are the least sensitive to
what else the shared machine was doing).

    .venv/bin/python -m bench.combine var/bench/baseline-throughput.json var/bench/throughput-final.json \
        var/bench/throughput-final-nocontext.json
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from bench.common import RESULTS, read_results, write_results

TOP_LEVEL = (
    "pipeline_events_per_s",
    "passthrough_events_per_s",
    "ratio",
    "latency_ms",
    "saturation",
    "memory",
    "faust_ceiling",
    "passthrough",
    "producer_events_per_s",
    "workload",
    "machine",
    "collector",
)


def _run(path: Path) -> dict[str, Any]:
    data = read_results(path)
    label = data.get("label")
    if not label:
        raise SystemExit(f"{path}: not a bench.throughput results file")
    return data["runs"][label]


def _ratio(new: float | None, old: float | None) -> float | None:
    return round(new / old, 3) if new and old else None


def compare(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    """after / before for the figures that matter; CPU-normalised ones are the least sensitive to load."""
    sb, sa = before.get("saturation", {}), after.get("saturation", {})
    return {
        "events_per_worker_cpu_s": _ratio(
            sa.get("events_per_worker_cpu_s"), sb.get("events_per_worker_cpu_s")
        ),
        "pipeline_events_per_s": _ratio(
            after.get("pipeline_events_per_s"), before.get("pipeline_events_per_s")
        ),
        "ratio_to_passthrough": _ratio(after.get("ratio"), before.get("ratio")),
        "events_per_refresh": [sb.get("events_per_refresh"), sa.get("events_per_refresh")],
        "mean_users_per_model_batch": [
            sb.get("mean_users_per_model_batch"),
            sa.get("mean_users_per_model_batch"),
        ],
        "p99_ms": {
            rate: [before.get("latency_ms", {}).get(rate, {}).get("p99"), lat.get("p99")]
            for rate, lat in after.get("latency_ms", {}).items()
        },
    }


def main(argv: list[str]) -> None:
    """``BASELINE FINAL [OTHER ...]``: the final run on top; every run kept and compared with the baseline."""
    if len(argv) < 2:
        raise SystemExit("usage: python -m bench.combine BASELINE.json FINAL.json [OTHER.json ...]")
    runs = {Path(p): _run(Path(p)) for p in argv}
    before, after = runs[Path(argv[0])], runs[Path(argv[1])]
    out = {k: after[k] for k in TOP_LEVEL if k in after}
    labels = [read_results(p)["label"] for p in runs]
    others = list(runs.values())[1:]
    out["after_over_before"] = {label: compare(before, run) for label, run in zip(labels[1:], others)}
    out["note"] = (
        "baseline = the code at the start of the speed work, final = this commit, other runs as labelled (see "
        "each run's args); each run alone on the machine with its own embedded broker, but the machine is "
        "shared and its load differed (machine.loadavg_at_end): compare by the in-run ratios (ratio to the "
        "passthrough, events per worker CPU-second), and read absolute figures as lower bounds"
    )
    out["runs"] = dict(zip(labels, runs.values()))
    write_results(RESULTS / "throughput.json", out)


if __name__ == "__main__":
    main(sys.argv[1:])
