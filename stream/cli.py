"""The ``metarec`` command: broker, worker, demo, replay, train (and evaluate).

Flags override ``METAREC_*`` environment variables, which override the defaults, all through ``Settings``. Any
error a user can cause ends in one line on stderr and exit status 2; ``--debug`` shows the traceback.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Any

import click

from stream.settings import Settings

log = logging.getLogger(__name__)


def _settings(ctx: click.Context, **overrides: Any) -> Settings:
    return Settings.from_env(**ctx.obj.get("overrides", {}), **overrides)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--brokers", help="Kafka bootstrap servers (METAREC_BROKERS).")
@click.option("--debug", is_flag=True, help="Show tracebacks and debug logs.")
@click.pass_context
def cli(ctx: click.Context, brokers: str | None, debug: bool) -> None:
    """metarec: a streaming recommender that meta-learns from every event."""
    ctx.ensure_object(dict)
    ctx.obj["debug"] = debug
    ctx.obj["overrides"] = {"brokers": brokers}
    logging.basicConfig(
        level=logging.DEBUG if debug else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


@cli.command()
@click.option("--port", type=click.IntRange(0, 65535), default=0, help="Port (0 = a free one).")
def broker(port: int) -> None:
    """Run the embedded Kafka-compatible broker (Tansu) in the foreground."""
    from stream.broker import EmbeddedBroker

    with EmbeddedBroker(port=port or None) as b:
        click.echo(f"embedded broker ready at {b.bootstrap} (memory only; Ctrl-C stops it)")
        b.wait()


@cli.command()
@click.option("--checkpoint", help="Model folder or a folder of published versions (METAREC_CHECKPOINT).")
@click.option("--app-id", help="Consumer group and changelog prefix (METAREC_APP_ID).")
@click.option("--data-dir", type=click.Path(file_okay=False, path_type=Path), help="RocksDB folder.")
@click.option("--metrics-port", type=click.IntRange(0, 65535), help="Prometheus port (METAREC_METRICS_PORT).")
@click.option("--device", help="cpu, cuda or auto (METAREC_DEVICE).")
@click.pass_context
def worker(ctx: click.Context, checkpoint: str | None, app_id: str | None, data_dir: Path | None,
           metrics_port: int | None, device: str | None) -> None:
    """Run a metarec worker: consume interactions, keep user state, publish recommendations."""
    from stream.runner import run_worker

    settings = _settings(ctx, checkpoint=checkpoint, app_id=app_id, data_dir=data_dir, metrics_port=metrics_port,
                         device=device)
    run_worker(settings, loglevel="debug" if ctx.obj["debug"] else "info")


@cli.command()
@click.option("--data", "data", default="synthetic", show_default=True,
              help="'synthetic', a MovieLens/Last.fm folder, or a CSV/JSON-lines event file.")
@click.option("--rate", type=click.FloatRange(min=0, min_open=True), help="Offered events/s (default: as fast as possible).")
@click.option("--limit", type=click.IntRange(min=1), help="Stop after this many events.")
@click.pass_context
def replay(ctx: click.Context, data: str, rate: float | None, limit: int | None) -> None:
    """Produce a dataset's events, in time order and keyed by user, to the interactions topic."""
    from models.data.registry import load_dataset
    from stream.replay import interactions
    from stream.replay import replay as run_replay
    from stream.topics import app_topic_specs, ensure_topics, wait_for_broker

    settings = _settings(ctx)
    kafka = settings.kafka_config()
    wait_for_broker(kafka, timeout=10.0)
    ensure_topics(kafka, app_topic_specs(settings))
    events = load_dataset(data).sorted_by_time()
    sent = run_replay(kafka, settings.interactions_topic, interactions(events), rate=rate, limit=limit)
    click.echo(f"sent {sent} events to {settings.interactions_topic}")


@cli.command()
@click.option("--data", "data", help="'synthetic', a MovieLens/Last.fm folder, or an event file.")
@click.option("--follow", is_flag=True, help="Follow the interactions topic and publish a version every --interval.")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=Path("var/models"),
              show_default=True, help="Folder of versions; LATEST points at the new one.")
@click.option("--steps", type=click.IntRange(min=1), default=2000, show_default=True, help="Meta-training steps.")
@click.option("--time-budget", type=click.FloatRange(min=1), help="Stop a round after this many seconds.")
@click.option("--interval", type=click.FloatRange(min=1), default=300.0, show_default=True,
              help="With --follow: seconds between publications.")
@click.option("--window", type=click.IntRange(min=100), default=200_000, show_default=True,
              help="With --follow: most recent events trained on.")
@click.option("--rounds", type=click.IntRange(min=1), help="With --follow: stop after this many publications.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.pass_context
def train(ctx: click.Context, data: str | None, follow: bool, out: Path, steps: int, time_budget: float | None,
          interval: float, window: int, rounds: int | None, seed: int) -> None:
    """Meta-train a model and publish it as a new version (once from --data, or continually with --follow)."""
    if follow == bool(data):
        raise click.UsageError("give exactly one of --data or --follow")
    from models.data.registry import load_dataset

    events = load_dataset(data, seed=seed) if data else None  # bad input fails before the heavier imports
    from stream import versions

    if follow:
        from models.serving.recommender import Recommender
        from stream.trainer import FollowPlan
        from stream.trainer import follow as run_follow

        settings = _settings(ctx)
        init = Recommender.load(versions.resolve(out)) if (out / versions.LATEST).exists() else None
        plan = FollowPlan(out=out, interval_s=interval, window=window, steps=steps, time_budget_s=time_budget,
                          rounds=rounds, seed=seed)
        published = run_follow(settings, plan, init=init)
        click.echo(f"published {len(published)} versions to {out}")
        return
    from models.training.train import meta_train

    model = meta_train(events, steps=steps, time_budget_s=time_budget, seed=seed, progress=True)
    folder = versions.publish(out, model)
    click.echo(f"published {folder.name} to {out} ({len(events)} events, {len(model.item_ids)} items)")


@cli.command()
@click.option("--data", "data", default="synthetic", show_default=True,
              help="'synthetic' or a MovieLens/Last.fm folder or event file to replay.")
@click.option("--rate", type=click.FloatRange(min=0, min_open=True), default=300.0, show_default=True,
              help="Offered events/s.")
@click.option("--partitions", type=click.IntRange(1, 64), default=4, show_default=True)
@click.option("--duration", type=click.FloatRange(min=1), help="Stop after this many seconds (default: Ctrl-C).")
def demo(data: str, rate: float, partitions: int, duration: float | None) -> None:
    """Embedded broker + a worker + a producer, with live recommendations in the terminal. Ctrl-C stops all."""
    from stream.demo import run_demo

    run_demo(data=data, rate=rate, partitions=partitions, duration=duration)


@cli.command()
@click.option("--eval", "evaluations", multiple=True, type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="An evaluation result JSON (repeatable).")
@click.option("--metrics-url", help="A worker's /metrics URL to sample, e.g. http://127.0.0.1:9464/metrics.")
@click.option("--duration", type=click.FloatRange(min=1), default=60.0, show_default=True,
              help="Seconds to sample the worker.")
@click.option("--interval", type=click.FloatRange(min=0.1), default=2.0, show_default=True)
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=Path("var/report.html"),
              show_default=True)
def report(evaluations: tuple[Path, ...], metrics_url: str | None, duration: float, interval: float,
           out: Path) -> None:
    """Write a self-contained HTML report from evaluation results and/or a running worker's metrics."""
    from stream.report import build_report, http_fetch, sample_metrics

    if not evaluations and not metrics_url:
        raise click.UsageError("give --eval FILE and/or --metrics-url URL")
    samples = sample_metrics(http_fetch(metrics_url), duration, interval) if metrics_url else None
    click.echo(f"wrote {build_report(out, list(evaluations), samples)}")


def _register_optional() -> None:
    try:
        from stream.cli_evaluate import evaluate
    except ImportError:  # the evaluation extra is not installed
        return
    cli.add_command(evaluate)


_register_optional()


def main() -> None:
    """Entry point: run the group, turning errors into one line."""
    debug = "--debug" in sys.argv[1:]
    try:
        cli.main(standalone_mode=False)
    except click.exceptions.Abort:
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        sys.exit(130)
    except Exception as exc:  # noqa: BLE001 - the one place errors become a one-line message
        if debug:
            raise
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        click.echo(f"metarec: error: {first}", err=True)
        sys.exit(2)
