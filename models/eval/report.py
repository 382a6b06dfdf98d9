"""Result files of the stream protocol: ``stream-<dataset>.json``, a markdown table and a bar plot.

The JSON's shape is fixed (other tools read it): dataset, events, bucket_events, and per method hr@10 and
ndcg@10 by bucket plus mae and rmse (and mae_on_scale/rmse_on_scale: the same predictions moved to the
nearest rating level, ``models.eval.metrics``), each the mean over ``seeds``. ``best_peer``, ``ci95`` and
``ci95_by_peer`` hold the paired intervals, ``tuning`` what was tried on the warm-up and picked
(``models.eval.stream_summary``); the other top-level keys (seeds, warm-up, timings, machine, command) are
provenance.
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


def _interval(pair: list[float] | None) -> str:
    return "-" if not pair else "[" + ", ".join(_fmt(x) for x in pair) + "]"


def _level(pair: list[float] | None) -> str:
    """How an interval of a difference reads: above 0, below 0, or level (it includes 0)."""
    if not pair or any(x != x for x in pair):
        return ""
    return "above 0" if pair[0] > 0 else "below 0" if pair[-1] < 0 else "level"


def _header(result: dict[str, Any]) -> list[str]:
    seeds = result.get("seeds", 1)
    lines = [
        f"# Stream-order evaluation: {result['dataset']}",
        "",
        (f"{result['events']} events; the first {result.get('warmup_fraction', 0):.0%} warm up every method "
         f"and are not scored; {sum(result['bucket_events'].values())} evaluation points (repeats skipped). "
         f"{seeds} seed(s) {result.get('seed_list', [result.get('seed')])}, each with its own order of "
         f"same-second ties and its own model seeds; figures are means over seeds. {result.get('machine', '')}."),
        "",
    ]
    if result.get("protocol"):
        lines += [result["protocol"], ""]
    once = result.get("tuned_once")
    if once:
        lines += [f"Chosen on seed {once['seed']}'s warm-up and served on every seed: "
                  f"{', '.join(once['methods'])} ({once['why']}).", ""]
    if result.get("note"):
        lines += [f"Note: {result['note']}", ""]
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
    return lines


def _intervals(result: dict[str, Any]) -> list[str]:
    ci = result.get("ci95") or {}
    if not ci:
        return []
    lines = ["## 95% intervals (paired bootstrap over users, seeds pooled)", "",
             f"Best peer (highest HR@10 overall): {result.get('best_peer')}.", "",
             "| comparison | HR@10 all | | first 10 events | |", "|---|---:|---|---:|---|"]
    rows = [("metarec − best peer", ci.get("metarec_minus_best_peer")),
            ("metarec − no adaptation", ci.get("adapted_minus_no_adapt")),
            ("metarec − head fine-tuned from zero", ci.get("adapted_minus_finetune"))]
    rows += [(f"metarec − {peer}", block["metarec_minus"])
             for peer, block in (result.get("ci95_by_peer") or {}).items() if peer != result.get("best_peer")]
    for label, block in rows:
        if block:
            lines.append(f"| {label} | {_interval(block['all'])} | {_level(block['all'])} | "
                         f"{_interval(block['first10'])} | {_level(block['first10'])} |")
    lines.append("")
    ratio = ci.get("first10_ratio_to_best_peer")
    if ratio:
        lines += [f"First-10 HR@10 of metarec over the best peer: {_fmt(ratio[1], 3)}x "
                  f"(95% interval {_fmt(ratio[0], 3)} to {_fmt(ratio[2], 3)}).", ""]
    mae = ci.get("mae_metarec_minus_best_rating_peer")
    if mae:
        lines += [f"MAE of metarec minus the best rating peer ({result.get('best_rating_peer')}): "
                  f"{_interval(mae['as_predicted'])} as predicted ({_level(mae['as_predicted'])}), "
                  f"{_interval(mae['on_scale'])} on the rating scale ({_level(mae['on_scale'])}).", ""]
    return lines


def _tuning(result: dict[str, Any]) -> list[str]:
    tuning = result.get("tuning") or {}
    if not tuning:
        return []
    lines = ["## Settings chosen on the warm-up (validation: last 25% of it)", "",
             "| method | criterion | settings tried | picked, per seed | validation score of the pick |",
             "|---|---|---:|---|---|"]
    for name, rec in tuning.items():
        picks = "; ".join(json.dumps(s["picked"], sort_keys=True) for s in rec["by_seed"])
        best = ", ".join(_fmt(s["scores"][rec["grid"].index(s["picked"])]) for s in rec["by_seed"])
        lines.append(f"| {name} | {rec['criterion']} | {len(rec['grid'])} | `{picks}` | {best} |")
    return lines + ["", "Every score of every setting is in the JSON (`tuning`).", ""]


def markdown(result: dict[str, Any]) -> str:
    """A table per metric: methods as rows, overall and buckets as columns, plus MAE/RMSE, the intervals and
    the choices made on the warm-up."""
    methods = result["methods"]
    lines = _header(result)
    for metric in ("hr@10", "ndcg@10"):
        lines += [f"## {metric.upper()}", "",
                  "| method | all | " + " | ".join(BUCKETS) + " | first 10 |",
                  "|---|---:|" + "---:|" * (len(BUCKETS) + 1)]
        for name, block in methods.items():
            if block[metric]["all"] is None:
                continue  # a rating predictor only
            cells = [_fmt(block[metric]["all"])] + [_fmt(block[metric][b]) for b in BUCKETS]
            pooled = result.get(f"first_ten_{metric}", {}).get(name) if metric == "hr@10" else None
            cells.append(_fmt(pooled if pooled is not None else first_ten(result, name, metric)))
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
    lines.append("")
    lines += _intervals(result) + _tuning(result)
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
    names = [n for n in names if result["methods"][n]["hr@10"]["all"] is not None]  # rankers only
    width = 0.8 / max(1, len(names))
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
