"""The one place metarec reaches into Faust's internals, and why.

Faust tables pick the RocksDB partition and the changelog partition of a write from the *current event*, a
context variable that the stream sets while an agent iterates event by event. ``Stream.take_events`` fills its
buffer from a background task, so inside a batching agent that variable is unset (or stale). Batching is what
makes the worker fast, so each table read and write runs inside the context of the event it belongs to.
"""

from __future__ import annotations

import weakref
from contextlib import contextmanager
from typing import Any, Iterator

from faust.streams import _current_event


@contextmanager
def event_context(event: Any) -> Iterator[None]:
    """Make ``event`` Faust's current event for the duration of the block."""
    token = _current_event.set(weakref.ref(event))
    try:
        yield
    finally:
        _current_event.reset(token)
