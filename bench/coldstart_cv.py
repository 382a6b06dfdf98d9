"""Cross-validation of metarec's cold-start settings on the training tasks alone (never the test scenarios).

The MeLU split's training tasks (existing users x existing items, less the warm hold-out) are cut into
``--folds`` folds by user. Each fold in turn is held out: the method is fitted on the other folds' tasks (and
only their events) and predicts the held-out tasks' query ratings from their supports, as the protocol does.
The pooled MAE over all folds is the figure a setting is chosen by; ``user_median`` on the same folds is the
reference. ``models.eval.coldstart_metarec.MetarecSettings`` records the figures that chose its defaults.

    .venv/bin/python -m bench.coldstart_cv --dataset /work/shared/data/ml-100k \
        --variant default --variant '{"config": {"weight_decay": 0.03, "rating_loss": "mse"}}'
"""

from __future__ import annotations

import argparse
import json
import logging
from dataclasses import replace
from typing import Any

import numpy as np

from models.data.registry import load_dataset
from models.eval.coldstart import training_inputs
from models.eval.coldstart_methods import UserMedian
from models.eval.coldstart_metarec import MetarecColdStart, MetarecSettings
from models.eval.coldstart_split import ColdStartSplit, SplitConfig, coldstart_split

log = logging.getLogger("bench.coldstart_cv")


def fold_mae(method: Any, log_, split: ColdStartSplit, folds: int, seed: int) -> float:
    """Pooled query MAE of ``method`` (rebuilt per fold by the caller's factory) over user folds."""
    train_log, tasks = training_inputs(log_, split)
    users = np.array(sorted({t.user for t in tasks}))
    fold_of = dict(zip(users.tolist(), np.random.default_rng(seed).permutation(len(users)) % folds))
    errors = []
    for f in range(folds):
        fit_tasks = [t for t in tasks if fold_of[t.user] != f]
        held = [t for t in tasks if fold_of[t.user] == f]
        fit_users = np.array(sorted({t.user for t in fit_tasks}))
        fit_log = train_log.take(np.flatnonzero(np.isin(train_log.users, fit_users)))
        m = method()
        m.fit(fit_log, fit_tasks)
        hidden = [replace(t, query_values=None) for t in held]
        for t, pred in zip(held, m.predict(hidden)):
            errors.append(np.abs(np.clip(pred, 1.0, 5.0) - t.query_values))
        log.info("fold %d: %d tasks", f, len(held))
    return float(np.mean(np.concatenate(errors)))


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", required=True)
    p.add_argument("--folds", type=int, default=3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--variant", action="append", default=[],
                   help='"default", or JSON overrides of MetarecSettings ("config" merges into the default)')
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    log_ = load_dataset(args.dataset, seed=args.seed)
    split = coldstart_split(log_, SplitConfig(seed=args.seed))
    base = MetarecSettings()
    rows = {"user_median": fold_mae(UserMedian, log_, split, args.folds, args.seed)}
    print(f"user_median: CV MAE {rows['user_median']:.4f}", flush=True)  # a program, not library code
    for spec in args.variant or ["default"]:
        over = {} if spec == "default" else json.loads(spec)
        settings = replace(base, **{**over, "config": {**base.config, **over.get("config", {})}})
        rows[spec] = fold_mae(lambda s=settings: MetarecColdStart(s, seed=args.seed), log_, split, args.folds,
                              args.seed)
        print(f"{spec}: CV MAE {rows[spec]:.4f}", flush=True)


if __name__ == "__main__":
    main()
