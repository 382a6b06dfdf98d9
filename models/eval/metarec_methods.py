"""metarec as stream methods: meta-trained on the warm-up, re-trained as the stream goes, served per user.

Three variants share one training schedule (and, through ``TrainingCache``, one set of trained models):

- ``metarec``: each user's head is adapted from the meta-init on their support set (their most recent events,
  mapped by ``event_target``) with the meta-learned step sizes, exactly as the stream worker does;
- ``metarec-no-adapt``: the same model served with ``steps=0``: the meta-init alone, to show what adaptation
  adds;
- ``metarec-finetune``: the same item tower and head, but the head starts from zero and takes the same number
  of plain gradient steps with one fixed learning rate: no meta-learned init or step sizes;
- ``metarec-full``: ``metarec`` scoring every catalogue item instead of the retrieved candidates: the reference
  the retrieval's cost in quality is measured against (not in the default method list).

Ranking uses the implicit ("will interact") model with stream context features, on explicit data too; on
explicit data a second model, meta-trained on the rating objective with the same schedule and served by the
same variant rule, predicts the ratings behind MAE/RMSE; its context features are the stream's item means
(``models.training.task_rating_context``). The item statistics behind both models' context features are fed every learned
event, in batches of ``Schedule.stats_every`` (as the worker feeds them per micro-batch).

Continual meta-training: the model is meta-trained on the warm-up, then every ``retrain_every`` learned events
it is meta-trained further (from the current meta-parameters) on every event seen so far. Between re-trainings
the meta-parameters are frozen and a user's list depends only on their own events, so chunks are ranked in one
batched ``Recommender.recommend`` call (``BatchRanker``), which is what the worker runs online.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import logging
import math
from collections import OrderedDict, deque
from dataclasses import dataclass, replace
from typing import Any, Iterator, Sequence

import numpy as np
import torch

from models.core.metalearner import MetaRec
from models.core.targets import EventWeights, count_weight
from models.data.events import EVENT_TYPES, EventLog
from models.eval.methods import Pending, Query, retrain_period
from models.serving.recommender import CandidateBudget, Recommender
from models.serving.requests import AdaptRequest, Support, build_request, support_targets
from models.training.train import default_config, meta_train

log = logging.getLogger(__name__)

VARIANTS = ("metarec", "metarec-no-adapt", "metarec-finetune", "metarec-full")
RATING = EVENT_TYPES.index("rating")


@dataclass(frozen=True)
class Schedule:
    """How much meta-training happens, and when. Step counts, not time budgets, so a seed fixes the result."""

    steps: int = 300  # outer steps on the warm-up
    retrain_steps: int = 100  # outer steps at each re-training
    retrain_every: int | None = None  # learned events between re-trainings; None = half the warm-up
    support_size: int = 50  # most recent events kept per user, as in the worker's state (Limits.support_size)
    finetune_lr: float = 0.1  # the fixed step size of metarec-finetune
    objective: str | None = "implicit"  # the ranking model's objective (None: the trainer's default)
    rating_model: bool = True  # on explicit data, also meta-train a rating model for MAE/RMSE
    stats_every: int = 32  # learned events between updates of the item statistics
    adapt_taste: bool | None = None  # adapt the taste vector w (None: the trainer's default, or chosen)
    choose_taste: bool = True  # choose adapt_taste on the warm-up: train on its first 80%, replay the rest
    candidates: CandidateBudget = CandidateBudget()  # retrieve-then-rank, as the worker serves
    overrides: tuple[tuple[str, Any], ...] = ()  # ModelConfig fields of the ranking model (chosen settings)
    rating_overrides: tuple[tuple[str, Any], ...] = ()  # the same for the rating model
    event_weights: EventWeights | None = None  # the operator's event weights, as the worker's (None: default)


# The ranking model, chosen by validation HR@10. id_dropout 0.5 is not tried: without taste adaptation it
# changes nothing (identical training losses on ML-100K), and with it 0.95 scored higher on the validation part
# of all three ML-100K seeds tried (0.1376-0.146 against 0.1288-0.1386); each trial is a full meta-training.
SETTINGS_GRID: tuple[dict[str, Any], ...] = tuple(
    {"adapt_taste": taste, "id_dropout": 0.95, "support_prior": prior}
    for taste in (False, True) for prior in (4.0, 16.0)
)
# Above 10k items (Last.fm's 17.6k artists) a trial costs about 20 minutes on the shared 2-core machine: only
# adapt_taste is chosen there, at prior 16 (above 4 on Last.fm's validation part, seed 0, without adaptation).
LARGE_CATALOGUE = 10_000
LARGE_SETTINGS_GRID: tuple[dict[str, Any], ...] = tuple(
    {"adapt_taste": taste, "id_dropout": 0.95, "support_prior": 16.0} for taste in (False, True)
)
RATING_GRID: tuple[dict[str, Any], ...] = tuple(  # the rating model, chosen by validation MAE
    {"rating_loss": loss, "weight_decay": decay, "support_prior": 4.0}
    for loss in ("l1", "mse") for decay in (1e-5, 1e-2)
)


def schedule_for(settings: dict[str, Any], base: Schedule | None = None) -> Schedule:
    """The schedule serving chosen ``settings``: ``adapt_taste`` and ``ModelConfig`` fields of the ranking
    model, and under "rating" those of the rating model. Chosen settings are never re-chosen inside."""
    base = base or Schedule()
    ranking = {k: v for k, v in settings.items() if k not in ("adapt_taste", "rating")}
    return replace(base, adapt_taste=settings.get("adapt_taste", base.adapt_taste), choose_taste=False,
                   overrides=tuple(sorted(ranking.items())),
                   rating_overrides=tuple(sorted(settings.get("rating", {}).items())))


class TrainingCache:
    """Models meta-trained on identical events with identical settings are identical: train them once.

    Keyed by a digest of the events and the schedule, so the three variants replayed one after another share
    every (re-)training. Holds the most recent ``size`` models: enough for a whole schedule.
    """

    def __init__(self, size: int = 32) -> None:
        self.size = size
        self._models: OrderedDict[tuple, Recommender] = OrderedDict()
        self.choices: dict[tuple, bool] = {}  # warm-up choices of adapt_taste, by events and schedule

    def get(self, events: EventLog, steps: int, seed: int, init: Recommender | None,
            init_key: tuple | None, objective: str | None = None,
            overrides: tuple[tuple[str, Any], ...] = ()) -> tuple[Recommender, tuple]:
        """The model meta-trained on ``events``; ``overrides`` replace fields of the default config (a model
        continued from ``init`` keeps the config it has)."""
        key = (*digest(events), steps, seed, init_key, objective, overrides)
        if key not in self._models:
            cfg = None
            if init is None and objective is not None:
                cfg = default_config(events, seed, objective)
                if overrides:
                    cfg = replace(cfg, **dict(overrides))
            self._models[key] = meta_train(events, cfg, steps=steps, seed=seed, init=init)
            while len(self._models) > self.size:
                self._models.popitem(last=False)
        self._models.move_to_end(key)
        return self._models[key], key

    def clear(self) -> None:
        """Forget every trained model and choice (between seeds: nothing is shared across them)."""
        self._models.clear()
        self.choices.clear()


CACHE = TrainingCache()


def digest(events: EventLog) -> tuple:
    """What identifies a log's events for caching: name, catalogue size, a hash of the columns."""
    h = hashlib.blake2b(digest_size=16)
    for arr in (events.users, events.items, events.ts, events.values, events.types):
        h.update(np.ascontiguousarray(arr).tobytes())
    return events.name, events.n_items, h.hexdigest()


@contextlib.contextmanager
def one_thread() -> Iterator[None]:
    """Serve on one torch thread, as the worker does.

    On a shared CPU, threads spin-waiting on each other cost more than they bring on tensors this small.
    """
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def variant_model(trained: Recommender, variant: str, finetune_lr: float,
                  candidates: CandidateBudget = CandidateBudget()) -> Recommender:
    """The Recommender a variant serves: the trained meta-parameters, or a copy with its head init/step sizes
    replaced; always a Recommender of its own, with its own copy of the trained item statistics (the variants
    share trained models through the cache, and each feeds its statistics the events it learns)."""
    stats = None if trained.stats is None else copy.deepcopy(trained.stats)
    if variant in ("metarec", "metarec-no-adapt", "metarec-full"):  # no-adapt serves it with steps=0
        return Recommender(trained.model, trained.item_ids, version=trained.version,
                           item_feature_names=trained.item_feature_names, stats=stats,
                           candidates=None if variant == "metarec-full" else candidates)
    cfg = trained.config
    state = {k: v.detach().clone().cpu() for k, v in trained.model.state_dict().items()}
    if variant == "metarec-finetune":
        for name in ("head_w", "head_b", "user_proj", "head_a"):
            if name in state:
                state[name].zero_()
        for name in ("log_lr_w", "log_lr_b", "log_lr_a"):
            if name in state:
                state[name].fill_(math.log(finetune_lr))
    else:
        raise ValueError(f"unknown metarec variant {variant!r}")
    model = MetaRec(cfg)
    model.load_state_dict(state)
    return Recommender(model, trained.item_ids, version=f"{trained.version}-{variant}",
                       item_feature_names=trained.item_feature_names, stats=stats, candidates=candidates)


class MetarecMethod:
    """One metarec variant under the stream protocol (a ``StreamMethod`` and a ``BatchRanker``)."""

    def __init__(self, variant: str, seed: int = 0, schedule: Schedule = Schedule(),
                 cache: TrainingCache = CACHE) -> None:
        if variant not in VARIANTS:
            raise ValueError(f"unknown metarec variant {variant!r}; choose from {', '.join(VARIANTS)}")
        self.name, self.seed, self.schedule, self.cache = variant, seed, schedule, cache
        self.rounds = 0
        self.steps = 0 if variant == "metarec-no-adapt" else None  # None: the model's own inner steps
        self._chunk: tuple[Sequence[Query], list[AdaptRequest]] | None = None

    # --- training -------------------------------------------------------------------------------------------
    def fit_prefix(self, log_: EventLog) -> None:
        self.template = log_
        self.period = retrain_period(len(log_), self.schedule.retrain_every)
        self.since = 0
        # learned, not yet in the statistics: (user, item, ts, rating or None, count weight)
        self.unobserved: list[tuple[str, str, float, float | None, float]] = []
        self.columns: list[list[float]] = [[] for _ in range(5)]  # users, items, ts, values, types
        self.support: dict[int, deque[Pending]] = {}
        for u, i, v, t, ts in zip(log_.users.tolist(), log_.items.tolist(), log_.values.tolist(),
                                  log_.types.tolist(), log_.ts.tolist()):
            self._remember(u, i, v, t, ts)
        self.adapt_taste = self.schedule.adapt_taste
        if self.adapt_taste is None and self.schedule.choose_taste and self.schedule.objective == "implicit":
            self.adapt_taste = choose_taste(log_, self.seed, self.schedule, self.cache)
        self._train(self.schedule.steps, init=None)

    def _seen_log(self) -> EventLog:
        users, items, ts, values, types = self.columns
        return replace(self.template, users=np.array(users, np.int64), items=np.array(items, np.int64),
                       ts=np.array(ts, np.float64), values=np.array(values, np.float32),
                       types=np.array(types, np.int8))

    def _train(self, steps: int, init: Recommender | None) -> None:
        previous = getattr(self, "key", None)
        events = self._seen_log()
        overrides = self.schedule.overrides
        if self.adapt_taste is not None:
            overrides = tuple(sorted({**dict(overrides), "adapt_taste": self.adapt_taste}.items()))
        trained, self.key = self.cache.get(events, steps, self.seed + self.rounds, init, previous,
                                           self.schedule.objective, overrides)
        self.trained = trained
        self.model = variant_model(trained, self.name, self.schedule.finetune_lr, self.schedule.candidates)
        self.unobserved = []  # the new model's statistics hold every event learned so far
        self.index = {item: n for n, item in enumerate(self.model.item_ids)}
        self.objective = self.model.config.objective
        self.rater = self.model
        if events.explicit and self.schedule.rating_model and self.objective != "rating":
            before = getattr(self, "rater_key", None)
            rater_init = getattr(self, "rater_trained", None) if init is not None else None
            self.rater_trained, self.rater_key = self.cache.get(events, steps, self.seed + self.rounds,
                                                                rater_init, before, "rating",
                                                                self.schedule.rating_overrides)
            self.rater = variant_model(self.rater_trained, self.name, self.schedule.finetune_lr,
                                       self.schedule.candidates)
        self.rounds += 1
        log.info("%s: model round %d on %d events", self.name, self.rounds, len(self.columns[0]))

    def _remember(self, user: int, item: int, value: float, type_code: int, ts: float) -> None:
        for column, x in zip(self.columns, (user, item, ts, value, type_code)):
            column.append(x)
        queue = self.support.setdefault(user, deque(maxlen=self.schedule.support_size))
        queue.append(Pending(item, value, type_code, ts))

    def learn(self, user: int, item: int, value: float, type_code: int, ts: float) -> None:
        self._remember(user, item, value, type_code, ts)
        self.since += 1
        if self.since >= self.period:
            self.since = 0
            self._train(self.schedule.retrain_steps, init=self.trained)
            return
        rating = value if type_code == RATING and not math.isnan(value) else None
        weights = self.schedule.event_weights
        weight = count_weight(EVENT_TYPES[type_code], weights)
        if weight > 0:  # as the worker: a type that is not a positive teaches the statistics nothing
            self.unobserved.append((self.template.user_ids[user], self.template.item_ids[item], ts, rating,
                                    weight))
        if len(self.unobserved) >= self.schedule.stats_every:
            self.model.observe(self.unobserved, weighted=weights is not None)
            if self.rater is not self.model:  # the rating model's item means (its context) follow the stream
                self.rater.observe(self.unobserved, weighted=weights is not None)
            self.unobserved = []

    def events_until_refresh(self) -> int | None:
        return min(self.period - self.since, self.schedule.stats_every - len(self.unobserved))

    # --- serving --------------------------------------------------------------------------------------------
    def _support(self, query: Query) -> list[Support]:
        """The user's most recent events (learned, then pending), as the worker's state keeps them."""
        recent = [*self.support.get(query.user, ()), *query.pending][-self.schedule.support_size:]
        ids = self.template.item_ids
        return [(ids[ev.item], EVENT_TYPES[ev.type_code], ev.value, ev.ts) for ev in recent]

    def _request(self, query: Query) -> AdaptRequest:
        """What the worker would send for this user (``build_request``, as the worker's), seen items excluded.

        The evaluation keeps seen items as a set, without their arrival order, so ``history`` stays empty."""
        ids = self.template.item_ids
        feats = self.template.user_features
        return build_request(
            self.template.user_ids[query.user],
            self._support(query),
            self.objective,
            exclude=frozenset(map(ids.__getitem__, query.exclude)),
            user_features=None if feats is None else feats[query.user].tolist(),
            weights=self.schedule.event_weights,
        )

    def _rating_request(self, query: Query, request: AdaptRequest) -> AdaptRequest:
        """``request`` with the support mapped by the rating objective (the ratings themselves)."""
        return replace(request, support=support_targets(self._support(query), "rating"))

    def _requests(self, queries: Sequence[Query]) -> list[AdaptRequest]:
        """Requests for a chunk, built once for both ``rank_many`` and ``predict_many`` of the same chunk."""
        if self._chunk is None or self._chunk[0] is not queries:
            self._chunk = (queries, [self._request(q) for q in queries])
        return self._chunk[1]

    def rank_many(self, queries: Sequence[Query], k: int) -> list[list[int]]:
        """Each query's top ``k``; ``last_candidates`` keeps the items each one was ranked among, so the
        protocol can record the candidate stage's recall."""
        proposed: list[np.ndarray] = []
        with one_thread():
            results = self.model.recommend(self._requests(queries), k, steps=self.steps, proposed=proposed)
        self.last_candidates = [set(cols[cols >= 0].tolist()) for cols in proposed] if proposed else None
        return [[self.index[i] for i in r.items] for r in results]

    def predict_many(self, queries: Sequence[Query], items: Sequence[int]) -> list[float | None]:
        if self.rater.config.objective != "rating" or not queries:
            return [None] * len(queries)
        ids = self.template.item_ids
        with one_thread():
            wanted = [ids[i] for i in items]
            requests = self._requests(queries)
            if self.rater is not self.model:  # the rating model adapts on ratings, not on implicit weights
                requests = [self._rating_request(q, r) for q, r in zip(queries, requests)]
            scores = self.rater.predict(requests, wanted, steps=self.steps)  # (B, B)
        return np.diagonal(scores).astype(float).tolist()  # query n's rating of item n

    def rank(self, user: int, k: int, exclude: set[int]) -> list[int]:
        return self.rank_many([Query(user, exclude)], k)[0]

    def predict_rating(self, user: int, item: int) -> float | None:
        return self.predict_many([Query(user, set())], [item])[0]


def build_metarec(variant: str, seed: int = 0, schedule: Schedule | None = None) -> MetarecMethod:
    """A fresh metarec method; the schedule defaults to ``Schedule()``."""
    return MetarecMethod(variant, seed, schedule or Schedule())


def rating_trial(seed: int, settings: dict[str, Any],
                 event_weights: EventWeights | None = None) -> MetarecMethod:
    """The rating model alone with ``settings`` (``RATING_GRID``), for choosing them on validation MAE: it
    ranks nothing (``ranks = False``), so a trial costs its training and its rating predictions only."""
    schedule = Schedule(objective="rating", rating_model=False, choose_taste=False,
                        overrides=tuple(sorted(settings.items())), event_weights=event_weights)
    method = MetarecMethod("metarec", seed, schedule)
    method.ranks = False  # type: ignore[attr-defined]
    return method


def choose_taste(log_: EventLog, seed: int, schedule: Schedule, cache: TrainingCache) -> bool:
    """Whether to adapt the taste vector, decided on the warm-up alone, as a user could: meta-train each way
    on its first 80% and replay its last 20% in stream order; the better HR@10 wins (ties: adapt).

    Taste adaptation is what finds planted tastes (the synthetic stream); on MovieLens it overfit the item
    vectors to the training users and the context weights did better alone.
    """
    from models.eval.stream_protocol import plan_stream, replay

    key = (*digest(log_), seed, schedule.steps)
    if key not in cache.choices:
        plan = plan_stream(log_, 0.8)
        hr = {}
        for option in (True, False):
            trial = replace(schedule, adapt_taste=option, choose_taste=False, rating_model=False,
                            retrain_every=len(log_))
            hr[option] = replay(MetarecMethod("metarec", seed, trial, cache), plan).summary()["hr@10"]["all"]
        cache.choices[key] = hr[True] >= hr[False]
        log.info("warm-up choice: adapt_taste=%s (HR@10 %.4f adapting the taste, %.4f not)",
                 cache.choices[key], hr[True], hr[False])
    return cache.choices[key]
