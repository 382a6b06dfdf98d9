"""Safe defaults: credentials reach every Kafka client, endpoints on loopback, no pickle, no secrets in logs."""

from __future__ import annotations

import ast
import logging
import socket
import sys
from pathlib import Path
from typing import Any

import pytest
from faust.auth import SASLCredentials, SSLCredentials
from faust.transport.drivers.aiokafka import credentials_to_aiokafka_auth
from faust.types import TP

import stream.faust_compat as faust_compat
import stream.replay as replay
import stream.topics as topics
from stream.app import build_app
from stream.broker import free_port
from stream.metrics import Metrics
from stream.settings import Secret, Settings

ROOT = Path(__file__).resolve().parents[2]
PASSWORD = "pl4nted-s3cret-Zq9"
SASL = dict(security_protocol="SASL_SSL", sasl_mechanism="SCRAM-SHA-512", sasl_username="metarec",
            sasl_password=Secret(PASSWORD))
CLIENT_CLASSES = {"Producer", "Consumer", "AdminClient"}
PICKLERS = {"pickle", "cPickle", "dill", "cloudpickle", "joblib"}


def sasl_settings(tmp_path: Path, **changes: Any) -> Settings:
    return Settings(brokers="127.0.0.1:1", data_dir=tmp_path, **{**SASL, **changes})


# --- credentials reach every client ---------------------------------------------------------------------------
def test_kafka_config_carries_sasl_and_ssl():
    conf = Settings(**SASL, ssl_cafile="/ca.pem", ssl_certfile="/c.pem", ssl_keyfile="/k.pem").kafka_config()
    assert conf["security.protocol"] == "SASL_SSL"
    assert (conf["sasl.mechanism"], conf["sasl.username"], conf["sasl.password"]) == (
        "SCRAM-SHA-512", "metarec", PASSWORD)
    assert (conf["ssl.ca.location"], conf["ssl.certificate.location"], conf["ssl.key.location"]) == (
        "/ca.pem", "/c.pem", "/k.pem")


class Recorder:
    """Stands in for a confluent-kafka client class and remembers the config each instance got."""

    configs: list[dict[str, Any]] = []

    def __init__(self, config: dict[str, Any]) -> None:
        Recorder.configs.append(config)

    def flush(self, *args: Any) -> int:
        return 0  # nothing left undelivered

    def poll(self, *args: Any) -> None:
        return None

    def assign(self, *args: Any) -> None: ...

    def close(self) -> None: ...


@pytest.fixture
def recorder(monkeypatch: pytest.MonkeyPatch) -> type[Recorder]:
    Recorder.configs = []
    monkeypatch.setattr(replay, "Producer", Recorder)
    monkeypatch.setattr(topics, "AdminClient", Recorder)
    monkeypatch.setattr(faust_compat.consumer, "Consumer", Recorder)
    return Recorder


def test_every_confluent_client_gets_the_security_settings(recorder, tmp_path):
    kafka = sasl_settings(tmp_path).kafka_config()
    replay.replay(kafka, "interactions", [])
    topics.quiet_admin(kafka)
    faust_compat.real_end_offsets(kafka, {TP("users-changelog", 0): 5}, timeout_s=0.01)
    assert len(recorder.configs) == 3
    for config in recorder.configs:
        assert config["security.protocol"] == "SASL_SSL" and config["sasl.password"] == PASSWORD


def test_every_client_construction_site_passes_kafka_config():
    """Statically: each Producer/Consumer/AdminClient built in stream/ is handed the settings' kafka config."""
    sites = []
    for path in sorted((ROOT / "stream").glob("*.py")):
        source = path.read_text()
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in CLIENT_CLASSES:
                config = ast.get_source_segment(source, node.args[0]) if node.args else ""
                sites.append((path.name, node.lineno, config or ""))
    assert len(sites) >= 4, sites  # replay, topics, faust_compat, demo at least
    unsafe = [s for s in sites if "kafka_config" not in s[2]]
    assert not unsafe, f"clients built without the settings' kafka config: {unsafe}"


def test_faust_clients_get_sasl_credentials(tmp_path):
    app = build_app(sasl_settings(tmp_path), worker=None, metrics=Metrics())  # type: ignore[arg-type]
    creds = app.conf.broker_credentials
    assert isinstance(creds, SASLCredentials)
    assert (creds.username, creds.password, creds.mechanism.value) == ("metarec", PASSWORD, "SCRAM-SHA-512")
    assert creds.ssl_context is not None  # SASL_SSL: TLS as well
    auth = credentials_to_aiokafka_auth(creds)  # what faust hands its aiokafka consumer and producer
    assert auth["security_protocol"] == "SASL_SSL" and auth["sasl_plain_password"] == PASSWORD


def test_faust_clients_get_ssl_credentials(tmp_path):
    app = build_app(Settings(security_protocol="SSL", data_dir=tmp_path), worker=None,  # type: ignore[arg-type]
                    metrics=Metrics())
    assert isinstance(app.conf.broker_credentials, SSLCredentials)
    assert credentials_to_aiokafka_auth(app.conf.broker_credentials)["security_protocol"] == "SSL"


def test_faust_ignores_its_own_environment_variables(tmp_path, monkeypatch):
    """Only Settings configures the app: a stray BROKER_URL or APP_DATADIR must not redirect it."""
    monkeypatch.setenv("BROKER_URL", "kafka://elsewhere:9092")
    monkeypatch.setenv("APP_DATADIR", str(tmp_path / "elsewhere"))
    monkeypatch.setenv("TABLE_STANDBY_REPLICAS", "7")
    app = build_app(Settings(brokers="10.1.2.3:9092", data_dir=tmp_path), worker=None,  # type: ignore[arg-type]
                    metrics=Metrics())
    assert [str(u) for u in app.conf.broker] == ["kafka://10.1.2.3:9092"]
    assert "elsewhere" not in str(app.conf.datadir)
    assert app.conf.table_standby_replicas != 7


# --- endpoints on loopback ------------------------------------------------------------------------------------
def test_endpoints_default_to_loopback(tmp_path):
    settings = Settings()
    assert settings.metrics_host == "127.0.0.1" and settings.web_host == "127.0.0.1"
    app = build_app(Settings(data_dir=tmp_path), worker=None, metrics=Metrics())  # type: ignore[arg-type]
    assert app.conf.web_enabled is False  # Faust's own web server is off altogether


@pytest.mark.skipif(not Path("/proc/net/tcp").exists(), reason="reads the listening sockets from /proc")
def test_metrics_listen_on_loopback_only():
    port = free_port()
    Metrics().serve_http(Settings().metrics_host, port)
    listening = [line.split()[1] for line in Path("/proc/net/tcp").read_text().splitlines()[1:]
                 if line.split()[3] == "0A"]  # state 0A: LISTEN
    ours = [addr for addr in listening if int(addr.split(":")[1], 16) == port]
    assert ours == [f"{socket.htonl(0x7F000001):08X}:{port:04X}"], ours  # 127.0.0.1, not 0.0.0.0


# --- no pickle ------------------------------------------------------------------------------------------------
def unsafe_loads(path: Path) -> list[str]:
    """Imports of pickle-family modules, torch.load without weights_only=True, np.load with allow_pickle=True."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            names = [a.name for a in node.names] + ([node.module] if isinstance(node, ast.ImportFrom) else [])
            if any(str(n).split(".")[0] in PICKLERS for n in names):
                found.append(f"{path.name}:{node.lineno} imports {names}")
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "load":
            owner = ast.unparse(node.func.value)
            kwargs = {k.arg: ast.unparse(k.value) for k in node.keywords}
            if owner == "torch" and kwargs.get("weights_only") != "True":
                found.append(f"{path.name}:{node.lineno} torch.load without weights_only=True")
            if owner in {"np", "numpy"} and kwargs.get("allow_pickle") == "True":
                found.append(f"{path.name}:{node.lineno} np.load(allow_pickle=True)")
    return found


def test_no_pickle_anywhere_in_the_package():
    files = [p for d in ("models", "stream", "schemas") for p in sorted((ROOT / d).rglob("*.py"))]
    assert files
    problems = [problem for path in files for problem in unsafe_loads(path)]
    assert not problems, problems


def test_the_pickle_check_can_fail(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("import pickle\nimport torch\n"
                   "x = torch.load('m.pt')\ny = torch.load('m.pt', weights_only=True)\n")
    assert len(unsafe_loads(bad)) == 2


# --- no secrets in logs ---------------------------------------------------------------------------------------
def test_settings_never_show_the_password():
    settings = Settings(**SASL)
    assert PASSWORD not in repr(settings) and PASSWORD not in str(settings.redacted())
    assert PASSWORD not in f"{settings.sasl_password!r}"


def test_a_failing_worker_start_logs_no_secret(tmp_path, monkeypatch, caplog, capfd):
    """The worker's start-up path at debug level, against an unreachable broker: the password is nowhere."""
    import stream.cli as cli
    import stream.runner as runner

    real_wait = runner.wait_for_broker
    monkeypatch.setattr(runner, "wait_for_broker", lambda conf, timeout: real_wait(conf, timeout=1.0))
    for name, value in {"SECURITY_PROTOCOL": "SASL_PLAINTEXT", "SASL_MECHANISM": "PLAIN",
                        "SASL_USERNAME": "metarec", "SASL_PASSWORD": PASSWORD,
                        "BROKERS": f"127.0.0.1:{free_port()}", "DATA_DIR": str(tmp_path)}.items():
        monkeypatch.setenv(f"METAREC_{name}", value)
    monkeypatch.setattr(sys, "argv", ["metarec", "--debug", "worker"])
    caplog.set_level(logging.DEBUG)
    with pytest.raises(Exception) as failure:  # --debug re-raises instead of printing one line
        cli.main()
    out, err = capfd.readouterr()
    assert "settings:" in caplog.text, "the worker logs its (redacted) settings at start-up"
    assert "cannot reach Kafka" in str(failure.value)
    for text in (caplog.text, out, err, str(failure.value), repr(failure.value)):
        assert PASSWORD not in text
