"""Where the model thread's time goes: one ``Recommender.recommend`` call on a batch of users, profiled.

The model learns a Zipf stream (as the worker would, each user's history arriving with their events), then one
batch of the next users is ranked with the candidate set and profiled with cProfile; the text report goes to
``--out``: the per-stage split in the README's Performance section (bench/results/profile-model-*.txt).

    python -m bench.model_profile --items 1000
"""

from __future__ import annotations

import argparse
import collections
import cProfile
import io
import logging
import pstats
import time
from pathlib import Path

import msgspec
import torch

from bench.common import RESULTS, catalogue, train_checkpoint, zipf_events
from models.serving.recommender import Recommender
from models.serving.requests import AdaptRequest, LearnedUser
from stream.versions import resolve

log = logging.getLogger("bench.model_profile")
ROOT = Path(__file__).resolve().parent.parent


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--items", type=int, default=1000)
    p.add_argument("--events", type=int, default=60_000)
    p.add_argument("--users", type=int, default=30_000)
    p.add_argument("--batch", type=int, default=680, help="users in the profiled call (worker: ~640)")
    p.add_argument("--train-steps", type=int, default=150)
    p.add_argument("--cache", type=Path, default=ROOT / "var" / "bench")
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO)
    torch.set_num_threads(1)  # as the worker's model thread (METAREC_TORCH_THREADS=1)
    checkpoint = train_checkpoint(args.cache / f"model-{args.items}", n_items=args.items,
                                  steps=args.train_steps)
    model = Recommender.load(resolve(checkpoint))  # the published version under the root
    stream = zipf_events(args.events, args.users, catalogue(args.items), seed=1, id_prefix="s")
    events = [msgspec.json.decode(v) for v in stream.values]  # the producers' JSON
    history: dict[str, list[str]] = collections.defaultdict(list)
    learn_until = len(events) - len(events) // 6
    for start in range(0, learn_until, 1000):  # the worker learns each batch after ranking it
        batch = []
        for e in events[start:min(start + 1000, learn_until)]:
            u = e["user_id"]
            batch.append(LearnedUser(u, tuple(history[u][-120:]), ((e["item_id"], e["ts"], None),)))
            history[u].append(e["item_id"])
        model.learn(batch)
    users = list(dict.fromkeys(e["user_id"] for e in events[learn_until:]))[: args.batch]
    requests = [AdaptRequest(u, [(i, 1.0) for i in history[u][-50:]], set(history[u]),
                             history=tuple(history[u][-120:])) for u in users]
    model.recommend(requests[:50], 10)  # warm-up
    started = time.perf_counter()
    model.recommend(requests, 10)
    seconds = time.perf_counter() - started
    profile = cProfile.Profile()
    profile.runcall(model.recommend, requests, 10)
    text = io.StringIO()
    pstats.Stats(profile, stream=text).sort_stats("cumulative").print_stats(40)
    report = text.getvalue().replace(str(ROOT) + "/", "")
    out = args.out or RESULTS / f"profile-model-{args.items}.txt"
    out.write_text(f"command: python -m bench.model_profile --items {args.items}\n"
                   f"users in the call: {len(requests)}; unprofiled call: {1000 * seconds:.1f} ms "
                   f"({1e6 * seconds / len(requests):.0f} us per user), one torch thread\n\n{report}")
    log.info("%d users: %.1f ms (%.0f us per user); report in %s", len(requests), 1000 * seconds,
             1e6 * seconds / len(requests), out)


if __name__ == "__main__":
    main()
