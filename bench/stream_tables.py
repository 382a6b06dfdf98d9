"""The README's stream-order tables, printed from a results file, so the README's figures are the file's.

Why: the README quotes each method's HR@10 (all and first 10 events, means over seeds), MAE, and the paired
intervals of issue 18 (metarec against the best peer, adapted against no adaptation, the first-10 ratio, the
MAE against the best online rating peer). Copying them by hand invites slips; this prints the Markdown to
paste, from ``bench/results/stream-<dataset>.json`` as ``metarec evaluate --protocol stream`` wrote it.

    .venv/bin/python -m bench.stream_tables bench/results/stream-ml-100k.json
    .venv/bin/python -m bench.stream_tables bench/results/stream-ml-100k.json --readme README.md

With ``--readme``, the block between ``<!-- stream-<dataset>:begin -->`` and ``<!-- stream-<dataset>:end -->``
in that file is replaced instead of printed.
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


def targets(result: dict[str, Any]) -> list[str]:
    """Issue 18's stream targets, each read off the intervals: met or not."""
    ci = result.get("ci95") or {}

    def verdict(ok: bool | None) -> str:
        return "–" if ok is None else "**met**" if ok else "not met"

    ratio, best = ci.get("first10_ratio_to_best_peer"), ci.get("metarec_minus_best_peer")
    adapt, mae = ci.get("adapted_minus_no_adapt"), ci.get("mae_metarec_minus_best_rating_peer")
    rows = [("first-10 HR@10 ≥ 1.15× the best peer, interval's lower end above 1.0",
             None if not ratio else ratio[1] >= 1.15 and ratio[0] > 1.0),
            ("best overall: metarec − best peer, lower end above 0",
             None if not best else best["all"][0] > 0),
            ("adapted − no adaptation on the first 10 events, lower end above 0",
             None if not adapt else adapt["first10"][0] > 0),
            ("MAE below the best online rating peer, upper end below 0",
             None if not mae else mae["as_predicted"][1] < 0)]
    return ["| issue 18 target | |", "| --- | --- |"] + [f"| {label} | {verdict(ok)} |" for label, ok in rows]


def block(result: dict[str, Any]) -> str:
    """The tables, with the run's seeds and command, as the README shows them."""
    lines = [f"{result.get('seeds', 1)} seed(s) {result.get('seed_list', [result.get('seed')])}; made by "
             f"`{result.get('command')}`.", ""]
    if result.get("note"):
        lines += [f"Cut from this run: {result['note']}", ""]
    tables = methods_table(result) + [""] + intervals_table(result) + [""] + targets(result)
    return "\n".join(lines + tables)


def replace_block(text: str, dataset: str, content: str) -> str:
    """``text`` with the block between the dataset's markers replaced by ``content``."""
    begin, end = f"<!-- stream-{dataset}:begin -->", f"<!-- stream-{dataset}:end -->"
    head, found, rest = text.partition(begin)
    if not found or end not in rest:
        raise SystemExit(f"no {begin} ... {end} block to replace")
    return head + begin + "\n" + content + "\n" + end + rest.split(end, 1)[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", type=Path, help="bench/results/stream-<dataset>.json")
    parser.add_argument("--readme", type=Path, help="replace the dataset's block in this file instead")
    args = parser.parse_args()
    result = json.loads(args.results.read_text())
    if args.readme is None:
        print(block(result))
        return
    args.readme.write_text(replace_block(args.readme.read_text(), result["dataset"], block(result)))


if __name__ == "__main__":
    main()
