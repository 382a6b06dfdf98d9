"""Lean sensors: Faust's monitor only counts per event; Prometheus copied on a timer (point 8).

Why each reach into Faust is needed: the package docstring (stream/faust_compat/__init__.py)."""

from __future__ import annotations

from typing import Any

import faust
from faust.types import TP


def use_lean_sensors(app: faust.App, sync_interval_s: float = 1.0) -> None:
    """Make the app's monitor (Faust's, or the Prometheus one of stream/metrics.py) cheap per event.

    Faust's monitor keeps per-event timings, and its Prometheus monitor updates six labelled metrics per event
    (each ``labels()`` a lock and a tuple of strings). The lean one only counts, in the attributes Faust's monitor
    has (messages in, per topic, read and end offsets for the consumer lag, active messages, table operations),
    and a timer copies those into the Prometheus metrics every ``sync_interval_s``; commits, rebalances and the
    producer are reported as before. ``faust_events_runtime_ms``, ``faust_total_active_events`` and
    ``faust_total_events_per_stream`` stay at zero. Call after ``stream.metrics.install_app_metrics``, before the
    app starts: the monitor keeps its state and changes class.
    """
    from faust.sensors.prometheus import PrometheusMonitor

    monitor = app.monitor
    monitor.__class__ = _lean_class(type(monitor))
    if isinstance(monitor, PrometheusMonitor):
        @app.timer(sync_interval_s)
        async def metarec_sync_faust_metrics() -> None:
            sync_prometheus(app.monitor)


_LEAN_CLASSES: dict[type, type] = {}


def _lean_class(cls: type) -> type:
    """``cls`` with the lean per-event hooks: a direct subclass, so an instance of ``cls`` can change class."""
    if getattr(cls, "_metarec_lean", False):
        return cls
    if cls not in _LEAN_CLASSES:
        from faust.sensors import Monitor

        hooks = {name: getattr(Monitor, name) for name in _MONITOR_HOOKS}  # the cheap ones, Prometheus' bypassed
        hooks.update(on_message_in=_message_in, on_stream_event_in=_stream_event_in,
                     on_stream_event_out=_stream_event_out, on_message_out=_message_out)
        _LEAN_CLASSES[cls] = type(f"Lean{cls.__name__}", (cls,), {"_metarec_lean": True, "__module__": __name__,
                                                                  **hooks})
    return _LEAN_CLASSES[cls]


_MONITOR_HOOKS = ("track_tp_end_offset", "on_table_get", "on_table_set", "on_table_del")


def _message_in(self: Any, tp: TP, offset: int, message: Any) -> None:
    self.messages_received_total += 1
    self.messages_active += 1
    self.messages_received_by_topic[tp.topic] += 1
    self.tp_read_offsets[tp] = offset


def _stream_event_in(self: Any, tp: TP, offset: int, stream: Any, event: Any) -> None:
    self.events_total += 1  # and no per-event state: on_stream_event_out has nothing to time


def _stream_event_out(self: Any, tp: TP, offset: int, stream: Any, event: Any, state: Any = None) -> None:
    pass


def _message_out(self: Any, tp: TP, offset: int, message: Any) -> None:
    self.messages_active -= 1


def sync_prometheus(monitor: Any) -> None:
    """Copy a lean Prometheus monitor's counts into its metrics (counters by their growth since the last copy)."""
    m = monitor._metrics
    synced: dict[Any, int] = monitor.__dict__.setdefault("_lean_synced", {})

    def grow(key: Any, counter: Any, total: int) -> None:
        delta = total - synced.get(key, 0)
        if delta > 0:
            counter.inc(delta)
        synced[key] = total

    grow("received", m.messages_received, monitor.messages_received_total)
    grow("events", m.total_events, monitor.events_total)
    for topic, total in list(monitor.messages_received_by_topic.items()):
        grow(("topic", topic), m.messages_received_per_topics.labels(topic=topic), total)
    m.active_messages.set(monitor.messages_active)
    for tp, offset in list(monitor.tp_read_offsets.items()):
        m.messages_received_per_topics_partition.labels(topic=tp.topic, partition=tp.partition).set(offset)
    for tp, offset in list(monitor.tp_end_offsets.items()):
        m.topic_partition_end_offset.labels(topic=tp.topic, partition=tp.partition).set(offset)
    for name, state in list(monitor.tables.items()):
        for operation in (monitor.KEYS_RETRIEVED, monitor.KEYS_UPDATED, monitor.KEYS_DELETED):
            grow(("table", name, operation), m.table_operations.labels(table=f"table.{name}", operation=operation),
                 getattr(state, operation))
