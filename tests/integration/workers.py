"""Starting real metarec worker processes for integration tests, and reading their RocksDB state afterwards."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from rocksdict import AccessType, Options, Rdict

from stream.broker import free_port
from stream.state import UserState, decode_state


@dataclass
class WorkerSpec:
    """Everything that makes one worker (or a group of them) unique to a test."""

    bootstrap: str
    prefix: str
    checkpoint: Path
    data_dir: Path
    app_id: str = ""
    partitions: int = 4
    extra_env: dict[str, str] = field(default_factory=dict)

    def env(self, metrics_port: int) -> dict[str, str]:
        return {
            **os.environ,
            "METAREC_BROKERS": self.bootstrap,
            "METAREC_TOPIC_PREFIX": self.prefix,
            "METAREC_APP_ID": self.app_id or f"{self.prefix}app",
            "METAREC_PARTITIONS": str(self.partitions),
            "METAREC_CHECKPOINT": str(self.checkpoint),
            "METAREC_DATA_DIR": str(self.data_dir),
            "METAREC_METRICS_PORT": str(metrics_port),
            "METAREC_MODEL_POLL_S": "0.5",
            **self.extra_env,
        }


class WorkerProcess:
    """A ``python -m stream worker`` subprocess with its log in a file."""

    def __init__(self, spec: WorkerSpec, log_path: Path) -> None:
        self.metrics_port = free_port()
        self.log_path = log_path
        self._log = open(log_path, "ab")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "stream", "worker"], env=spec.env(self.metrics_port),
            stdout=self._log, stderr=subprocess.STDOUT,
        )

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self._log.close()
        return self.proc.returncode

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")


def read_user_states(data_dir: Path) -> dict[str, UserState]:
    """Every user's state in a stopped worker's RocksDB table (all partitions)."""
    states: dict[str, UserState] = {}
    for db_path in sorted(data_dir.rglob("users-*.db")):
        db = Rdict(str(db_path), options=Options(raw_mode=True), access_type=AccessType.read_only())
        try:
            for key, value in db.items():
                states[bytes(key).decode()] = decode_state(bytes(value))
        finally:
            db.close()
    return states
