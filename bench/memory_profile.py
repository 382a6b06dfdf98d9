"""Where a worker's memory per user goes: RSS, Python allocations by source line, and the C heap, between two
points of a run that only adds new users.

A worker (the real ``python -m stream worker``, from ``--worker-root``, so an older commit can be profiled the
same way) runs with tracemalloc on and a small ``sitecustomize`` hook: asked (a request file), it records RSS,
glibc's ``mallinfo2`` and a tracemalloc snapshot, and from the second request on writes the growth since the
first, by source line. Between the two points the worker is fed events of users it has never seen (uniform
activity), so what grows is what each new user costs. Python-side growth shows up by line; what RSS grows
beyond it is native (RocksDB, torch, the allocator's free lists, which ``mallinfo2`` shows).

    python -m bench.memory_profile --label start --worker-root ../wt/base
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

from bench.common import (
    RESULTS,
    catalogue,
    machine_info,
    read_results,
    train_checkpoint,
    write_results,
    zipf_events,
)
from bench.kafka_tools import produce_all
from bench.throughput import fresh_settings, worker_env
from bench.worker_process import WorkerRun, scrape
from stream.broker import EmbeddedBroker

log = logging.getLogger("bench.memory_profile")
ROOT = Path(__file__).resolve().parent.parent
HOOK = textwrap.dedent('''
    """Injected by bench.memory_profile: a request file records memory; the second and later write the growth.

    A thread of its own watches for the request (the worker's framework owns the signals)."""
    import ctypes, json, os, threading, time, tracemalloc

    _first = {}

    class _Mallinfo2(ctypes.Structure):
        _fields_ = [(n, ctypes.c_size_t) for n in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks",
                                                   "fsmblks", "uordblks", "fordblks", "keepcost")]

    def _heap():
        libc = ctypes.CDLL("libc.so.6")
        libc.mallinfo2.restype = _Mallinfo2
        m = libc.mallinfo2()
        return {"arena": m.arena, "mmapped": m.hblkhd, "in_use": m.uordblks, "free": m.fordblks}

    def _rss():
        for line in open("/proc/self/status"):
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        return 0

    def _record():
        snap = tracemalloc.take_snapshot().filter_traces([tracemalloc.Filter(False, tracemalloc.__file__)])
        point = {"rss": _rss(), "heap": _heap(), "traced": sum(s.size for s in snap.statistics("filename"))}
        if not _first:
            _first.update(point, snapshot=snap)
        else:
            diff = snap.compare_to(_first["snapshot"], "lineno")
            point["top"] = [{"where": str(d.traceback[0]), "bytes": d.size_diff, "blocks": d.count_diff}
                            for d in diff[:25]]
            point["first"] = {k: v for k, v in _first.items() if k != "snapshot"}
        out = os.environ["METAREC_MEMORY_PROFILE_OUT"]
        with open(out + ".tmp", "w") as f:
            json.dump(point, f)
        os.replace(out + ".tmp", out)

    def _watch(request):
        while True:
            if os.path.exists(request):
                os.remove(request)
                _record()
            time.sleep(0.2)

    if os.environ.get("METAREC_MEMORY_PROFILE_OUT"):
        tracemalloc.start(1)
        threading.Thread(target=_watch, args=(os.environ["METAREC_MEMORY_PROFILE_OUT"] + ".request",),
                         daemon=True).start()
''')


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--items", type=int, default=1000)
    p.add_argument("--warm-users", type=int, default=10_000, help="users fed before the first point")
    p.add_argument("--users", type=int, default=30_000, help="new users fed between the two points")
    p.add_argument("--events-per-user", type=float, default=1.5)
    p.add_argument("--train-steps", type=int, default=150)
    p.add_argument("--worker-root", type=Path, default=ROOT, help="the project copy the worker runs from")
    p.add_argument("--label", default="current")
    p.add_argument("--out", type=Path, default=RESULTS / "memory-profile.json")
    p.add_argument("--cache", type=Path, default=ROOT / "var" / "bench")
    p.add_argument("--env", action="append", default=[], metavar="KEY=VALUE")
    return p.parse_args(argv)


def _feed(bootstrap: str, topic: str, worker: WorkerRun, users: range, items: int, per_user: float,
          prefix: str, applied_before: float) -> float:
    """Events of ``users`` (each at least once), then wait until the worker applied them; its event count."""
    n = int(len(users) * per_user)
    stream = zipf_events(n, len(users), catalogue(items), user_exponent=0.0, seed=len(prefix), id_prefix=prefix,
                         first_user=users.start)
    produce_all(bootstrap, topic, stream.keys, stream.values)
    tick = threading.Event()  # a poll interval, not synchronisation: the worker's counter is sampled
    deadline = time.monotonic() + 3600
    while time.monotonic() < deadline:
        try:
            applied = scrape(worker.metrics_port).get("metarec_events_total", 0.0)
        except OSError:
            applied = 0.0
        if applied >= applied_before + n:
            return applied
        if worker.proc.poll() is not None:
            raise RuntimeError(f"worker exited (see {worker.log_path})")
        tick.wait(0.5)
    raise TimeoutError("the worker did not apply the events within an hour")


def _point(worker: WorkerRun, path: Path, previous: float) -> dict[str, Any]:
    """Ask the worker's hook to record and read what it wrote (the file's time moves past ``previous``)."""
    Path(str(path) + ".request").touch()
    tick = threading.Event()
    for _ in range(600):
        if path.exists() and path.stat().st_mtime > previous:
            return json.loads(path.read_text())
        tick.wait(0.1)
    raise TimeoutError("the worker's memory hook wrote nothing")


def main(argv: list[str] | None = None) -> dict[str, Any]:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args = parse_args(argv)
    checkpoint = train_checkpoint(args.cache / "model", n_items=args.items, steps=args.train_steps)
    with tempfile.TemporaryDirectory(prefix="metarec-memory-") as tmp, EmbeddedBroker() as broker:
        hook_dir, report = Path(tmp) / "hook", Path(tmp) / "memory.json"
        hook_dir.mkdir()
        (hook_dir / "sitecustomize.py").write_text(HOOK)
        settings = fresh_settings(broker.bootstrap, 4)
        env = worker_env(settings, checkpoint, Path(tmp) / "state", args.env)
        env["PYTHONPATH"] = f"{hook_dir}:{args.worker_root.resolve()}"
        env["METAREC_MEMORY_PROFILE_OUT"] = str(report)
        worker = WorkerRun(env, Path(tmp) / "worker.log", args.worker_root.resolve(),
                           int(env["METAREC_METRICS_PORT"]))
        try:
            topic = settings.interactions_topic
            applied = _feed(broker.bootstrap, topic, worker, range(0, args.warm_users), args.items,
                            args.events_per_user, "a", 0.0)
            first = _point(worker, report, 0.0)
            _feed(broker.bootstrap, topic, worker, range(args.warm_users, args.warm_users + args.users),
                  args.items, args.events_per_user, "b", applied)
            second = _point(worker, report, report.stat().st_mtime)
        finally:
            worker.stop()
            log_tail = (Path(tmp) / "worker.log").read_text(errors="replace")[-2000:]
    per_user = lambda key: round((second[key] - first[key]) / args.users, 1)  # noqa: E731
    run = {
        "machine": machine_info(),
        "worker_root": str(args.worker_root),
        "new_users": args.users,
        "rss_bytes_per_new_user": per_user("rss"),
        "traced_python_bytes_per_new_user": per_user("traced"),
        "heap_in_use_bytes_per_new_user": round((second["heap"]["in_use"] - first["heap"]["in_use"]) / args.users, 1),
        "heap_free_bytes_per_new_user": round((second["heap"]["free"] - first["heap"]["free"]) / args.users, 1),
        "first": first,
        "top_growth_by_line": second.get("top", []),
        "worker_log_tail": log_tail if worker.proc.returncode not in (0, None) else "",
        "command": "python -m bench.memory_profile " + " ".join(sys.argv[1:] if argv is None else argv),
    }
    previous = read_results(args.out)
    runs = previous.get("runs", {})
    runs[args.label] = run
    write_results(args.out, {"runs": runs})
    return run


if __name__ == "__main__":
    main()
