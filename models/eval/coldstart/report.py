"""The cold-start result as files: JSON (the record), Markdown (a table for people) and PNG (a bar chart)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from models.eval.coldstart.split import SCENARIOS

METRICS: tuple[str, ...] = ("mae", "rmse", "ndcg@3", "mae_on_scale", "rmse_on_scale")
NOTES = """\
Protocol (MeLU, Lee et al. KDD 2019, on the data at hand): items split by first rating time (earliest 80%
existing), users split 80/20 at random (seeded); a user's task in a scenario uses their ratings on that
scenario's items, kept if there are 13-100 of them (MeLU's filter, applied per scenario); 10 random query
ratings, the rest support. Training data for every method: the existing users' warm tasks only, less a seeded
10% held out to score `warm`. Predictions are clipped to the training rating range. MAE/RMSE pooled over query
ratings; `mae_on_scale`/`rmse_on_scale` score the same predictions moved to the nearest whole-star level
(the training ratings' levels), for every method alike; nDCG@3 ranks each task's 10 query items by
prediction (gain 2^r - 1, ties in query order), mean over tasks. Small scenarios (see the task counts)
carry wide error bars.
"""


def _fmt(value: float) -> str:
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.4f}"


def markdown(result: dict[str, Any]) -> str:
    """A table per metric (methods x scenarios), the task counts and the protocol notes."""
    lines = [f"# Cold-start evaluation: {result['dataset']}", ""]
    methods = result["methods"]
    for metric in METRICS:
        lines += [f"## {metric}", "", "| method | " + " | ".join(SCENARIOS) + " |"]
        lines.append("|---|" + "---:|" * len(SCENARIOS))
        for name, scores in methods.items():
            cells = [_fmt(scores.get(s, {}).get(metric, float("nan"))) for s in SCENARIOS]
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
        lines.append("")
    counts = result.get("counts", {})
    if counts:
        lines += [
            "## Tasks",
            "",
            "| split | tasks | query ratings | support ratings | users without a task |",
        ]
        lines.append("|---|---:|---:|---:|---:|")
        train = counts.get("train", {})
        lines.append(
            f"| train (warm, existing users) | {train.get('tasks', 0)} | - | {train.get('events', 0)} | - |"
        )
        for s in SCENARIOS:
            c = counts.get(s, {})
            lines.append(
                f"| {s} | {c.get('tasks', 0)} | {c.get('query_ratings', 0)} | {c.get('support_ratings', 0)} "
                f"| {c.get('skipped_users', 0)} |"
            )
        lines.append("")
    lines += ["## Protocol", "", NOTES]
    for key in ("seed", "machine", "command", "seconds"):
        if key in result:
            lines.append(f"- {key}: `{result[key]}`")
    return "\n".join(lines) + "\n"


def plot(result: dict[str, Any], path: Path) -> None:
    """MAE and nDCG@3 per scenario, one bar per method."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    methods = list(result["methods"])
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.2))
    width = 0.8 / max(len(methods), 1)
    for ax, metric in zip(axes, ("mae", "ndcg@3")):
        for m, name in enumerate(methods):
            values = [result["methods"][name].get(s, {}).get(metric, float("nan")) for s in SCENARIOS]
            ax.bar([x + m * width for x in range(len(SCENARIOS))], values, width, label=name)
        ax.set_xticks([x + width * (len(methods) - 1) / 2 for x in range(len(SCENARIOS))], list(SCENARIOS))
        ax.set_title(f"{metric} ({'lower' if metric == 'mae' else 'higher'} is better)")
        ax.set_ylim(bottom=0.5 if metric == "mae" else 0.4)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=len(methods), fontsize=9, frameon=False)
    fig.suptitle(f"Cold-start (MeLU protocol): {result['dataset']}")
    fig.tight_layout(rect=(0, 0.07, 1, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_results(result: dict[str, Any], out_dir: Path) -> list[Path]:
    """``coldstart-<dataset>.{json,md,png}`` under ``out_dir``; returns the paths written."""
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = out_dir / f"coldstart-{result['dataset']}"
    paths = [stem.with_suffix(".json"), stem.with_suffix(".md"), stem.with_suffix(".png")]
    paths[0].write_text(json.dumps(result, indent=2, sort_keys=False) + "\n")
    paths[1].write_text(markdown(result))
    plot(result, paths[2])
    return paths
