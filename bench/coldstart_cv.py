"""Cross-validation of metarec's cold-start settings on the training tasks alone (never the test scenarios).

The MeLU split's training tasks (existing users x existing items, less the warm hold-out) are cut into
``--folds`` folds by user. Each fold in turn is held out: the method is fitted on the other folds' tasks (and
only their events) and predicts the held-out tasks' query ratings from their supports, as the protocol does.
The pooled MAE over all folds is the figure a setting is chosen by; ``user_median`` on the same folds is the
reference.

User folds never hold out an item, so they say nothing of new items, which the model meets by their features
alone. The item folds (``--item-share``) do: the newest share of the training items by first-rating time (as
the protocol picks its new items) is dropped from the trainer's log, and each user fold's fit (other users,
old items only) scores tasks built from the held items' ratings, as the ``new_item`` scenario builds them
(the user's held-item ratings shuffled, the query cut off, the rest the support): the fit's own users give the
``new_item`` figure, the fold's held-out users the ``new_user_new_item`` one. Few training users rated many
late items, so these tasks need only ``--item-min`` ratings and their query is at most half of them. ``models.eval.coldstart.metarec.MetarecSettings`` records the figures that chose its defaults.

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
from models.eval.coldstart.metarec import MetarecColdStart, MetarecSettings
from models.eval.coldstart.methods import ItemBiasUserOffset, TaskData, UserMedian
from models.eval.coldstart.protocol import training_inputs
from models.eval.coldstart.split import ColdStartSplit, SplitConfig, coldstart_split

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


def item_fold_mae(method: Any, log_, split: ColdStartSplit, folds: int, seed: int, share: float,
                  min_ratings: int, query_size: int = 10) -> tuple[float, float, int, int]:
    """Pooled query MAE on held-out (newest) items: (new_item-like, new_user_new_item-like, ratings of each)."""
    train_log, tasks = training_inputs(log_, split)
    items = np.unique(train_log.items)
    first = np.full(train_log.n_items, np.inf)
    np.minimum.at(first, train_log.items, train_log.ts)
    order = items[np.argsort(first[items], kind="stable")]
    new = np.zeros(train_log.n_items, bool)
    new[order[round((1.0 - share) * len(items)):]] = True
    held_pos = np.flatnonzero(new[train_log.items])
    held_pos = held_pos[np.lexsort((train_log.items[held_pos], train_log.ts[held_pos]))]
    item_tasks = []
    for user in np.unique(train_log.users[held_pos]).tolist():
        pos = held_pos[train_log.users[held_pos] == user]
        if len(pos) < min_ratings:
            continue
        pos = np.random.default_rng((seed, 7, user)).permutation(pos)
        q = min(query_size, len(pos) // 2)
        sup, qry = np.sort(pos[q:]), pos[:q]
        item_tasks.append(TaskData(user, train_log.items[sup], train_log.values[sup], train_log.ts[sup],
                                   train_log.items[qry], train_log.values[qry]))
    users = np.array(sorted({t.user for t in tasks}))
    fold_of = dict(zip(users.tolist(), np.random.default_rng(seed).permutation(len(users)) % folds))
    errs: dict[bool, list[np.ndarray]] = {True: [], False: []}  # known user? signed errors
    for f in range(folds):
        fit_tasks = [t for t in tasks if fold_of[t.user] != f]
        fit_users = np.array(sorted({t.user for t in fit_tasks}))
        fit_log = train_log.take(np.flatnonzero(np.isin(train_log.users, fit_users) & ~new[train_log.items]))
        m = method()
        m.fit(fit_log, fit_tasks)
        hidden = [replace(t, query_values=None) for t in item_tasks]
        for t, pred in zip(item_tasks, m.predict(hidden)):
            errs[fold_of[t.user] != f].append(np.clip(pred, 1.0, 5.0) - t.query_values)
    known, unknown = np.concatenate(errs[True]), np.concatenate(errs[False])
    log.warning("item folds: mean signed error %.3f (known users), %.3f (new users)", known.mean(),
                unknown.mean())
    return float(np.abs(known).mean()), float(np.abs(unknown).mean()), len(known), len(unknown)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", required=True)
    p.add_argument("--folds", type=int, default=3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--item-share", type=float, default=0.3, help="newest share of training items held out")
    p.add_argument("--item-min", type=int, default=6, help="held-item ratings a user needs for an item task")
    p.add_argument("--no-user-folds", action="store_true")
    p.add_argument("--no-item-folds", action="store_true")
    p.add_argument("--variant", action="append", default=[],
                   help='"default", or JSON overrides of MetarecSettings ("config" merges into the default)')
    p.add_argument("--bias", action="append", default=[],
                   help='JSON arguments of the item_bias_user_offset baseline, e.g. \'{"item_shrink": 5}\'')
    p.add_argument("--no-metarec", action="store_true", help="score the baselines only")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    log_ = load_dataset(args.dataset, seed=args.seed)
    split = coldstart_split(log_, SplitConfig(seed=args.seed))
    base = MetarecSettings()
    methods: dict[str, Any] = {"user_median": UserMedian}
    for spec in args.bias:
        methods[f"item_bias_user_offset {spec}"] = lambda kw=json.loads(spec): ItemBiasUserOffset(**kw)
    for spec in [] if args.no_metarec else args.variant or ["default"]:
        over = {} if spec == "default" else json.loads(spec)
        settings = replace(base, **{**over, "config": {**base.config, **over.get("config", {})}})
        methods[spec] = lambda s=settings: MetarecColdStart(s, seed=args.seed)
    for name, factory in methods.items():  # print: a program, not library code
        if not args.no_user_folds:
            print(f"{name}: user-fold CV MAE {fold_mae(factory, log_, split, args.folds, args.seed):.4f}",
                  flush=True)
        if not args.no_item_folds:
            known, unknown, nk, nu = item_fold_mae(factory, log_, split, args.folds, args.seed,
                                                   args.item_share, args.item_min)
            print(f"{name}: item-fold CV MAE new_item {known:.4f} ({nk} ratings), new_user_new_item "
                  f"{unknown:.4f} ({nu} ratings)", flush=True)


if __name__ == "__main__":
    main()
