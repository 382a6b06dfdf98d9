"""Model versions on disk: a folder of version folders and a ``LATEST`` pointer.

``metarec train`` publishes a version by writing a new folder and then replacing ``LATEST`` atomically (write a
temporary file, rename), so a worker polling the folder never reads a half-written model.
"""

from __future__ import annotations

import os
import time
import uuid
from pathlib import Path

from models.serving.recommender import Recommender

LATEST = "LATEST"


def new_version_name() -> str:
    return time.strftime("v%Y%m%d-%H%M%S-", time.gmtime()) + uuid.uuid4().hex[:6]


def publish(root: str | Path, model: Recommender, version: str | None = None) -> Path:
    """Save ``model`` as a new version under ``root`` and point ``LATEST`` at it."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    version = version or new_version_name()
    target = root / version
    model.save(target, version=version)
    tmp = root / f".{LATEST}.{uuid.uuid4().hex}"
    tmp.write_text(version + "\n")
    os.replace(tmp, root / LATEST)
    return target


def resolve(path: str | Path) -> Path:
    """The model folder ``path`` means: itself if it holds a model, else the version ``LATEST`` names."""
    path = Path(path)
    if (path / "config.json").exists():
        return path
    pointer = path / LATEST
    if pointer.exists():
        return path / pointer.read_text().strip()
    raise FileNotFoundError(f"no model at {path}: expected config.json or a {LATEST} file")
