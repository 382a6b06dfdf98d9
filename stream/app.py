"""Builds the Faust app — topics, the per-user table, the agent — from one Settings object.

The agent is thin: it takes a batch of raw messages and hands it to ``stream.handler.BatchHandler``, which lets
``stream.pipeline`` decide what they mean, asks the model worker for everyone's fresh top-K in one micro-batch,
writes state and sends, while the agent already takes the next batch. Offsets of a batch are acked only after its
state writes and sends were acknowledged by the broker, so output is at-least-once, and the event ids kept in
state make the state effectively-once.
"""

from __future__ import annotations

import logging
import os
import ssl
import sys
from typing import Any

import faust

from stream.commit_watch import install_commit_watch
from stream.faust_compat import (
    commit_finished_offsets,
    fetch_only_active_partitions,
    keep_changelog_records,
    use_real_highwaters,
)
from stream.finished_offsets import FinishedOffsets
from stream.handler import BatchHandler
from stream.items import install_item_agent
from stream.metrics import Metrics, install_app_metrics
from stream.model_worker import ModelWorker
from stream.output import OutputProducer
from stream.read_api import install_read_api
from stream.settings import Settings
from stream.user_store import RocksUserStore

log = logging.getLogger(__name__)

USERS_TABLE = "users"
EXIT_BATCH_FAILED = 70  # EX_SOFTWARE: a batch could not be processed; it was not committed


def build_app(settings: Settings, worker: ModelWorker, metrics: Metrics) -> faust.App:
    """A Faust app wired to ``worker``; nothing connects until it is started."""
    datadir = settings.data_dir / settings.app_id
    datadir.parent.mkdir(parents=True, exist_ok=True)
    app = faust.App(
        settings.app_id,
        broker=settings.faust_broker_url,
        broker_credentials=_credentials(settings),
        store=settings.store,
        datadir=str(datadir),
        topic_partitions=settings.partitions,
        topic_replication_factor=settings.replication_factor,
        broker_session_timeout=settings.session_timeout_s,
        broker_heartbeat_interval=max(0.5, settings.session_timeout_s / 6),
        broker_commit_interval=settings.commit_interval_s,
        recovery_consistency_check=settings.recovery_consistency_check,
        consumer_auto_offset_reset="earliest",
        stream_buffer_maxsize=max(4096, 2 * settings.take_max),
        producer_linger=0.001,
        **_web_options(settings),
        autodiscover=False,
        worker_redirect_stdouts=False,
        env={},  # Faust reads BROKER_URL, APP_DATADIR, ... from the environment; only Settings may configure us
    )
    use_real_highwaters(app, settings.kafka_config(), fetch_max_wait_ms=settings.fetch_max_wait_ms)
    finished = FinishedOffsets([settings.interactions_topic])
    commit_finished_offsets(app, finished)  # commits follow what the handler finished, not Faust's acks
    interactions_topic = app.topic(
        settings.interactions_topic, partitions=settings.partitions, key_serializer="raw", value_serializer="raw"
    )
    # Keys and values are plain bytes (msgpack we encode ourselves). Saying so through the types, not by setting
    # serializers afterwards, is what makes the changelog topic raw too: otherwise recovery decodes it as JSON.
    table = app.Table(
        USERS_TABLE,
        key_type=bytes,
        value_type=bytes,
        partitions=settings.partitions,
        help="Per-user state (msgpack UserState).",
    )
    fetch_only_active_partitions(app)  # recovery and standbys never lose a changelog record they fetched
    keep_changelog_records(app)
    output = OutputProducer(settings.kafka_config())

    @app.agent(interactions_topic, name="interactions")
    async def interactions(stream: faust.StreamT) -> None:
        handler = BatchHandler(settings, worker, metrics, RocksUserStore(table, output), output, stream.ack,
                               fail_stop, finished)
        try:
            async for events in stream.take_events(settings.take_max, within=settings.take_within_s):
                try:
                    await handler.submit(events)
                except Exception:  # noqa: BLE001 - see fail_stop: nothing may ack a batch that was not processed
                    fail_stop(len(events))
        finally:
            await handler.drain()  # stopping: finish what was begun, so its offsets are committed

    if settings.checkpoint:
        @app.task
        async def watch_model() -> None:
            await worker.watch(settings.checkpoint, settings.model_poll_s)

    install_app_metrics(app, metrics, [settings.interactions_topic])
    install_commit_watch(app, settings.kafka_config(), settings.app_id, [settings.interactions_topic], finished,
                         metrics, interval_s=settings.commit_watch_interval_s, stall_s=settings.commit_stall_s)
    follower = install_item_agent(app, settings, worker, metrics)
    if settings.api_enabled:
        install_read_api(app, settings, worker, table, metrics.registry, follower)
    return app


def _web_options(settings: Settings) -> dict[str, Any]:
    """Faust's web server: on only for the read API, and then without Faust's own pages, which would show
    table contents and the cluster's layout to anyone who can reach the port."""
    if not settings.api_enabled:
        return {"web_enabled": False}
    return {
        "web_enabled": True,
        "web_bind": settings.web_host,
        "web_port": settings.web_port,
        "canonical_url": settings.web_url,
        "web_in_thread": settings.api_thread,
        "web_tables_enabled": False,
        "web_router_enabled": False,
        "web_stats_enabled": False,
        "web_graph_enabled": False,
        "web_metrics_enabled": False,
    }


def fail_stop(batch_size: int) -> None:
    """Exit at once, committing nothing, after a batch failed to process (an infrastructure or model error).

    Why not raise: ``take_events`` acks a batch's events in a ``finally``, also when the agent raised, and the
    next commit would then skip events that never reached state or the output. Exiting here is a crash like
    ``kill -9``, which the state's event ids and the changelog are built to survive (tests/integration/
    test_guarantees_crash.py): a supervisor restarts the worker and the batch is read again.
    """
    log.critical("a batch of %d events failed; exiting without committing it", batch_size, exc_info=True)
    for handler in logging.getLogger().handlers:
        handler.flush()
    sys.stderr.flush()
    os._exit(EXIT_BATCH_FAILED)


def _credentials(settings: Settings) -> Any:
    """SASL/SSL settings passed through to Faust's own clients, as to every other client."""
    context = None
    if settings.security_protocol.upper() in {"SSL", "SASL_SSL"}:
        context = ssl.create_default_context(cafile=settings.ssl_cafile or None)
        if settings.ssl_certfile:
            context.load_cert_chain(settings.ssl_certfile, settings.ssl_keyfile or None)
    if settings.sasl_mechanism:
        return faust.SASLCredentials(
            username=settings.sasl_username,
            password=settings.sasl_password.reveal(),
            mechanism=settings.sasl_mechanism,
            ssl_context=context,
        )
    if context is not None:
        return faust.SSLCredentials(context)
    return None
