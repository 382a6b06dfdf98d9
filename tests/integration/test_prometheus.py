"""A real Prometheus scrapes a real worker on the embedded broker: the dashboard's and the rules' PromQL all return
data, and a planted drift (the items people use change mid-stream) drives the PSI over its threshold until
Prometheus reports the drift alert firing.

Prometheus comes from Debian's `prometheus` package (tests/setup.sh installs it); the test fails, saying so,
where the binary is absent.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import pytest

from schemas.decode import encode
from schemas.records import Interaction
from stream.broker import free_port
from stream.settings import Settings
from stream.topics import app_topic_specs, ensure_topics
from tests.integration.kafka_helpers import produce
from tests.integration.workers import WorkerProcess, WorkerSpec

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "deploy" / "prometheus" / "alerts.yml"
DASHBOARD = ROOT / "deploy" / "grafana" / "dashboards" / "metarec.json"
PSI_THRESHOLD = 0.25  # the drift alert's threshold in deploy/prometheus/alerts.yml
PHASE_EVENTS = 3000  # per phase: more than the monitor's reference and current windows (2000 events each)
USERS = 300
DASHBOARD_VARIABLES = {"$__rate_interval": "10s", "$instance": ".*"}
COMPARISON = re.compile(r"^(?P<signal>.*\S)\s*(?:==|!=|>=|<=|>|<)\s*[-+]?[0-9.]+(?:e[-+]?[0-9]+)?\s*$", re.DOTALL)


class Prometheus:
    """A Prometheus server on a free loopback port, scraping one target every second."""

    def __init__(self, binary: str, folder: Path, target: str) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        rules = folder / "alerts.yml"
        rules.write_text(re.sub(r"for: \S+", "for: 3s", RULES.read_text()))  # the same rules, patient for 3 s
        config = folder / "prometheus.yml"
        config.write_text(
            "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
            f"rule_files: [{rules}]\n"
            f"scrape_configs: [{{job_name: metarec, static_configs: [{{targets: ['{target}']}}]}}]\n"
        )
        self.url = f"http://127.0.0.1:{free_port()}"
        self._log = open(folder / "prometheus.log", "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [binary, f"--config.file={config}", f"--storage.tsdb.path={folder / 'data'}",
             f"--web.listen-address={self.url.removeprefix('http://')}"],
            stdout=self._log, stderr=subprocess.STDOUT,
        )

    def get(self, path: str, **params: str) -> Any:
        url = f"{self.url}{path}?{urllib.parse.urlencode(params)}"
        with urllib.request.urlopen(url, timeout=5) as response:
            body = json.load(response)
        assert body["status"] == "success", body
        return body["data"]

    def query(self, expr: str) -> list[dict]:
        return self.get("/api/v1/query", query=expr)["result"]

    def ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/-/ready", timeout=2) as response:
                return response.status == 200
        except (urllib.error.URLError, ConnectionError):
            return False

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
        self._log.close()


def wait_until(condition: Callable[[], Any], timeout_s: float, what: str, poll_s: float = 0.5) -> Any:
    """Poll ``condition`` until it returns something truthy; fail with ``what`` after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout_s:.0f}s waiting for {what}")
        time.sleep(poll_s)  # polling interval of a bounded wait on an observable condition


def catalogue(checkpoint: Path) -> list[str]:
    from models.serving.recommender import Recommender
    from stream.versions import resolve

    return list(Recommender.load(resolve(checkpoint), device="cpu").item_ids)


def events(items: list[str], seed: int, start: int, n: int, t0: float) -> list[Interaction]:
    """``n`` interactions of USERS users with a Zipf popularity over ``items`` in an order the seed fixes."""
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(items))
    weights = 1.0 / np.arange(1, len(items) + 1) ** 1.1
    picks = order[rng.choice(len(items), size=n, p=weights / weights.sum())]
    users = rng.integers(0, USERS, size=n)
    types = rng.choice(["view", "click", "purchase"], size=n, p=[0.6, 0.3, 0.1])
    return [
        Interaction(event_id=f"p{start + k}", user_id=f"u{users[k]}", item_id=items[picks[k]],
                    type=str(types[k]), ts=t0 + start + k)  # type: ignore[arg-type]
        for k in range(n)
    ]


def send(settings: Settings, batch: list[Interaction]) -> None:
    produce(settings.brokers, settings.interactions_topic, [(e.user_id.encode(), encode(e)) for e in batch])


def processed(prom: Prometheus) -> float:
    result = prom.query('sum(metarec_events_total{result="processed"})')
    return float(result[0]["value"][1]) if result else 0.0


def item_psi(prom: Prometheus) -> float | None:
    result = prom.query('max(metarec_drift_psi{signal="item_popularity"})')
    return float(result[0]["value"][1]) if result else None


def drift_alert(prom: Prometheus, state: str) -> list[dict]:
    return [a for a in prom.get("/api/v1/alerts")["alerts"]
            if a["labels"]["alertname"] == "MetarecDriftHigh" and a["labels"].get("signal") == "item_popularity"
            and a["state"] == state]


def dashboard_exprs() -> list[tuple[str, str]]:
    dashboard = json.loads(DASHBOARD.read_text())
    out = []
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            expr = target["expr"]
            for variable, value in DASHBOARD_VARIABLES.items():
                expr = expr.replace(variable, value)
            out.append((f"dashboard panel {panel['title']!r}", expr))
    return out


def rule_exprs(prom: Prometheus) -> list[tuple[str, str]]:
    """What Prometheus loaded: recording rules as they are, alerts without their threshold comparison."""
    out = []
    for group in prom.get("/api/v1/rules")["groups"]:
        for rule in group["rules"]:
            expr = rule["query"]
            if rule["type"] == "alerting":
                match = COMPARISON.match(expr)
                assert match, f"alert {rule['name']} is not written as '<signal> <comparison> <number>': {expr}"
                expr = match.group("signal")
            out.append((f"rule {rule['name']}", expr))
    return out


@pytest.fixture
def prometheus_binary() -> str:
    binary = shutil.which("prometheus")
    if binary is None:
        pytest.fail("prometheus not installed (tests/setup.sh installs it, as root: apt-get install -y "
                    "prometheus)", pytrace=False)
    return binary


@pytest.fixture
def worker(broker, topic_prefix, tmp_path, checkpoint) -> Iterator[WorkerProcess]:
    settings = Settings(brokers=broker.bootstrap, topic_prefix=topic_prefix, app_id=f"{topic_prefix}app")
    ensure_topics(settings.kafka_config(), app_topic_specs(settings))
    process = WorkerProcess(WorkerSpec(broker.bootstrap, topic_prefix, checkpoint, tmp_path / "state"),
                            tmp_path / "worker.log")
    yield process
    assert process.stop() == 0, process.log_text()[-3000:]


@pytest.mark.timeout(480)  # the session checkpoint may be trained inside this budget
def test_dashboard_and_alerts_work_against_a_live_worker_and_a_planted_drift_fires(
    prometheus_binary, worker, broker, topic_prefix, tmp_path, checkpoint
):
    settings = Settings(brokers=broker.bootstrap, topic_prefix=topic_prefix)
    prom = Prometheus(prometheus_binary, tmp_path / "prometheus", f"127.0.0.1:{worker.metrics_port}")
    try:
        wait_until(prom.ready, 30, "Prometheus to be ready")
        items = catalogue(checkpoint)
        t0 = time.time() - 10 * PHASE_EVENTS

        # Phase A: one popularity over the catalogue; the reference window fills with it.
        send(settings, events(items, seed=1, start=0, n=PHASE_EVENTS, t0=t0))
        wait_until(lambda: worker.alive() and processed(prom) >= PHASE_EVENTS, 90,
                   f"the worker to process {PHASE_EVENTS} events\n{worker.log_text()[-2000:]}")
        before = wait_until(lambda: item_psi(prom), 20, "the item-popularity PSI to be exported")
        assert before < PSI_THRESHOLD, f"PSI {before:.3f} without any drift"
        assert not drift_alert(prom, "firing")

        # Phase B: the same users, the same catalogue, other items popular: the world moved.
        send(settings, events(items, seed=2, start=PHASE_EVENTS, n=PHASE_EVENTS, t0=t0))
        wait_until(lambda: drift_alert(prom, "firing"), 90, "the drift alert to fire")
        assert item_psi(prom) > PSI_THRESHOLD

        rules = rule_exprs(prom)
        assert len(rules) == len(re.findall(r"^\s*- (?:record|alert):", RULES.read_text(), re.M)), "all rules loaded"
        empty = [(where, expr) for where, expr in dashboard_exprs() + rules if not prom.query(expr)]
        assert not empty, "PromQL returning no data:\n" + "\n".join(f"{w}: {e}" for w, e in empty)
    finally:
        prom.stop()
