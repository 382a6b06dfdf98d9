"""The model worker: owns the serving model and runs adaptation for micro-batches of users.

The meta-parameters are read-only while serving. A new version is loaded off the event loop, checked, and swapped
in as a whole by one reference assignment; a batch reads the reference once, so every result in a batch comes
from one version, and each result names it.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Collection, Sequence

import torch

from models.serving.candidates import CandidateBudget
from models.serving.recommender import AdaptResult, Recommender
from models.serving.requests import AdaptRequest, LearnedUser
from stream import versions
from stream.batcher import MicroBatcher
from stream.metrics import Metrics
from stream.settings import Settings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Served:
    """One user's result and the model version that produced it."""

    result: AdaptResult
    version: str


class Ranking:
    """One group of requests queued for ranking.

    ``answers`` resolves, in request order, to a :class:`Served` per request, or in its place the exception of a
    request the model failed on alone (the micro-batcher splits a failing batch down to such requests).
    ``failed`` names their users for the jobs queued after the group on the model thread, which alone read it.
    """

    answers: asyncio.Future

    def __init__(self) -> None:
        self.failed: set[str] = set()


def pick_device(name: str) -> str:
    """``auto`` means CUDA when present, else CPU."""
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return name


class ModelWorker:
    """Micro-batches adaptation requests onto one compute thread and swaps model versions whole."""

    def __init__(self, model: Recommender, settings: Settings, metrics: Metrics) -> None:
        self._candidates = CandidateBudget.of_size(settings.candidates)
        model.candidates = self._candidates
        self._model = model
        self._settings = settings
        self._metrics = metrics
        self._tried: Path | None = None
        if settings.torch_threads > 0:
            # One process, one model thread: more intra-op threads than that fight the event loop (and, on a
            # shared machine, each other) for cores and spin in OpenMP barriers; measured in bench/README.md.
            torch.set_num_threads(settings.torch_threads)
        self._batcher: MicroBatcher[tuple[Ranking, AdaptRequest], Served] = MicroBatcher(
            self._run_batch,
            max_size=settings.batch_max,
            max_wait_s=settings.batch_wait_ms / 1000.0,
            queue_max=settings.queue_max,
            on_batch=self._observe_batch,
            on_failure=_record_failure,
        )
        metrics.serving(model.version)
        metrics.catalogue_size.set(len(model.item_ids))

    @property
    def model(self) -> Recommender:
        return self._model

    @property
    def version(self) -> str:
        return self._model.version

    @property
    def objective(self) -> str:
        """What the serving model's requests are mapped for (``event_target``'s objective)."""
        return self._model.config.objective

    def start(self) -> "ModelWorker":
        self._batcher.start()
        return self

    def stop(self) -> None:
        self._batcher.stop()

    def recommend(self, requests: Sequence[AdaptRequest]) -> Ranking:
        """Queue ``requests`` for ranking now, as one group behind everything queued before; the ranking's
        ``answers`` resolve with a :class:`Served` or, for a request the model failed on alone, its exception.
        Queued at once (no await), so a ``learn`` called right after runs after them on the model thread."""
        ranking = Ranking()
        ranking.answers = self._batcher.enqueue([(ranking, r) for r in requests], return_exceptions=True)
        return ranking

    def learn(self, records: Sequence[LearnedUser], after: Ranking | None = None,
              instead_of: Sequence[Ranking] = ()) -> None:
        """Count these users' new interactions into the item statistics, on the model thread, after every
        ranking queued so far and before any queued later.

        So a batch is ranked before it is learned (test, then train), and the next batch is ranked with
        statistics that hold it: each request's ``fresh`` count says exactly which of its user's items the
        statistics have not counted. Each record carries the user's history, so nothing per user is kept here.

        ``after``: the ranking of these users just queued; a user the model failed on there is not learned (the
        handler dead-letters their events). ``instead_of``: earlier rankings of the same events, each followed
        by a learn of the users it did not fail on (a user ranked again after an earlier batch of theirs
        failed): only users that failed in every one are learned now, so no event is counted twice.
        """
        if records:
            def job() -> None:
                keep = [r for r in records if (after is None or r.user_id not in after.failed)
                        and all(r.user_id in earlier.failed for earlier in instead_of)]
                if keep:
                    self._model.learn(keep)
            self._batcher.call_soon(job)

    async def settled(self) -> None:
        """Wait until every ranking, learn and forget queued so far has run (tests, shutdown)."""
        await self._batcher.barrier()

    def forget(self, user_ids: Sequence[str]) -> None:
        """Deleted users: the statistics keep nothing per user in the stream, so only an offline model's
        history book has anything to drop; queued like ``learn`` (the handler forgets before it learns)."""
        if user_ids:
            self._batcher.call_soon(lambda: [self._model.forget(u) for u in user_ids])

    def rank(self, request: AdaptRequest, k: int, only: Collection[str] | None = None) -> asyncio.Future[Served]:
        """Rank one user now, off the stream's batches (the read API: a cold start, a filtered list): ``k``
        items, restricted to ``only`` when given. Runs on the model thread between the stream's rankings;
        nothing is learned or stored."""
        loop = asyncio.get_running_loop()
        done: asyncio.Future[Served] = loop.create_future()

        def job() -> None:
            model = self._model
            try:
                (result,) = model.recommend([request], k, only=only)
            except Exception as exc:  # noqa: BLE001 - the caller's future carries it
                loop.call_soon_threadsafe(_settle, done, None, exc)
                return
            loop.call_soon_threadsafe(_settle, done, Served(result, model.version), None)

        self._batcher.call_soon(job)
        return done

    def _run_batch(self, items: Sequence[tuple[Ranking, AdaptRequest]]) -> list[Served]:
        model = self._model  # one version for the whole batch
        results = model.recommend([request for _, request in items], self._settings.top_k)
        return [Served(r, model.version) for r in results]

    def _observe_batch(self, size: int, seconds: float) -> None:
        self._metrics.batch_size.observe(size)
        self._metrics.adaptation_time.observe(seconds)

    # --- versions ---------------------------------------------------------------------------------------------
    def swap(self, model: Recommender) -> None:
        """Serve ``model`` from the next batch on."""
        old = self._model.version
        model.candidates = self._candidates
        model.availability = self._model.availability  # what may be recommended is the worker's, not a version's
        self._model = model
        self._metrics.serving(model.version)
        self._metrics.catalogue_size.set(len(model.item_ids))
        self._metrics.model_swaps.labels(result="swapped").inc()
        log.info("model version %s -> %s", old, model.version)

    def try_load(self, path: str | Path) -> bool:
        """Load the version at ``path`` and swap to it; a bad checkpoint is refused and the old one keeps serving.

        A folder is tried once: a refused one is not retried until ``LATEST`` points somewhere else.
        """
        try:
            folder = versions.resolve(path)
        except FileNotFoundError as exc:
            self._refuse(path, exc)
            return False
        if folder == self._tried:
            return False
        self._tried = folder
        try:
            model = Recommender.load(folder, device=pick_device(self._settings.device))
        except Exception as exc:  # noqa: BLE001 - any failure to load means: refuse, keep serving
            self._refuse(folder, exc)
            return False
        if model.version != self._model.version:
            self.swap(model)
        return True

    def _refuse(self, path: str | Path, exc: Exception) -> None:
        self._metrics.model_swaps.labels(result="refused").inc()
        log.error("refused model at %s (still serving %s): %s", path, self.version, exc)

    async def watch(self, path: str | Path, interval_s: float) -> None:
        """Poll ``path`` for a new published version; loading happens off the event loop."""
        while True:
            await asyncio.sleep(interval_s)  # a poll interval, not synchronisation
            try:
                folder = versions.resolve(path)
            except FileNotFoundError:
                continue
            if folder != self._tried:
                await asyncio.to_thread(self.try_load, path)


def _record_failure(item: tuple[Ranking, AdaptRequest], _error: BaseException) -> None:
    """On the model thread: the model failed on this request alone; the jobs queued after its group read it."""
    ranking, request = item
    ranking.failed.add(request.user_id)


def _settle(future: asyncio.Future, result: Any, exc: BaseException | None) -> None:
    if future.done():  # the caller gave up meanwhile
        return
    if exc is not None:
        future.set_exception(exc)
    else:
        future.set_result(result)
