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
from typing import Any, Callable, Sequence

import torch

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


def pick_device(name: str) -> str:
    """``auto`` means CUDA when present, else CPU."""
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return name


class ModelWorker:
    """Micro-batches adaptation requests onto one compute thread and swaps model versions whole."""

    def __init__(self, model: Recommender, settings: Settings, metrics: Metrics) -> None:
        self._model = model
        self._settings = settings
        self._metrics = metrics
        self._tried: Path | None = None
        if settings.torch_threads > 0:
            # One process, one model thread: more intra-op threads than that fight the event loop (and, on a
            # shared machine, each other) for cores and spin in OpenMP barriers; measured in bench/README.md.
            torch.set_num_threads(settings.torch_threads)
        self._batcher: MicroBatcher[AdaptRequest, Served] = MicroBatcher(
            self._run_batch,
            max_size=settings.batch_max,
            max_wait_s=settings.batch_wait_ms / 1000.0,
            queue_max=settings.queue_max,
            on_batch=self._observe_batch,
        )
        self._ranked: asyncio.Future | None = None  # the latest submitted ranking
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

    def recommend(self, requests: Sequence[AdaptRequest]) -> asyncio.Future[list[Served]]:
        """Queue ``requests`` for ranking now (in submission order); the future resolves with the answers."""
        ranked = asyncio.ensure_future(self._batcher.submit_many(requests))
        self._ranked = ranked
        return ranked

    def learn(self, records: Sequence[LearnedUser]) -> None:
        """Count these users' new interactions into the item statistics, after every ranking submitted so far.

        Enqueue-only: a batch's requests are submitted, then its records, so a batch is ranked before it is
        learned (test, then train). Ratings feed the item means a rating model's context reads.
        """
        if records:
            self._after_ranking(self._learn_now, records)

    def forget(self, user_ids: Sequence[str]) -> None:
        """Drop deleted users' histories from the item statistics, after every ranking submitted so far."""
        if user_ids:
            self._after_ranking(self._forget_now, user_ids)

    def _after_ranking(self, fn: Callable[[Any], None], arg: Any) -> None:
        """Run ``fn(arg)`` on the event loop once the latest submitted ranking is done, in the order of calls.

        A future's done-callbacks run in the order they were added, and a finished future's were queued on the
        loop when it finished, so ``call_soon`` after them keeps the order too. (Interim: the statistics are
        updated on the event loop, as before; they move onto the model thread with the serving rewrite.)
        """
        ranked = self._ranked
        if ranked is not None and not ranked.done():
            ranked.add_done_callback(lambda _done: fn(arg))
            return
        try:
            asyncio.get_running_loop().call_soon(fn, arg)
        except RuntimeError:  # no loop running (a caller outside the stream): nothing can be pending
            fn(arg)

    def _learn_now(self, records: Sequence[LearnedUser]) -> None:
        events = [(r.user_id, item, ts, rating) for r in records for item, ts, rating in r.events]
        events.sort(key=lambda e: e[2])  # the statistics count in time order
        self._model.observe(events)

    def _forget_now(self, user_ids: Sequence[str]) -> None:
        for user_id in user_ids:
            self._model.forget(user_id)

    def _run_batch(self, requests: Sequence[AdaptRequest]) -> list[Served]:
        model = self._model  # one version for the whole batch
        results = model.recommend(requests, self._settings.top_k)
        return [Served(r, model.version) for r in results]

    def _observe_batch(self, size: int, seconds: float) -> None:
        self._metrics.batch_size.observe(size)
        self._metrics.adaptation_time.observe(seconds)

    # --- versions ---------------------------------------------------------------------------------------------
    def swap(self, model: Recommender) -> None:
        """Serve ``model`` from the next batch on."""
        old = self._model.version
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
