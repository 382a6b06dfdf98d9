"""The README's stream-order tables, printed from a results file, so the README's figures are the file's.

Why: the README quotes each method's HR@10 (all and first 10 events, means over seeds), MAE, and the paired
intervals of issue 18 (metarec against the best peer, adapted against no adaptation, the first-10 ratio, the
MAE against the best online rating peer). Copying them by hand invites slips; this prints the Markdown to
paste, from ``bench/results/stream-<dataset>.json`` as ``metarec evaluate --protocol stream`` wrote it.

    .venv/bin/python -m bench.stream_tables bench/results/stream-ml-100k.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any


def _f(value: float | None, digits: int = 4) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def _ci(pair: list[float] | None) -> str:
    return "–" if not pair else f"[{_f(pair[0])}, {_f(pair[-1])}]"


def _reads(pair: list[float] | None) -> str:
    if not pair:
        return ""
    return "above 0" if pair[0] > 0 else "below 0" if pair[-1] < 0 else "level (includes 0)"


def methods_table(result: dict[str, Any]) -> list[str]:
    """One row per method: HR@10 overall and on the first 10 events, MAE as predicted and on the scale."""
    first = result.get("first_ten_hr@10", {})
    best = result.get("best_peer")
    lines = ["| method | HR@10 all | first 10 events | MAE (before learning) | MAE on the rating scale |",
             "| --- | ---: | ---: | ---: | ---: |"]
    for name, block in result["methods"].items():
        label = f"**{name}**" if name == "metarec" else f"{name} (best peer)" if name == best else name
        lines.append(f"| {label} | {_f(block['hr@10']['all'])} | {_f(first.get(name))} | "
                     f"{_f(block['mae'], 3)} | {_f(block.get('mae_on_scale'), 3)} |")
    return lines


def intervals_table(result: dict[str, Any]) -> list[str]:
    """Issue 18's comparisons with their 95% paired-bootstrap intervals and how each reads."""
    ci = result.get("ci95") or {}
    lines = ["| comparison (95% paired bootstrap over users, seeds pooled) | HR@10 all | | first 10 | |",
             "| --- | ---: | --- | ---: | --- |"]
    for label, key in ((f"metarec − best peer ({result.get('best_peer')})", "metarec_minus_best_peer"),
                       ("metarec − metarec without adaptation", "adapted_minus_no_adapt"),
                       ("metarec − head fine-tuned from zero", "adapted_minus_finetune")):
        block = ci.get(key)
        if block:
            lines.append(f"| {label} | {_ci(block['all'])} | {_reads(block['all'])} | "
                         f"{_ci(block['first10'])} | {_reads(block['first10'])} |")
    ratio = ci.get("first10_ratio_to_best_peer")
    if ratio:
        lines += ["", f"First-10 HR@10, metarec over {result.get('best_peer')}: {_f(ratio[1], 3)}× "
                      f"(95% interval {_f(ratio[0], 3)}–{_f(ratio[2], 3)})."]
    mae = ci.get("mae_metarec_minus_best_rating_peer")
    if mae:
        lines += ["", f"MAE, metarec minus the best online rating peer ({result.get('best_rating_peer')}): "
                      f"{_ci(mae['as_predicted'])} as predicted ({_reads(mae['as_predicted'])}), "
                      f"{_ci(mae['on_scale'])} on the rating scale ({_reads(mae['on_scale'])})."]
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", type=Path, help="bench/results/stream-<dataset>.json")
    result = json.loads(parser.parse_args().results.read_text())
    print("\n".join(methods_table(result) + [""] + intervals_table(result)))


if __name__ == "__main__":
    main()
