"""Pool the seeds of a stream run into the results file: averaged metrics, choices, and paired intervals.

``methods`` keeps the shape of a single run (``Accumulator.summary``), each number the mean over seeds. The
intervals (``models.eval.uncertainty``) compare per-user sums pooled over seeds. The best peer is the peer
with the highest mean HR@10 over all points; ``ci95_by_peer`` holds metarec against every peer, so a claim
"against all peers" can be read from the file.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from models.eval.metrics import BUCKETS
from models.eval.registry import METHODS
from models.eval.report import machine
from models.eval.uncertainty import RESAMPLES, PairedBootstrap, UserSums, compare, compare_mae

if TYPE_CHECKING:
    from models.eval.stream_runner import SeedRun

PROTOCOL = ("Every setting was chosen on the warm-up alone (its first 75% warms each method, its last 25% "
            "is scored test-then-train): per seed, or on one seed for the methods in tuned_once; the scored "
            "part (the events after the warm-up) was read once, at the end, with the chosen settings, and "
            "decided nothing.")
METAREC, NO_ADAPT, FINETUNE = "metarec", "metarec-no-adapt", "metarec-finetune"


def _mean(values: list[Any]) -> Any:
    """The mean of numbers (None where every value is None), recursing into dicts of the same keys."""
    if values and isinstance(values[0], dict):  # a key some seeds lack (parts of older code) is averaged
        keys = dict.fromkeys(key for v in values for key in v)  # over the seeds that have it
        return {key: _mean([v[key] for v in values if key in v]) for key in keys}
    numbers = [v for v in values if v is not None]
    return float(np.mean(numbers)) if numbers else None


def _first_ten(summary: dict[str, Any], buckets: dict[str, int], k: int) -> float | None:
    block = summary[f"hr@{k}"]
    n = sum(buckets[b] for b in ("0", "1-4", "5-9") if block[b] is not None)
    return sum(block[b] * buckets[b] for b in ("0", "1-4", "5-9") if block[b] is not None) / n if n else None


def _pooled(runs: list[SeedRun], name: str, n_users: int) -> UserSums:
    total = UserSums.zeros(n_users)
    for run in runs:
        total.add(run.sums[name])
    return total


def _peers(methods: dict[str, Any], k: int, rating: bool) -> list[str]:
    key = "mae" if rating else f"hr@{k}"
    return [n for n, block in methods.items() if METHODS[n].peer and
            (block[key] if rating else block[key]["all"]) is not None]


def intervals(methods: dict[str, Any], sums: dict[str, UserSums], n_users: int, k: int) -> dict[str, Any]:
    """best_peer, best_rating_peer, ci95 and ci95_by_peer (empty where metarec or peers are missing)."""
    out: dict[str, Any] = {"best_peer": None, "best_rating_peer": None, "ci95": {}, "ci95_by_peer": {},
                           "bootstrap": {"unit": "user", "paired": True, "resamples": RESAMPLES, "seed": 0}}
    boot = PairedBootstrap(n_users)
    ranking, rating = _peers(methods, k, False), _peers(methods, k, True)
    if METAREC in sums and methods[METAREC][f"hr@{k}"]["all"] is not None and ranking:
        m = sums[METAREC]
        for peer in ranking:
            p = sums[peer]
            out["ci95_by_peer"][peer] = {
                "metarec_minus": compare(boot, m, p),
                "first10_ratio": boot.ratio(m.first_hits, m.first_points, p.first_hits, p.first_points)}
        best = max(ranking, key=lambda n: methods[n][f"hr@{k}"]["all"])
        out["best_peer"] = best
        out["ci95"]["metarec_minus_best_peer"] = out["ci95_by_peer"][best]["metarec_minus"]
        out["ci95"]["first10_ratio_to_best_peer"] = out["ci95_by_peer"][best]["first10_ratio"]
    for other, key in ((NO_ADAPT, "adapted_minus_no_adapt"), (FINETUNE, "adapted_minus_finetune")):
        if METAREC in sums and other in sums:
            out["ci95"][key] = compare(boot, sums[METAREC], sums[other])
    if METAREC in sums and methods[METAREC]["mae"] is not None and rating:
        best = min(rating, key=lambda n: methods[n]["mae"])
        out["best_rating_peer"] = best
        out["ci95"]["mae_metarec_minus_best_rating_peer"] = compare_mae(boot, sums[METAREC], sums[best])
        out["ci95_mae_by_peer"] = {p: compare_mae(boot, sums[METAREC], sums[p]) for p in rating}
    return out


def _tuning(runs: list[SeedRun]) -> dict[str, Any]:
    """Per tuned method: its grid and criterion once, then per seed the scores, seconds and the pick."""
    out: dict[str, Any] = {}
    for run in runs:
        for name, record in run.choices.items():
            for part, rec in ((name, record), (f"{name} (rating model)", record.get("rating"))):
                if rec is None:
                    continue
                entry = out.setdefault(part, {"criterion": rec["criterion"], "grid": rec["grid"],
                                              "fixed": rec.get("fixed"), "by_seed": []})
                entry["by_seed"].append({"seed": run.seed, "scores": rec["scores"], "seconds": rec["seconds"],
                                         "picked": rec["picked"],
                                         "chosen_on_seed": record.get("chosen_on_seed", run.seed)})
    return out


def summarise(runs: list[SeedRun], n_users: int, k: int = 10) -> dict[str, Any]:
    """The results file's content for ``runs`` (one per seed, same methods)."""
    names = list(runs[0].summaries)
    buckets = {b: int(round(np.mean([r.plan["bucket_events"][b] for r in runs]))) for b in BUCKETS}
    methods = {n: _mean([r.summaries[n] for r in runs]) for n in names}
    first_ten = {n: _mean([_first_ten(r.summaries[n], r.plan["bucket_events"], k) for r in runs])
                 for n in names}
    sums = {n: _pooled(runs, n, n_users) for n in names}
    return {
        "events": runs[0].events,
        "bucket_events": buckets,
        "methods": methods,
        f"first_ten_hr@{k}": first_ten,  # buckets 0 to 5-9 pooled, mean over seeds
        "seeds": len(runs),
        "seed_list": [r.seed for r in runs],
        **intervals(methods, sums, n_users, k),
        "protocol": PROTOCOL,
        "warmup_events": int(round(np.mean([r.plan["warmup_events"] for r in runs]))),
        "evaluation_points": sum(buckets.values()),
        "repeats_skipped": int(round(np.mean([r.plan["repeats_skipped"] for r in runs]))),
        "explicit": runs[0].plan["explicit"],
        "by_seed": [{"seed": r.seed, "evaluation_points": r.plan["evaluation_points"],
                     "hr@10": {n: r.summaries[n][f"hr@{k}"]["all"] for n in names},
                     "first10": {n: _first_ten(r.summaries[n], r.plan["bucket_events"], k) for n in names},
                     "mae": {n: r.summaries[n]["mae"] for n in names if r.summaries[n]["mae"] is not None}}
                    for r in runs],
        "tuning": _tuning(runs),
        "settings": {str(r.seed): r.settings for r in runs},
        "seconds": {n: round(float(np.mean([r.seconds[n] for r in runs])), 2) for n in names},
        "tuning_seconds": {n: round(float(np.mean([r.tuning_seconds[n] for r in runs])), 1) for n in names},
        "code_versions": {n: sorted({str(r.code_versions.get(n)) for r in runs}) for n in names},
        "training_notes": {str(r.seed): r.notes for r in runs if r.notes},
        "machine": machine(),
    }
