"""Sampling a running worker with py-spy and summarising where its time goes, as text kept in bench/results/.

py-spy's ``raw`` format is one collapsed stack per line (``frame;...;leaf count``); the summary gives the
share of samples per thread, per area of the code (Faust, Kafka client, RocksDB, our pipeline, torch), the
leaf frames that burn the most, and the functions most often on the stack.

    .venv/bin/python -m bench.profiling summarise var/bench/profile-final.raw
"""

from __future__ import annotations

import logging
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

from bench.common import RESULTS

log = logging.getLogger(__name__)
RAW_DIR = Path(__file__).resolve().parent.parent / "var" / "bench"

AREAS: tuple[tuple[str, str], ...] = (  # first match on the leaf-most frame that names one wins
    ("models/", "model (models/)"),
    ("torch/", "torch"),
    ("stream/pipeline", "stream.pipeline"),
    ("stream/state", "stream.state"),
    ("stream/app", "stream.app"),
    ("stream/batcher", "stream.batcher"),
    ("stream/model_worker", "stream.model_worker"),
    ("stream/metrics", "stream.metrics"),
    ("prometheus_client", "prometheus_client"),
    ("schemas/", "schemas (decode)"),
    ("rocksdict", "rocksdict"),
    ("faust/tables", "faust tables"),
    ("faust/stores", "faust rocksdb store"),
    ("faust/transport", "faust transport (consumer/producer)"),
    ("aiokafka", "aiokafka"),
    ("faust/", "faust other"),
    ("mode/", "mode"),
    ("asyncio", "asyncio"),
)


def py_spy() -> str:
    exe = Path(sys.executable).with_name("py-spy")
    found = str(exe) if exe.exists() else shutil.which("py-spy")
    if not found:
        raise RuntimeError("py-spy is not installed: .venv/bin/pip install py-spy")
    return found


def profile_worker(pid: int, seconds: float, label: str) -> Path:
    """Record ``seconds`` of the process ``pid`` and write ``profile-<label>.txt`` into bench/results/."""
    RAW_DIR.mkdir(parents=True, exist_ok=True)
    raw = RAW_DIR / f"profile-{label}.raw"
    cmd = [
        py_spy(),
        "record",
        "--pid",
        str(pid),
        "--duration",
        str(int(seconds)),
        "--format",
        "raw",
        "--threads",
        "--nolineno",
        "--rate",
        "100",
        "--output",
        str(raw),
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 60)
    if done.returncode != 0 or not raw.exists():
        log.error("py-spy failed: %s", done.stderr[-500:])
        return raw
    out = RESULTS / f"profile-{label}.txt"
    out.write_text(
        summarise(raw, title=f"worker profile '{label}', {seconds:g} s of saturation, py-spy 100 Hz")
    )
    log.info("profile summary in %s", out)
    return out


def _parse(raw: Path) -> list[tuple[list[str], int]]:
    stacks = []
    for line in raw.read_text().splitlines():
        frames, _, count = line.rpartition(" ")
        if frames and count.isdigit():
            stacks.append((frames.split(";"), int(count)))
    return stacks


def _area(frames: list[str]) -> str:
    for frame in reversed(frames):
        for needle, name in AREAS:
            if needle in frame:
                return name
    return "other"


def _main_stage(frames: list[str]) -> str:
    """What the event loop thread was doing in one sample: waiting, our batch handler (by step), or Faust."""
    names = [f.split(" (")[0] for f in frames]
    if "select" in frames[-1]:
        return "waiting in select (idle)"
    if "BatchHandler.handle" in names:
        step = names[names.index("BatchHandler.handle") + 1 :][:2]
        return "our handler: " + " > ".join(step)
    for marker, label in (
        ("Fetcher._fetcher", "Faust consumer: fetch and drain"),
        ("Conductor._compile_message_handler.<locals>.on_message", "Faust consumer: deliver to stream"),
        ("_drain_batches", "Faust consumer: fetch and drain"),  # the batch path of stream/faust_compat/
        ("_deliver", "Faust consumer: fetch and drain"),
        ("Stream._passive_drainer", "Faust stream: take buffer"),
        ("take_batches", "Faust stream: take buffer"),
        ("ProducerBuffer._handle_pending", "Faust producer: publish"),
        ("Sender._sender_routine", "aiokafka producer: send requests"),
        ("Sender._send_produce_req", "aiokafka producer: send requests"),
        ("Topic._on_published", "Faust producer: acks"),
        ("Consumer._commit_handler", "Faust consumer: commit"),
    ):
        if marker in names:
            return label
    return "other event-loop work"


def summarise(raw: Path, title: str = "", top: int = 30, keep: tuple[str, ...] = ()) -> str:
    """The summary text; with ``keep``, only the stacks with a frame naming one of those (e.g. a steady state)."""
    stacks = [(f, c) for f, c in _parse(raw) if not keep or any(k in frame for frame in f for k in keep)]
    total = sum(c for _, c in stacks) or 1
    threads, areas, leaves, inclusive, main = Counter(), Counter(), Counter(), Counter(), Counter()
    for frames, count in stacks:
        thread, body = (frames[0], frames[1:]) if frames and frames[0].startswith("thread") else ("?", frames)
        threads[thread] += count
        areas[_area(body)] += count
        if "MainThread" in thread and body:
            main[_main_stage(body)] += count
        if body:
            leaves[body[-1]] += count
        for frame in set(body):
            inclusive[frame] += count

    def table(counter: Counter, n: int) -> list[str]:
        return [f"  {100 * c / total:5.1f}%  {name}" for name, c in counter.most_common(n)]

    main_total = sum(main.values()) or 1
    lines = [
        title,
        f"samples: {total} (non-idle; shares are of all samples)",
        "",
        "by thread:",
        *table(threads, 10),
        "",
        "the event-loop thread (MainThread) by stage, as shares of its own samples:",
        *[f"  {100 * c / main_total:5.1f}%  {name}" for name, c in main.most_common(20)],
        "",
        "by area (leaf-most frame in our code or a library):",
        *table(areas, 25),
        "",
        f"top {top} leaf frames (self time):",
        *table(leaves, top),
        "",
        f"top {top} functions on the stack (inclusive):",
        *table(inclusive, top),
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "summarise":
        sys.stdout.write(summarise(Path(sys.argv[2])))
    else:
        sys.exit("usage: python -m bench.profiling summarise PROFILE.raw")
