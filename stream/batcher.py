"""Micro-batching of requests from the event loop onto one compute thread.

Why a thread of its own: adaptation is torch work that releases the GIL, so the asyncio loop keeps consuming
and producing while a batch runs, and requests from many agents/users arriving meanwhile form the next batch.

Guarantees the worker relies on:
- a batch holds at most ``max_size`` requests and waits at most ``max_wait_s`` after its first request;
- requests are processed in submission order (one thread, FIFO), so one user's results come back in order;
- nothing is dropped: if a whole batch fails, each request is retried alone, and a request that still fails
  gets its exception, so its caller decides (e.g. dead-letter) instead of silently losing it;
- the number of requests waiting is bounded (``queue_max``): submitters wait, which is the backpressure.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import deque
from typing import Callable, Generic, Sequence, TypeVar

log = logging.getLogger(__name__)

Req = TypeVar("Req")
Res = TypeVar("Res")
BatchFn = Callable[[Sequence[Req]], Sequence[Res]]


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
        name: str = "model-worker",
    ) -> None:
        if max_size < 1 or queue_max < max_size:
            raise ValueError("need 1 <= max_size <= queue_max")
        self._fn = fn
        self._max_size = max_size
        self._max_wait_s = max_wait_s
        self._queue_max = queue_max
        self._on_batch = on_batch
        self._pending: deque[tuple[Req, asyncio.Future, asyncio.AbstractEventLoop]] = deque()
        self._cond = threading.Condition()
        self._closed = False
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
        """Queue ``requests`` (in order) and wait for all their results; raises the first request's error."""
        futures = [await self._enqueue(r) for r in requests]
        return list(await asyncio.gather(*futures))

    async def submit(self, request: Req) -> Res:
        return await (await self._enqueue(request))

    async def _enqueue(self, request: Req) -> asyncio.Future:
        loop = asyncio.get_running_loop()
        if self._slots is None:
            self._slots = asyncio.Semaphore(self._queue_max)
        await self._slots.acquire()
        future: asyncio.Future = loop.create_future()
        future.add_done_callback(lambda _f: self._slots.release())  # type: ignore[union-attr]
        with self._cond:
            if self._closed:
                future.set_exception(BatcherClosed("model worker stopped"))
                return future
            self._pending.append((request, future, loop))
            self._cond.notify()
        return future

    # --- the compute thread ----------------------------------------------------------------------------------
    def _run(self) -> None:
        while True:
            batch = self._next_batch()
            if batch is None:
                return
            self._execute(batch)

    def _next_batch(self) -> list[tuple[Req, asyncio.Future, asyncio.AbstractEventLoop]] | None:
        with self._cond:
            while not self._pending and not self._closed:
                self._cond.wait()
            if not self._pending:
                return None  # closed and drained
            deadline = time.monotonic() + self._max_wait_s
            while len(self._pending) < self._max_size and not self._closed:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._cond.wait(left)
            n = min(self._max_size, len(self._pending))
            return [self._pending.popleft() for _ in range(n)]

    def _execute(self, batch: list[tuple[Req, asyncio.Future, asyncio.AbstractEventLoop]]) -> None:
        started = time.perf_counter()
        try:
            results = list(self._fn([req for req, _, _ in batch]))
            if len(results) != len(batch):
                raise RuntimeError(f"batch function returned {len(results)} results for {len(batch)} requests")
        except Exception:
            log.exception("batch of %d failed; retrying its requests one by one", len(batch))
            self._execute_singly(batch)
            return
        if self._on_batch is not None:
            self._on_batch(len(batch), time.perf_counter() - started)
        for (_, future, loop), result in zip(batch, results):
            loop.call_soon_threadsafe(_resolve, future, result, None)

    def _execute_singly(self, batch: list[tuple[Req, asyncio.Future, asyncio.AbstractEventLoop]]) -> None:
        for req, future, loop in batch:
            try:
                (result,) = self._fn([req])
            except Exception as exc:  # the caller decides what a failed request means
                loop.call_soon_threadsafe(_resolve, future, None, exc)
            else:
                loop.call_soon_threadsafe(_resolve, future, result, None)


def _resolve(future: asyncio.Future, result: object, exc: BaseException | None) -> None:
    if future.done():  # cancelled by its caller meanwhile
        return
    if exc is not None:
        future.set_exception(exc)
    else:
        future.set_result(result)
