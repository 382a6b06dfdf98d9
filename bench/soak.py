"""Soak: events through two workers on the embedded broker, SIGKILLed at seeded random points, then an audit.

    python -m bench.soak [--events 100000] [--kills 10] [--seed 20261206]

The events are produced in ``--kills`` chunks. After each chunk one worker (chosen at random) is killed with
SIGKILL at a random point of one of three kinds, then restarted at once with its RocksDB as it was left:

- ``in_flight``: while it processes, after it read a random number (1..2000) of further events;
- ``recovery``: while it restores its partitions' state from the changelog after an assignment;
- ``rebalance``: while it (re)joins the group, which every restart sets off.

A kill aimed at a phase that does not come within ``--phase-timeout-s`` happens anyway; each kill records
the phase the worker was really in. At the end both workers drain the topic (a stalled partition is recorded,
and both workers restarted to free it); the second worker then stops, the first takes every partition and
restores it, and stops. The audit (``bench/soak_check.py``) compares with a from-scratch computation: every
user's state in the changelog and in the first worker's RocksDB (``lost``, ``doubled``), the lists on the
output topic (``missing_lists``, counts per event id; the model has no stream context, so a list depends on
its user's state alone and each user's latest list is recomputed), and commits that stood still with work
waiting (``stalls``). Figures go to ``bench/results/soak.json``; worker logs stay in ``var/soak/``.
"""

from __future__ import annotations

import argparse
import logging
import os
import random
import signal
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

from bench.common import RESULTS, catalogue, machine_info, train_checkpoint, write_results, zipf_events
from bench.ground_truth import changelog_states, committed_offsets, read_to_end, read_user_states
from bench.kafka_tools import produce_all
from bench.soak_audit import audit
from bench.soak_check import stall_episodes, worker_phase
from bench.worker_process import WorkerRun, WorkerSpec, events_read, wait_until
from schemas.decode import decode_user_event
from stream.broker import EmbeddedBroker, exit_on_signals, free_port

log = logging.getLogger("bench.soak")
ROOT = Path(__file__).resolve().parent.parent
KINDS = ("in_flight", "recovery", "rebalance")
WANTED_PHASE = {"in_flight": "processing", "recovery": "recovery", "rebalance": "rebalance"}


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
    p.add_argument("--cache", type=Path, default=ROOT / "var" / "bench", help="trained checkpoint is kept here")
    p.add_argument("--out", type=Path, default=RESULTS / "soak.json")
    return p.parse_args(argv)


class Fleet:
    """The two workers by name; a worker that exits on its own is recorded and restarted."""

    def __init__(self, specs: dict[str, WorkerSpec], logs: Path) -> None:
        self.specs, self.logs = specs, logs
        self.workers: dict[str, WorkerRun] = {}
        self.incarnations = {name: 0 for name in specs}
        self.unexpected_exits: list[dict[str, Any]] = []

    def start(self, name: str) -> WorkerRun:
        port = free_port()
        path = self.logs / f"{name}-{self.incarnations[name]}.log"
        self.incarnations[name] += 1
        self.workers[name] = WorkerRun(self.specs[name].env(port), path, None, port)
        return self.workers[name]

    def revive(self) -> None:
        for name, worker in list(self.workers.items()):
            if not worker.alive():
                code = worker.stop()
                log.error("worker %s exited on its own (%s); restarting it", name, code)
                self.unexpected_exits.append({"worker": name, "code": code, "log": worker.log_path.name,
                                              "tail": worker.log_text()[-1500:]})
                self.start(name)

    def phases(self) -> dict[str, str]:
        return {name: worker_phase(w.log_text()) for name, w in self.workers.items()}

    def stop_all(self) -> dict[str, int]:
        return {name: w.stop() for name, w in self.workers.items()}


class Offsets:
    """End offsets per partition from the producer's acknowledgements, and a thread sampling the group's
    committed offsets beside them: the material of :func:`stall_episodes`."""

    def __init__(self, bootstrap: str, group: str, topic: str, partitions: int, interval_s: float = 2.0) -> None:
        self.args = (bootstrap, group, topic, partitions)
        self.interval_s = interval_s
        self.ends: dict[int, int] = {}
        self.samples: list[tuple[float, dict[int, int], dict[int, int]]] = []
        self._lock, self._halt = threading.Lock(), threading.Event()
        self._thread = threading.Thread(target=self._run, name="commit-sampler", daemon=True)
        self.t0 = time.monotonic()

    def delivered(self, err: Any, msg: Any) -> None:
        if err is None:
            with self._lock:
                self.ends[msg.partition()] = max(self.ends.get(msg.partition(), 0), msg.offset() + 1)

    def _run(self) -> None:
        while not self._halt.wait(self.interval_s):
            try:
                committed = committed_offsets(*self.args)
            except Exception as exc:  # noqa: BLE001 - a busy broker: the next sample will do
                log.warning("commit sample failed: %s", exc)
                continue
            with self._lock:
                self.samples.append((time.monotonic() - self.t0, committed, dict(self.ends)))

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._halt.set()
        self._thread.join(30)

    def latest(self) -> tuple[dict[int, int], dict[int, int]]:
        with self._lock:
            return (dict(self.samples[-1][1]) if self.samples else {}), dict(self.ends)


def kill_once(fleet: Fleet, kind: str, victim: str, rng: random.Random, timeout_s: float,
              chunk: int) -> dict[str, Any]:
    """Wait (bounded) for ``victim`` to be in the phase ``kind`` aims at, SIGKILL it there, restart it.

    ``in_flight`` waits for 1 to ``chunk // 4`` (at most 2000) more events read: within what the chunk just
    produced gives the victim (about half of it, its share of the partitions).
    """
    extra = rng.randint(1, max(1, min(2000, chunk // 4))) if kind == "in_flight" else 0
    base: float | None = None
    started = time.monotonic()
    while time.monotonic() - started < timeout_s:
        fleet.revive()
        worker = fleet.workers[victim]
        if worker_phase(worker.log_text()) == WANTED_PHASE[kind]:
            if kind != "in_flight":
                break
            read = events_read(worker.metrics_port)
            base = read if base is None else base
            if read >= base + extra:
                break
        time.sleep(0.2 if kind == "in_flight" and base is not None else 0.02)  # polling, not synchronising
    worker = fleet.workers[victim]
    phases, read = fleet.phases(), events_read(worker.metrics_port)
    worker.stop(signal.SIGKILL)
    fleet.start(victim)
    return {"kind": kind, "victim": victim, "phase_at_kill": phases[victim], "other_phase": phases,
            "waited_s": round(time.monotonic() - started, 2), "victim_events_read": read,
            "extra_events_aimed": extra, "log": worker.log_path.name}


def drain(fleet: Fleet, offsets: Offsets, stall_s: float, timeout_s: float) -> list[dict[str, Any]]:
    """Wait until the group committed every partition to its end; a commit that stands still with lag for
    ``stall_s`` is recorded and both workers are restarted (SIGTERM) to free it. Returns those restarts."""
    restarts: list[dict[str, Any]] = []
    started = time.monotonic()
    since = time.monotonic() - offsets.t0
    while time.monotonic() - started < timeout_s:
        fleet.revive()
        committed, ends = offsets.latest()
        if ends and all(committed.get(p, 0) >= end for p, end in ends.items()):
            return restarts
        recent = [s for s in offsets.samples if s[0] >= since]
        ongoing = [s for s in stall_episodes(recent, stall_s) if s.since_s + s.seconds >= recent[-1][0]] \
            if recent else []
        if ongoing:
            log.error("stalled in the drain: %s; restarting both workers", ongoing)
            restarts.append({"stalls": [vars(s) for s in ongoing], "phases": fleet.phases(),
                             "exit_codes": fleet.stop_all(), "logs": [w.log_path.name for w in fleet.workers.values()]})
            for name in fleet.specs:
                fleet.start(name)
            since = time.monotonic() - offsets.t0
        time.sleep(1.0)  # polling the sampler's latest figures
    raise RuntimeError(f"the drain did not finish in {timeout_s:.0f}s: committed {offsets.latest()}")


def run(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    checkpoint = train_checkpoint(args.cache / "soak-model", n_items=args.items, steps=args.train_steps,
                                  seed=0, context=False)
    stream = zipf_events(args.events, args.users, catalogue(args.items), seed=args.seed, id_prefix="soak")
    events = [decode_user_event(v) for v in stream.values]
    with EmbeddedBroker() as broker:
        prefix = f"soak{uuid.uuid4().hex[:8]}-"
        env = {"METAREC_TAKE_WITHIN_S": args.take_within_s, "METAREC_MODEL_POLL_S": "3600"}
        specs = {name: WorkerSpec(broker.bootstrap, prefix, checkpoint, work / name, partitions=args.partitions,
                                  extra_env=env) for name in "ab"}
        settings = specs["a"].create_topics().settings()
        offsets = Offsets(broker.bootstrap, settings.app_id, settings.interactions_topic, args.partitions)
        fleet = Fleet(specs, work)
        try:
            result = replay_with_kills(args, fleet, offsets, stream)
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
        changelog = changelog_states(broker.bootstrap, settings.app_id)
        recs = read_to_end(broker.bootstrap, settings.recommendations_topic, timeout_s=300)
    result.update(audit(events, changelog, read_user_states(specs["a"].data_dir), recs, checkpoint, settings.top_k))
    result["workload"] = {"events": len(events), "users_population": args.users, "users_active": stream.n_users,
                          "items": args.items, "partitions": args.partitions, "take_within_s": args.take_within_s}
    return result


def replay_with_kills(args: argparse.Namespace, fleet: Fleet, offsets: Offsets, stream: Any) -> dict[str, Any]:
    """Both workers up; the events in ``args.kills`` chunks, a kill after each; then the drain."""
    rng = random.Random(args.seed)
    plan = [(KINDS[i % len(KINDS)], rng.choice("ab")) for i in range(args.kills)]
    rng.shuffle(plan)
    bootstrap, topic = offsets.args[0], offsets.args[2]
    kills: list[dict[str, Any]] = []
    fleet.start("a"), fleet.start("b")
    offsets.start()
    started = time.monotonic()
    chunks = max(1, args.kills)
    for i in range(chunks):
        lo, hi = i * len(stream) // chunks, (i + 1) * len(stream) // chunks
        produce_all(bootstrap, topic, stream.keys[lo:hi], stream.values[lo:hi], on_delivery=offsets.delivered)
        if i < len(plan):
            kill = kill_once(fleet, *plan[i], rng, args.phase_timeout_s, hi - lo)
            kill["t_s"] = round(time.monotonic() - started, 1)
            kills.append(kill)
            log.info("kill %d/%d: %s", i + 1, len(plan), kill)
    restarts = drain(fleet, offsets, args.stall_s, args.drain_timeout_s)
    replay_s = round(time.monotonic() - started, 1)
    offsets.stop()
    return {"kill_log": kills, "drain_restarts": restarts, "replay_s": replay_s,
            "stall_episodes": [vars(s) for s in stall_episodes(offsets.samples, args.stall_s)],
            "end_offsets": offsets.latest()[1]}


def first_worker_alone(fleet: Fleet) -> dict[str, int]:
    """Stop b; a takes every partition and restores it into its RocksDB (for the audit); stop a."""
    a = fleet.workers["a"]
    ready = a.log_text().count("Worker ready")
    codes = {"b": fleet.workers.pop("b").stop()}
    wait_until(lambda: a.log_text().count("Worker ready") > ready, 300, "worker a to take every partition over",
               alive=[a])
    codes["a"] = a.stop()
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
        "run_time_s": round(time.monotonic() - started, 1),
        "seed": args.seed,
        "command": command(argv),
        "machine": machine,
        "worker_logs": os.path.relpath(work, ROOT),
        **result,
    }
    write_results(args.out, out)
    log.info("soak: %s", {k: out[k] for k in ("events", "kills", "lost", "doubled", "missing_lists", "stalls",
                                                "run_time_s")})
    return out


if __name__ == "__main__":
    main()
