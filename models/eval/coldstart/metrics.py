"""Cold-start metrics: rating errors pooled over query ratings, nDCG@k averaged over tasks (MeLU's choice).

nDCG ranks a task's query items by predicted rating with gain ``2**rating - 1``. Ties in the prediction keep
the query's (seeded, random) order, so a method that predicts one value for every item scores like a random
ranking rather than like a lucky one.

``mae_on_scale``/``rmse_on_scale`` score the same predictions moved to the nearest level of the rating scale
(``models.eval.metrics.snap_to_scale``), for every method alike; nDCG is ranked by the predictions as made.
"""

from __future__ import annotations

import math

import numpy as np

from models.eval.metrics import snap_to_scale


def dcg_at_k(gains_in_rank_order: np.ndarray, k: int) -> float:
    """Sum of gain / log2(rank + 1) over the first ``k`` ranks (rank from 1)."""
    top = gains_in_rank_order[:k]
    return float(np.sum(top / np.log2(np.arange(2, len(top) + 2))))


def ndcg_at_k(predicted: np.ndarray, actual: np.ndarray, k: int = 3) -> float:
    """nDCG@k of the ranking by ``predicted`` (descending, stable) against true ratings ``actual``."""
    gains = np.power(2.0, np.asarray(actual, np.float64)) - 1.0  # (Q,)
    ranked = gains[np.argsort(-np.asarray(predicted, np.float64), kind="stable")]
    ideal = dcg_at_k(np.sort(gains)[::-1], k)
    return dcg_at_k(ranked, k) / ideal if ideal > 0 else 0.0


def scenario_metrics(
    predictions: list[np.ndarray], actuals: list[np.ndarray], k: int = 3,
    scale: tuple[float, ...] | None = None,
) -> dict[str, float]:
    """MAE and RMSE over every query rating, and mean nDCG@k over tasks; NaN for an empty scenario. With a
    rating ``scale``, also MAE and RMSE of the predictions moved to its nearest levels."""
    names = ["mae", "rmse", f"ndcg@{k}"] + (["mae_on_scale", "rmse_on_scale"] if scale is not None else [])
    if not predictions:
        return dict.fromkeys(names, float("nan"))
    pred = np.concatenate(predictions).astype(np.float64)
    true = np.concatenate(actuals).astype(np.float64)
    err = pred - true
    ndcg = [ndcg_at_k(p, a, k) for p, a in zip(predictions, actuals)]
    out = {
        "mae": float(np.mean(np.abs(err))),
        "rmse": math.sqrt(float(np.mean(err**2))),
        f"ndcg@{k}": float(np.mean(ndcg)),
    }
    if scale is not None:
        err = snap_to_scale(pred, scale) - true
        out.update(mae_on_scale=float(np.mean(np.abs(err))), rmse_on_scale=math.sqrt(float(np.mean(err**2))))
    return out
