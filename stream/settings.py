"""One typed, frozen settings object for the whole stream side.

Environment variables are read here and nowhere else (``METAREC_<FIELD>``, upper case). Every default works on
the embedded broker, so ``metarec demo`` needs no configuration at all.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Mapping


class SettingsError(ValueError):
    """A setting could not be parsed; the message names the variable."""


class Secret(str):
    """A string that never shows its value in repr, logs or tracebacks."""

    def __repr__(self) -> str:
        return "Secret('**********')" if self else "Secret('')"

    def reveal(self) -> str:
        return str.__str__(self)


@dataclass(frozen=True)
class Settings:
    """Everything a worker, producer or the CLI needs to know, in one place."""

    # --- Kafka -----------------------------------------------------------------------------------------------
    brokers: str = "127.0.0.1:9092"
    app_id: str = "metarec"
    topic_prefix: str = ""
    partitions: int = 4
    replication_factor: int = 1
    security_protocol: str = "PLAINTEXT"
    sasl_mechanism: str = ""
    sasl_username: str = ""
    sasl_password: Secret = field(default_factory=lambda: Secret(""))
    ssl_cafile: str = ""
    ssl_certfile: str = ""
    ssl_keyfile: str = ""
    session_timeout_s: float = 6.0
    recovery_consistency_check: bool = False  # True on Apache Kafka; the embedded broker under-reports highwater

    # --- worker ----------------------------------------------------------------------------------------------
    data_dir: Path = Path("var")
    store: str = "rocksdb://"
    web_host: str = "127.0.0.1"
    web_port: int = 6066
    metrics_host: str = "127.0.0.1"
    metrics_port: int = 9464
    take_max: int = 1000
    take_within_s: float = 0.02  # a longer window makes larger batches: more events per CPU-second (bench/)
    commit_interval_s: float = 1.0
    pipeline_depth: int = 2  # begun batches that may wait for the model and the producer (stream/handler.py)
    fetch_max_wait_ms: int = 10  # longest wait on an empty Fetch; the embedded broker always waits it all out
    max_event_bytes: int = 65536
    max_future_skew_s: float = 86400.0

    # --- per-user state ----------------------------------------------------------------------------------------
    support_size: int = 50
    seen_max: int = 2000
    recent_event_ids: int = 256

    # --- model worker ----------------------------------------------------------------------------------------
    checkpoint: str = ""
    device: str = "auto"
    top_k: int = 10
    candidates: int = 500  # items retrieved per user and scored (0: score the whole catalogue)
    batch_max: int = 1024  # users per model call: a whole take (coalesced per user) in one call
    torch_threads: int = 1  # model intra-op threads (0 = torch's default); 1 leaves cores to the event loop
    batch_wait_ms: float = 2.0
    queue_max: int = 8192
    model_poll_s: float = 5.0

    # --- derived topic names -----------------------------------------------------------------------------------
    @property
    def interactions_topic(self) -> str:
        return f"{self.topic_prefix}interactions"

    @property
    def items_topic(self) -> str:
        return f"{self.topic_prefix}items"

    @property
    def recommendations_topic(self) -> str:
        return f"{self.topic_prefix}recommendations"

    @property
    def dead_letters_topic(self) -> str:
        return f"{self.topic_prefix}dead-letters"

    @property
    def faust_broker_url(self) -> str:
        return ";".join(f"kafka://{b.strip()}" for b in self.brokers.split(","))

    def kafka_config(self) -> dict[str, Any]:
        """librdkafka (confluent-kafka) client settings, security included, for every client we create."""
        conf: dict[str, Any] = {"bootstrap.servers": self.brokers, "security.protocol": self.security_protocol}
        if self.sasl_mechanism:
            conf.update(
                {
                    "sasl.mechanism": self.sasl_mechanism,
                    "sasl.username": self.sasl_username,
                    "sasl.password": self.sasl_password.reveal(),
                }
            )
        for key, value in (
            ("ssl.ca.location", self.ssl_cafile),
            ("ssl.certificate.location", self.ssl_certfile),
            ("ssl.key.location", self.ssl_keyfile),
        ):
            if value:
                conf[key] = value
        return conf

    def replace(self, **changes: Any) -> "Settings":
        return dataclasses.replace(self, **changes)

    def redacted(self) -> dict[str, Any]:
        """The settings as a dict fit for logs: secrets masked."""
        out = {}
        for f in fields(self):
            value = getattr(self, f.name)
            out[f.name] = "**********" if isinstance(value, Secret) and value else value
        return out

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> "Settings":
        """Read ``METAREC_*`` variables; explicit ``overrides`` (e.g. CLI flags) win over the environment."""
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for f in fields(cls):
            name = f"METAREC_{f.name.upper()}"
            if name in env:
                values[f.name] = _parse(name, env[name], f.default if f.default is not dataclasses.MISSING else "")
        values.update({k: v for k, v in overrides.items() if v is not None})
        if "sasl_password" in values and not isinstance(values["sasl_password"], Secret):
            values["sasl_password"] = Secret(values["sasl_password"])
        return cls(**values)


def _parse(name: str, raw: str, default: Any) -> Any:
    """Parse one variable to the type of its default, with an error that names the variable."""
    try:
        if isinstance(default, bool):
            if raw.lower() in {"1", "true", "yes", "on"}:
                return True
            if raw.lower() in {"0", "false", "no", "off", ""}:
                return False
            raise ValueError(raw)
        if isinstance(default, int):
            return int(raw)
        if isinstance(default, float):
            return float(raw)
        if isinstance(default, Path):
            return Path(raw)
        return raw
    except ValueError:
        raise SettingsError(f"{name}={raw!r} is not a valid {type(default).__name__}") from None
