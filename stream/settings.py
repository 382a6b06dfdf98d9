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
    commit_stall_s: float = 30.0  # lag > 0 and the commit unmoved this long: a stall (stream/commit_watch.py)
    commit_watch_interval_s: float = 5.0
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

    # --- what events mean: event weights and impressions ------------------------------------------------------
    event_weights: str = ""  # "view:0.2,click:1,cart:2,purchase:3": the positive types, their weights
    # (defaults chosen by bench/impressions.py on a validation world: skips as negatives, no demotion)
    impression_window_s: float = 0.0  # shown this long ago (event time) and not taken: a negative in adaptation
    impression_negatives: int = 32  # such negatives per user and request, at most
    impression_demote_after: int = 0  # shown (skipped) this often without a take: not recommended (0: never)
    impression_skips: bool = True  # count skips (shown above an item the user took) instead of showings
    shown_max: int = 200  # shown-and-not-taken items kept per user

    # --- the read API (stream/read_api.py), on Faust's web server ----------------------------------------------
    api_enabled: bool = False
    api_token: Secret = field(default_factory=lambda: Secret(""))  # bearer token required when set
    api_url: str = ""  # how other workers reach this one (default http://web_host:web_port)
    api_thread: bool = True  # serve on a thread of its own (own event loop): requests do not wait for batches
    key_partitioner: str = "consistent"  # how producers partition ``interactions``: consistent (CRC32) or murmur2

    def __post_init__(self) -> None:
        self.weights  # noqa: B018 - parse METAREC_EVENT_WEIGHTS once, so a typo fails at start-up
        if self.key_partitioner not in KEY_PARTITIONERS:
            raise SettingsError(f"METAREC_KEY_PARTITIONER={self.key_partitioner!r}: "
                                f"one of {', '.join(KEY_PARTITIONERS)}")

    @property
    def weights(self) -> tuple[tuple[str, float], ...] | None:
        """``event_weights`` as a checked, canonical mapping (``models.core.targets.EventWeights``), or None."""
        return parse_event_weights(self.event_weights)

    @property
    def web_url(self) -> str:
        """The read API's URL as other workers reach it (Faust's canonical URL)."""
        return self.api_url or f"http://{self.web_host}:{self.web_port}"

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
        for name in ("sasl_password", "api_token"):
            if name in values and not isinstance(values[name], Secret):
                values[name] = Secret(values[name])
        return cls(**values)


KEY_PARTITIONERS = ("consistent", "murmur2")


def parse_event_weights(text: str) -> tuple[tuple[str, float], ...] | None:
    """``"view:0.2,click:1"`` -> (("click", 1.0), ("view", 0.2)); empty -> None (the defaults)."""
    from models.core.targets import event_weights

    if not text.strip():
        return None
    mapping: dict[str, float] = {}
    for part in text.split(","):
        name, sep, weight = part.strip().partition(":")
        try:
            if not sep:
                raise ValueError(f"{part.strip()!r} is not type:weight")
            mapping[name.strip()] = float(weight)
        except ValueError as exc:
            raise SettingsError(f"METAREC_EVENT_WEIGHTS={text!r}: {exc}") from None
    try:
        return event_weights(mapping)
    except ValueError as exc:
        raise SettingsError(f"METAREC_EVENT_WEIGHTS={text!r}: {exc}") from None


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
