"""The worker phases of the throughput bench: saturation (clocked by the worker's counters and the broker's
offsets) and fixed-load latency (clocked downstream, event by event).

Why saturation is not clocked by a downstream consumer: in two 200k-event runs the embedded broker (Tansu,
memory storage) stopped returning records of the recommendations topic about 70k records in (fetches were
answered at once, empty, with the high watermark far ahead), so a downstream clock would measure the
broker's bug. The worker's own counters say when every event was applied and every refresh handed to the
producer, and the topic's end offsets say when the broker had them all.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

import numpy as np

from bench.analysis import event_latencies_ms, last_event_per_user
from bench.common import EventStream, percentiles
from bench.kafka_tools import RecCollector, batch_stats, produce_all, topic_end
from bench.profiling import profile_worker
from bench.worker_process import WorkerRun, scrape

log = logging.getLogger(__name__)
POLL_S = 0.1  # near the start and the end of a phase, where the clock is read
FAR_POLL_S = 1.0  # in between: each scrape renders every metric in the worker, which costs it CPU


def _counters(worker: WorkerRun) -> tuple[float, float]:
    """Events read (all results) and recommendations handed to the producer, from the worker's metrics
    (zeros while the worker is still starting and serves no metrics yet)."""
    try:
        m = scrape(worker.metrics_port)
    except OSError:  # urllib's URLError included
        return 0.0, 0.0
    return m.get("metarec_events_total", 0.0), m.get("metarec_recommendations_total", 0.0)


def saturation(
    worker: WorkerRun,
    bootstrap: str,
    rec_topic: str,
    backlog: EventStream,
    *,
    timeout_s: float,
    profile_s: float = 0.0,
    label: str = "",
) -> dict[str, Any]:
    """The worker drains the backlog: clocked from its first applied batch until every event was applied and
    every refresh it made is in the recommendations topic (end offsets within one batch per partition)."""
    tick = threading.Event()  # a poll interval, not synchronisation: we sample counters
    started, wall_started = time.monotonic(), time.time()
    while _counters(worker)[0] == 0:
        if worker.proc.poll() is not None or time.monotonic() - started > 600:
            raise RuntimeError(f"worker applied nothing (see {worker.log_path})")
        tick.wait(POLL_S)
    first = time.time()
    rss0, cpu0, m0 = worker.rss_bytes(), worker.cpu_seconds(), scrape(worker.metrics_port)
    profile = None
    if profile_s:
        profile = threading.Thread(target=profile_worker, args=(worker.pid, profile_s, label))
        profile.start()
    done, applied, recs, end = None, 0.0, 0.0, 0
    while time.monotonic() - started < timeout_s:
        applied, recs = _counters(worker)
        if applied >= len(backlog):
            end = topic_end(bootstrap, rec_topic)
            if end >= recs - 4 * 1000:  # the broker under-reports by up to a batch per partition
                done = time.time()
                break
        tick.wait(POLL_S if applied >= 0.97 * len(backlog) else FAR_POLL_S)
    cpu1, rss1, m1 = worker.cpu_seconds(), worker.rss_bytes(), scrape(worker.metrics_port)
    if profile is not None:
        profile.join()
    seconds = (done or time.time()) - first
    users = int(np.unique(backlog.user_of).size)
    return {
        "events": len(backlog),
        "events_applied": int(applied),
        "complete": done is not None,
        "users": users,
        "refreshes_published": int(recs),
        "recommendations_topic_end_offsets": end,
        "events_per_refresh": round(len(backlog) / max(recs, 1), 2),
        "seconds": round(seconds, 3),
        "events_per_s": round(applied / seconds, 1),
        "startup_s": round(first - wall_started, 2),
        "worker_cpu_s": round(cpu1 - cpu0, 2),
        "events_per_worker_cpu_s": round(applied / max(cpu1 - cpu0, 1e-9), 1),
        "rss_bytes_at_start": rss0,
        "rss_bytes_after": rss1,
        "profiled": bool(profile_s),
        "clock": "first applied batch -> all events applied and all refreshes in the topic (worker counters, "
        "end offsets); error at most one poll (0.1 s) and one batch",
        **batch_stats(m0, m1),
    }


def warm_up(
    bootstrap: str, topic: str, collector: RecCollector, stream: EventStream, timeout_s: float
) -> None:
    """One event through the worker, waited for downstream: latency phases start on a worker that serves."""
    produce_all(bootstrap, topic, stream.keys[:1], stream.values[:1])
    _last, missing = collector.wait_for({stream.event_ids[0]}, timeout_s=timeout_s)
    if missing:
        raise RuntimeError("the latency worker never served its warm-up event")


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
    got = lat[~np.isnan(lat)]
    log.info("latency at %d/s: %s (%d unserved)", rate, percentiles(got), missing)
    return {
        "latency_ms": {**percentiles(got), "max": round(float(got.max()), 2) if got.size else None},
        "events": len(phase),
        "offered_events_per_s": rate,
        "achieved_offer_events_per_s": round(len(phase) / produce_s, 1),
        "refreshes_published": served,
        "unserved_events": missing,
        "all_served": missing_users == 0,
    }
