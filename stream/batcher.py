"""Micro-batching of requests from the event loop onto one compute thread.

Why a thread of its own: adaptation is torch work that releases the GIL, so the asyncio loop keeps consuming
and producing while a batch runs, and requests from many agents/users arriving meanwhile form the next batch.

Guarantees the worker relies on:
- a batch holds at most ``max_size`` requests and waits at most ``max_wait_s`` after its first request;
- requests are processed in submission order (one thread, FIFO), so one user's results come back in order;
- nothing is dropped: if a whole batch fails, it is split in halves and each half run again, down to the
  requests that fail alone (one poison request among n costs 2 log2(n) more calls, twice the batch's work
  again); such a request gets its exception, so its caller decides (the handler dead-letters the
  user's events) instead of silently losing it, and ``on_failure`` hears of it on the compute thread;
- the number of requests waiting is bounded (``queue_max``): submitters wait, which is the backpressure;
- a job (``call_soon``) runs on the same thread after every request queued before it and before any queued
  after it, and no batch spans it: the worker learns a batch's events right after ranking it, so the next
  batch is ranked with statistics that hold them (test, then train, and nothing in between).
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import deque
from typing import Any, Callable, Generic, Sequence, TypeVar

log = logging.getLogger(__name__)

Req = TypeVar("Req")
Res = TypeVar("Res")
BatchFn = Callable[[Sequence[Req]], Sequence[Res]]
Pending = tuple[Any, asyncio.Future, asyncio.AbstractEventLoop]  # a request, its future, the loop awaiting it
_JOB = object()  # marks a queued job: (_JOB, the callable, None)


class BatcherClosed(RuntimeError):
    """The batcher was stopped before the request ran."""


class MicroBatcher(Generic[Req, Res]):
    """Collects requests from coroutines into bounded batches run by ``fn`` on a dedicated thread."""

    def __init__(
        self,
        fn: BatchFn,
        *,
        max_size: int = 512,
        max_wait_s: float = 0.002,
        queue_max: int = 8192,
        on_batch: Callable[[int, float], None] | None = None,
        on_failure: Callable[[Req, BaseException], None] | None = None,
        name: str = "model-worker",
    ) -> None:
        if max_size < 1 or queue_max < max_size:
            raise ValueError("need 1 <= max_size <= queue_max")
        self._fn = fn
        self._max_size = max_size
        self._max_wait_s = max_wait_s
        self._queue_max = queue_max
        self._on_batch = on_batch
        self._on_failure = on_failure  # called on the compute thread, before anything queued later runs
        self._pending: deque[tuple[Req, asyncio.Future, asyncio.AbstractEventLoop]] = deque()
        self._cond = threading.Condition()
        self._closed = False
        self._sealed = False  # the queued requests are complete groups: take them without waiting for more
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._slots: asyncio.Semaphore | None = None

    def start(self) -> "MicroBatcher[Req, Res]":
        self._thread.start()
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """Finish what is queued, then stop the thread."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        if self._thread.is_alive():
            self._thread.join(timeout)

    async def submit_many(self, requests: Sequence[Req]) -> list[Res]:
        """Queue ``requests`` (in order) and wait for all their results; raises the first request's error.

        The requests are handed over as one group, so the compute thread starts at once instead of waiting
        ``max_wait_s`` for more: a caller that submits its whole batch has nothing more to add. A group larger
        than the free queue slots is handed over in parts as slots free up.
        """
        loop = asyncio.get_running_loop()
        slots = self._slots_for_loop()
        futures: list[asyncio.Future] = []
        group: list[tuple[Req, asyncio.Future, asyncio.AbstractEventLoop]] = []
        for request in requests:
            if slots.locked() and group:
                self._push(group, seal=True)  # hand over what we have before waiting for room
                group = []
            await slots.acquire()
            future = loop.create_future()
            future.add_done_callback(self._release_slot)
            group.append((request, future, loop))
            futures.append(future)
        if group:
            self._push(group, seal=True)
        return list(await asyncio.gather(*futures))

    def enqueue(self, requests: Sequence[Req], *, return_exceptions: bool = False) -> asyncio.Future:
        """Queue ``requests`` as one group now, without waiting for queue slots; a future of their results
        (raises the first request's error, or with ``return_exceptions`` has it in that request's place). For a
        caller that bounds its own in-flight work (the handler's pipeline depth) and needs its group queued
        before whatever it queues next (``call_soon``)."""
        loop = asyncio.get_running_loop()
        futures = [loop.create_future() for _ in requests]
        if futures:
            self._push([(r, f, loop) for r, f in zip(requests, futures)], seal=True)
        return asyncio.gather(*futures, return_exceptions=return_exceptions)

    async def submit(self, request: Req) -> Res:
        loop = asyncio.get_running_loop()
        await self._slots_for_loop().acquire()
        future = loop.create_future()
        future.add_done_callback(self._release_slot)
        self._push([(request, future, loop)], seal=False)
        return await future

    def call_soon(self, job: Callable[[], None]) -> None:
        """Run ``job`` on the compute thread after the requests queued so far and before any queued later.

        A job that raises is logged (with its traceback) and the thread goes on; nothing waits for a job.
        """
        with self._cond:
            if self._closed:
                raise BatcherClosed("model worker stopped")
            self._pending.append((_JOB, job, None))  # type: ignore[arg-type]
            self._sealed = True
            self._cond.notify()

    def barrier(self) -> asyncio.Future:
        """A future that resolves once everything queued so far (requests and jobs) has run."""
        loop = asyncio.get_running_loop()
        done = loop.create_future()

        def resolve() -> None:
            _hand_back([(done, loop, None, None)])

        self.call_soon(resolve)
        return done

    def _slots_for_loop(self) -> asyncio.Semaphore:
        if self._slots is None:
            self._slots = asyncio.Semaphore(self._queue_max)
        return self._slots

    def _release_slot(self, _future: asyncio.Future) -> None:
        assert self._slots is not None
        self._slots.release()

    def _push(self, group: list[Pending], *, seal: bool) -> None:
        """Queue a group under one lock; ``seal`` says no more requests are coming, so do not wait for any."""
        with self._cond:
            if self._closed:
                for _req, future, _loop in group:
                    future.set_exception(BatcherClosed("model worker stopped"))
                return
            self._pending.extend(group)
            if seal:
                self._sealed = True
            self._cond.notify()

    # --- the compute thread ----------------------------------------------------------------------------------
    def _run(self) -> None:
        while True:
            batch = self._next_batch()
            if batch is None:
                return
            if batch[0][0] is _JOB:
                _run_job(batch[0][1])
            else:
                self._execute(batch)

    def _next_batch(self) -> list[tuple[Req, asyncio.Future, asyncio.AbstractEventLoop]] | None:
        with self._cond:
            while not self._pending and not self._closed:
                self._cond.wait()
            if not self._pending:
                return None  # closed and drained
            deadline = time.monotonic() + self._max_wait_s
            while len(self._pending) < self._max_size and not self._closed and not self._sealed:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._cond.wait(left)
            if self._pending[0][0] is _JOB:
                batch = [self._pending.popleft()]
            else:  # requests up to the next job
                batch = []
                while self._pending and len(batch) < self._max_size and self._pending[0][0] is not _JOB:
                    batch.append(self._pending.popleft())
            if not self._pending:
                self._sealed = False
            return batch

    def _execute(self, batch: list[tuple[Req, asyncio.Future, asyncio.AbstractEventLoop]]) -> None:
        started = time.perf_counter()
        try:
            results = self._call(batch)
        except Exception as exc:
            log.exception("batch of %d failed; splitting it to find the requests that fail", len(batch))
            _hand_back(self._split(batch, exc))
            return
        if self._on_batch is not None:
            self._on_batch(len(batch), time.perf_counter() - started)
        _hand_back([(future, loop, result, None) for (_, future, loop), result in zip(batch, results)])

    def _call(self, batch: list[tuple[Req, asyncio.Future, asyncio.AbstractEventLoop]]) -> list[Res]:
        results = list(self._fn([req for req, _, _ in batch]))
        if len(results) != len(batch):
            raise RuntimeError(f"batch function returned {len(results)} results for {len(batch)} requests")
        return results

    def _split(self, batch: list[tuple[Req, asyncio.Future, asyncio.AbstractEventLoop]],
               error: Exception) -> list[Outcome]:
        """The outcomes of a batch that failed with ``error``: each half is run again and a failing half split
        again, down to the requests that fail alone."""
        if len(batch) == 1:
            req, future, loop = batch[0]  # the caller decides what a failed request means
            log.warning("a request failed alone: %s: %s", type(error).__name__, error)
            if self._on_failure is not None:
                self._on_failure(req, error)
            return [(future, loop, None, error)]
        outcomes: list[Outcome] = []
        middle = len(batch) // 2
        for half in (batch[:middle], batch[middle:]):
            try:
                results = self._call(half)
            except Exception as exc:
                outcomes.extend(self._split(half, exc))
            else:
                outcomes.extend((future, loop, result, None) for (_, future, loop), result in zip(half, results))
        return outcomes

def _run_job(job: Callable[[], None]) -> None:
    try:
        job()
    except Exception:  # noqa: BLE001 - a job's failure is its own; requests keep being served
        log.exception("model-thread job failed")


Outcome = tuple[asyncio.Future, asyncio.AbstractEventLoop, object, "BaseException | None"]


def _hand_back(outcomes: list[Outcome]) -> None:
    """Resolve futures on their loops with one wake-up per loop, not one per request (each is a syscall)."""
    by_loop: dict[asyncio.AbstractEventLoop, list[Outcome]] = {}
    for outcome in outcomes:
        by_loop.setdefault(outcome[1], []).append(outcome)
    for loop, group in by_loop.items():
        try:
            loop.call_soon_threadsafe(_resolve_all, group)
        except RuntimeError:  # the loop was closed meanwhile: nobody is waiting any more
            log.debug("dropping %d results for a closed event loop", len(group))


def _resolve_all(outcomes: list[Outcome]) -> None:
    for future, _loop, result, exc in outcomes:
        if future.done():  # cancelled by its caller meanwhile
            continue
        if exc is not None:
            future.set_exception(exc)
        else:
            future.set_result(result)
