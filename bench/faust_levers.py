"""What each Faust lever of stream/faust_compat/ buys the take-only agent: bench/results/faust-ceiling.json.

One embedded broker, one backlog; every variant is a fresh ``python -m bench.faust_ceiling --mode take``
process (its own consumer group, from the earliest offset) on that backlog, clocked from its first batch to its
last event. The machine is shared and noisy, so each repetition runs every variant once, in a shuffled order,
and each figure is reported beside the stock Faust agent (``faust``) of the same repetition; the medians of
those ratios are the result. ``aiokafka_alone`` is a bare aiokafka consumer on the same backlog: what Faust's
client itself can fetch and decode, the ceiling of any agent built on it.

    .venv/bin/python -m bench.faust_levers --events 200000 --reps 3
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import random
import statistics
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path
from typing import Any

from bench.common import RESULTS, catalogue, machine_info, read_results, write_results, zipf_events
from bench.kafka_tools import produce_all
from bench.profiling import RAW_DIR, py_spy
from bench.profiling import summarise as summarise_profile
from stream.broker import EmbeddedBroker
from stream.topics import TopicSpec, ensure_topics

log = logging.getLogger("bench.faust_levers")
ROOT = Path(__file__).resolve().parent.parent
BATCH_PATH = "batch_delivery,take_batches,raw_events"
VARIANTS: dict[str, tuple[str, str]] = {  # name: (bench.faust_ceiling arguments, what it is)
    "faust": ("--levers none", "stock Faust take_events agent with metarec's Faust settings (the baseline)"),
    "faust+prometheus": ("--levers metrics", "the same with metarec's Prometheus sensor, as the worker ran it"),
    "uvloop": ("--levers uvloop", "uvloop installed before the worker starts"),
    "lean_sensors": ("--levers lean_sensors", "Faust's monitor counting only, no per-event timings"),
    "lean_sensors+prometheus": ("--levers metrics,lean_sensors", "the same on the Prometheus monitor"),
    "cython": ("--levers cython", "faust's cython_optimizations (its compiled iterator's quick queue get)"),
    "max_poll_records_500": ("--levers none --set broker_max_poll_records=500", "aiokafka max_poll_records 500"),
    "fetch_4mib": ("--levers none --set consumer_max_fetch_size=4194304", "4 MiB per partition fetch (1 MiB)"),
    "buffer_16k": ("--levers none --set stream_buffer_maxsize=16384", "stream buffer 16,384 events (4,096)"),
    "batch_delivery": ("--levers batch_delivery", "one wait_first per fetched batch, not per message"),
    "take_batches": ("--levers take_batches", "the agent drains its channel queue in bulk"),
    "raw_events": ("--levers raw_events", "raw events made without Faust's codec registry"),
    "batch_delivery+take_batches": ("--levers batch_delivery,take_batches", "both structural levers"),
    "batch_path": (f"--levers {BATCH_PATH}", "batch delivery, bulk take, raw events"),
    "batch_path+lean_sensors": (f"--levers {BATCH_PATH},lean_sensors", "the batch path, lean sensors"),
    "batch_path+lean_sensors+uvloop": (f"--levers {BATCH_PATH},lean_sensors,uvloop", "... and uvloop"),
    "batch_path+lean_sensors+poll_500": (f"--levers {BATCH_PATH},lean_sensors --set broker_max_poll_records=500",
                                         "... with max_poll_records 500"),
    "batch_path+lean_sensors+fetch_4mib": (
        f"--levers {BATCH_PATH},lean_sensors --set consumer_max_fetch_size=4194304", "... with 4 MiB fetches"),
    "worker": ("--levers worker", "what the worker runs by default (stream/settings.py), Prometheus included"),
    "worker+uvloop": ("--levers worker,uvloop", "the worker's levers and uvloop"),
    "worker+fetch_4mib": ("--levers worker --set consumer_max_fetch_size=4194304", "... and 4 MiB fetches"),
    "aiokafka_alone": ("--mode aiokafka", "bare aiokafka consumer: fetch and decode only, no Faust"),
    "confluent": ("--levers none --transport confluent", "Faust's confluent:// driver (run once)"),
}
ONCE = {"confluent"}
STEADY_FRAMES = ("Fetcher._fetcher", "_drain_batches", "_deliver", "take_batches", "_passive_drainer",
                 "Agent._execute_actor", "_commit_handler", "WorkerThread.run")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--events", type=int, default=200_000)
    p.add_argument("--users", type=int, default=30_000)
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--variants", default=",".join(VARIANTS), help="comma list of: " + ", ".join(VARIANTS))
    p.add_argument("--child-timeout-s", type=float, default=180.0)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--profile", default="", help="comma list of variants to run once more under py-spy")
    p.add_argument("--label", default="levers", help="name of this run in the results file (runs are kept)")
    p.add_argument("--out", type=Path, default=RESULTS / "faust-ceiling.json")
    return p.parse_args(argv)


def run_child(bootstrap: str, topic: str, events: int, extra: str, timeout_s: float,
              prefix: str = "") -> dict[str, Any]:
    """One ``bench.faust_ceiling`` process on the backlog; its figures, or why it gave none."""
    with tempfile.TemporaryDirectory(prefix="faust-levers-") as tmp:
        out = Path(tmp) / "out.json"
        cmd = [*prefix.split(), sys.executable, "-m", "bench.faust_ceiling", "--brokers", bootstrap,
               "--topic", topic, "--sink", f"{topic}-sink", "--expected", str(events), "--out", str(out),
               *extra.split()]
        try:
            done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s, cwd=ROOT, check=False)
        except subprocess.TimeoutExpired:
            return {"error": f"no result in {timeout_s:.0f} s"}
        if not out.exists():
            return {"error": (done.stderr or done.stdout)[-400:]}
        return json.loads(out.read_text())


def profile(bootstrap: str, topic: str, events: int, name: str, timeout_s: float) -> Path:
    """One more run of ``name`` under py-spy; where the agent's time went, per stage, in bench/results/."""
    raw = RAW_DIR / f"profile-faust-take-{name}.raw"
    RAW_DIR.mkdir(parents=True, exist_ok=True)
    prefix = f"{py_spy()} record --format raw --threads --nolineno --rate 100 --output {raw} --"
    figures = run_child(bootstrap, topic, events, VARIANTS[name][0], timeout_s, prefix=prefix)
    out = RESULTS / f"profile-faust-take-{name}.txt"
    title = (f"bench.faust_ceiling --mode take, variant '{name}' ({VARIANTS[name][0]}), {events} events, "
             f"py-spy 100 Hz; {figures.get('events_per_s')} events/s under the profiler; only the stacks of the "
             f"steady state (fetch, delivery, take, agent, consumer thread): start-up and shutdown left out")
    out.write_text(summarise_profile(raw, title=title, keep=STEADY_FRAMES))
    return out


def summarise(runs: list[dict[str, Any]]) -> dict[str, Any]:
    ok = [r for r in runs if "events_per_s" in r]
    if not ok:
        return {"runs": runs}
    def med(key: str) -> float:
        return round(statistics.median(r[key] for r in ok), 3 if "ratio" in key else 1)

    out = {"median_events_per_s": med("events_per_s"), "median_events_per_cpu_s": med("events_per_cpu_s")}
    if all("ratio" in r for r in ok):
        out.update(median_ratio=med("ratio"), median_cpu_ratio=med("cpu_ratio"),
                   ratio_range=[min(r["ratio"] for r in ok), max(r["ratio"] for r in ok)])
    return {**out, "runs": runs}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args = parse_args(argv)
    names = [n.strip() for n in args.variants.split(",") if n.strip()]
    unknown = set(names) - set(VARIANTS)
    if unknown:
        raise SystemExit(f"unknown variants: {', '.join(sorted(unknown))}")
    if "faust" not in names:
        names.insert(0, "faust")
    result: dict[str, Any] = {
        "command": "python -m bench.faust_levers " + " ".join(argv if argv is not None else sys.argv[1:]),
        "machine": machine_info(),
    }
    backlog = zipf_events(args.events, args.users, catalogue(1000), seed=args.seed, id_prefix="s")
    result["workload"] = {"events": len(backlog), "users_population": args.users, "partitions": 4,
                          "mean_value_bytes": round(sum(map(len, backlog.values)) / len(backlog), 1)}
    runs: dict[str, list[dict[str, Any]]] = {n: [] for n in names}
    rng = random.Random(args.seed)
    with EmbeddedBroker() as broker:
        topic = f"levers-{uuid.uuid4().hex[:8]}"
        ensure_topics(broker.kafka_config(), [TopicSpec(topic, 4), TopicSpec(f"{topic}-sink", 4)])
        produce_all(broker.bootstrap, topic, backlog.keys, backlog.values)
        for rep in range(args.reps):
            order = [n for n in names if rep == 0 or n not in ONCE]
            rng.shuffle(order)
            figures = {}
            for name in order:
                timeout_s = min(args.child_timeout_s, 90.0) if name in ONCE else args.child_timeout_s
                figures[name] = run_child(broker.bootstrap, topic, len(backlog), VARIANTS[name][0], timeout_s)
                log.info("rep %d %s: %s", rep, name, {k: figures[name].get(k) for k in
                                                      ("events_per_s", "events_per_cpu_s", "error")})
            base = figures["faust"]
            for name, fig in figures.items():
                if "events_per_s" in fig and "events_per_s" in base:
                    fig["ratio"] = round(fig["events_per_s"] / base["events_per_s"], 3)
                    fig["cpu_ratio"] = round(fig["events_per_cpu_s"] / base["events_per_cpu_s"], 3)
                runs[name].append({"rep": rep, "loadavg": [round(x, 2) for x in os.getloadavg()], **fig})
        result["profiles"] = {name: str(profile(broker.bootstrap, topic, len(backlog), name, args.child_timeout_s)
                                        .relative_to(ROOT)) for name in args.profile.split(",") if name}
    result["variants"] = {n: {"args": VARIANTS[n][0], "what": VARIANTS[n][1], **summarise(runs[n])} for n in names}
    worker = result["variants"].get("worker", {})
    result["faust_take_only_events_per_s"] = worker.get("median_events_per_s")
    result["machine"]["loadavg_at_end"] = list(os.getloadavg())
    save(args, result)
    return result


def save(args: argparse.Namespace, result: dict[str, Any]) -> None:
    """Keep every labelled run; the top level is the ``levers`` run, its final figure the latest ``worker``."""
    data = read_results(args.out)
    runs = data.get("runs", {})
    runs[args.label] = result
    top = runs.get("levers", result)
    finals = [r["faust_take_only_events_per_s"] for r in runs.values() if r.get("faust_take_only_events_per_s")]
    write_results(args.out, {**top, "faust_take_only_events_per_s": finals[-1] if finals else None,
                             "runs": runs})


if __name__ == "__main__":
    main()
