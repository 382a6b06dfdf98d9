"""The suite's skip rule (tests/conftest.py), run on a tiny test file in a pytest of its own.

With ``FAIL_ON_SKIP=1`` a skipped test, or a module skipped as a whole, fails and still says why; a
``needs_gpu`` test skips only where CUDA is missing; an expected failure stays one. Without the variable
skips stay skips.
"""

from __future__ import annotations

import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

from tests.conftest import FAIL_ON_SKIP, cuda_available

ROOT = Path(__file__).resolve().parents[2]

TESTS = '''
import pytest

def test_passes():
    pass

def test_skips():
    pytest.skip("the tool is missing")

@pytest.mark.skipif(True, reason="a condition said so")
def test_skipif():
    pass

@pytest.mark.needs_gpu
def test_on_gpu():
    pass

@pytest.mark.xfail(reason="known", strict=True)
def test_expected_failure():
    assert False
'''

SKIPPED_MODULE = '''
import pytest

pytest.skip("nothing here runs", allow_module_level=True)

def test_never():
    pass
'''


def run(tmp_path: Path, fail_on_skip: bool) -> tuple[dict[str, str], int, str]:
    """Run the tiny suite with our conftest as a plugin: outcomes by test name, exit status, output."""
    (tmp_path / "test_tiny.py").write_text(TESTS)
    (tmp_path / "test_skipped_module.py").write_text(SKIPPED_MODULE)
    env = {k: v for k, v in os.environ.items() if k != FAIL_ON_SKIP}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    if fail_on_skip:
        env[FAIL_ON_SKIP] = "1"
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "tests.conftest", "-p", "no:cacheprovider", "-q", "-rs",
         "-o", "addopts=", "--junitxml=report.xml", "test_tiny.py", "test_skipped_module.py"],
        check=False, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120,
    )
    outcomes = {}
    for case in ET.parse(tmp_path / "report.xml").iter("testcase"):
        kinds = [child.tag for child in case if child.tag in ("failure", "error", "skipped")]
        outcomes[case.get("name", "")] = kinds[0] if kinds else "passed"
    return outcomes, done.returncode, done.stdout + done.stderr


def test_skips_stay_skips_without_the_variable(tmp_path: Path) -> None:
    got, status, out = run(tmp_path, fail_on_skip=False)
    assert got["test_passes"] == "passed", out
    assert got["test_skips"] == got["test_skipif"] == got["test_skipped_module"] == "skipped", out
    assert got["test_on_gpu"] == ("passed" if cuda_available() else "skipped"), out
    assert status == 0, out


def test_the_variable_turns_every_skip_into_a_failure_that_says_why(tmp_path: Path) -> None:
    got, status, out = run(tmp_path, fail_on_skip=True)
    assert got["test_passes"] == "passed", out
    assert got["test_skips"] == "failure", out
    assert got["test_skipif"] == "error", out  # a skip mark acts at set-up: failing there is an error
    assert got["test_expected_failure"] == "skipped", out  # an xfail: junit files it with the skips
    assert status == 1, out
    assert "the tool is missing" in out and "a condition said so" in out and f"{FAIL_ON_SKIP}=1" in out
    assert "test_skipped_module.py: Skipped: nothing here runs" in out  # a module skipped whole fails the run
    assert got["test_on_gpu"] == ("passed" if cuda_available() else "skipped"), out  # the one allowed skip


def test_a_module_skipped_whole_is_the_only_skip_and_still_fails_the_run(tmp_path: Path) -> None:
    (tmp_path / "test_only_module.py").write_text(SKIPPED_MODULE)
    env = {**os.environ, FAIL_ON_SKIP: "1",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    done = subprocess.run([sys.executable, "-m", "pytest", "-p", "tests.conftest", "-p", "no:cacheprovider",
                           "-q", "-o", "addopts=", "test_only_module.py"],
                          check=False, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 1, done.stdout + done.stderr
