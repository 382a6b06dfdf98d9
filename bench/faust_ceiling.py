"""The Faust framework's own ceiling here: an agent with metarec's Faust settings that does (almost) nothing.

Run as a process by :mod:`bench.throughput` on the same backlog. ``--mode take`` only takes batches and acks
them (what taking alone costs per event); ``--mode table`` also reads and writes one Faust table value per
distinct key of each batch and sends one message per key (Faust's own table and send path). The gap between
these and the passthrough is Faust's; the gap between these and the pipeline is ours.

``--levers`` picks the throughput levers of stream/faust_compat/ the agent runs with: ``worker`` (default)
those the real worker runs with by default (stream/settings.py), ``none`` Faust as it comes, or a list.

    python -m bench.faust_ceiling --brokers HOST:PORT --topic T --sink S --expected N --mode take --out F

``--mode aiokafka`` reads the same backlog with a bare aiokafka consumer (what Faust's client alone can fetch
and decode). The lever comparison that writes bench/results/faust-ceiling.json is bench/faust_levers.py.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import signal
import tempfile
import time
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import faust
from faust.streams import _current_event  # Faust's own table path needs it (stream/faust_compat/, point 1)

from stream import faust_compat
from stream.settings import Settings

LEVERS = ("uvloop", "lean_sensors", "batch_delivery", "take_batches", "raw_events", "cython", "metrics")


@contextmanager
def event_context(event: Any) -> Iterator[None]:
    """Make ``event`` Faust's current event in the block, as ``table[key] = ...`` needs inside a batch."""
    token = _current_event.set(weakref.ref(event))
    try:
        yield
    finally:
        _current_event.reset(token)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser()
    p.add_argument("--brokers", required=True)
    p.add_argument("--topic", required=True)
    p.add_argument("--sink", required=True)
    p.add_argument("--partitions", type=int, default=4)
    p.add_argument("--expected", type=int, required=True)
    p.add_argument("--mode", choices=("take", "table", "aiokafka"), default="take")
    p.add_argument("--take-max", type=int, default=Settings.take_max)
    p.add_argument("--take-within-s", type=float, default=0.005)
    p.add_argument("--linger-s", type=float, default=0.001, help="producer_linger (the app's value by default)")
    p.add_argument("--levers", default="worker", help=f"worker, none, or a comma list of {', '.join(LEVERS)}")
    p.add_argument("--set", action="append", default=[], metavar="FAUST_SETTING=VALUE",
                   help="extra faust.App setting (int, float or string), e.g. broker_max_poll_records=500")
    p.add_argument("--transport", default="kafka", help="kafka (aiokafka) or confluent")
    p.add_argument("--out", type=Path, required=True)
    return p.parse_args(argv)


def worker_levers(settings: Settings) -> set[str]:
    """The levers stream/app.py's ``build_app`` applies with these settings (the Prometheus sensor included)."""
    levers = {"metrics"}
    if settings.faust_batch_path:
        levers |= {"batch_delivery", "take_batches", "raw_events"}
    if settings.faust_lean_sensors:
        levers.add("lean_sensors")
    return levers


def levers_of(spec: str, settings: Settings | None = None) -> set[str]:
    """The lever names a ``--levers`` value stands for (``worker`` may be one item of a list)."""
    chosen = {name.strip() for name in spec.split(",") if name.strip() and name.strip() != "none"}
    if "worker" in chosen:
        chosen = (chosen - {"worker"}) | worker_levers(settings or Settings.from_env())
    unknown = chosen - set(LEVERS)
    if unknown:
        raise SystemExit(f"unknown levers: {', '.join(sorted(unknown))}")
    return chosen


def _literal(raw: str) -> Any:
    for kind in (int, float):
        try:
            return kind(raw)
        except ValueError:
            pass
    return {"true": True, "false": False}.get(raw.lower(), raw)


def build(args: argparse.Namespace, datadir: str, levers: set[str]) -> faust.App:
    options: dict[str, Any] = dict(  # noqa: C408 - keyword form, as faust.App takes them
        broker=f"{args.transport}://{args.brokers}",
        store="rocksdb://",
        datadir=datadir,
        topic_partitions=args.partitions,
        broker_session_timeout=6.0,
        broker_heartbeat_interval=1.0,
        broker_commit_interval=1.0,
        recovery_consistency_check=False,
        consumer_auto_offset_reset="earliest",
        stream_buffer_maxsize=max(4096, 2 * args.take_max),
        producer_linger=args.linger_s,
        cython_optimizations="cython" in levers,
        web_enabled=False,
        autodiscover=False,
        worker_redirect_stdouts=False,
    )
    options.update((k, _literal(v)) for k, v in (item.split("=", 1) for item in args.set))
    app = faust.App(f"ceiling-{os.getpid()}", **options)
    if args.transport == "kafka":  # the worker's consumer: true changelog ends, its short fetch wait
        faust_compat.use_real_highwaters(app, {"bootstrap.servers": args.brokers},
                                         fetch_max_wait_ms=Settings.fetch_max_wait_ms)
    if "metrics" in levers:  # the real worker's Prometheus sensor (faust_* metrics, consumer lag timer)
        from stream.metrics import Metrics, install_app_metrics

        install_app_metrics(app, Metrics(), [args.topic])
    if "lean_sensors" in levers:
        faust_compat.use_lean_sensors(app)
    if "batch_delivery" in levers:
        faust_compat.use_batch_delivery(app)
    raw = {"key_serializer": "raw", "value_serializer": "raw"}
    if "raw_events" in levers:
        source = app.topic(args.topic, partitions=args.partitions, schema=faust_compat.RawSchema())
    else:
        source = app.topic(args.topic, partitions=args.partitions, **raw)
    sink = app.topic(args.sink, partitions=args.partitions, **raw)
    table = app.Table("ceiling", partitions=args.partitions)
    table.key_serializer = table.value_serializer = "raw"
    state = {"count": 0, "first": None}
    take = faust_compat.take_batches if "take_batches" in levers else _take_events

    @app.agent(source, name="ceiling")
    async def ceiling(stream: faust.StreamT) -> None:
        async for events in take(stream, args.take_max, args.take_within_s):
            if state["first"] is None:
                state["first"], state["cpu0"] = time.perf_counter(), _cpu()
            if args.mode == "table":
                last = {e.key: e for e in events}
                for key, event in last.items():
                    with event_context(event):
                        table[key] = (table.get(key) or b"")[:64] + b"x"
                    await sink.send(key=key, value=event.value)
            state["count"] += len(events)
            if state["count"] >= args.expected:
                finish(args, state, levers)

    return app


def _take_events(stream: faust.StreamT, max_: int, within: float) -> Any:
    return stream.take_events(max_, within=within)


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def finish(args: argparse.Namespace, state: dict, levers: set[str]) -> None:
    _write(args, state, levers)
    os.kill(os.getpid(), signal.SIGTERM)


def _write(args: argparse.Namespace, state: dict, levers: set[str]) -> None:
    seconds = state.get("end", time.perf_counter()) - state["first"]
    cpu = state.get("cpu1", _cpu()) - state["cpu0"]
    args.out.write_text(
        json.dumps(
            {
                "mode": args.mode,
                "levers": sorted(levers),
                "events": state["count"],
                "seconds": seconds,
                "events_per_s": round(state["count"] / seconds, 1),
                "cpu_s": round(cpu, 2),
                "events_per_cpu_s": round(state["count"] / max(cpu, 1e-9), 1),
            }
        )
    )


async def aiokafka_alone(args: argparse.Namespace) -> None:
    """The backlog through a bare aiokafka consumer, Faust's fetch settings (ceiling of any Faust agent here)."""
    import uuid

    from aiokafka import AIOKafkaConsumer

    consumer = AIOKafkaConsumer(
        args.topic, bootstrap_servers=args.brokers, group_id=f"alone-{uuid.uuid4().hex}",
        auto_offset_reset="earliest", enable_auto_commit=False, fetch_max_wait_ms=Settings.fetch_max_wait_ms,
        session_timeout_ms=6000, heartbeat_interval_ms=1000,
    )
    await consumer.start()
    state: dict[str, Any] = {"count": 0, "first": None}
    seen = 0
    try:  # aiokafka prefetches: the clock starts when the first batch is returned, and counts what follows it
        while seen < args.expected:
            batch = sum(len(records) for records in (await consumer.getmany(timeout_ms=1000)).values())
            seen += batch
            if state["first"] is None:
                if batch:
                    state["first"], state["cpu0"] = time.perf_counter(), _cpu()
            else:
                state["count"] += batch
        state["end"], state["cpu1"] = time.perf_counter(), _cpu()
    finally:
        await consumer.stop()
    _write(args, state, set())


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.mode == "aiokafka":
        import asyncio

        asyncio.run(aiokafka_alone(args))
        return
    levers = levers_of(args.levers)
    if "uvloop" in levers:  # before the worker creates its event loop (measured, not kept: bench/faust_levers.py)
        import asyncio

        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    with tempfile.TemporaryDirectory(prefix="ceiling-") as datadir:
        app = build(args, datadir, levers)
        # "info" like the real worker: at "warning" Faust's spinner sets the root logger to DEBUG (each
        # aiokafka send then builds a log record), which would make this ceiling unfairly low.
        worker = faust.Worker(app, loglevel="info", quiet=True, redirect_stdouts=False)
        try:
            worker.execute_from_commandline()
        except SystemExit:
            pass


if __name__ == "__main__":
    main()
