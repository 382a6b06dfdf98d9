"""A real ``python -m stream worker`` process, for the benchmarks and the integration tests alike.

One place starts, watches and stops workers (the throughput bench, the soak and the guarantee tests used to
carry their own copies): what makes a worker unique (:class:`WorkerSpec`), the process with its log and its
resource use (:class:`WorkerRun`), its Prometheus samples, and a bounded wait that fails as soon as a worker
it depends on died.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from stream.settings import Settings
from stream.topics import app_topic_specs, ensure_topics

POLL_S = 0.2  # the poll interval of bounded waits: how often a condition is checked, never a synchronisation
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


@dataclass
class WorkerSpec:
    """Everything that makes one worker (or a group of them) unique to a test or a benchmark run."""

    bootstrap: str
    prefix: str
    checkpoint: Path
    data_dir: Path
    app_id: str = ""
    partitions: int = 4
    extra_env: dict[str, str] = field(default_factory=dict)

    def settings(self) -> Settings:
        """The settings the worker will read from :meth:`env` (for topic names and clients beside it)."""
        return Settings(brokers=self.bootstrap, topic_prefix=self.prefix,
                        app_id=self.app_id or f"{self.prefix}app", partitions=self.partitions,
                        checkpoint=str(self.checkpoint), data_dir=self.data_dir)

    def create_topics(self) -> WorkerSpec:
        """Create the app's topics with its partition counts before any worker or producer starts."""
        settings = self.settings()
        ensure_topics(settings.kafka_config(), app_topic_specs(settings))
        return self

    def variables(self, metrics_port: int) -> dict[str, str]:
        """The worker's ``METAREC_*`` variables (what a results file records)."""
        return {
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

    def env(self, metrics_port: int) -> dict[str, str]:
        """The worker's whole environment: ours, with its variables on top."""
        return {**os.environ, **self.variables(metrics_port)}


class WorkerRun:
    """``python -m stream worker`` as a subprocess with its environment and its log in a file (appended);
    RSS and CPU time read from /proc."""

    def __init__(self, env: Mapping[str, str], log_path: Path, cwd: Path | None, metrics_port: int) -> None:
        self.log_path = log_path
        self.metrics_port = metrics_port
        self._log = open(log_path, "ab")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "stream", "worker"],
            env={**os.environ, **env},
            stdout=self._log,
            stderr=subprocess.STDOUT,
            cwd=cwd,
        )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 60.0) -> int:
        """Send ``sig`` (SIGKILL after ``timeout`` s if it is still running); returns the exit status."""
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

    def rss_bytes(self) -> int:
        """Resident set size now (VmRSS), in bytes."""
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        return 0

    def cpu_seconds(self) -> float:
        """User + system CPU time the worker has used so far."""
        fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# --- its metrics --------------------------------------------------------------------------------------------
def scrape_samples(port: int, timeout_s: float = 2.0, missing_ok: bool = True) -> Samples:
    """A worker's Prometheus samples as {(name, sorted labels): value}; empty while it is not serving yet
    (unless ``missing_ok`` is false: then an unreachable worker raises OSError)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=timeout_s) as resp:
            text = resp.read().decode()
    except OSError:
        if missing_ok:
            return {}
        raise
    return {
        (s.name, tuple(sorted(s.labels.items()))): float(s.value)
        for family in text_string_to_metric_families(text) for s in family.samples
    }


def scrape(port: int) -> dict[str, float]:
    """The worker's samples summed over labels, histogram buckets left out: ``{"metarec_..._sum": ..}``."""
    out: dict[str, float] = {}
    for (name, _labels), value in scrape_samples(port, timeout_s=10, missing_ok=False).items():
        if not name.endswith("_bucket"):
            out[name] = out.get(name, 0.0) + value
    return out


def events_read(port: int) -> float:
    """Interactions this worker incarnation has read into state (new and duplicate), per its metrics."""
    samples = scrape_samples(port)
    return sum(samples.get(("metarec_events_total", (("result", r),)), 0.0)
               for r in ("processed", "duplicate"))


def wait_until(condition: Callable[[], bool], timeout_s: float, what: str,
               alive: Sequence[WorkerRun] = (), progress: Callable[[], object] | None = None) -> None:
    """Check ``condition`` until it holds; fail after ``timeout_s`` or as soon as a worker in ``alive`` died.

    ``progress`` (optional) says where things stood, in the timeout's message.
    """
    deadline = time.monotonic() + timeout_s
    while not condition():
        for worker in alive:
            if not worker.alive():
                raise AssertionError(f"worker exited ({worker.proc.returncode}) while waiting for {what}:\n"
                                     f"{worker.log_text()[-4000:]}")
        if time.monotonic() > deadline:
            where = f" ({progress()})" if progress is not None else ""
            raise AssertionError(f"timed out after {timeout_s:.0f}s waiting for {what}{where}")
        time.sleep(POLL_S)
