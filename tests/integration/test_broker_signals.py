"""``metarec broker`` never leaves its Tansu child behind: stopped by a signal or killed, the port comes free.

A child left running keeps its port, and the next broker on that port panics; so each test ends by starting a
new broker on the very same port.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from stream.broker import EmbeddedBroker

pytestmark = pytest.mark.integration

POLL_S = 0.05  # how often a bounded wait checks its condition
READY = re.compile(rb"embedded broker ready at 127\.0\.0\.1:(\d+)")


def wait_for(condition: Callable[[], object], timeout_s: float, what: str) -> object:
    """Check ``condition`` until it returns something true; fail after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while not (result := condition()):
        assert time.monotonic() < deadline, f"timed out after {timeout_s:.0f}s waiting for {what}"
        time.sleep(POLL_S)
    return result


def children(pid: int) -> list[int]:
    """The processes whose parent is ``pid``, from /proc."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue  # it ended while we looked
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def ended(pid: int) -> bool:
    """``pid`` is gone, or a zombie (dead; a container's init may never reap an orphan)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except (OSError, IndexError):
        return True


def port_refuses(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        return sock.connect_ex(("127.0.0.1", port)) != 0


@pytest.fixture
def cli_broker(tmp_path: Path) -> Iterator[tuple[subprocess.Popen, int, int]]:
    """A running ``python -m stream broker``: (process, its port, the Tansu child's pid)."""
    out_path = tmp_path / "broker.out"
    with open(out_path, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "stream", "broker"], stdout=out,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    try:
        def ready() -> re.Match | None:
            assert proc.poll() is None, f"metarec broker exited ({proc.returncode}): {out_path.read_text()}"
            return READY.search(out_path.read_bytes())

        port = int(wait_for(ready, 30, "metarec broker to say it is ready").group(1))  # type: ignore[union-attr]
        (child,) = children(proc.pid)
        yield proc, port, child
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


def assert_port_free_for_a_new_broker(port: int, child: int) -> None:
    wait_for(lambda: ended(child), 20, f"the Tansu child {child} to end")
    wait_for(lambda: port_refuses(port), 20, f"port {port} to be closed")
    with EmbeddedBroker(port=port, start_timeout_s=10) as again:  # the next start on that port works
        assert again.port == port and again.is_running()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
@pytest.mark.timeout(90)
def test_a_stop_signal_ends_the_child_and_frees_the_port(cli_broker, sig: signal.Signals) -> None:
    proc, port, child = cli_broker
    proc.send_signal(sig)
    assert proc.wait(30) == 128 + sig
    assert_port_free_for_a_new_broker(port, child)


@pytest.mark.timeout(90)
def test_a_killed_parent_takes_the_child_with_it(cli_broker) -> None:
    proc, port, child = cli_broker
    os.kill(proc.pid, signal.SIGKILL)  # nothing of ours runs: only the kernel's parent-death signal
    assert proc.wait(30) == -signal.SIGKILL
    assert_port_free_for_a_new_broker(port, child)


def cmdline(pid: int) -> list[str]:
    return Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")


@pytest.mark.timeout(180)
def test_the_demo_stopped_by_sigterm_ends_its_broker_and_worker(tmp_path: Path) -> None:
    with open(tmp_path / "demo.out", "wb") as out:  # the demo writes var/demo under its working directory
        proc = subprocess.Popen([sys.executable, "-m", "stream", "demo", "--rate", "50"], cwd=tmp_path,
                                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    try:
        def broker_and_worker() -> list[int] | None:
            out = (tmp_path / "demo.out").read_text(errors="replace")
            assert proc.poll() is None, f"the demo exited ({proc.returncode}): {out[-3000:]}"
            kids = children(proc.pid)
            return kids if len(kids) == 2 else None

        kids = wait_for(broker_and_worker, 120, "the demo to start its broker and its worker")
        (tansu,) = [pid for pid in kids if "broker" in cmdline(pid)[1:2]]  # type: ignore[union-attr]
        port = int(cmdline(tansu)[cmdline(tansu).index("--listener-url") + 1].rsplit(":", 1)[1])
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 128 + signal.SIGTERM
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    for pid in kids:  # type: ignore[union-attr]
        wait_for(lambda pid=pid: ended(pid), 20, f"the demo's child {pid} to end")
    assert_port_free_for_a_new_broker(port, tansu)
