"""``metarec evaluate``: run an offline evaluation protocol and write its results under ``--out``.

Only argument parsing lives here; the protocols are in ``models.eval``. Errors a user can cause (an unknown
method, a missing dataset, a protocol not built yet) are click usage errors: one line, no traceback.
"""

from __future__ import annotations

import logging
import os
import shlex
import sys
from pathlib import Path

import click

log = logging.getLogger(__name__)


def _stream_methods(value: str | None) -> list[str] | None:
    if value is None:
        return None
    from models.eval.registry import parse_methods

    try:
        return parse_methods(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--methods") from None


def _dataset(_ctx: click.Context, _param: click.Parameter, value: str | None) -> str | None:
    if value is None:
        return None
    if value != "synthetic" and not Path(value).expanduser().exists():
        raise click.BadParameter(f"{value!r} not found (give 'synthetic', a dataset folder or an event file)")
    return value


def portable_path(arg: str) -> str:
    """A path as the results file records it: a shared data set as ``../shared/data/<name>`` (as seen from
    the repository root, whatever checkout ran it), anything else relative to the working directory."""
    path = Path(arg).expanduser()
    if arg == "synthetic" or not path.exists():
        return arg
    parts = path.resolve().parts
    for n in range(len(parts) - 1):
        if parts[n: n + 2] == ("shared", "data"):
            return "/".join(("..", *parts[n:]))
    return os.path.relpath(path.resolve())


def _code_version() -> str | None:
    """The checkout's commit (with "+dirty" for uncommitted changes), recorded with every stream outcome."""
    import subprocess

    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                                check=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True,
                               text=True, check=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return commit + ("+dirty" if dirty else "")


def _event_weights(text: str | None):
    """The weights given, else the worker's setting (METAREC_EVENT_WEIGHTS), as a checked mapping or None."""
    from stream.settings import Settings, SettingsError, parse_event_weights

    try:
        return parse_event_weights(text) if text is not None else Settings.from_env().weights
    except SettingsError as exc:
        raise click.BadParameter(str(exc), param_hint="--event-weights") from None


def _command_line() -> str:
    """The command as typed, with paths made portable (no absolute paths in committed results)."""
    args = sys.argv[1:]
    paths = {n + 1 for n, a in enumerate(args) if a == "--dataset"}
    paths |= {n + d for n, a in enumerate(args) if a == "--transfer" for d in (1, 2)}
    return "metarec " + " ".join(shlex.quote(portable_path(a) if n in paths else a)
                                 for n, a in enumerate(args))


@click.command("evaluate")
@click.option("--transfer", nargs=2, metavar="SOURCE TARGET",
              help="Cross-domain transfer: target-only vs source zero-shot vs source pre-training + fine-tuning.")
@click.option("--dataset", callback=_dataset,
              help="'synthetic', an ml-100k or Last.fm folder, or a CSV/JSON-lines event file.")
@click.option("--protocol", type=click.Choice(["stream", "coldstart", "privacy"]), default="stream", show_default=True,
              help="stream: test-then-train replay in time order; coldstart: MeLU-style new-user splits.")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=Path("bench/results"),
              show_default=True, help="Folder for the result files.")
@click.option("--seed", type=int, default=0, show_default=True, help="The first seed.")
@click.option("--seeds", type=click.IntRange(min=1), default=3, show_default=True,
              help="Seeds seed .. seed + N - 1, each with its own tie order and model seeds (stream).")
@click.option("--tune/--no-tune", default=True, show_default=True,
              help="Choose every method's settings on the warm-up (stream protocol); --no-tune: defaults.")
@click.option("--tune-seed", type=int, help="The seed whose warm-up chooses the costliest methods' settings "
                                             "(metarec, sasrec) for every seed; default: each seed its own.")
@click.option("--methods", help="Comma list of methods (default: all).")
@click.option("--max-events", type=click.IntRange(min=10), help="Only the earliest N events (quick runs).")
@click.option("--parts", type=click.Path(file_okay=False, path_type=Path),
              help="Keep each (seed, method) outcome here and reuse saved ones: resume a long stream run, or "
                   "run methods in separate processes and combine them with a run naming them all.")
@click.option("--warmup", type=click.FloatRange(0.0, 1.0, max_open=True), default=0.2, show_default=True,
              help="Share of the stream given to every method before scoring starts (stream protocol).")
@click.option("--note", help="What this run left out or cut, and why (stream protocol: kept in the results).")
@click.option("--event-weights", help="Positive event types and their weights, e.g. view:0.2,click:1 "
                                      "(default: METAREC_EVENT_WEIGHTS, as the worker; stream protocol).")
def evaluate(transfer: tuple[str, str] | None, dataset: str | None, protocol: str, out: Path, seed: int,
             seeds: int, tune: bool, tune_seed: int | None, methods: str | None, max_events: int | None,
             parts: Path | None, warmup: float, note: str | None, event_weights: str | None) -> None:
    """Evaluate metarec and the baselines offline; writes <protocol>-<dataset>.{json,md,png}."""
    from models.data.generic import EventFileError
    from models.data.registry import DatasetError, load_dataset

    if bool(transfer) == bool(dataset):
        raise click.UsageError("give --dataset PATH, or --transfer SOURCE TARGET")
    try:
        if transfer:
            from models.eval.transfer_protocol import TransferSetup, run_transfer

            for path in transfer:
                _dataset(None, None, path)  # type: ignore[arg-type]
            setup = TransferSetup(seed=seed, max_events=max_events)
            run_transfer(load_dataset(transfer[0], seed=seed), load_dataset(transfer[1], seed=seed), out,
                         setup=setup, command=_command_line())
            click.echo(f"wrote transfer results for {transfer[0]} -> {transfer[1]} to {out}")
            return
        if protocol == "privacy":
            from models.eval.privacy_protocol import PrivacySetup, run_privacy

            result = run_privacy(load_dataset(dataset, seed=seed), out, epsilons=(1, 4, 8),
                                 setup=PrivacySetup(seed=seed, max_events=max_events), command=_command_line())
        elif protocol == "coldstart":
            names = [m.strip() for m in methods.split(",") if m.strip()] if methods else None
            result = _coldstart(dataset, out, seed, names, max_events)
        else:
            from models.eval.stream_runner import run_stream

            result = run_stream(dataset, out=out, seed=seed, seeds=seeds, methods=_stream_methods(methods),
                                max_events=max_events, warmup_fraction=warmup, tuned=tune, progress=True,
                                parts=parts, code_version=_code_version(), command=_command_line(),
                                event_weights=_event_weights(event_weights), tune_seed=tune_seed,
                                note=note)
    except (DatasetError, EventFileError, FileNotFoundError) as exc:
        raise click.BadParameter(str(exc), param_hint="--dataset") from None
    click.echo(f"wrote {protocol} results for {result.get('dataset', dataset)} to {out}")


def _coldstart(dataset: str, out: Path, seed: int, methods: list[str] | None, max_events: int | None) -> dict:
    try:
        from models.eval.coldstart.protocol import run_coldstart
    except ImportError:
        missing = "--protocol coldstart is not available (models.eval.coldstart.protocol is missing)"
        raise click.UsageError(missing) from None
    from models.data.registry import dataset_name, load_dataset
    from models.eval.stream_runner import first_events

    events = first_events(load_dataset(dataset, seed=seed), max_events)
    try:
        return run_coldstart(events, out, dataset_name(dataset), seed=seed, methods=methods)
    except ValueError as exc:  # unknown methods, data the protocol cannot use
        raise click.UsageError(str(exc).splitlines()[0]) from None
