"""Domain metrics, declared once, against a registry the caller passes (tests pass their own).

Label values come from small fixed sets (event results, dead-letter reasons, history buckets, model versions
that are actually loaded), so cardinality stays bounded whatever the input.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Sequence

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

if TYPE_CHECKING:
    from models.serving import AdaptResult
    from stream.pipeline import BatchPlan
    from stream.state import UserState

log = logging.getLogger(__name__)

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096)
LOSS_BUCKETS = (0.01, 0.03, 0.1, 0.3, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0)


class Metrics:
    """The worker's Prometheus metrics."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.events = Counter(
            "metarec_events", "Events read, by result (processed, duplicate, dead_letter).", ["result"], registry=r
        )
        self.dead_letters = Counter("metarec_dead_letters", "Events sent to dead-letters, by reason.", ["reason"],
                                    registry=r)
        self.recommendations = Counter("metarec_recommendations", "Recommendation lists produced.",
                                       ["model_version"], registry=r)
        self.deletions = Counter("metarec_user_deletions", "Users deleted on request.", registry=r)
        self.latency = Histogram(
            "metarec_event_to_recommendation_seconds",
            "From the event's Kafka timestamp to its recommendation being handed to the producer.",
            buckets=LATENCY_BUCKETS, registry=r,
        )
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
        self.online_hits = Counter(
            "metarec_online_hits", "Events whose item was in the last list sent to that user, by history bucket.",
            ["bucket"], registry=r,
        )
        self.online_trials = Counter(
            "metarec_online_trials", "Events of users who had been sent a list, by history bucket.", ["bucket"],
            registry=r,
        )

    def observe_plan(self, plan: "BatchPlan") -> None:
        """Counts from one decoded batch: results, and online hits of the lists we sent before."""
        self.events.labels(result="processed").inc(plan.processed)
        self.events.labels(result="duplicate").inc(plan.duplicates)
        self.events.labels(result="dead_letter").inc(len(plan.dead))
        for work in plan.users.values():
            for bucket, hit in work.hits:
                self.online_trials.labels(bucket=bucket).inc()
                if hit:
                    self.online_hits.labels(bucket=bucket).inc()

    def observe_served(self, states: Sequence["UserState"], results: Sequence["AdaptResult"], version: str) -> None:
        """What was recommended in one batch (states are after the batch's events)."""

    def serving(self, version: str) -> None:
        """Mark ``version`` as the only version serving."""
        self.model_info.clear()
        self.model_info.labels(model_version=version).set(1)

    def serve_http(self, host: str, port: int) -> None:
        """Expose ``/metrics``; bound to loopback unless configured otherwise."""
        start_http_server(port, addr=host, registry=self.registry)
        log.info("metrics on http://%s:%d/metrics", host, port)
