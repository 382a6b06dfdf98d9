"""Do impressions help? HR@10 of the next take on the synthetic stream with planted users who ignore some items,
replayed through the worker's own pipeline with and without impression events (same seed, same model).

The world: ``generate``'s synthetic stream, where a share of the users (the planted ones) never take the most
popular items: their events on those items are removed. A model is meta-trained on the first half in time; the
second half is replayed through ``stream.pipeline`` (decode, plan, the Recommender, settle, learn: what the
worker runs, without Kafka). Before each of a user's events, the user is shown the last list the pipeline sent
them; with impressions, that showing is an ``impression`` event in the batch (items shown and not taken become
negatives after the window and are demoted after a few showings), without it the stream is the interactions
alone. The hit is the pipeline's online hit: was the item taken in the list shown just before (an empty list
is a miss).

Users take from what they are shown (closed loop): at each event, with probability ``from_list`` (the same
coin in both runs), the user takes the shown item closest to their taste (their logged items' categories),
never one they ignore or already have; otherwise the logged item. Without that loop, takes do not depend on
what is shown and a shown-and-not-taken item says almost nothing (a top-10 item is taken about once in fifty
showings here), so no use of impressions can help: measured, demotion then cost a quarter of the hits.

The impression rules are chosen on validation worlds (``--validation-seeds``: the grid's best pooled HR
difference) and reported on the others (``--seeds``); several seeds (each its own world and model), and a
paired bootstrap over users of the HR difference.

    python -m bench.impressions --seeds 0 1 2      # writes bench/results/impressions.json
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bench.common import RESULTS, machine_info, write_results
from models.data.registry import split_by_time
from models.data.synthetic import generate
from models.serving.recommender import AdaptResult, Recommender
from models.training.train import default_config, meta_train
from schemas.decode import encode
from schemas.records import Impression, Interaction
from stream.pipeline import RawMessage, Rules, decode, plan, settle
from stream.replay import interactions
from stream.state import UserState

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Setup:
    users: int = 800
    items: int = 300
    mean_events: int = 30
    planted_share: float = 0.5  # users who never take the most popular items
    ignored: int = 20  # how many of the most popular items they ignore
    steps: int = 200  # meta-training steps on the first half
    batch: int = 64  # events per pipeline batch at most, as a worker's take (never two of one user: see replay)
    k: int = 10
    from_list: float = 0.3  # chance that an event takes from the list shown (the closed loop)


@dataclass
class _Answer:
    result: AdaptResult
    version: str


@dataclass(frozen=True)
class World:
    log: Any  # the EventLog, planted users' events on ignored items removed
    planted: frozenset[str]  # user ids
    ignored: frozenset[str]  # item ids the planted users never take
    affinity: dict[str, dict[str, float]]  # user id -> item id -> taste (category overlap), for the loop


def planted_world(seed: int, setup: Setup) -> World:
    """The synthetic log minus the planted users' events on the most popular items, and each user's taste."""
    world = generate(seed=seed, n_users=setup.users, n_items=setup.items, mean_events=setup.mean_events)
    counts = np.bincount(world.items, minlength=world.n_items)
    popular = np.argsort(-counts, kind="stable")[: setup.ignored]
    planted = np.random.default_rng(seed + 1000).random(world.n_users) < setup.planted_share
    drop = planted[world.users] & np.isin(world.items, popular)
    kept = world.take(np.flatnonzero(~drop))
    cats = np.asarray(world.item_features)  # (N, C) multi-hot categories
    profile = np.zeros((world.n_users, cats.shape[1]))
    np.add.at(profile, kept.users, cats[kept.items])  # (U, C) the categories each user takes
    taste = profile / np.maximum(profile.sum(1, keepdims=True), 1.0) @ cats.T  # (U, N)
    affinity = {world.user_ids[u]: dict(zip(world.item_ids, taste[u].tolist())) for u in np.unique(kept.users)}
    return World(kept, frozenset(world.user_ids[u] for u in np.flatnonzero(planted)),
                 frozenset(world.item_ids[i] for i in popular), affinity)


def taken(event: Interaction, shown: list[str], state: UserState, world: World, from_list: bool) -> Interaction:
    """What the user takes at ``event``: the shown item closest to their taste when they take from the list
    (never an item they ignore or have), else the logged item."""
    if not from_list or not shown:
        return event
    taste = world.affinity[event.user_id]
    ignored = world.ignored if event.user_id in world.planted else frozenset()
    have = set(state.seen)
    options = [i for i in shown if i not in ignored and i not in have and taste.get(i, 0.0) > 0]
    if not options:
        return event
    best = max(options, key=lambda i: taste[i])
    return Interaction(event_id=event.event_id, user_id=event.user_id, item_id=best, type=event.type,
                       ts=event.ts, value=event.value)


def _raw(event: Interaction | Impression, offset: int) -> RawMessage:
    return RawMessage(event.user_id.encode(), encode(event), "interactions", 0, offset, event.ts)


def batches(live: list[Interaction], most: int) -> list[list[Interaction]]:
    """Consecutive runs of at most ``most`` events, none holding two events of one user: each event is then
    met with the list its user's previous event produced, as at a worker whose batches span milliseconds (the
    synthetic stream's hours between a user's events would otherwise put several in one batch)."""
    out: list[list[Interaction]] = [[]]
    users: set[str] = set()
    for event in live:
        if len(out[-1]) >= most or event.user_id in users:
            out.append([])
            users = set()
        out[-1].append(event)
        users.add(event.user_id)
    return [b for b in out if b]


def replay(model: Recommender, live: list[Interaction], world: World, rules: Rules, impressions: bool,
           setup: Setup, seed: int) -> dict[str, list[bool]]:
    """Each user's online hits (in order) over the live stream, the worker's pipeline doing the work."""
    states: dict[str, UserState] = {}
    hits: dict[str, list[bool]] = {}
    offset = 0
    now = max(e.ts for e in live) + 1.0
    coins = np.random.default_rng(seed + 2000).random(len(live)) < setup.from_list  # the same in both runs
    position = 0
    for chunk in batches(live, setup.batch):
        messages = []
        for event in chunk:
            state = states.get(event.user_id)
            event = taken(event, list(state.last_recs) if state else [], state or UserState(), world,
                          bool(coins[position]))
            position += 1
            if state is not None and state.list_ts > 0:  # the pipeline's online hit, an empty list a miss
                hits.setdefault(event.user_id, []).append(event.item_id in state.last_recs)
            if impressions and state is not None and state.last_recs:
                shown = Impression(event_id=f"imp-{event.event_id}", user_id=event.user_id,
                                   list_id=state.list_event_id or "none", items=list(state.last_recs),
                                   ts=event.ts - 1.0)
                messages.append(_raw(shown, offset))
                offset += 1
            messages.append(_raw(event, offset))
            offset += 1
        decoded = decode(messages, rules, now)
        assert not decoded.dead, decoded.dead[:1]
        batch = plan(decoded, {u: states.get(u) or UserState() for u in decoded.users}, rules, "implicit")
        results = model.recommend(batch.requests, setup.k)
        settle(batch, [_Answer(r, model.version) for r in results], now)
        for work in batch.users.values():
            states[work.user_id] = work.state
        model.learn(batch.learned)  # test, then train: as the worker
    return hits


def hr(hits: dict[str, list[bool]], users: set[str] | None = None) -> float:
    chosen = [h for u, hs in hits.items() if users is None or u in users for h in hs]
    return round(float(np.mean(chosen)), 4) if chosen else float("nan")


def paired_bootstrap(with_: dict[str, list[bool]], without: dict[str, list[bool]], users: list[str],
                     rounds: int = 2000, seed: int = 0) -> dict[str, float]:
    """HR(with) - HR(without) over ``users`` and its 95% interval, users resampled with replacement."""
    a = np.array([sum(with_.get(u, [])) for u in users], np.float64)
    b = np.array([sum(without.get(u, [])) for u in users], np.float64)
    n = np.array([len(with_.get(u, [])) for u in users], np.float64)
    assert np.array_equal(n, [len(without.get(u, [])) for u in users]), "the same trials in both runs"
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, len(users), (rounds, len(users)))
    diffs = (a[picks].sum(1) - b[picks].sum(1)) / np.maximum(n[picks].sum(1), 1)
    return {"diff": round(float((a.sum() - b.sum()) / max(n.sum(), 1)), 4),
            "ci95": [round(float(np.percentile(diffs, 2.5)), 4), round(float(np.percentile(diffs, 97.5)), 4)],
            "users": len(users), "trials": int(n.sum())}


#: the impression rules tried on the validation worlds (name -> Rules); the worker's defaults are among them
GRID: dict[str, Rules] = {
    "window300-neg32-demote3": Rules(impression_window_s=300, negatives_max=32, demote_after=3),
    "window300-neg32": Rules(impression_window_s=300, negatives_max=32, demote_after=0),
    "skips-neg32": Rules(impression_window_s=0, negatives_max=32, demote_after=0, by_skips=True),
    "skips-neg8": Rules(impression_window_s=0, negatives_max=8, demote_after=0, by_skips=True),
    "skips-neg32-demote3": Rules(impression_window_s=0, negatives_max=32, demote_after=3, by_skips=True),
    "window300-skips-neg32": Rules(impression_window_s=300, negatives_max=32, demote_after=0, by_skips=True),
}


def run_seed(seed: int, setup: Setup, variants: dict[str, Rules], workdir: Path) -> dict[str, Any]:
    """One world and model; the stream replayed without impressions and with each variant's rules."""
    world = planted_world(seed, setup)
    history, live_log = split_by_time(world.log, 0.5)
    began = time.perf_counter()
    model = meta_train(history, default_config(history, seed), steps=setup.steps, seed=seed)
    model.save(workdir / f"m{seed}")
    trained_s = time.perf_counter() - began
    live = list(interactions(live_log, id_prefix=f"s{seed}"))
    runs = {}
    for name, rules in {"without": Rules(), **variants}.items():
        fresh = Recommender.load(workdir / f"m{seed}")  # the same model and statistics for every run
        began = time.perf_counter()
        runs[name] = replay(fresh, live, world, rules, name != "without", setup, seed)
        log.info("seed %d %s: HR@%d %.4f (%.0fs)", seed, name, setup.k, hr(runs[name]),
                 time.perf_counter() - began)
    return {"seed": seed, "events_live": len(live), "train_seconds": round(trained_s, 1),
            "_hits": runs, "_planted": world.planted}


def compare(seeds: list[dict[str, Any]], variant: str) -> dict[str, Any]:
    """HR with ``variant`` against without, pooled over the seeds' users, per group, with paired intervals."""
    out: dict[str, Any] = {}
    for group in ("all", "planted", "others"):
        with_, without, users = {}, {}, []
        for r in seeds:
            runs, planted = r["_hits"], r["_planted"]
            for u in sorted(runs[variant]):
                if group != "all" and (u in planted) != (group == "planted"):
                    continue
                key = f"{r['seed']}:{u}"
                with_[key], without[key] = runs[variant][u], runs["without"][u]
                users.append(key)
        out[group] = {"hr_with": hr(with_), "hr_without": hr(without), **paired_bootstrap(with_, without, users)}
    return out


def _rules(rules: Rules) -> dict[str, Any]:
    return {"impression_window_s": rules.impression_window_s, "negatives_max": rules.negatives_max,
            "demote_after": rules.demote_after, "by_skips": rules.by_skips}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.impressions", description=__doc__.splitlines()[0])
    parser.add_argument("--validation-seeds", type=int, nargs="+", default=[100])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--users", type=int, default=Setup.users)
    parser.add_argument("--steps", type=int, default=Setup.steps)
    parser.add_argument("--out", type=Path, default=RESULTS / "impressions.json")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    torch.set_num_threads(1)
    setup = Setup(users=args.users, steps=args.steps)
    machine = machine_info()
    with tempfile.TemporaryDirectory() as tmp:
        validation = [run_seed(seed, setup, GRID, Path(tmp)) for seed in args.validation_seeds]
        grid = {name: compare(validation, name) for name in GRID}
        chosen = max(GRID, key=lambda name: grid[name]["all"]["diff"])
        log.info("chosen on validation: %s", chosen)
        # the chosen rules, and counting every showing with demotion after three (the plain reading of "shown
        # and not taken"), for comparison
        test_variants = {"chosen": GRID[chosen], "plain": GRID["window300-neg32-demote3"]}
        test = [run_seed(seed, setup, test_variants, Path(tmp)) for seed in args.seeds]
    result = {
        "what": "HR@10 of the next take, the synthetic stream with planted users who ignore the most popular "
                "items, users taking from the lists shown (closed loop), replayed through stream.pipeline "
                "without impression events and with them under each rule set",
        "command": "python -m bench.impressions " + " ".join(sys.argv[1:] if argv is None else argv),
        "setup": setup.__dict__,
        "validation": {"seeds": args.validation_seeds,
                       "grid": {name: {"rules": _rules(GRID[name]), **grid[name]} for name in GRID},
                       "chosen": chosen},
        "test": {"seeds": args.seeds,
                 "chosen": {"rules": _rules(GRID[chosen]), **compare(test, "chosen")},
                 "plain": {"rules": _rules(GRID["window300-neg32-demote3"]), **compare(test, "plain")},
                 "per_seed": [{"seed": r["seed"], "events_live": r["events_live"],
                               "hr": {name: hr(h) for name, h in r["_hits"].items()}} for r in test]},
        "machine": machine,
    }
    write_results(args.out, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
