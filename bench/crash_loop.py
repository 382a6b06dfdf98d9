"""The crash test in a loop over seeds: does ``kill -9`` at random points ever lose, double or stall anything?

    python -m bench.crash_loop [--seeds 1-20] [--stop-on-failure]

Each seed runs ``tests/integration/test_guarantees_crash.py -k kill_9`` in its own pytest process with
``CRASH_SEED`` set (the seed picks the synthetic world and the kill points; see the test's docstring), one
after the other. A wait that times out in the test dumps the group's state into its output, which is kept in
``var/crash-loop/<seed>.log``. Figures (passes, failures, per-seed outcome and time, the longest run of
passes) go to ``bench/results/crash-loop.json``. A loop, not a test: it runs for tens of minutes.
"""

from __future__ import annotations

import argparse
import logging
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench.common import RESULTS, machine_info, write_results

log = logging.getLogger("bench.crash_loop")
ROOT = Path(__file__).resolve().parent.parent
TEST = "tests/integration/test_guarantees_crash.py"


def seed_range(text: str) -> list[int]:
    """``"1-20"`` or ``"3,7,9"`` (or both, comma-separated) as a list of seeds."""
    seeds: list[int] = []
    for part in text.split(","):
        low, _, high = part.partition("-")
        seeds.extend(range(int(low), int(high or low) + 1))
    return seeds


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", type=seed_range, default=seed_range("1-20"), help="e.g. 1-20 or 3,7,9")
    p.add_argument("--stop-on-failure", action="store_true")
    p.add_argument("--logs", type=Path, default=ROOT / "var" / "crash-loop")
    p.add_argument("--out", type=Path, default=RESULTS / "crash-loop.json")
    return p.parse_args(argv)


def run_seed(seed: int, log_path: Path) -> dict[str, Any]:
    """One pytest process for one seed; its whole output goes to ``log_path``."""
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rs", TEST, "-k", "kill_9"]
    env = {**os.environ, "CRASH_SEED": str(seed), "PYTHONPATH": str(ROOT), "FAIL_ON_SKIP": "1"}  # skip: fail
    started = time.monotonic()
    with log_path.open("w") as out:
        code = subprocess.run(command, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
                              check=False).returncode
    tail = log_path.read_text(errors="replace").strip().splitlines()[-1:] or [""]
    return {"seed": seed, "passed": code == 0, "exit_code": code,
            "seconds": round(time.monotonic() - started, 1), "summary": tail[0],
            "log": os.path.relpath(log_path, ROOT)}


def longest_streak(outcomes: list[dict[str, Any]]) -> int:
    """The longest run of consecutive passes."""
    best = streak = 0
    for outcome in outcomes:
        streak = streak + 1 if outcome["passed"] else 0
        best = max(best, streak)
    return best


def main(argv: list[str] | None = None) -> dict[str, Any]:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    args.logs.mkdir(parents=True, exist_ok=True)
    machine = machine_info()
    started = time.monotonic()
    outcomes: list[dict[str, Any]] = []
    for seed in args.seeds:
        outcomes.append(run_seed(seed, args.logs / f"{seed}.log"))
        log.info("seed %d: %s", seed, outcomes[-1])
        if args.stop_on_failure and not outcomes[-1]["passed"]:
            break
    machine["loadavg_at_end"] = list(os.getloadavg())
    out = {
        "test": f"{TEST}::test_kill_9_at_random_points_loses_and_doubles_nothing",
        "command": " ".join(["python -m bench.crash_loop", *argv]),
        "equivalent_shell_loop": f"for s in $(seq 20); do CRASH_SEED=$s python -m pytest {TEST} -k kill_9; "
                                 "done",
        "seeds": [o["seed"] for o in outcomes],
        "passes": sum(o["passed"] for o in outcomes),
        "failures": sum(not o["passed"] for o in outcomes),
        "longest_run_of_passes": longest_streak(outcomes),
        "duration_s": round(time.monotonic() - started, 1),
        "runs": outcomes,
        "machine": machine,
    }
    write_results(args.out, out)
    log.info("crash loop: %d passes, %d failures of %d seeds in %.0f s", out["passes"], out["failures"],
             len(outcomes), out["duration_s"])
    return out


if __name__ == "__main__":
    main()
