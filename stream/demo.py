"""``metarec demo``: the whole pipe on one machine, watched live.

It meta-trains a model on the first half of a dataset (seconds), starts the embedded broker and one worker
process, replays the second half as live traffic, and shows users' refreshed top-10 lists, events/s and
event→recommendation latency as they arrive downstream. Ctrl-C (or ``--duration``, SIGTERM, SIGINT, SIGHUP)
stops everything it started; if the demo itself is killed, the kernel ends the broker and the worker with it.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import threading
import time
import uuid
from collections import deque
from pathlib import Path

import numpy as np
from confluent_kafka import Consumer
from rich.console import Group
from rich.live import Live
from rich.panel import Panel
from rich.table import Table

from models.data.registry import load_dataset, split_by_time
from models.training.train import meta_train
from schemas.decode import DecodeError, decode_recommendation
from stream.broker import EmbeddedBroker, die_with_parent, exit_on_signals
from stream.replay import interactions, replay
from stream.runner import DEMO_SEED, STARTUP_TRAIN_SECONDS, demo_world
from stream.settings import Settings
from stream.topics import app_topic_specs, ensure_topics
from stream.versions import publish

log = logging.getLogger(__name__)


def run_demo(data: str = "synthetic", rate: float = 300.0, partitions: int = 4, duration: float | None = None,
             root: Path = Path("var/demo")) -> None:
    with exit_on_signals():  # a SIGTERM unwinds the with-blocks below instead of orphaning the broker
        _run(data, rate, partitions, duration, root)


def _run(data: str, rate: float, partitions: int, duration: float | None, root: Path) -> None:
    root.mkdir(parents=True, exist_ok=True)
    history, live = demo_world() if data == "synthetic" else split_by_time(load_dataset(data), 0.5)
    titles = dict(zip(live.item_ids, live.item_text)) if live.item_text else {}
    log.info("meta-training on %d history events (up to %.0fs)", len(history), STARTUP_TRAIN_SECONDS)
    model = meta_train(history, steps=400, time_budget_s=STARTUP_TRAIN_SECONDS, seed=DEMO_SEED)
    models_dir = publish(root / "models", model).parent
    with EmbeddedBroker() as broker:
        settings = Settings.from_env(brokers=broker.bootstrap, partitions=partitions)
        ensure_topics(settings.kafka_config(), app_topic_specs(settings))
        worker = _start_worker(settings, models_dir, root)
        try:
            _stream(settings, live, rate, titles, duration, worker)
        finally:
            worker.terminate()
            try:
                worker.wait(20)
            except subprocess.TimeoutExpired:
                worker.kill()


def _start_worker(settings: Settings, models_dir: Path, root: Path) -> subprocess.Popen:
    run = uuid.uuid4().hex[:8]
    env = {
        **os.environ,
        "METAREC_BROKERS": settings.brokers,
        "METAREC_PARTITIONS": str(settings.partitions),
        "METAREC_CHECKPOINT": str(models_dir),
        "METAREC_APP_ID": f"metarec-demo-{run}",
        "METAREC_DATA_DIR": str(root / "state"),
    }
    logfile = open(root / "worker.log", "wb")  # noqa: SIM115 - lives as long as the process
    log.info("worker log: %s", root / "worker.log")
    cmd = die_with_parent([sys.executable, "-m", "stream", "worker"])  # its broker dies with us too
    return subprocess.Popen(cmd, env=env, stdout=logfile, stderr=logfile)


def _stream(settings: Settings, live, rate: float, titles: dict[str, str], duration: float | None,
            worker: subprocess.Popen) -> None:
    sent_at: dict[str, float] = {}
    stop = threading.Event()
    producer = threading.Thread(
        target=replay,
        args=(settings.kafka_config(), settings.interactions_topic, interactions(live, id_prefix="live")),
        kwargs={"rate": rate, "on_sent": lambda r, t: sent_at.__setitem__(r.event_id, t), "should_stop": stop.is_set},
        daemon=True,
    )
    producer.start()
    view = _View(titles)
    consumer = Consumer({**settings.kafka_config(), "group.id": f"demo-view-{uuid.uuid4().hex[:6]}",
                         "auto.offset.reset": "earliest", "session.timeout.ms": 6000})
    consumer.subscribe([settings.recommendations_topic])
    started = time.monotonic()
    try:
        with Live(view.render(len(sent_at), worker), refresh_per_second=4) as screen:
            while duration is None or time.monotonic() - started < duration:
                if worker.poll() is not None:
                    raise RuntimeError(f"the worker exited with status {worker.returncode}; see var/demo/worker.log")
                for msg in consumer.consume(500, timeout=0.25):
                    if msg.error() is None and msg.value() is not None:
                        view.add(msg.value(), sent_at)
                screen.update(view.render(len(sent_at), worker))
    finally:
        stop.set()
        consumer.close()


class _View:
    """What the terminal shows: the latest lists, rates and latency percentiles."""

    def __init__(self, titles: dict[str, str]) -> None:
        self.titles = titles
        self.latest: deque = deque(maxlen=8)
        self.latencies: deque[float] = deque(maxlen=2000)
        self.arrivals: deque[float] = deque(maxlen=20000)
        self.received = 0

    def add(self, raw: bytes, sent_at: dict[str, float]) -> None:
        try:
            rec = decode_recommendation(raw)
        except DecodeError:
            return
        now = time.time()
        self.received += 1
        self.arrivals.append(now)
        if rec.event_id in sent_at:
            self.latencies.append((now - sent_at[rec.event_id]) * 1000.0)
        self.latest.appendleft(rec)

    def render(self, sent: int, worker: subprocess.Popen) -> Panel:
        now = time.time()
        per_s = sum(1 for t in self.arrivals if now - t < 5.0) / 5.0
        lat = np.percentile(self.latencies, [50, 95, 99]) if self.latencies else [float("nan")] * 3
        stats = (f"events sent {sent}   recommendations {self.received}   {per_s:,.0f} recs/s   "
                 f"latency p50 {lat[0]:.0f} ms  p95 {lat[1]:.0f} ms  p99 {lat[2]:.0f} ms   worker pid {worker.pid}")
        table = Table(expand=True)
        table.add_column("user", no_wrap=True)
        table.add_column("after event", no_wrap=True)
        table.add_column("top-10 (best first)")
        for rec in self.latest:
            names = [self.titles.get(s.item_id, s.item_id) for s in rec.items[:10]]
            table.add_row(rec.user_id, rec.event_id, ", ".join(names))
        waiting = "" if self.received else "\nwaiting for the worker to join its group and publish..."
        return Panel(Group(stats + waiting, table), title=f"metarec demo · model {_version(self.latest)}")


def _version(latest: deque) -> str:
    return latest[0].model_version if latest else "-"
