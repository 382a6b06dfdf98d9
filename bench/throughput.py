"""End-to-end throughput, latency and memory of one metarec worker on the embedded broker, beside its ceiling.

One run, one broker:
1. ``--events`` Zipf-skewed interactions are produced to the interactions topic before anything consumes them;
2. the ceiling: a raw confluent-kafka consume -> produce passthrough of those events, in a process of its own;
3. saturation: a worker (subprocess, the real ``python -m stream worker``) starts on the backlog, clocked
   until every event was applied and every refresh is in the recommendations topic (bench/phases.py);
4. latency, on a fresh broker and worker: fresh events at fixed offered loads (``--rates``); per event, the
   time from its produce call to the arrival downstream of the first recommendation that includes it;
5. memory: worker RSS, and RocksDB bytes per user after the worker stops.

    .venv/bin/python -m bench.throughput --label final
"""

from __future__ import annotations

import argparse
import logging
import os
import tempfile
import uuid
from pathlib import Path
from typing import Any

import numpy as np

from bench.analysis import rocksdb_footprint
from bench.common import (
    RESULTS,
    EventStream,
    catalogue,
    machine_info,
    read_results,
    train_checkpoint,
    write_results,
    zipf_events,
)
from bench.kafka_tools import RecCollector, faust_ceiling, passthrough, produce_all
from bench.phases import latency_phase, saturation, warm_up
from bench.worker_process import WorkerRun, WorkerSpec
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
    p.add_argument("--no-context", action="store_true", help="serve a model without stream context features")
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
    backlog = zipf_events(
        args.events,
        args.users,
        catalogue(args.items),
        user_exponent=args.user_exponent,
        seed=1,
        id_prefix="s",
    )
    run["workload"] = {
        "events": len(backlog),
        "users_population": args.users,
        "users_active": backlog.n_users,
        "items": args.items,
        "user_zipf_exponent": args.user_exponent,
        "mean_value_bytes": round(float(np.mean([len(v) for v in backlog.values])), 1),
    }
    checkpoint = None
    if not args.passthrough_only:
        checkpoint = train_checkpoint(args.cache / "model", n_items=args.items, steps=args.train_steps,
                                      context=not args.no_context)
    with tempfile.TemporaryDirectory(prefix="metarec-bench-") as tmp:
        with EmbeddedBroker() as broker:
            settings = fresh_settings(broker.bootstrap, args.partitions)
            run.update(ceilings(args, broker.bootstrap, settings, backlog, Path(tmp)))
            if not args.passthrough_only:
                guarded(
                    run,
                    "saturation_error",
                    lambda: run.update(
                        saturation_phase(args, broker.bootstrap, settings, checkpoint, backlog, Path(tmp))
                    ),
                )
        if not args.passthrough_only and args.rates:
            with EmbeddedBroker() as broker:  # a fresh broker: see bench/phases.py for why
                guarded(
                    run,
                    "latency_error",
                    lambda: run.update(latency_phases(args, broker.bootstrap, checkpoint, Path(tmp))),
                )
    run["machine"]["loadavg_at_end"] = list(os.getloadavg())
    return save(args, run)


def guarded(run: dict[str, Any], key: str, phase) -> None:
    """Run a phase; if it fails, keep what was measured and say why."""
    try:
        phase()
    except Exception as exc:  # noqa: BLE001 - a failed phase must not lose the others' figures
        log.exception("%s", key)
        run[key] = repr(exc)


def fresh_settings(bootstrap: str, partitions: int) -> Settings:
    settings = Settings(brokers=bootstrap, topic_prefix=f"b{uuid.uuid4().hex[:8]}-", partitions=partitions)
    ensure_topics(
        settings.kafka_config(),
        [*app_topic_specs(settings), TopicSpec(f"{settings.topic_prefix}passthrough", partitions)],
    )
    return settings


def ceilings(args, bootstrap: str, settings: Settings, backlog: EventStream, tmp: Path) -> dict[str, Any]:
    """The backlog produced once, then copied by a raw confluent-kafka passthrough and read by Faust alone."""
    out: dict[str, Any] = {}
    sink = f"{settings.topic_prefix}passthrough"
    produce_s = produce_all(bootstrap, settings.interactions_topic, backlog.keys, backlog.values)
    out["producer_events_per_s"] = round(len(backlog) / produce_s, 1)
    out["passthrough"] = passthrough(bootstrap, settings.interactions_topic, sink, len(backlog))
    out["passthrough_events_per_s"] = out["passthrough"]["events_per_s"]
    log.info("passthrough: %s events/s", out["passthrough_events_per_s"])
    out["faust_ceiling"] = {}
    for mode in (m for m in args.ceilings.split(",") if m):
        n = min(args.ceiling_events, len(backlog))
        out["faust_ceiling"][mode] = faust_ceiling(
            bootstrap, settings.interactions_topic, sink, n, mode, args.partitions, tmp
        )
        log.info("faust ceiling %s: %s", mode, out["faust_ceiling"][mode])
    return out


def start_worker(args, settings: Settings, checkpoint: Path, data_dir: Path, name: str) -> WorkerRun:
    env = worker_env(settings, checkpoint, data_dir, args.env)
    logs = ROOT / "var" / "bench"
    logs.mkdir(parents=True, exist_ok=True)
    return WorkerRun(
        env, logs / f"worker-{args.label}-{name}.log", args.worker_root, int(env["METAREC_METRICS_PORT"])
    )


def saturation_phase(
    args, bootstrap: str, settings: Settings, checkpoint: Path, backlog: EventStream, tmp: Path
) -> dict[str, Any]:
    """A worker drains the backlog already in the topic; then its memory, and RocksDB after it stopped."""
    data_dir = tmp / "state"
    worker = start_worker(args, settings, checkpoint, data_dir, "saturation")
    out: dict[str, Any] = {
        "worker_env": {
            k: v
            for k, v in worker_env(settings, checkpoint, data_dir, args.env).items()
            if k not in {"METAREC_BROKERS", "METAREC_METRICS_PORT"}
        },
        "worker_root": str(args.worker_root),
    }
    try:
        out["saturation"] = saturation(
            worker,
            bootstrap,
            settings.recommendations_topic,
            backlog,
            timeout_s=args.timeout_s,
            profile_s=args.profile_s,
            label=args.label,
        )
        out["pipeline_events_per_s"] = out["saturation"]["events_per_s"]
        rss = worker.rss_bytes()
    finally:
        out["worker_exit_code"] = worker.stop()
    out["memory"] = memory(rss, out["saturation"]["rss_bytes_at_start"], rocksdb_footprint(data_dir))
    return out


def memory(rss_end: int, rss_start: int, footprint: dict[str, int]) -> dict[str, Any]:
    users = max(footprint["users"], 1)
    return {
        "rss_bytes_end": rss_end,
        **footprint,
        "rocksdb_live_bytes_per_user": round(footprint["live_bytes"] / users, 1),
        "rocksdb_disk_bytes_per_user": round(footprint["disk_bytes_compacted"] / users, 1),
        "rss_mib_per_100k_users": round(rss_end / 2**20 / users * 1e5, 1),
        "rss_growth_mib_per_100k_users": round((rss_end - rss_start) / 2**20 / users * 1e5, 1),
    }


def latency_phases(args, bootstrap: str, checkpoint: Path, tmp: Path) -> dict[str, Any]:
    """A fresh worker on a fresh broker gets each offered load in turn; every event is timed downstream."""
    settings = fresh_settings(bootstrap, args.partitions)
    collector = RecCollector(bootstrap, settings.recommendations_topic)
    collector.start()
    worker = start_worker(args, settings, checkpoint, tmp / "latency-state", "latency")
    out: dict[str, Any] = {"latency_ms": {}, "latency_detail": {}}
    try:
        items = catalogue(args.items)
        warm_up(
            bootstrap,
            settings.interactions_topic,
            collector,
            zipf_events(1, args.users, items, seed=9, id_prefix="warm"),
            timeout_s=600,
        )
        for i, rate in enumerate(int(r) for r in args.rates.split(",") if r):
            phase = zipf_events(
                int(rate * args.latency_s),
                args.users,
                items,
                user_exponent=args.user_exponent,
                seed=10 + i,
                id_prefix=f"l{rate}",
            )
            detail = latency_phase(bootstrap, settings.interactions_topic, collector, phase, rate)
            out["latency_ms"][str(rate)] = detail.pop("latency_ms")
            out["latency_detail"][str(rate)] = detail
    finally:
        worker.stop()
        collector.stop()
        out["collector"] = {"gaps_reread": collector.gaps, "rescues": collector.rescues}
    return out


def worker_env(settings: Settings, checkpoint: Path, data_dir: Path, extra: list[str]) -> dict[str, str]:
    overrides = {"METAREC_MODEL_POLL_S": "3600", "METAREC_DEVICE": "cpu"}
    for item in extra:
        key, _, value = item.partition("=")
        overrides[key] = value
    spec = WorkerSpec(settings.brokers, settings.topic_prefix, checkpoint, data_dir,
                      partitions=settings.partitions, extra_env=overrides)
    return spec.variables(free_port())


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
