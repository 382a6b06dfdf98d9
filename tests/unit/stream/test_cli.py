"""The CLI answers bad input with one line, never a traceback."""

from __future__ import annotations

import subprocess
import sys

from stream.broker import free_port


def metarec(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "stream", *args], capture_output=True, text=True, timeout=timeout)


def assert_one_line_error(result: subprocess.CompletedProcess, needle: str) -> None:
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip() and "%" not in line[:2]]
    assert any(needle in line for line in lines), result.stderr
    assert len([line for line in lines if line.startswith(("metarec: error", "Error:"))]) == 1, result.stderr


def test_unreachable_broker_is_one_line():
    port = free_port()  # nothing listens there
    result = metarec("--brokers", f"127.0.0.1:{port}", "replay", "--data", "synthetic", "--limit", "1")
    assert_one_line_error(result, "cannot reach Kafka")


def test_bad_option_value_is_one_line():
    result = metarec("replay", "--rate", "-5")
    assert_one_line_error(result, "--rate")


def test_missing_dataset_is_one_line():
    result = metarec("train", "--data", "/nonexistent/dataset")
    assert_one_line_error(result, "not found")


def test_help_lists_the_commands():
    result = metarec("--help")
    assert result.returncode == 0
    for command in ("broker", "worker", "demo", "replay", "train"):
        assert command in result.stdout
