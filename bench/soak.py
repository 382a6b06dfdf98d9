"""Soak: events through two workers on the embedded broker, SIGKILLed at seeded random points, then an audit.

    python -m bench.soak [--events 100000] [--kills 10] [--seed 20261206]

Every event is produced first; both workers start. Each of the ``--kills`` kills waits until the group has
committed a seeded random share (3%..90%) of the events, so the kills spread over the replay, then SIGKILLs
one worker (chosen at random) at a point of one of three kinds and restarts it at once with its RocksDB as it
was left:

- ``in_flight``: while it processes, after it read a random number (1..2000) of further events;
- ``recovery``: while it restores its partitions' state from the changelog after an assignment;
- ``rebalance``: while it (re)joins the group.

The last two need a rebalance under way; if none is, the other worker is first restarted cleanly (SIGTERM,
as in a rolling restart). A kill whose phase does not come within ``--phase-timeout-s`` happens anyway; each
kill records the phase the worker was really in. At the end both workers drain the topic (a stalled
partition is recorded and both workers restarted to free it); the second worker then stops, the first takes
every partition, restores it into its RocksDB, and stops.

The audit (``bench/soak_audit.py``, rules in ``bench/soak_check.py``) compares with a from-scratch
computation: every user's state in the changelog and in the first worker's RocksDB (``lost``, ``doubled``),
the lists on the output topic (``missing_lists``, counts per event id; the model has no stream context, so a
list depends on its user's state alone and each user's latest list is recomputed), and commits that stood
still with work waiting while nobody disturbed the workers for ``--stall-s`` (``stalls``), and every state
record of the changelog against the events up to the source offset it says it applied (``stale_writes``: a
worker wrote a state built on an older one than the changelog held, even if a later record hid it). Figures go to
``bench/results/soak.json``, with the group's committed offsets sampled every 2 s; worker logs stay in
``var/soak/``.
"""

from __future__ import annotations

import argparse
import logging
import os
import random
import signal
import sys
import time
import uuid
from pathlib import Path
from typing import Any

from bench.common import RESULTS, catalogue, machine_info, train_checkpoint, write_results, zipf_events
from bench.ground_truth import (
    changelog_topic,
    end_offsets,
    last_by_key,
    persisted_changelog_offsets,
    read_to_end,
    read_user_states,
)
from bench.kafka_tools import produce_all
from bench.soak_audit import audit
from bench.soak_check import stall_episodes, standstills
from bench.soak_fleet import Fleet, Offsets, await_progress, drain, kill_once
from bench.worker_process import WorkerSpec, wait_until
from schemas.decode import decode_user_event
from stream.broker import EmbeddedBroker, exit_on_signals
from stream.state import decode_state

log = logging.getLogger("bench.soak")
ROOT = Path(__file__).resolve().parent.parent
KINDS = ("in_flight", "recovery", "rebalance")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--events", type=int, default=100_000)
    p.add_argument("--kills", type=int, default=10)
    p.add_argument("--seed", type=int, default=20261206)
    p.add_argument("--users", type=int, default=2000, help="user population (Zipf activity)")
    p.add_argument("--items", type=int, default=200, help="catalogue of the model (trained without context)")
    p.add_argument("--train-steps", type=int, default=60)
    p.add_argument("--partitions", type=int, default=4)
    p.add_argument("--take-within-s", default="0.05", help="METAREC_TAKE_WITHIN_S: bigger batches in flight")
    p.add_argument("--stall-s", type=float, default=60.0, help="a commit still this long with lag is a stall")
    p.add_argument("--phase-timeout-s", type=float, default=120.0, help="longest wait for a kill's phase")
    p.add_argument("--drain-timeout-s", type=float, default=1200.0, help="longest wait for the final drain")
    p.add_argument("--cache", type=Path, default=ROOT / "var" / "bench", help="where the model is kept")
    p.add_argument("--out", type=Path, default=RESULTS / "soak.json")
    return p.parse_args(argv)


def run(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    checkpoint = train_checkpoint(args.cache / "soak-model", n_items=args.items, steps=args.train_steps,
                                  seed=0, context=False)
    stream = zipf_events(args.events, args.users, catalogue(args.items), seed=args.seed, id_prefix="soak")
    events = [decode_user_event(v) for v in stream.values]
    with EmbeddedBroker() as broker:
        prefix = f"soak{uuid.uuid4().hex[:8]}-"
        env = {"METAREC_TAKE_WITHIN_S": args.take_within_s, "METAREC_MODEL_POLL_S": "3600"}
        specs = {name: WorkerSpec(broker.bootstrap, prefix, checkpoint, work / name,
                                  partitions=args.partitions, extra_env=env) for name in "ab"}
        settings = specs["a"].create_topics().settings()
        offsets = Offsets(broker.bootstrap, settings.app_id, settings.interactions_topic, args.partitions)
        fleet = Fleet(specs, work, offsets)
        try:
            result = replay_with_kills(args, fleet, stream)
            result["final_exit_codes"] = first_worker_alone(fleet)
        finally:  # an error or a signal: no worker outlives the soak
            offsets.stop()
            for worker in fleet.workers.values():
                worker.stop(signal.SIGKILL)
        result["unexpected_exits"] = fleet.unexpected_exits
        result["incarnations"] = fleet.incarnations
        result["commit_watch_warnings"] = [
            f"{path.name}: {line}" for path in sorted(work.glob("*.log"))
            for line in path.read_text(errors="replace").splitlines() if "has not moved for" in line]
        inputs = read_to_end(broker.bootstrap, settings.interactions_topic, timeout_s=300)
        changelog_msgs = read_to_end(broker.bootstrap, changelog_topic(settings.app_id), timeout_s=300)
        changelog = {user: decode_state(value) for user, value in last_by_key(changelog_msgs).items()
                     if value is not None}
        ends = end_offsets(changelog_msgs)
        result["changelog_last_offsets"] = {p: ends[p] - 1 for p in sorted(ends)}
        recs = read_to_end(broker.bootstrap, settings.recommendations_topic, timeout_s=300)
    rocksdb = read_user_states(specs["a"].data_dir)
    result["rocksdb_a_changelog_offsets"] = persisted_changelog_offsets(specs["a"].data_dir)
    result.update(audit(events, inputs, changelog, rocksdb, recs, checkpoint, settings.top_k, changelog_msgs))
    result["workload"] = {"events": len(events), "users_population": args.users,
                          "users_active": stream.n_users, "items": args.items, "partitions": args.partitions,
                          "take_within_s": args.take_within_s}
    return result


def replay_with_kills(args: argparse.Namespace, fleet: Fleet, stream: Any) -> dict[str, Any]:
    """Every event produced; both workers up; each kill once the group committed a seeded random share of the
    events (kills spread over the replay), then the drain."""
    rng = random.Random(args.seed)
    plan = [(KINDS[i % len(KINDS)], rng.choice("ab")) for i in range(args.kills)]
    rng.shuffle(plan)
    points = sorted(int(rng.uniform(0.03, 0.9) * len(stream)) for _ in plan)
    offsets = fleet.offsets
    produce_all(offsets.bootstrap, offsets.topic, stream.keys, stream.values, on_delivery=offsets.delivered)
    fleet.start("a"), fleet.start("b")
    offsets.start()
    kills: list[dict[str, Any]] = []
    for (kind, victim), point in zip(plan, points):
        reached = await_progress(fleet, point, args.phase_timeout_s * 5)
        kill = kill_once(fleet, kind, victim, rng, args.phase_timeout_s)
        kill.update(t_s=round(offsets.now(), 1), committed_at_least=point, reached=reached)
        kills.append(kill)
        log.info("kill %d/%d: %s", len(kills), len(plan), kill)
    restarts = drain(fleet, args.stall_s, args.drain_timeout_s)
    replay_s = round(offsets.now(), 1)
    offsets.stop()
    return {
        "kill_log": kills, "drain_restarts": restarts, "replay_s": replay_s,
        "stall_episodes": [vars(s) for s in stall_episodes(offsets.samples, args.stall_s, fleet.disruptions)],
        "commit_standstills": [vars(s) for s in
                               standstills(offsets.samples, args.stall_s, fleet.disruptions)],
        "delivery_errors": offsets.delivery_errors, "end_offsets": offsets.latest()[1],
        "commit_samples": [[round(t, 1), [c.get(p, 0) for p in range(offsets.partitions)],
                            [e.get(p, 0) for p in range(offsets.partitions)]] for t, c, e in offsets.samples],
        "disruptions_s": [round(d, 1) for d in fleet.disruptions],
    }


def first_worker_alone(fleet: Fleet) -> dict[str, int]:
    """Stop b; a takes every partition and restores it into its RocksDB (for the audit); stop a."""
    wait_until(lambda: set(fleet.phases().values()) == {"processing"}, 300, "both workers to be serving",
               alive=list(fleet.workers.values()))  # so that both stop as they would in production
    a = fleet.workers["a"]
    ready = a.log_text().count("Worker ready")
    codes = {"b": fleet.stop("b")}
    del fleet.workers["b"]
    wait_until(lambda: a.log_text().count("Worker ready") > ready, 300,
               "worker a to take every partition over", alive=[a])
    codes["a"] = fleet.stop("a")
    return codes


def command(argv: list[str]) -> str:
    """This run's command with paths relative to the repository."""
    words = [os.path.relpath(a, ROOT) if os.path.isabs(a) else a for a in argv]
    return " ".join(["python -m bench.soak", *words])


def main(argv: list[str] | None = None) -> dict[str, Any]:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    machine = machine_info()
    work = ROOT / "var" / "soak" / time.strftime("%Y%m%d-%H%M%S")
    work.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    with exit_on_signals():  # SIGTERM unwinds through run()'s clean-up: workers and broker stopped
        result = run(args, work)
    machine["loadavg_at_end"] = list(os.getloadavg())
    out = {
        "events": result["workload"]["events"],
        "kills": len(result["kill_log"]),
        "lost": result["lost"],
        "doubled": result["doubled"],
        "missing_lists": result["lists"]["missing_lists"],
        "stalls": len(result["stall_episodes"]),
        "stale_writes": result["changelog_writes"]["stale"],
        "run_time_s": round(time.monotonic() - started, 1),
        "seed": args.seed,
        "command": command(argv),
        "machine": machine,
        "worker_logs": os.path.relpath(work, ROOT),
        **result,
    }
    write_results(args.out, out)
    log.info("soak: %s", {k: out[k] for k in ("events", "kills", "lost", "doubled", "missing_lists", "stalls",
                                                "stale_writes", "run_time_s")})
    return out


if __name__ == "__main__":
    main()
