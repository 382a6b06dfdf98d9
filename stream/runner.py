"""Starting a worker: check the broker, create topics, get a model, serve metrics, run the Faust app.

Every step that can fail for a reason a user can fix (broker unreachable, bad checkpoint) raises an error whose
message is one line; the CLI prints it without a traceback.
"""

from __future__ import annotations

import logging
import sys

import faust

from models.data.registry import split_by_time
from models.serving.recommender import Recommender
from models.training.train import meta_train
from stream import versions
from stream.app import build_app
from stream.metrics import Metrics
from stream.model_worker import ModelWorker, pick_device
from stream.settings import Settings
from stream.topics import app_topic_specs, ensure_topics, wait_for_broker

log = logging.getLogger(__name__)

DEMO_SEED = 7
DEMO_HISTORY_FRACTION = 0.5
STARTUP_TRAIN_SECONDS = 20.0


def demo_world(seed: int = DEMO_SEED):
    """The synthetic demo world, split into the history a model trains on and the live part that is replayed."""
    from models.data.synthetic import generate

    return split_by_time(generate(seed=seed), DEMO_HISTORY_FRACTION)


def startup_model(settings: Settings) -> Recommender:
    """The checkpoint the settings name, or a small model meta-trained now on the demo stream's history."""
    device = pick_device(settings.device)
    if settings.checkpoint:
        try:
            return Recommender.load(versions.resolve(settings.checkpoint), device=device)
        except FileNotFoundError:
            raise
        except Exception as exc:  # noqa: BLE001 - report why the checkpoint is unusable, in one line
            raise RuntimeError(f"cannot load checkpoint {settings.checkpoint}: {exc}") from exc
    history, _live = demo_world()
    log.info("no checkpoint given: meta-training a demo model on %d synthetic events", len(history))
    model = meta_train(history, steps=400, time_budget_s=STARTUP_TRAIN_SECONDS, seed=DEMO_SEED)
    return model


def run_worker(settings: Settings, loglevel: str = "info") -> None:
    """Run one metarec worker until SIGTERM/SIGINT; returns after a clean shutdown."""
    log.info("settings: %s", settings.redacted())
    kafka = settings.kafka_config()
    wait_for_broker(kafka, timeout=10.0)
    ensure_topics(kafka, app_topic_specs(settings))
    model = startup_model(settings)
    metrics = Metrics()
    metrics.serve_http(settings.metrics_host, settings.metrics_port)
    if settings.gil_switch_ms > 0:
        sys.setswitchinterval(settings.gil_switch_ms / 1000.0)
    worker = ModelWorker(model, settings, metrics).start()
    app = build_app(settings, worker, metrics)
    log.info("worker %s serving model %s on %s (%s)", settings.app_id, model.version, settings.brokers,
             pick_device(settings.device))
    faust_worker = faust.Worker(app, loglevel=loglevel, quiet=True, redirect_stdouts=False)
    try:
        faust_worker.execute_from_commandline()
    except SystemExit as exit_:
        if exit_.code not in (0, None):
            raise
    finally:
        worker.stop()
