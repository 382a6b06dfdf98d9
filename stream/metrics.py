"""Domain metrics, declared once, against a registry the caller passes (tests pass their own).

Label values come from small fixed sets (event results, dead-letter reasons, history buckets, event types, the
app's own topics and partitions, model versions that are actually loaded), so cardinality stays bounded whatever
the input. Children of fixed label sets are created at zero up front: a rate over them is 0, not "no data".

Per batch the handler calls :meth:`Metrics.observe_plan` and :meth:`Metrics.observe_settled`; they push into
bounded windows of :class:`stream.monitoring.Monitor` (numpy, O(batch)) and recompute the window gauges (coverage,
Gini, drift) at most once per ``refresh_s``. Framework figures (Faust's own sensor) and consumer lag need the app:
:func:`install_app_metrics` wires them.
"""

from __future__ import annotations

import logging
import math
import time
from collections import Counter as PyCounter
from typing import TYPE_CHECKING, Any, Callable, Iterable, Mapping, Sequence

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    start_http_server,
)

from schemas.decode import REASONS
from stream.monitoring import Monitor, MonitorConfig
from stream.state import EVENT_TYPE_NAMES, history_bucket

if TYPE_CHECKING:
    import faust

    from models.serving.recommender import AdaptResult
    from stream.pipeline import BatchPlan, Observations
    from stream.state import UserState

log = logging.getLogger(__name__)

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096)
LOSS_BUCKETS = (0.01, 0.03, 0.1, 0.3, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0)
EVENT_RESULTS = ("processed", "duplicate", "dead_letter")
HISTORY_BUCKETS = ("0", "1-4", "5-9", "10-49", "50+")
DRIFT_SIGNALS = ("score", "item_popularity", "event_type")
FAUST_PREFIX = "faust"  # fixed, not the app id: dashboards and alerts must not depend on a deployment's name
LAG_INTERVAL_S = 5.0


class Metrics:
    """The worker's Prometheus metrics, and the sliding windows behind the drift and exposure gauges."""

    def __init__(
        self,
        registry: CollectorRegistry | None = None,
        monitor: MonitorConfig | None = None,
        refresh_s: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        ProcessCollector(registry=self.registry)  # process_*: memory, CPU, and a start time that shows restarts
        self._declare_pipeline(self.registry)
        self._declare_model(self.registry)
        self._declare_windows(self.registry)
        self.monitor = Monitor(monitor or MonitorConfig())
        self._monitor_version: str | None = None
        self._refresh_s = refresh_s
        self._clock = clock
        self._last_refresh = -float("inf")
        self._lag_labels: set[tuple[str, str]] = set()
        self._rec_counters: dict[str, Any] = {}  # recommendations' child per model version
        for result in EVENT_RESULTS:
            self.events.labels(result=result)
        for reason in sorted(REASONS):
            self.dead_letters.labels(reason=reason)
        for result in ("swapped", "refused"):
            self.model_swaps.labels(result=result)

    def _declare_pipeline(self, r: CollectorRegistry) -> None:
        self.events = Counter(
            "metarec_events", "Events read, by result (processed, duplicate, dead_letter).", ["result"], registry=r
        )
        self.dead_letters = Counter("metarec_dead_letters", "Events sent to dead-letters, by reason.", ["reason"],
                                    registry=r)
        self.recommendations = Counter("metarec_recommendations", "Recommendation lists produced.",
                                       ["model_version"], registry=r)
        self.deletions = Counter("metarec_user_deletions", "Users deleted on request.", registry=r)
        self.commit_stalls = Counter("metarec_commit_stalls", "Times a partition's commit stopped moving while "
                                     "events waited beyond it (stream/commit_watch.py).", registry=r)
        self.commit_stalled = Gauge(
            "metarec_commit_stalled", "1 while a partition's commit has not moved for the stall time although "
            "events wait beyond it, whichever member holds it; 0 once it moves (stream/commit_watch.py).",
            ["topic", "partition"], registry=r,
        )
        self.partition_offset = Gauge(
            "metarec_partition_offset", "Where a partition stands: the group's committed offset and the "
            "partition's end (kind committed, end: every partition), and for the partitions this worker holds the "
            "last offset it read and the offset it has finished up to (kind read, finished).",
            ["topic", "partition", "kind"], registry=r,
        )
        self.latency = Histogram(
            "metarec_event_to_recommendation_seconds",
            "From the event's Kafka timestamp to its recommendation being handed to the producer.",
            buckets=LATENCY_BUCKETS, registry=r,
        )
        self.consumer_lag = Gauge(
            "metarec_consumer_lag", "Events in a partition not read yet (high watermark minus position).",
            ["topic", "partition"], registry=r,
        )

    def _declare_model(self, r: CollectorRegistry) -> None:
        self.batch_size = Histogram("metarec_adaptation_batch_size", "Users per adaptation micro-batch.",
                                    buckets=BATCH_BUCKETS, registry=r)
        self.adaptation_time = Histogram("metarec_adaptation_seconds", "Wall time of one adaptation micro-batch.",
                                         buckets=LATENCY_BUCKETS, registry=r)
        self.adaptation_loss = Histogram(
            "metarec_adaptation_loss", "Support loss per user before and after the inner loop.",
            ["stage", "model_version"], buckets=LOSS_BUCKETS, registry=r,
        )
        self.model_info = Gauge("metarec_model_info", "1 for the model version now serving.", ["model_version"],
                                registry=r)
        self.model_swaps = Counter("metarec_model_swaps", "Model version loads, by result (swapped, refused).",
                                   ["result"], registry=r)
        self.catalogue_size = Gauge("metarec_catalogue_items", "Items the serving model can recommend.",
                                    registry=r)

    def _declare_windows(self, r: CollectorRegistry) -> None:
        self.online_hits = Counter(
            "metarec_online_hits",
            "Events whose item was in the last list sent to that user, by history bucket and that list's version.",
            ["bucket", "model_version"], registry=r,
        )
        self.online_trials = Counter(
            "metarec_online_trials", "Events of users who had been sent a list, by history bucket and its version.",
            ["bucket", "model_version"], registry=r,
        )
        self.served_lists = Counter(
            "metarec_served_lists",
            "Lists computed, by the user's history length before the triggering event (bucket 0: a cold user).",
            ["bucket", "model_version"], registry=r,
        )
        self.coverage = Gauge("metarec_recommended_coverage",
                              "Share of the catalogue recommended at least once in the sliding window.",
                              ["model_version"], registry=r)
        self.gini = Gauge("metarec_recommended_gini",
                          "Gini coefficient of item exposure in the sliding window (0 even, 1 concentrated).",
                          ["model_version"], registry=r)
        self.drift_psi = Gauge(
            "metarec_drift_psi",
            "Population stability index, current window vs the reference window since start or model swap.",
            ["signal", "model_version"], registry=r,
        )
        self.event_type_share = Gauge("metarec_event_type_share", "Share of each event type in the sliding window.",
                                      ["type"], registry=r)

    # --- per batch --------------------------------------------------------------------------------------------
    def observe_plan(self, plan: "BatchPlan") -> None:
        """Counts from one decoded batch: results, online hits of the lists we sent before, the new events."""
        self.events.labels(result="processed").inc(plan.processed)
        self.events.labels(result="duplicate").inc(plan.duplicates)
        self.events.labels(result="dead_letter").inc(len(plan.dead))
        items: list[str] = []
        types: list[int] = []
        trials: PyCounter[tuple[str, str]] = PyCounter()
        hits: PyCounter[tuple[str, str]] = PyCounter()
        for work in plan.users.values():
            if work.hits:
                version = work.state.model_version or "unknown"  # the version of the list that was tested
                for bucket, hit in work.hits:
                    trials[(bucket, version)] += 1
                    hits[(bucket, version)] += hit
            new = min(work.applied, len(work.state.support))
            for event in work.state.support[len(work.state.support) - new:]:  # this batch's, in order
                items.append(event.item_id)
                types.append(event.type_code)
        self._count(self.online_trials, trials)
        self._count(self.online_hits, hits)
        self.monitor.observe_events(items, types)

    @staticmethod
    def _count(counter: Counter, counts: Mapping[tuple[str, str], int]) -> None:
        """One ``labels()`` look-up per label set and batch, not per event: it is the costly part."""
        for (bucket, version), n in counts.items():
            if n:
                counter.labels(bucket=bucket, model_version=version).inc(n)

    def observe_settled(self, observed: "Observations") -> None:
        """What one settled batch sent: lists, their latency and adaptation losses, under the version that
        served each list (a batch can straddle a model swap), and deletions."""
        if observed.deletions:
            self.deletions.inc(observed.deletions)
        for version, (states, results) in observed.served.items():
            counter = self._rec_counters.get(version)
            if counter is None:  # labels() is a locked lookup: once per model version, not once per list
                counter = self._rec_counters[version] = self.recommendations.labels(model_version=version)
            counter.inc(len(results))
            self._observe_losses(results, version)
            self.observe_served(states, results, version)
        for seconds in observed.latencies:
            self.latency.observe(seconds)

    def _observe_losses(self, results: Sequence["AdaptResult"], version: str) -> None:
        before = self.adaptation_loss.labels(stage="before", model_version=version)
        after = self.adaptation_loss.labels(stage="after", model_version=version)
        for r in results:
            if not math.isnan(r.loss_before):  # nan: an empty support set, nothing to adapt on
                before.observe(r.loss_before)
                after.observe(r.loss_after)

    def observe_served(self, states: Sequence["UserState"], results: Sequence["AdaptResult"], version: str) -> None:
        """What was recommended in one batch (states are after the batch's events)."""
        if version != self._monitor_version:
            self._rebaseline(version)
        buckets = PyCounter(history_bucket(max(0, state.interactions - 1)) for state in states)
        self._count(self.served_lists, {(bucket, version): n for bucket, n in buckets.items()})
        if results:
            self.monitor.observe_lists([r.items for r in results], [r.scores for r in results])
        if self._clock() - self._last_refresh >= self._refresh_s:
            self.refresh()

    def _rebaseline(self, version: str) -> None:
        """A new version: drift is measured against what the new version has seen, gauges carry its label."""
        if self._monitor_version is not None:  # the first version keeps what was observed before it was known
            log.info("model version %s: drift reference windows start over", version)
            self.monitor.reset()
        for gauge in (self.coverage, self.gini, self.drift_psi):
            gauge.clear()
        self._monitor_version = version
        self._init_version(version)

    def _init_version(self, version: str) -> None:
        for bucket in HISTORY_BUCKETS:
            self.served_lists.labels(bucket=bucket, model_version=version)
            self.online_hits.labels(bucket=bucket, model_version=version)
            self.online_trials.labels(bucket=bucket, model_version=version)

    def refresh(self) -> None:
        """Recompute the window gauges now (O(window) work)."""
        self._last_refresh = self._clock()
        version = self._monitor_version
        if version is None:
            return
        snap = self.monitor.snapshot(self._catalogue_items())
        if snap.coverage is not None and snap.gini is not None:
            self.coverage.labels(model_version=version).set(snap.coverage)
            self.gini.labels(model_version=version).set(snap.gini)
        for signal, value in snap.psi.items():
            self.drift_psi.labels(signal=signal, model_version=version).set(value)
        if snap.event_type_share is not None:
            for name, share in zip(EVENT_TYPE_NAMES, snap.event_type_share):
                self.event_type_share.labels(type=name).set(float(share))

    def _catalogue_items(self) -> int:
        samples = self.catalogue_size.collect()[0].samples
        return int(samples[0].value) if samples else 0

    def observe_lag(self, lags: Mapping[tuple[str, int], int]) -> None:
        """Set the lag of every assigned partition; partitions no longer assigned lose their series."""
        labels = {(topic, str(partition)) for topic, partition in lags}
        for stale in self._lag_labels - labels:
            self.consumer_lag.remove(*stale)
        for (topic, partition), lag in lags.items():
            self.consumer_lag.labels(topic=topic, partition=str(partition)).set(lag)
        self._lag_labels = labels

    def observe_commits(self, commits: Mapping[tuple[str, int], Any], stalled: set[tuple[str, int]],
                        held: Mapping[tuple[str, int], tuple[int | None, int | None]]) -> None:
        """What the commit watch saw: ``commits`` per partition (``PartitionCommit``), the partitions
        ``stalled`` now, and (read, finished) of the partitions this worker ``held``."""
        self.partition_offset.clear()  # a partition handed to another member loses its read/finished series
        for (topic, partition), seen in commits.items():
            labels = (topic, str(partition))
            self.commit_stalled.labels(*labels).set(1 if (topic, partition) in stalled else 0)
            for kind, value in (("committed", seen.committed), ("end", seen.end)):
                if value is not None:
                    self.partition_offset.labels(*labels, kind).set(value)
        for (topic, partition), (read, finished) in held.items():
            for kind, value in (("read", read), ("finished", finished)):
                if value is not None:
                    self.partition_offset.labels(topic, str(partition), kind).set(value)

    # --- model and exposition ---------------------------------------------------------------------------------
    def serving(self, version: str) -> None:
        """Mark ``version`` as the only version serving."""
        self.model_info.clear()
        self.model_info.labels(model_version=version).set(1)
        self._init_version(version)

    def serve_http(self, host: str, port: int) -> None:
        """Expose ``/metrics``; bound to loopback unless configured otherwise."""
        start_http_server(port, addr=host, registry=self.registry)
        log.info("metrics on http://%s:%d/metrics", host, port)


def consumer_lag(consumer: Any, monitor: Any, topics: Iterable[str]) -> dict[tuple[str, int], int]:
    """Per assigned partition of ``topics``: the high watermark the consumer last saw minus its position.

    The position is the offset after the last one read (Faust's monitor records reads), else the committed
    offset; a partition with neither, or whose high watermark is not known yet, is left out.
    """
    wanted = set(topics)
    lags: dict[tuple[str, int], int] = {}
    for tp in consumer.assignment():
        if tp.topic not in wanted:
            continue
        highwater = consumer.highwater(tp)
        read = monitor.tp_read_offsets.get(tp)
        position = read + 1 if read is not None else monitor.tp_committed_offsets.get(tp)
        if highwater is None or position is None:
            continue
        monitor.track_tp_end_offset(tp, highwater)
        lags[(tp.topic, tp.partition)] = max(0, int(highwater) - int(position))
    return lags


def install_app_metrics(app: "faust.App", metrics: Metrics, topics: Sequence[str],
                        interval_s: float = LAG_INTERVAL_S) -> None:
    """Faust's own Prometheus sensor on our registry (one /metrics), and a timer that sets consumer lag.

    The timer also refreshes the window gauges, so they catch up with the last batches when traffic stops.
    Call once from the app factory, before the worker starts. The sensor's metrics are named ``faust_*``.
    """
    from faust.sensors.prometheus import setup_prometheus_sensors

    setup_prometheus_sensors(app, registry=metrics.registry, name_prefix=FAUST_PREFIX)

    @app.timer(interval_s)
    async def metarec_consumer_lag() -> None:
        metrics.observe_lag(consumer_lag(app.consumer, app.monitor, topics))
        metrics.refresh()
