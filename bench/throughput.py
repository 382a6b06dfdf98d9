"""End-to-end throughput, latency and memory of one metarec worker on the embedded broker, beside its ceiling.

One run, one broker:
1. ``--events`` Zipf-skewed interactions are produced to the interactions topic before anything consumes them;
2. the ceiling: a raw confluent-kafka consume -> produce passthrough of those events, in a process of its own;
3. saturation: a worker (subprocess, the real ``python -m stream worker``) starts on the backlog; the clock
   runs from the first recommendation's arrival downstream to the arrival of a recommendation triggered by
   every user's last event, so every event's user was refreshed;
4. latency: the same worker gets fresh events at fixed offered loads (``--rates``); per event, the time from
   its produce call to the arrival downstream of the first recommendation that includes it;
5. memory: worker RSS, and RocksDB bytes per user after the worker stops.

    .venv/bin/python -m bench.throughput --label final
"""

from __future__ import annotations

import argparse
import logging
import os
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np

from bench.analysis import event_latencies_ms, last_event_per_user, rocksdb_footprint
from bench.common import (
    RESULTS,
    EventStream,
    catalogue,
    machine_info,
    percentiles,
    read_results,
    train_checkpoint,
    write_results,
    zipf_events,
)
from bench.kafka_tools import (
    RecCollector,
    WorkerRun,
    batch_stats,
    faust_ceiling,
    passthrough,
    produce_all,
    scrape,
)
from bench.profiling import profile_worker
from stream.broker import EmbeddedBroker, free_port
from stream.settings import Settings
from stream.topics import TopicSpec, app_topic_specs, ensure_topics

log = logging.getLogger("bench.throughput")
ROOT = Path(__file__).resolve().parent.parent


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--events", type=int, default=250_000, help="backlog replayed at saturation")
    p.add_argument("--users", type=int, default=100_000, help="user population (Zipf activity)")
    p.add_argument("--items", type=int, default=1000, help="catalogue size of the bench model")
    p.add_argument("--user-exponent", type=float, default=0.9)
    p.add_argument("--train-steps", type=int, default=150)
    p.add_argument("--rates", default="100,1000,5000", help="offered loads for the latency phases, events/s")
    p.add_argument("--latency-s", type=float, default=20.0, help="seconds per latency phase")
    p.add_argument("--partitions", type=int, default=4)
    p.add_argument(
        "--env",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra worker environment, e.g. METAREC_TAKE_MAX=2000",
    )
    p.add_argument("--timeout-s", type=float, default=3600, help="longest wait for the saturation phase")
    p.add_argument("--label", default="final", help="name of this run inside the results file")
    p.add_argument(
        "--profile-s", type=float, default=0.0, help="py-spy the worker this long during saturation"
    )
    p.add_argument(
        "--ceilings", default="take,table", help="Faust-only ceilings to measure (bench.faust_ceiling)"
    )
    p.add_argument("--ceiling-events", type=int, default=50_000, help="events each Faust ceiling consumes")
    p.add_argument("--passthrough-only", action="store_true", help="measure the ceiling only (no worker)")
    p.add_argument(
        "--worker-root",
        type=Path,
        default=ROOT,
        help="run the worker from this copy of the project (A/B experiments on files we do not own)",
    )
    p.add_argument("--out", type=Path, default=RESULTS / "throughput.json")
    p.add_argument(
        "--cache", type=Path, default=ROOT / "var" / "bench", help="trained checkpoint is kept here"
    )
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args = parse_args(argv)
    run: dict[str, Any] = {"machine": machine_info(), "args": {k: str(v) for k, v in vars(args).items()}}
    items = catalogue(args.items)
    backlog = zipf_events(
        args.events, args.users, items, user_exponent=args.user_exponent, seed=1, id_prefix="s"
    )
    run["workload"] = {
        "events": len(backlog),
        "users_population": args.users,
        "users_active": backlog.n_users,
        "items": args.items,
        "user_zipf_exponent": args.user_exponent,
        "mean_value_bytes": round(float(np.mean([len(v) for v in backlog.values])), 1),
    }
    checkpoint = (
        None
        if args.passthrough_only
        else train_checkpoint(args.cache / "model", n_items=args.items, steps=args.train_steps)
    )
    with EmbeddedBroker() as broker, tempfile.TemporaryDirectory(prefix="metarec-bench-") as tmp:
        settings = Settings(
            brokers=broker.bootstrap, topic_prefix=f"b{uuid.uuid4().hex[:8]}-", partitions=args.partitions
        )
        sink = f"{settings.topic_prefix}passthrough"
        ensure_topics(settings.kafka_config(), [*app_topic_specs(settings), TopicSpec(sink, args.partitions)])
        produce_s = produce_all(broker.bootstrap, settings.interactions_topic, backlog.keys, backlog.values)
        run["producer_events_per_s"] = round(len(backlog) / produce_s, 1)
        run["passthrough"] = passthrough(broker.bootstrap, settings.interactions_topic, sink, len(backlog))
        run["passthrough_events_per_s"] = run["passthrough"]["events_per_s"]
        log.info("passthrough: %s events/s", run["passthrough_events_per_s"])
        run["faust_ceiling"] = {}
        for mode in args.ceilings.split(","):
            if mode:
                n = min(args.ceiling_events, len(backlog))
                run["faust_ceiling"][mode] = faust_ceiling(
                    broker.bootstrap, settings.interactions_topic, sink, n, mode, args.partitions, Path(tmp)
                )
                log.info("faust ceiling %s: %s", mode, run["faust_ceiling"][mode])
        if not args.passthrough_only:
            try:
                run.update(pipeline_phases(args, broker.bootstrap, settings, checkpoint, backlog, Path(tmp)))
            except Exception as exc:  # noqa: BLE001 - keep what was measured, say what failed
                log.exception("pipeline phases failed")
                run["pipeline_error"] = repr(exc)
    run["machine"]["loadavg_at_end"] = list(os.getloadavg())
    return save(args, run)


def pipeline_phases(
    args, bootstrap: str, settings: Settings, checkpoint: Path, backlog: EventStream, tmp: Path
) -> dict[str, Any]:
    """Saturation, then the fixed-load latency phases, on one worker; then its memory."""
    data_dir = tmp / "state"
    env = worker_env(settings, checkpoint, data_dir, args.env)
    collector = RecCollector(bootstrap, settings.recommendations_topic)
    collector.start()
    logs = ROOT / "var" / "bench"
    logs.mkdir(parents=True, exist_ok=True)
    worker = WorkerRun(
        env, logs / f"worker-{args.label}.log", args.worker_root, int(env["METAREC_METRICS_PORT"])
    )
    out: dict[str, Any] = {
        "worker_env": {k: v for k, v in env.items() if k not in {"METAREC_BROKERS"}},
        "worker_root": str(args.worker_root),
    }
    try:
        out["saturation"] = saturation(args, worker, collector, backlog)
        out["pipeline_events_per_s"] = out["saturation"]["events_per_s"]
        out["latency_ms"], out["latency_detail"] = {}, {}
        for i, rate in enumerate(int(r) for r in args.rates.split(",") if r):
            phase = zipf_events(
                int(rate * args.latency_s),
                args.users,
                catalogue(args.items),
                user_exponent=args.user_exponent,
                seed=10 + i,
                id_prefix=f"l{rate}",
            )
            detail = latency_phase(bootstrap, settings.interactions_topic, collector, phase, rate)
            out["latency_ms"][str(rate)] = detail.pop("latency_ms")
            out["latency_detail"][str(rate)] = detail
        out["memory"] = {"rss_bytes_end": worker.rss_bytes()}
    finally:
        code = worker.stop()
        collector.stop()
        out["collector"] = {"gaps_reread": collector.gaps, "rescues": collector.rescues,
                            "tombstones": collector.tombstones}
        out["worker_exit_code"] = code
    footprint = rocksdb_footprint(data_dir)
    users = max(footprint["users"], 1)
    out["memory"].update(
        {
            **footprint,
            "rocksdb_live_bytes_per_user": round(footprint["live_bytes"] / users, 1),
            "rocksdb_disk_bytes_per_user": round(footprint["disk_bytes_compacted"] / users, 1),
            "rss_mib_per_100k_users": round(out["memory"]["rss_bytes_end"] / 2**20 / users * 1e5, 1),
            "rss_growth_mib_per_100k_users": round(
                (out["memory"]["rss_bytes_end"] - out["saturation"]["rss_bytes_at_start"])
                / 2**20
                / users
                * 1e5,
                1,
            ),
        }
    )
    return out


def worker_env(settings: Settings, checkpoint: Path, data_dir: Path, extra: list[str]) -> dict[str, str]:
    env = {
        "METAREC_BROKERS": settings.brokers,
        "METAREC_TOPIC_PREFIX": settings.topic_prefix,
        "METAREC_APP_ID": f"{settings.topic_prefix}app",
        "METAREC_PARTITIONS": str(settings.partitions),
        "METAREC_CHECKPOINT": str(checkpoint),
        "METAREC_DATA_DIR": str(data_dir),
        "METAREC_METRICS_PORT": str(free_port()),
        "METAREC_MODEL_POLL_S": "3600",
        "METAREC_DEVICE": "cpu",
    }
    for item in extra:
        key, _, value = item.partition("=")
        env[key] = value
    return env


def saturation(args, worker: WorkerRun, collector: RecCollector, backlog: EventStream) -> dict[str, Any]:
    """The worker drains the whole backlog; clocked from the first arrival to every user's last refresh."""
    last = last_event_per_user(backlog.event_ids, [backlog.user_ids[u] for u in backlog.user_of])
    started, wall_started = time.monotonic(), time.time()
    while not collector.arrivals.times:
        if worker.proc.poll() is not None or time.monotonic() - started > 300:
            raise RuntimeError(f"worker produced nothing (see {worker.log_path})")
        collector.wait_any(0.5)
    first = collector.arrivals.times[0]
    rss0, cpu0, m0 = worker.rss_bytes(), worker.cpu_seconds(), scrape(worker.metrics_port)
    profile = None
    if args.profile_s:
        profile = threading.Thread(target=profile_worker, args=(worker.pid, args.profile_s, args.label))
        profile.start()
    done, missing = collector.wait_for(set(last.values()), timeout_s=args.timeout_s)
    cpu1, rss1, m1 = worker.cpu_seconds(), worker.rss_bytes(), scrape(worker.metrics_port)
    if profile is not None:
        profile.join()
    refreshes = sum(1 for e in collector.arrivals.events if e.startswith("s-"))
    done = done or collector.arrivals.times[-1]
    seconds = done - first
    return {
        "events": len(backlog),
        "users": len(last),
        "users_never_refreshed": missing,
        "complete": missing == 0,
        "refreshes_published": refreshes,
        "events_per_refresh": round(len(backlog) / max(refreshes, 1), 2),
        "seconds": round(seconds, 3),
        "events_per_s": round(len(backlog) / seconds, 1),
        "startup_s": round(first - wall_started, 2),
        "worker_cpu_s": round(cpu1 - cpu0, 2),
        "events_per_worker_cpu_s": round(len(backlog) / max(cpu1 - cpu0, 1e-9), 1),
        "rss_bytes_at_start": rss0,
        "rss_bytes_after": rss1,
        "profiled": bool(args.profile_s),
        **batch_stats(m0, m1),
    }


def latency_phase(bootstrap: str, topic: str, collector: RecCollector, phase: EventStream, rate: int) -> dict:
    """Offer ``phase`` at ``rate`` events/s and time every event to the recommendation that serves it."""
    produced_at = np.zeros(len(phase))

    def on_sent(i: int, t: float) -> None:
        produced_at[i] = t

    users = [phase.user_ids[u] for u in phase.user_of]
    produce_s = produce_all(bootstrap, topic, phase.keys, phase.values, rate=rate, on_sent=on_sent)
    _done, missing_users = collector.wait_for(
        set(last_event_per_user(phase.event_ids, users).values()), timeout_s=900
    )
    lat, served = event_latencies_ms(phase.event_ids, users, produced_at, collector.arrivals)
    missing = int(np.isnan(lat).sum())
    log.info("latency at %d/s: %s (%d unserved)", rate, percentiles(lat[~np.isnan(lat)]), missing)
    return {
        "latency_ms": {**percentiles(lat[~np.isnan(lat)]), "max": round(float(np.nanmax(lat)), 2)},
        "events": len(phase),
        "offered_events_per_s": rate,
        "achieved_offer_events_per_s": round(len(phase) / produce_s, 1),
        "refreshes_published": served,
        "unserved_events": missing,
        "all_served": missing_users == 0,
    }


def save(args, run: dict[str, Any]) -> dict[str, Any]:
    """Keep every labelled run in the file; the top-level keys are the latest run's."""
    if run.get("pipeline_events_per_s") and run.get("passthrough_events_per_s"):
        run["ratio"] = round(run["pipeline_events_per_s"] / run["passthrough_events_per_s"], 4)
    previous = read_results(args.out)
    runs = previous.get("runs", {})
    runs[args.label] = run
    if args.passthrough_only and previous:
        previous["runs"] = runs
        write_results(args.out, previous)
        return run
    write_results(args.out, {**{k: v for k, v in run.items()}, "label": args.label, "runs": runs})
    return run


if __name__ == "__main__":
    main()
