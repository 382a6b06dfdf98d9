"""A model on disk: ``model.safetensors`` (the tensors) and ``config.json`` (what they mean), and for a model
with context features ``stats.safetensors``: the item statistics it was trained up to (absent: empty ones).

Loading never unpickles anything, and a checkpoint is checked against its own configuration before any tensor
is used: a worker that is handed a truncated, tampered or mismatched folder refuses it with a message that
says what is wrong, and keeps serving the version it has.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from models.core.config import ModelConfig
from models.core.metalearner import MetaRec
from models.features.item_stats import ItemStats

log = logging.getLogger(__name__)

WEIGHTS = "model.safetensors"
STATS = "stats.safetensors"
CONFIG = "config.json"
FORMAT = "metarec-model"
FORMAT_VERSION = 1


class CheckpointError(ValueError):
    """The folder does not hold a usable model; the message says which part is wrong."""


@dataclass(frozen=True)
class Checkpoint:
    """A loaded, validated model and the metadata saved beside it."""

    model: MetaRec
    item_ids: list[str]
    version: str
    item_feature_names: list[str]
    stats: ItemStats | None = None


def save_checkpoint(
    path: str | Path,
    model: MetaRec,
    item_ids: Sequence[str],
    version: str,
    item_feature_names: Sequence[str] = (),
    stats: ItemStats | None = None,
) -> None:
    """Write the weights (and statistics), then ``config.json`` last: a folder with a config is complete."""
    if len(item_ids) != model.cfg.n_items:
        raise ValueError(f"{len(item_ids)} item ids for a model of {model.cfg.n_items} items")
    folder = Path(path)
    folder.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    save_file(tensors, str(folder / WEIGHTS), metadata={"format": FORMAT, "version": version})
    if stats is not None:
        arrays, stats_meta = stats.to_state()
        save_file({k: torch.from_numpy(v) for k, v in arrays.items()}, str(folder / STATS),
                  metadata={"format": FORMAT, "stats": json.dumps(stats_meta)})
    elif (folder / STATS).exists():
        (folder / STATS).unlink()
    meta = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "version": version,
        "config": model.cfg.to_dict(),
        "item_ids": list(item_ids),
        "item_feature_names": list(item_feature_names),
    }
    (folder / CONFIG).write_text(json.dumps(meta, indent=1) + "\n")
    log.info("saved model %s (%d items) to %s", version, len(item_ids), folder)


def load_checkpoint(path: str | Path, device: str | torch.device = "cpu") -> Checkpoint:
    """Read and validate a model folder; raises ``CheckpointError`` for anything unusable."""
    folder = Path(path)
    meta = _read_meta(folder / CONFIG)
    cfg = _config(meta)
    item_ids = _string_list(meta, "item_ids")
    if len(item_ids) != cfg.n_items or len(set(item_ids)) != len(item_ids):
        raise CheckpointError(f"{folder}: item_ids must be {cfg.n_items} distinct ids, got {len(item_ids)}")
    names = _string_list(meta, "item_feature_names")
    if names and len(names) != cfg.n_item_features:
        raise CheckpointError(f"{folder}: {len(names)} item feature names for {cfg.n_item_features} features")
    model = MetaRec(cfg)
    model.load_state_dict(_read_tensors(folder / WEIGHTS, model))
    version = meta.get("version")
    if not isinstance(version, str) or not version:
        raise CheckpointError(f"{folder}: config.json has no version string")
    stats = _read_stats(folder / STATS, cfg) if cfg.n_context else None
    return Checkpoint(model.to(device).eval(), item_ids, version, names, stats)


def _read_stats(path: Path, cfg: ModelConfig) -> ItemStats | None:
    """The saved item statistics, None if there are none; refused if they do not fit the catalogue."""
    if not path.exists():
        log.warning("%s: no item statistics saved; context features start from nothing", path.parent)
        return None
    try:
        with safe_open(str(path), "np") as f:
            meta = json.loads((f.metadata() or {})["stats"])
            arrays = {k: f.get_tensor(k) for k in f.keys()}
        stats = ItemStats.from_state(arrays, meta)
    except (SafetensorError, OSError, KeyError, ValueError, TypeError) as exc:
        raise CheckpointError(f"{path}: unreadable item statistics: {exc}") from None
    if stats.n_items != cfg.n_items:
        raise CheckpointError(f"{path}: statistics for {stats.n_items} items, the model has {cfg.n_items}")
    return stats


def _read_meta(path: Path) -> dict[str, Any]:
    try:
        meta = json.loads(path.read_text())
    except FileNotFoundError:
        raise CheckpointError(f"no {CONFIG} in {path.parent}") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{path} is not readable JSON: {exc}") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a {FORMAT} config (missing or wrong 'format')")
    if meta.get("format_version") != FORMAT_VERSION:
        got = meta.get("format_version")
        raise CheckpointError(f"{path}: format_version {got!r}, expected {FORMAT_VERSION}")
    return meta


def _config(meta: dict[str, Any]) -> ModelConfig:
    raw = meta.get("config")
    if not isinstance(raw, dict):
        raise CheckpointError("config.json has no 'config' object")
    try:
        return ModelConfig.from_dict(raw)
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"invalid model config: {exc}") from None


def _string_list(meta: dict[str, Any], key: str) -> list[str]:
    value = meta.get(key, [])
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise CheckpointError(f"config.json '{key}' must be a list of strings")
    return value


def _read_tensors(path: Path, model: MetaRec) -> dict[str, torch.Tensor]:
    """The tensors at ``path``, checked name by name against what ``model``'s config implies."""
    try:
        tensors = load_file(str(path))
    except FileNotFoundError:
        raise CheckpointError(f"no {WEIGHTS} in {path.parent}") from None
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"{path} is not a readable safetensors file: {exc}") from None
    expected = model.state_dict()
    missing, unexpected = sorted(set(expected) - set(tensors)), sorted(set(tensors) - set(expected))
    if missing or unexpected:
        raise CheckpointError(
            f"{path}: tensors do not match the config (missing {missing}, unexpected {unexpected})"
        )
    for name, want in expected.items():
        got = tensors[name]
        if got.shape != want.shape or got.dtype != want.dtype:
            raise CheckpointError(
                f"{path}: tensor {name} is {got.dtype}{tuple(got.shape)}, "
                f"the config needs {want.dtype}{tuple(want.shape)}"
            )
        if got.is_floating_point() and not bool(torch.isfinite(got).all()):
            raise CheckpointError(f"{path}: tensor {name} holds NaN or infinite values")
    return tensors
