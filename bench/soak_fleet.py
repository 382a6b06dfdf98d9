"""The soak's moving parts: two workers that get killed and restarted, and a sampler of the group's commits.

Every kill and restart is stamped (seconds since the sampler started), so a commit that stands still can be
told apart from one that was simply never left alone long enough to move (``bench/soak_check.py``).
"""

from __future__ import annotations

import logging
import random
import signal
import threading
import time
from pathlib import Path
from typing import Any

from bench.ground_truth import committed_offsets
from bench.soak_check import ongoing_stalls, worker_phase
from bench.worker_process import WorkerRun, WorkerSpec, events_read
from stream.broker import free_port

log = logging.getLogger("bench.soak")
WANTED_PHASE = {"in_flight": "processing", "recovery": "recovery", "rebalance": "rebalance"}


class Offsets:
    """End offsets per partition from the producer's acknowledgements, and a thread sampling the group's
    committed offsets beside them every ``interval_s``."""

    def __init__(self, bootstrap: str, group: str, topic: str, partitions: int,
                 interval_s: float = 2.0) -> None:
        self.bootstrap, self.group, self.topic, self.partitions = bootstrap, group, topic, partitions
        self.interval_s = interval_s
        self.ends: dict[int, int] = {}
        self.delivery_errors = 0
        self.samples: list[tuple[float, dict[int, int], dict[int, int]]] = []
        self._lock, self._halt = threading.Lock(), threading.Event()
        self._thread = threading.Thread(target=self._run, name="commit-sampler", daemon=True)
        self.t0 = time.monotonic()

    def now(self) -> float:
        return time.monotonic() - self.t0

    def delivered(self, err: Any, msg: Any) -> None:
        with self._lock:
            if err is not None:
                self.delivery_errors += 1
                return
            self.ends[msg.partition()] = max(self.ends.get(msg.partition(), 0), msg.offset() + 1)

    def _run(self) -> None:
        while not self._halt.wait(self.interval_s):
            try:
                committed = committed_offsets(self.bootstrap, self.group, self.topic, self.partitions)
            except Exception as exc:  # noqa: BLE001 - a busy broker: the next sample will do
                log.warning("commit sample failed: %s", exc)
                continue
            with self._lock:
                self.samples.append((self.now(), committed, dict(self.ends)))

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._halt.set()
        if self._thread.is_alive():
            self._thread.join(30)

    def latest(self) -> tuple[dict[int, int], dict[int, int]]:
        with self._lock:
            return (dict(self.samples[-1][1]) if self.samples else {}), dict(self.ends)

    def committed_total(self) -> int:
        return sum(self.latest()[0].values())


class Fleet:
    """The two workers by name. A worker that exits on its own is recorded and restarted; kills and restarts
    are stamped on ``clock``."""

    def __init__(self, specs: dict[str, WorkerSpec], logs: Path, offsets: Offsets) -> None:
        self.specs, self.logs, self.offsets = specs, logs, offsets
        self.workers: dict[str, WorkerRun] = {}
        self.incarnations = {name: 0 for name in specs}
        self.unexpected_exits: list[dict[str, Any]] = []
        self.disruptions: list[float] = []  # when a worker was killed, stopped or started

    def start(self, name: str) -> WorkerRun:
        port = free_port()
        path = self.logs / f"{name}-{self.incarnations[name]}.log"
        self.incarnations[name] += 1
        self.workers[name] = WorkerRun(self.specs[name].env(port), path, None, port)
        self.disruptions.append(self.offsets.now())
        return self.workers[name]

    def stop(self, name: str, sig: int = signal.SIGTERM) -> int:
        self.disruptions.append(self.offsets.now())
        return self.workers[name].stop(sig)

    def revive(self) -> None:
        for name, worker in list(self.workers.items()):
            if not worker.alive():
                code = self.stop(name)
                log.error("worker %s exited on its own (%s); restarting it", name, code)
                self.unexpected_exits.append({"worker": name, "code": code, "log": worker.log_path.name,
                                              "tail": worker.log_text()[-1500:]})
                self.start(name)

    def phases(self) -> dict[str, str]:
        return {name: worker_phase(w.log_text()) for name, w in self.workers.items()}


def await_progress(fleet: Fleet, committed: int, timeout_s: float) -> bool:
    """Wait (bounded) until the group committed ``committed`` events in all; False if it did not."""
    deadline = time.monotonic() + timeout_s
    while fleet.offsets.committed_total() < committed:
        if time.monotonic() > deadline:
            return False
        fleet.revive()
        time.sleep(0.5)  # polling the sampler's figures
    return True


def kill_once(fleet: Fleet, kind: str, victim: str, rng: random.Random, timeout_s: float) -> dict[str, Any]:
    """Wait (bounded) for ``victim`` to be in the phase ``kind`` aims at, SIGKILL it there, restart it.

    ``in_flight`` waits for 1..2000 more events read once it processes. ``recovery`` and ``rebalance`` need a
    rebalance under way: if the victim is processing undisturbed, the other worker is restarted cleanly
    (SIGTERM: a rolling restart) to set one off.
    """
    extra = rng.randint(1, 2000) if kind == "in_flight" else 0
    other = next(name for name in fleet.workers if name != victim)
    clean_restart = None
    if kind != "in_flight" and fleet.phases()[victim] == "processing":
        clean_restart = {"worker": other, "exit_code": fleet.stop(other)}
        fleet.start(other)
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
    fleet.stop(victim, signal.SIGKILL)
    fleet.start(victim)
    return {"kind": kind, "victim": victim, "phase_at_kill": phases[victim], "phases": phases,
            "waited_s": round(time.monotonic() - started, 2), "victim_events_read": read,
            "extra_events_aimed": extra, "log": worker.log_path.name, "clean_restart_before": clean_restart}


def drain(fleet: Fleet, stall_s: float, timeout_s: float) -> list[dict[str, Any]]:
    """Wait until the group committed every partition to its end. A commit that stands still with lag for
    ``stall_s`` undisturbed is recorded, and both workers are restarted (SIGTERM) to free it."""
    restarts: list[dict[str, Any]] = []
    started = time.monotonic()
    while time.monotonic() - started < timeout_s:
        fleet.revive()
        committed, ends = fleet.offsets.latest()
        if ends and all(committed.get(p, 0) >= end for p, end in ends.items()):
            return restarts
        stalled = ongoing_stalls(fleet.offsets.samples, stall_s, fleet.disruptions)
        if stalled:
            log.error("stalled in the drain: %s; restarting both workers", stalled)
            restarts.append({"stalls": [vars(s) for s in stalled], "phases": fleet.phases(),
                             "logs": [w.log_path.name for w in fleet.workers.values()],
                             "exit_codes": {name: fleet.stop(name) for name in list(fleet.workers)}})
            for name in fleet.specs:
                fleet.start(name)
        time.sleep(1.0)  # polling the sampler's figures
    raise RuntimeError(f"the drain did not finish in {timeout_s:.0f}s: committed {fleet.offsets.latest()}")
