"""Continual meta-training: follow the ``interactions`` topic and publish a new model version at an interval.

The trainer is its own consumer group, so it reads every event the workers read without slowing them. It keeps a
bounded window of recent interactions, warm-starts each round from the version it published last, and publishes
through ``stream.versions`` — running workers poll the folder and swap to the new version whole. A user deletion
removes that user's events from the window, so no later version learns from a deleted user.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from confluent_kafka import Consumer

from models.data.events import EventLog, build_log
from models.serving.recommender import Recommender
from models.training.train import meta_train
from schemas.decode import DecodeError, decode_user_event
from schemas.records import Interaction, UserDeletion
from stream.settings import Settings
from stream.versions import publish

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class _Row:
    user_id: str
    item_id: str
    ts: float
    value: float
    type: str


class EventWindow:
    """The most recent ``capacity`` interactions, in arrival order, with deletions applied."""

    def __init__(self, capacity: int) -> None:
        self._rows: deque[_Row] = deque(maxlen=capacity)
        self.added = 0

    def __len__(self) -> int:
        return len(self._rows)

    def add(self, event: Interaction | UserDeletion | object) -> None:
        if isinstance(event, Interaction):
            value = float("nan") if event.value is None else event.value
            self._rows.append(_Row(event.user_id, event.item_id, event.ts, value, event.type))
            self.added += 1
        elif isinstance(event, UserDeletion):
            kept = [r for r in self._rows if r.user_id != event.user_id]
            self._rows.clear()
            self._rows.extend(kept)

    def to_log(self, name: str = "stream") -> EventLog:
        """The window as an EventLog; it counts as explicit data when most events are ratings."""
        rows = list(self._rows)
        ratings = sum(1 for r in rows if r.type == "rating" and r.value == r.value)
        return build_log(
            [r.user_id for r in rows], [r.item_id for r in rows], [r.ts for r in rows],
            values=[r.value for r in rows], types=[r.type for r in rows], name=name,
            explicit=ratings * 2 > len(rows),
        )


@dataclass(frozen=True)
class FollowPlan:
    """How the trainer follows the stream."""

    out: Path
    interval_s: float = 300.0
    window: int = 200_000
    min_events: int = 1000
    steps: int = 300
    time_budget_s: float | None = 120.0
    rounds: int | None = None  # stop after this many publications (None: until stopped)
    seed: int = 0


def follow(settings: Settings, plan: FollowPlan, init: Recommender | None = None,
           should_stop: Callable[[], bool] = lambda: False) -> list[Path]:
    """Consume interactions, meta-train each ``interval_s`` on the window, publish; returns what it published."""
    consumer = Consumer({
        **settings.kafka_config(),
        "group.id": f"{settings.app_id}-trainer",
        "auto.offset.reset": "earliest",
        "session.timeout.ms": int(settings.session_timeout_s * 1000),
        "enable.auto.commit": True,
    })
    consumer.subscribe([settings.interactions_topic])
    window, model, published = EventWindow(plan.window), init, []
    next_round = time.monotonic() + plan.interval_s
    try:
        while not should_stop() and (plan.rounds is None or len(published) < plan.rounds):
            for msg in consumer.consume(1000, timeout=0.5):
                if msg.error() is None and msg.value() is not None:
                    try:
                        window.add(decode_user_event(msg.value(), max_bytes=settings.max_event_bytes))
                    except DecodeError:
                        continue  # the workers dead-letter it; the trainer just skips it
            if time.monotonic() < next_round or len(window) < plan.min_events:
                continue
            model = meta_train(window.to_log(), steps=plan.steps, time_budget_s=plan.time_budget_s,
                               seed=plan.seed + len(published), init=model)
            published.append(publish(plan.out, model))
            log.info("published %s from %d events in the window", published[-1].name, len(window))
            next_round = time.monotonic() + plan.interval_s
    finally:
        consumer.close()
    return published
