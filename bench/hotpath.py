"""CPU per event of metarec's own hot path, without Kafka: the agent's batch handler, stage by stage.

The same work as ``stream.handler.BatchHandler`` minus Faust: decode and plan a batch (``decode``, states
read from a dict of msgpack bytes as RocksDB hands them over, ``plan``, which also builds the adaptation
requests), run the model (``Recommender.recommend``), then settle (state and recommendation encode). CPU time
per event per stage (``time.process_time``, robust on a shared machine) tells which of our stages a speed-up
must target, and what is left to Faust and the Kafka clients (bench/results/throughput.json has the whole).

    .venv/bin/python -m bench.hotpath --batches 1,10,100,1000
"""

from __future__ import annotations

import argparse
import logging
import time
from collections import defaultdict
from typing import Any

import torch

from bench.common import RESULTS, catalogue, machine_info, train_checkpoint, write_results, zipf_events
from models.serving.recommender import Recommender
from stream import versions
from stream.model_worker import Served
from stream.pipeline import RawMessage, Rules, decode, plan, settle
from stream.state import decode_state

log = logging.getLogger("bench.hotpath")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--events", type=int, default=20_000)
    p.add_argument(
        "--warm-events", type=int, default=20_000, help="events applied first, so states are not empty"
    )
    p.add_argument("--users", type=int, default=100_000)
    p.add_argument("--items", type=int, default=1000)
    p.add_argument("--train-steps", type=int, default=150)
    p.add_argument("--batches", default="10,100,1000")
    p.add_argument("--threads", type=int, default=1, help="torch threads (the worker's compute thread)")
    p.add_argument("--label", default="current")
    p.add_argument("--out", default=str(RESULTS / "hotpath.json"))
    return p.parse_args(argv)


class Stages:
    """CPU seconds per named stage."""

    def __init__(self) -> None:
        self.cpu: dict[str, float] = defaultdict(float)
        self._mark = time.process_time()

    def lap(self, name: str) -> None:
        now = time.process_time()
        self.cpu[name] += now - self._mark
        self._mark = now


def run_batch(
    model: Recommender,
    store: dict[bytes, bytes],
    messages: list[RawMessage],
    rules: Rules,
    stages: Stages,
    k: int = 10,
) -> int:
    """One batch through the handler's steps; returns the number of recommendations produced."""
    now = time.time()
    decoded = decode(messages, rules, now)
    states = {user: decode_state(store.get(user.encode())) for user in decoded.users}
    batch = plan(decoded, states, rules, model.config.objective)
    stages.lap("plan (decode + state + requests)")
    results = model.recommend(batch.requests, k)
    stages.lap("model.recommend")
    done = settle(batch, [Served(r, model.version) for r in results], now)
    for write in done.writes:
        if write.value is not None:
            store[write.key] = write.value
    stages.lap("settle (state + rec encode)")
    return len(results)


def measure(model: Recommender, args: argparse.Namespace, batch: int) -> dict[str, Any]:
    items = catalogue(args.items)
    warm = zipf_events(args.warm_events, args.users, items, seed=2, id_prefix="w")
    stream = zipf_events(args.events, args.users, items, seed=3, id_prefix="h")
    store: dict[bytes, bytes] = {}
    rules = Rules()
    to_msgs = lambda s: [
        RawMessage(k, v, "interactions", 0, i, time.time())
        for i, (k, v) in enumerate(zip(s.keys, s.values))  # noqa: E731
    ]
    warm_msgs, msgs = to_msgs(warm), to_msgs(stream)
    for i in range(0, len(warm_msgs), 1000):
        run_batch(model, store, warm_msgs[i : i + 1000], rules, Stages())
    stages = Stages()
    wall = time.perf_counter()
    refreshes = 0
    for i in range(0, len(msgs), batch):
        refreshes += run_batch(model, store, msgs[i : i + batch], rules, stages)
    wall = time.perf_counter() - wall
    total = sum(stages.cpu.values())
    return {
        "batch_events": batch,
        "events": len(msgs),
        "refreshes": refreshes,
        "events_per_cpu_s": round(len(msgs) / total, 1),
        "events_per_wall_s": round(len(msgs) / wall, 1),
        "us_per_event": {k: round(1e6 * v / len(msgs), 1) for k, v in stages.cpu.items()},
        "us_per_refresh_model": round(1e6 * stages.cpu["model.recommend"] / max(refreshes, 1), 1),
        "mean_state_bytes": round(sum(map(len, store.values())) / max(len(store), 1), 1),
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    root = train_checkpoint(
        RESULTS.parent.parent / "var" / "bench" / "model", n_items=args.items, steps=args.train_steps
    )
    model = Recommender.load(versions.resolve(root), device="cpu")
    rows = []
    for batch in (int(b) for b in args.batches.split(",") if b):
        rows.append(measure(model, args, batch))
        log.info("%s", rows[-1])
    from pathlib import Path

    from bench.common import read_results

    previous = read_results(Path(args.out))
    runs = previous.get("runs", {})
    runs[args.label] = {"machine": machine_info(), "torch_threads": args.threads, "rows": rows}
    write_results(Path(args.out), {"runs": runs})
    return runs[args.label]


if __name__ == "__main__":
    main()
