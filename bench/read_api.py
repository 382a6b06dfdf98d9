"""Read-API latency beside the event load: one worker on the embedded broker consumes a steady event stream
while a client asks it for users' lists at a fixed rate.

1. A worker (``python -m stream worker``, the read API on) starts; a warm-up stream gives ``--users`` users a
   state and a list (produced, then awaited through the worker's metrics).
2. For each request rate (``--rates``, requests/s), for ``--seconds``: a producer process offers
   ``--events-per-s`` new events (the same users), and a client process sends ``GET /users/{u}/recommendations``
   for random known users, open loop: request ``i`` is due at ``t0 + i / rate`` and its latency runs from that
   due time to the full answer, so a stalled server is charged for the requests queued behind it.
3. The worker's event throughput over the same window comes from its metrics.

The client, the producer, the broker and the worker share the machine's cores: on a shared 2-core machine the
figures are the whole system's, not the server's alone; the load average is recorded at each phase.

    python -m bench.read_api                     # writes bench/results/read-api.json
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import multiprocessing as mp
import os
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np

from bench.common import (
    RESULTS,
    catalogue,
    machine_info,
    percentiles,
    train_checkpoint,
    write_results,
    zipf_events,
)
from bench.kafka_tools import produce_all
from bench.worker_process import WorkerRun, events_read, scrape_samples, wait_until
from stream.broker import EmbeddedBroker, free_port
from stream.settings import Settings
from stream.topics import app_topic_specs, ensure_topics

log = logging.getLogger(__name__)
ROOT = Path(__file__).resolve().parents[1]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.read_api", description=__doc__.splitlines()[0])
    parser.add_argument("--rates", type=int, nargs="+", default=[200, 1000], help="requests/s, one phase each")
    parser.add_argument("--seconds", type=float, default=30.0, help="length of each phase")
    parser.add_argument("--events-per-s", type=float, default=500.0, help="event load during each phase")
    parser.add_argument("--users", type=int, default=5000, help="users given a state before the phases")
    parser.add_argument("--items", type=int, default=1000, help="catalogue of the benchmark model")
    parser.add_argument("--steps", type=int, default=150, help="meta-training steps of the benchmark model")
    parser.add_argument("--connections", type=int, default=32, help="keep-alive connections per client process")
    parser.add_argument("--clients", type=int, default=2, help="client processes sharing the request rate")
    parser.add_argument("--worker-env", action="append", default=[], metavar="KEY=VALUE",
                        help="extra worker settings, e.g. METAREC_API_THREAD=false (repeatable)")
    parser.add_argument("--out", type=Path, default=RESULTS / "read-api.json")
    return parser.parse_args(argv)


# --- the client (its own process) ----------------------------------------------------------------------------
def _client_main(port: int, users: list[str], rate: float, seconds: float, connections: int, seed: int,
                 out: mp.Queue) -> None:
    out.put(asyncio.run(_client(port, users, rate, seconds, connections, seed)))


async def _client(port: int, users: list[str], rate: float, seconds: float, connections: int,
                  seed: int) -> dict[str, Any]:
    import aiohttp

    rng = np.random.default_rng(seed)
    n = int(rate * seconds)
    picks = rng.integers(0, len(users), n)
    latencies = np.full(n, np.nan)
    statuses: dict[str, int] = {}
    sources: dict[str, int] = {}
    connector = aiohttp.TCPConnector(limit=connections, keepalive_timeout=60)
    async with aiohttp.ClientSession(connector=connector) as session:
        loop = asyncio.get_running_loop()
        t0 = loop.time() + 0.2

        async def one(i: int) -> None:
            due = t0 + i / rate
            try:
                async with session.get(f"http://127.0.0.1:{port}/users/{users[picks[i]]}/recommendations",
                                       params={"n": "10"}) as response:
                    body = await response.read()
                    key = str(response.status)
            except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
                key, body = type(exc).__name__, b""
            latencies[i] = (loop.time() - due) * 1000.0
            statuses[key] = statuses.get(key, 0) + 1
            if key == "200":
                sources["cold_start" if b'"cold-start"' in body else "list"] = sources.get(
                    "cold_start" if b'"cold-start"' in body else "list", 0) + 1

        tasks = []
        for i in range(n):
            delay = t0 + i / rate - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)  # pacing the offered load, not synchronisation
            tasks.append(asyncio.ensure_future(one(i)))
        await asyncio.gather(*tasks)
        elapsed = loop.time() - t0
    return {"requests": n, "seconds": elapsed, "statuses": statuses, "answers": sources,
            "latencies": latencies[np.isfinite(latencies)].tolist()}


def merge(answers: list[dict[str, Any]]) -> dict[str, Any]:
    """The client processes' answers as one: counts added, percentiles over every request."""
    latencies = np.concatenate([np.asarray(a["latencies"]) for a in answers])
    out: dict[str, Any] = {"requests": sum(a["requests"] for a in answers)}
    out["achieved_per_s"] = round(out["requests"] / max(a["seconds"] for a in answers), 1)
    for key in ("statuses", "answers"):
        merged: dict[str, int] = {}
        for a in answers:
            for k, v in a[key].items():
                merged[k] = merged.get(k, 0) + v
        out[key] = merged
    out.update(percentiles(latencies, (50, 90, 99)))
    out["max"] = round(float(latencies.max()), 2) if latencies.size else None
    return out


def _producer_main(bootstrap: str, topic: str, keys: list[bytes], values: list[bytes], rate: float) -> None:
    produce_all(bootstrap, topic, keys, values, rate=rate)


# --- the run -------------------------------------------------------------------------------------------------
def handler_buckets(port: int) -> dict[float, float]:
    """The worker's ``metarec_api_request_seconds`` histogram: cumulative counts by upper bound (seconds)."""
    out: dict[float, float] = {}
    for (name, labels), value in scrape_samples(port, timeout_s=10, missing_ok=False).items():
        if name == "metarec_api_request_seconds_bucket":
            bound = float(dict(labels)["le"])
            out[bound] = out.get(bound, 0.0) + value
    return out


def bucket_quantiles(before: dict[float, float], after: dict[float, float]) -> dict[str, float | None]:
    """p50 and p99 (ms) of the requests between two scrapes, as the upper bound of their histogram bucket."""
    bounds = sorted(after)
    counts = [after[b] - before.get(b, 0.0) for b in bounds]
    total = counts[-1] if counts else 0.0
    out: dict[str, float | None] = {}
    for q in (50, 99):
        hit = next((b for b, c in zip(bounds, counts) if total and c >= total * q / 100), None)
        out[f"p{q}_at_most"] = None if hit is None else (hit * 1000.0 if hit != float("inf") else None)
    return out


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    machine = machine_info()
    checkpoint = train_checkpoint(ROOT / "var" / "bench" / "models", n_items=args.items, steps=args.steps)
    item_ids = catalogue(args.items)
    phases: dict[str, Any] = {}
    with EmbeddedBroker() as broker, tempfile.TemporaryDirectory() as tmp:
        settings = Settings(brokers=broker.bootstrap, topic_prefix=f"r{uuid.uuid4().hex[:8]}-", partitions=4)
        ensure_topics(settings.kafka_config(), app_topic_specs(settings))
        port = free_port()
        env = {
            "METAREC_BROKERS": broker.bootstrap, "METAREC_TOPIC_PREFIX": settings.topic_prefix,
            "METAREC_APP_ID": f"{settings.topic_prefix}app", "METAREC_PARTITIONS": "4",
            "METAREC_CHECKPOINT": str(checkpoint), "METAREC_DATA_DIR": str(Path(tmp) / "data"),
            "METAREC_METRICS_PORT": str(free_port()), "METAREC_MODEL_POLL_S": "3600", "METAREC_DEVICE": "cpu",
            "METAREC_API_ENABLED": "true", "METAREC_WEB_PORT": str(port),
            **dict(item.partition("=")[::2] for item in args.worker_env),
        }
        logs = ROOT / "var" / "bench"
        logs.mkdir(parents=True, exist_ok=True)
        worker = WorkerRun(env, logs / "worker-read-api.log", ROOT, int(env["METAREC_METRICS_PORT"]))
        try:
            warm = zipf_events(args.users * 3, args.users, item_ids, user_exponent=0.5, seed=1, id_prefix="w")
            wait_until(lambda: "Worker ready" in worker.log_text(), 300, "the worker", alive=[worker])
            produce_all(broker.bootstrap, settings.interactions_topic, warm.keys, warm.values)
            wait_until(lambda: events_read(worker.metrics_port) >= len(warm), 600, "the warm-up events",
                       alive=[worker])
            users = sorted({warm.user_ids[u] for u in np.unique(warm.user_of)})
            for n, rate in enumerate(args.rates):
                phases[str(rate)] = phase(args, broker.bootstrap, settings, worker, port, users, item_ids,
                                          rate, n)
                log.info("%d requests/s: %s", rate, phases[str(rate)]["latency_ms"])
        finally:
            code = worker.stop()
        if code not in (0, None):
            log.warning("worker exited with %s; see %s", code, worker.log_path)
    result = {
        "what": "read-API latency (ms, from each request's due time to its full answer) at fixed request rates, "
                "while one worker consumes events; client, producer, broker and worker on the same machine",
        "command": "python -m bench.read_api " + " ".join(sys.argv[1:] if argv is None else argv),
        "target": "p99 <= 20 ms at 1,000 requests/s with 500 events/s (2 cores)",
        "latency_ms": {rate: {"p50": p["latency_ms"]["p50"], "p99": p["latency_ms"]["p99"]}
                       for rate, p in phases.items()},
        "phases": phases,
        "settings": {k: getattr(args, k) for k in ("rates", "seconds", "events_per_s", "users", "items", "steps",
                                                   "connections", "clients", "worker_env")},
        "machine": machine,
    }
    write_results(args.out, result)
    return result


def phase(args: argparse.Namespace, bootstrap: str, settings: Settings, worker: WorkerRun, port: int,
          users: list[str], item_ids: list[str], rate: int, n: int) -> dict[str, Any]:
    """One request rate for ``args.seconds`` beside ``args.events_per_s`` events/s."""
    ctx = mp.get_context("spawn")
    n_events = int(args.events_per_s * (args.seconds + 5))
    stream = zipf_events(n_events, args.users, item_ids, user_exponent=0.5, seed=10 + n, id_prefix=f"p{n}")
    producer = ctx.Process(target=_producer_main, args=(bootstrap, settings.interactions_topic, stream.keys,
                                                        stream.values, args.events_per_s), daemon=True)
    results: mp.Queue = ctx.Queue()
    clients = [ctx.Process(target=_client_main, args=(port, users, rate / args.clients, args.seconds,
                                                      args.connections, 100 * n + c, results), daemon=True)
               for c in range(args.clients)]
    load_before = os.getloadavg()
    read_before, cpu_before = events_read(worker.metrics_port), worker.cpu_seconds()
    buckets_before = handler_buckets(worker.metrics_port)
    producer.start()
    time.sleep(2.0)  # the event load settles before the requests start (a warm-up, not synchronisation)
    began = time.monotonic()
    for client in clients:
        client.start()
    answer = merge([results.get(timeout=args.seconds * 4 + 120) for _ in clients])
    for client in clients:
        client.join(30)
    seconds = time.monotonic() - began
    read_after, cpu_after = events_read(worker.metrics_port), worker.cpu_seconds()
    handler = bucket_quantiles(buckets_before, handler_buckets(worker.metrics_port))
    load_after = os.getloadavg()
    producer.join(args.seconds + 60)
    latency = {k: answer[k] for k in ("p50", "p90", "p99")}
    return {
        "requests_per_s": rate,
        "latency_ms": latency,
        # the worker's own time per request, from its handler's entry to its reply (Prometheus buckets: the
        # quantile is at most this): what the server adds, without the client's and the GIL's waits
        "handler_ms": handler,
        "client": answer,
        "events_read_per_s": round((read_after - read_before) / seconds, 1),
        "events_offered_per_s": args.events_per_s,
        "worker_cpu_share": round((cpu_after - cpu_before) / seconds, 2),
        "loadavg_before": [round(x, 2) for x in load_before],
        "loadavg_after": [round(x, 2) for x in load_after],
    }


if __name__ == "__main__":
    main()
