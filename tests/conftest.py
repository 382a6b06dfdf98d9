"""Suite-wide rules: a skipped test fails where ``FAIL_ON_SKIP=1`` (CI sets it in ``.ci/run``).

A skip hides a feature nobody checked: CI passing with the broker, Prometheus or docker-compose missing said
nothing about them. The one allowed skip is a test marked ``needs_gpu`` on a machine without CUDA (it is
skipped here, at collection, with that reason). The variable is the test run's, not the app's, so it is not
a ``METAREC_*`` setting.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Generator
from typing import Any

import pytest

FAIL_ON_SKIP = "FAIL_ON_SKIP"
NEEDS_GPU = "needs_gpu"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", f"{NEEDS_GPU}: needs CUDA; the only test that may skip (no CUDA)")


@functools.cache
def cuda_available() -> bool:
    import torch

    return bool(torch.cuda.is_available())


def skips_fail() -> bool:
    return os.environ.get(FAIL_ON_SKIP, "") not in ("", "0")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    gpu_tests = [item for item in items if item.get_closest_marker(NEEDS_GPU)]
    if gpu_tests and not cuda_available():
        for item in gpu_tests:
            item.add_marker(pytest.mark.skip(reason="needs a GPU: CUDA is not available on this machine"))


def allowed_skip(item: pytest.Item | None) -> bool:
    return item is not None and item.get_closest_marker(NEEDS_GPU) is not None and not cuda_available()


def fail_the_skip(report: pytest.TestReport, where: str) -> None:
    """Turn a skip report into a failure that still says why it skipped."""
    report.longrepr = f"{where} skipped, and {FAIL_ON_SKIP}=1 makes a skip a failure: {skip_reason(report)}"
    report.outcome = "failed"


def skip_reason(report: pytest.TestReport | pytest.CollectReport) -> str:
    longrepr: Any = report.longrepr  # (path, line, "Skipped: why") for a skip
    return str(longrepr[2] if isinstance(longrepr, tuple) and len(longrepr) == 3 else longrepr)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Generator[None, Any, None]:
    outcome = yield
    report: pytest.TestReport = outcome.get_result()
    if report.skipped and not hasattr(report, "wasxfail") and skips_fail() and not allowed_skip(item):
        fail_the_skip(report, item.nodeid)


skipped_modules = pytest.StashKey[list]()


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector: pytest.Collector) -> Generator[None, Any, None]:
    """A module skipped as a whole (``pytest.skip(allow_module_level=True)``) fails the run at its end: made a
    collection error, it would stop every other test from running."""
    outcome = yield
    report: pytest.CollectReport = outcome.get_result()
    if report.skipped and skips_fail():
        found = collector.config.stash.setdefault(skipped_modules, [])
        found.append(f"{report.nodeid}: {skip_reason(report)}")


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    passing = (pytest.ExitCode.OK, pytest.ExitCode.NO_TESTS_COLLECTED)
    if session.config.stash.get(skipped_modules, []) and exitstatus in passing:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    for line in config.stash.get(skipped_modules, []):
        terminalreporter.write_line(
            f"FAILED (module skipped, and {FAIL_ON_SKIP}=1 makes a skip a failure) {line}", red=True)
