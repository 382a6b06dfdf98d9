"""The operations files agree with the code: compose validates, rules pass promtool, dashboards name real metrics.

Tools come from Debian packages (`docker-compose`, `prometheus` for promtool; tests/setup.sh installs them); a
test whose tool is missing fails and says which package brings it.
"""

from __future__ import annotations

import functools
import json
import re
import shutil
import subprocess
from pathlib import Path

import faust
import pytest
from prometheus_client import CollectorRegistry

from stream.metrics import Metrics, install_app_metrics
from stream.settings import Settings

ROOT = Path(__file__).resolve().parents[3]
DEPLOY = ROOT / "deploy"
RULES = DEPLOY / "prometheus" / "alerts.yml"
DASHBOARD = DEPLOY / "grafana" / "dashboards" / "metarec.json"
METRIC = re.compile(r"\b((?:metarec|faust)_[a-z_]+)\b")


def tool(name: str, package: str) -> str:
    path = shutil.which(name)
    if path is None:
        why = f"{name} not installed (tests/setup.sh installs it, as root: apt-get install -y {package})"
        pytest.fail(why, pytrace=False)
    return path


def run(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    done = subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, f"{' '.join(args)} failed:\n{done.stdout}\n{done.stderr}"
    return done


def test_compose_file_is_valid_with_and_without_the_gpu_profile():
    compose = tool("docker-compose", "docker-compose")
    run(compose, "--profile", "gpu", "config", "-q")
    services = set(run(compose, "config", "--services").stdout.split())  # validates the default set too
    assert {"kafka", "kafka-init", "worker", "worker-gpu", "producer", "prometheus", "grafana"} <= services


def test_compose_creates_the_topics_the_workers_declare():
    text = (ROOT / "docker-compose.yml").read_text()
    s = Settings()
    partitions = f"--partitions ${{METAREC_PARTITIONS:-{s.partitions}}}"
    for topic in (s.interactions_topic, s.items_topic):
        assert topic in text
    assert re.search(rf"--topic {s.recommendations_topic} {re.escape(partitions)} .*\s+--config cleanup.policy=compact",
                     text), "recommendations is created compacted with the workers' partition count"
    assert f"--topic {s.dead_letters_topic} --partitions 1" in text
    assert "apache/kafka" in text and "KAFKA_PROCESS_ROLES: broker,controller" in text, "Kafka in KRaft mode"
    assert "METAREC_METRICS_HOST: 0.0.0.0" in text, "Prometheus must reach the workers' metrics in containers"


def test_image_holds_every_package_and_a_cpu_torch_by_default():
    dockerfile = (ROOT / "Dockerfile").read_text()
    ignored = (ROOT / ".dockerignore").read_text().split()
    for package in ("schemas", "models", "stream"):
        assert f"COPY {package} ./{package}" in dockerfile
        assert package not in ignored
    assert re.search(r"ARG TORCH_INDEX_URL=\S+/whl/cpu", dockerfile)


def test_alert_rules_pass_promtool():
    promtool = tool("promtool", "prometheus")
    run(promtool, "check", "rules", str(RULES))
    run(promtool, "check", "config", str(DEPLOY / "prometheus" / "prometheus.yml"))


def test_alerts_fire_when_they_should_and_not_before():
    promtool = tool("promtool", "prometheus")
    run(promtool, "test", "rules", "alerts_test.yml", cwd=Path(__file__).parent)


@functools.lru_cache(maxsize=1)
def declared_metric_names() -> frozenset[str]:
    """Every sample name our registry can expose: metarec's and Faust's sensor's."""
    metrics = Metrics(CollectorRegistry())
    app = faust.App("deploy-check", broker="kafka://127.0.0.1:1", store="memory://", web_enabled=False,
                    autodiscover=False)
    install_app_metrics(app, metrics, ["interactions"])
    suffixes = {"counter": ["_total"], "histogram": ["_bucket", "_sum", "_count"], "gauge": [""]}
    return frozenset(family.name + s for family in metrics.registry.collect() for s in suffixes.get(family.type, [""]))


def dashboard_exprs() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    return [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]


def test_dashboard_and_rules_only_name_metrics_the_worker_exposes():
    declared = declared_metric_names()
    used = {m for e in dashboard_exprs() for m in METRIC.findall(e)} | set(METRIC.findall(RULES.read_text()))
    assert used, "no metric found: the pattern is wrong"
    assert not used - declared, f"not exposed by any worker: {sorted(used - declared)}"


def test_dashboard_covers_every_metarec_metric():
    used = {m for e in dashboard_exprs() for m in METRIC.findall(e)}
    declared = {n for n in declared_metric_names() if n.startswith("metarec_")}
    families = {re.sub(r"_(total|bucket|sum|count)$", "", n) for n in declared}
    shown = {re.sub(r"_(total|bucket|sum|count)$", "", n) for n in used}
    assert not families - shown, f"metrics without a panel: {sorted(families - shown)}"


def test_dashboard_panels_use_the_provisioned_datasource():
    provisioned = (DEPLOY / "grafana" / "provisioning" / "datasources" / "prometheus.yml").read_text()
    uid = re.search(r"uid:\s*(\S+)", provisioned).group(1)
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["uid"] == "metarec"
    for panel in dashboard["panels"]:
        if panel["type"] != "row":
            assert panel["datasource"]["uid"] == uid, panel["title"]
            assert panel["targets"], panel["title"]
    provider = (DEPLOY / "grafana" / "provisioning" / "dashboards" / "metarec.yml").read_text()
    mount = re.search(r"path:\s*(\S+)", provider).group(1)
    assert f"./deploy/grafana/dashboards:{mount}" in (ROOT / "docker-compose.yml").read_text()


def test_compose_runs_metarec_commands_the_cli_accepts():
    from stream.cli import cli

    text = (ROOT / "docker-compose.yml").read_text()
    text = re.sub(r"\$\{[A-Z_]+:-([^}]*)\}", r"\1", text)  # compose's ${VAR:-default}, as run by default
    commands = [json.loads(f"[{m}]") for m in re.findall(r"^\s+command: \[(.*)\]$", text, re.M)]
    assert {c[0] for c in commands} >= {"train", "worker", "replay"}
    for args in commands:
        with cli.make_context("metarec", list(args), resilient_parsing=False) as ctx:
            sub = cli.get_command(ctx, args[0])
            assert sub is not None, f"metarec has no command {args[0]!r}"
            sub.make_context(args[0], list(args[1:]), parent=ctx)  # raises on an unknown option or bad value
