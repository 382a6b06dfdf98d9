"""The micro-batcher: batches form, order is kept, nothing is dropped, a failing batch loses no request."""

from __future__ import annotations

import asyncio
import threading

import pytest

from stream.batcher import MicroBatcher


def run(coro):
    return asyncio.run(coro)


def test_requests_submitted_together_share_batches_bounded_by_max_size():
    sizes: list[int] = []
    batcher = MicroBatcher(lambda reqs: [r * 2 for r in reqs], max_size=8, max_wait_s=0.05,
                           on_batch=lambda n, _s: sizes.append(n)).start()
    try:
        results = run(batcher.submit_many(list(range(50))))
    finally:
        batcher.stop()
    assert results == [r * 2 for r in range(50)]
    assert max(sizes) <= 8
    assert sum(sizes) == 50
    assert len(sizes) < 50, "requests queued together must be batched, not run one by one"


def test_per_user_order_is_kept_across_concurrent_submitters():
    seen: list[tuple[str, int]] = []
    lock = threading.Lock()

    def fn(reqs):
        with lock:
            seen.extend(reqs)
        return reqs

    batcher = MicroBatcher(fn, max_size=16, max_wait_s=0.001).start()

    async def user(name: str):
        return [await batcher.submit((name, i)) for i in range(30)]

    async def main():
        return await asyncio.gather(*(user(f"u{k}") for k in range(5)))

    try:
        per_user = run(main())
    finally:
        batcher.stop()
    for k, results in enumerate(per_user):
        assert results == [(f"u{k}", i) for i in range(30)]
        assert [i for name, i in seen if name == f"u{k}"] == list(range(30))


def test_a_failing_batch_loses_no_request_and_only_the_bad_one_fails():
    calls: list[list[int]] = []

    def fn(reqs):
        calls.append(list(reqs))
        if 13 in reqs:
            raise ValueError("poisoned request 13")
        return [r + 100 for r in reqs]

    batcher = MicroBatcher(fn, max_size=32, max_wait_s=0.05).start()

    async def main():
        futures = [asyncio.ensure_future(batcher.submit(r)) for r in range(20)]
        return await asyncio.gather(*futures, return_exceptions=True)

    try:
        results = run(main())
    finally:
        batcher.stop()
    for r, result in enumerate(results):
        if r == 13:
            assert isinstance(result, ValueError)
        else:
            assert result == r + 100, f"request {r} lost or wrong: {result!r}"
    assert any(len(c) > 1 for c in calls), "the first attempt must have been a batch"


def test_a_failing_batch_is_split_down_to_the_request_that_fails_and_the_caller_gets_every_outcome():
    """One poison request among 64: about 2 log2(64) more calls, not 64, and the group's future has each
    request's result or, in the poison request's place, its exception."""
    calls: list[int] = []
    failures: list[tuple[int, str, str]] = []

    def fn(reqs):
        calls.append(len(reqs))
        if 41 in reqs:
            raise ValueError("poisoned request 41")
        return [r + 100 for r in reqs]

    batcher = MicroBatcher(fn, max_size=64, max_wait_s=0.05,
                           on_failure=lambda req, exc: failures.append(
                               (req, str(exc), threading.current_thread().name))).start()

    async def main():
        return await batcher.enqueue(list(range(64)), return_exceptions=True)

    try:
        outcomes = run(main())
    finally:
        batcher.stop()
    assert [o for i, o in enumerate(outcomes) if i != 41] == [r + 100 for r in range(64) if r != 41]
    assert isinstance(outcomes[41], ValueError)
    assert failures == [(41, "poisoned request 41", "model-worker")], "heard of once, on the compute thread"
    assert sorted(calls, reverse=True) == [64, 32, 32, 16, 16, 8, 8, 4, 4, 2, 2, 1, 1], "halves, down to the poison"


def test_backpressure_bounds_waiting_requests():
    release = threading.Event()
    high_water = [0]

    def fn(reqs):
        release.wait(5)
        return reqs

    batcher = MicroBatcher(fn, max_size=2, max_wait_s=0.0, queue_max=4).start()

    async def main():
        tasks = [asyncio.ensure_future(batcher.submit(i)) for i in range(12)]
        for _ in range(20):
            await asyncio.sleep(0)  # let submitters run until they block on the bound
        high_water[0] = len(batcher._pending)
        release.set()
        return await asyncio.gather(*tasks)

    try:
        results = run(main())
    finally:
        batcher.stop()
    assert results == list(range(12))
    assert high_water[0] <= 4


def test_invalid_bounds_are_refused():
    with pytest.raises(ValueError):
        MicroBatcher(lambda r: r, max_size=10, queue_max=5)


def test_a_submitted_group_runs_at_once_without_waiting_for_more():
    """submit_many hands over a complete group: the thread must not sit out max_wait_s hoping for more."""
    sizes: list[int] = []
    batcher = MicroBatcher(lambda reqs: list(reqs), max_size=64, max_wait_s=60.0,
                           on_batch=lambda n, _s: sizes.append(n)).start()

    async def main():
        return await asyncio.wait_for(batcher.submit_many(list(range(5))), timeout=20.0)

    try:
        assert run(main()) == list(range(5))
    finally:
        batcher.stop()
    assert sizes == [5]


def test_a_group_larger_than_the_queue_bound_is_handed_over_in_parts():
    batcher = MicroBatcher(lambda reqs: [r + 1 for r in reqs], max_size=4, max_wait_s=60.0, queue_max=8).start()

    async def main():
        return await asyncio.wait_for(batcher.submit_many(list(range(30))), timeout=20.0)

    try:
        assert run(main()) == [r + 1 for r in range(30)]
    finally:
        batcher.stop()


def test_a_job_runs_between_the_requests_around_it_and_no_batch_spans_it():
    """The worker learns a batch right after ranking it: requests queued after a job see what it did, and the
    requests on either side of a job never share a batch, even when all are queued before the thread runs."""
    log: list[object] = []
    learned: list[int] = []

    def fn(reqs):
        log.append(tuple(reqs))
        return [len(learned) for _ in reqs]  # how much had been learned when each request ran

    batcher = MicroBatcher(fn, max_size=64, max_wait_s=0.05)

    async def scenario():
        loop = asyncio.get_running_loop()  # callbacks and task steps run in the order they were scheduled
        first = asyncio.ensure_future(batcher.submit_many([1, 2, 3]))
        loop.call_soon(batcher.call_soon, lambda: (learned.append(3), log.append("job")))
        loop.call_soon(batcher.call_soon, lambda: 1 / 0)  # a failing job is logged; the thread goes on
        second = asyncio.ensure_future(batcher.submit_many([4, 5]))
        loop.call_soon(batcher.start)  # only once everything is queued
        return await first, await second

    try:
        first, second = run(scenario())
    finally:
        batcher.stop()
    assert first == [0, 0, 0] and second == [1, 1]
    assert log == [(1, 2, 3), "job", (4, 5)]
