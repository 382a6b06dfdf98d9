"""The Faust framework's own ceiling here: an agent with metarec's Faust settings that does (almost) nothing.

Run as a process by :mod:`bench.throughput` on the same backlog. ``--mode take`` only takes batches and acks
them (what ``stream.take_events`` alone costs per event); ``--mode table`` also reads and writes one table
value per distinct key of each batch and sends one message per key (the Faust-side costs of the real agent
without decoding or the model). The gap between these and the passthrough is Faust's; the gap between these
and the pipeline is ours.

    python -m bench.faust_ceiling --brokers HOST:PORT --topic T --sink S --expected N --mode table --out F
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
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import faust
from faust.streams import _current_event  # Faust's own table path needs it (stream/faust_compat.py, point 1)


@contextmanager
def event_context(event: Any) -> Iterator[None]:
    """Make ``event`` Faust's current event in the block, as ``table[key] = ...`` needs inside a batch."""
    token = _current_event.set(weakref.ref(event))
    try:
        yield
    finally:
        _current_event.reset(token)


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser()
    p.add_argument("--brokers", required=True)
    p.add_argument("--topic", required=True)
    p.add_argument("--sink", required=True)
    p.add_argument("--partitions", type=int, default=4)
    p.add_argument("--expected", type=int, required=True)
    p.add_argument("--mode", choices=("take", "table"), default="take")
    p.add_argument("--take-max", type=int, default=1000)
    p.add_argument("--take-within-s", type=float, default=0.005)
    p.add_argument(
        "--linger-s", type=float, default=0.001, help="producer_linger (the app's value by default)"
    )
    p.add_argument("--out", type=Path, required=True)
    return p.parse_args()


def build(args: argparse.Namespace, datadir: str) -> faust.App:
    app = faust.App(
        f"ceiling-{os.getpid()}",
        broker=f"kafka://{args.brokers}",
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
        web_enabled=False,
        autodiscover=False,
        worker_redirect_stdouts=False,
    )
    raw = {"key_serializer": "raw", "value_serializer": "raw"}
    source = app.topic(args.topic, partitions=args.partitions, **raw)
    sink = app.topic(args.sink, partitions=args.partitions, **raw)
    table = app.Table("ceiling", partitions=args.partitions)
    table.key_serializer = table.value_serializer = "raw"
    state = {"count": 0, "first": None}

    @app.agent(source, name="ceiling")
    async def ceiling(stream: faust.StreamT) -> None:
        async for events in stream.take_events(args.take_max, within=args.take_within_s):
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
                finish(args, state)

    return app


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def finish(args: argparse.Namespace, state: dict) -> None:
    seconds = time.perf_counter() - state["first"]
    cpu = _cpu() - state["cpu0"]
    args.out.write_text(
        json.dumps(
            {
                "mode": args.mode,
                "events": state["count"],
                "seconds": seconds,
                "events_per_s": round(state["count"] / seconds, 1),
                "cpu_s": round(cpu, 2),
                "events_per_cpu_s": round(state["count"] / max(cpu, 1e-9), 1),
            }
        )
    )
    os.kill(os.getpid(), signal.SIGTERM)


def main() -> None:
    args = parse_args()
    with tempfile.TemporaryDirectory(prefix="ceiling-") as datadir:
        app = build(args, datadir)
        # "info" like the real worker: at "warning" Faust's spinner sets the root logger to DEBUG (each
        # aiokafka send then builds a log record), which would make this ceiling unfairly low.
        worker = faust.Worker(app, loglevel="info", quiet=True, redirect_stdouts=False)
        try:
            worker.execute_from_commandline()
        except SystemExit:
            pass


if __name__ == "__main__":
    main()
