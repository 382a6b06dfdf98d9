"""Result files of the stream protocol: ``stream-<dataset>.json``, a markdown table and a bar plot.

The JSON's shape is fixed (other tools read it): dataset, events, bucket_events, and per method hr@10 and
ndcg@10 by bucket plus mae and rmse (and mae_on_scale/rmse_on_scale: the same predictions moved to the
nearest rating level, ``models.eval.metrics``); extra top-level keys (seed, warm-up, timings, machine,
command) are provenance.
"""

from __future__ import annotations

import json
import logging
import platform
from pathlib import Path
from typing import Any

from models.eval.metrics import BUCKETS, FIRST_TEN

log = logging.getLogger(__name__)


def machine() -> str:
    """Where the figures came from, for timings read later."""
    import os

    cpus = os.cpu_count()
    return f"{platform.machine()} {platform.system()} {cpus} CPUs, Python {platform.python_version()}"


def _fmt(value: float | None, digits: int = 4) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def first_ten(result: dict[str, Any], method: str, metric: str = "hr@10") -> float | None:
    """A metric over buckets 0, 1-4 and 5-9 pooled (weighted by their event counts)."""
    counts = result["bucket_events"]
    block = result["methods"][method][metric]
    n = sum(counts[b] for b in FIRST_TEN if block[b] is not None)
    if not n:
        return None
    return sum(block[b] * counts[b] for b in FIRST_TEN if block[b] is not None) / n


def markdown(result: dict[str, Any]) -> str:
    """A table per metric: methods as rows, overall and buckets as columns, plus MAE/RMSE."""
    methods = result["methods"]
    lines = [
        f"# Stream-order evaluation: {result['dataset']}",
        "",
        f"{result['events']} events; the first {result.get('warmup_fraction', 0):.0%} warm up every method "
        f"and are not scored; {sum(result['bucket_events'].values())} evaluation points (repeats skipped). "
        f"Seed {result.get('seed')}; {result.get('machine', '')}.",
        "",
    ]
    if result.get("command"):
        wall = result.get("wall_seconds")
        took = "" if wall is None else f", {wall / 60:.1f} minutes in all"
        lines += [f"Made by `{result['command']}`{took}.", ""]
    lines += [
        "| history bucket | " + " | ".join(BUCKETS) + " |",
        "|---|" + "---:|" * len(BUCKETS),
        "| evaluation points | " + " | ".join(str(result["bucket_events"][b]) for b in BUCKETS) + " |",
        "",
    ]
    for metric in ("hr@10", "ndcg@10"):
        lines += [f"## {metric.upper()}", "",
                  "| method | all | " + " | ".join(BUCKETS) + " | first 10 |",
                  "|---|---:|" + "---:|" * (len(BUCKETS) + 1)]
        for name, block in methods.items():
            cells = [_fmt(block[metric]["all"])] + [_fmt(block[metric][b]) for b in BUCKETS]
            cells.append(_fmt(first_ten(result, name, metric)))
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
        lines.append("")
    lines += ["## Rating error before learning", "",
              "As predicted, and moved to the nearest level of the rating scale (a whole star).", "",
              "| method | MAE | RMSE | MAE on scale | RMSE on scale | seconds |",
              "|---|---:|---:|---:|---:|---:|"]
    seconds = result.get("seconds", {})
    for name, block in methods.items():
        cells = [_fmt(block["mae"]), _fmt(block["rmse"]), _fmt(block.get("mae_on_scale")),
                 _fmt(block.get("rmse_on_scale")), _fmt(seconds.get(name), 1)]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def plot(result: dict[str, Any], path: Path) -> None:
    """Grouped bars: HR@10 per history bucket (and overall), one colour per method."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = ["all", *BUCKETS]
    names = list(result["methods"])
    width = 0.8 / max(1, len(names))
    fig, ax = plt.subplots(figsize=(10, 4.5))
    for n, name in enumerate(names):
        block = result["methods"][name]["hr@10"]
        heights = [block[g] or 0.0 for g in groups]
        offset = (n - (len(names) - 1) / 2) * width
        ax.bar([g + offset for g in range(len(groups))], heights, width, label=name)
    ax.set_xticks(range(len(groups)))
    ax.set_xticklabels(["all"] + [f"{b}\n({result['bucket_events'][b]})" for b in BUCKETS])
    ax.set_xlabel("events the user had before (evaluation points)")
    ax.set_ylabel("HR@10")
    ax.set_title(f"Stream-order HR@10 by user history: {result['dataset']}")
    ax.legend(fontsize=8, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_results(result: dict[str, Any], out: Path) -> dict[str, Path]:
    """Write the JSON, markdown and PNG for ``result`` under ``out``; returns their paths."""
    out.mkdir(parents=True, exist_ok=True)
    stem = f"stream-{result['dataset']}"
    paths = {"json": out / f"{stem}.json", "md": out / f"{stem}.md", "png": out / f"{stem}.png"}
    paths["json"].write_text(json.dumps(result, indent=2) + "\n")
    paths["md"].write_text(markdown(result))
    plot(result, paths["png"])
    log.info("wrote %s", ", ".join(str(p) for p in paths.values()))
    return paths
