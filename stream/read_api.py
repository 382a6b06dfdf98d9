"""The read API: ``GET /users/{user_id}/recommendations`` on every worker, answered from the user's state.

A consumer that cannot read the ``recommendations`` topic asks any worker for a user's list. The worker that
owns the user's partition answers; any other forwards the request to it, on Faust's web server and HTTP client
(stream/faust_compat.py, point 7). The owner answers, in order:

- 404 for a deleted user (the state is a deletion marker), until they come back with a new event;
- the user's freshest list as the state keeps it (the last list sent, its scores, model version and triggering
  event), cut to ``n`` after dropping excluded, unavailable and off-category items, when that leaves ``n``;
- otherwise a list ranked now by the model worker from the same state (a brand-new user's is the cold-start
  list: the same code that serves an empty support set), nothing stored.

The body is a ``Recommendation`` (schemas/recommendation.schema.json); a list ranked for a user without any
interaction names the event ``cold-start``. Off unless ``METAREC_API_ENABLED``; with ``METAREC_API_TOKEN`` every
request must carry ``Authorization: Bearer <token>`` (compared in constant time). The OpenAPI document is
schemas/read-api.openapi.json (``python -m schemas.export`` writes it).
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import time
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

from prometheus_client import CollectorRegistry, Counter, Histogram

from schemas.decode import encode
from schemas.read_api import COLD_START_EVENT_ID, N_DEFAULT, N_MAX, PATH, USER_ID_MAX, encode_error
from schemas.records import TS_MAX, TS_MIN, Recommendation, ScoredItem
from stream import faust_compat
from stream.model_worker import ModelWorker, Served
from stream.partitioning import key_partition
from stream.pipeline import Rules, adapt_request
from stream.settings import Settings
from stream.state import StoredList, UserState, decode_list, decode_state, is_deleted

log = logging.getLogger(__name__)

ROUTED_HEADER = "X-Metarec-Routed"  # set on a forwarded request: its receiver answers or says 503, never forwards
FORWARD_TIMEOUT_S = 5.0
RANK_TIMEOUT_S = 10.0
JSON = "application/json"

Reply = tuple[int, bytes, dict[str, str]]  # status, JSON body, extra headers


class BadRequest(ValueError):
    """A query parameter is malformed; the message says which."""


@dataclass(frozen=True)
class Query:
    """What a request asks for: how many items, which to leave out, which categories (any of them) to keep."""

    n: int = N_DEFAULT
    exclude: frozenset[str] = frozenset()
    categories: tuple[str, ...] = ()


def parse_query(params: Any) -> Query:
    """``n``, ``exclude`` and ``category`` from a multi-valued query mapping (repeated or comma-separated)."""
    raw_n = params.get("n", str(N_DEFAULT))
    try:
        n = int(raw_n)
    except ValueError:
        raise BadRequest(f"n={raw_n!r} is not an integer") from None
    if not 1 <= n <= N_MAX:
        raise BadRequest(f"n={n} is outside 1..{N_MAX}")
    return Query(n, frozenset(_values(params, "exclude")), tuple(dict.fromkeys(_values(params, "category"))))


def _values(params: Any, name: str) -> list[str]:
    getall = getattr(params, "getall", None)
    raw = getall(name, []) if getall is not None else [params[name]] if name in params else []
    return [v.strip() for value in raw for v in value.split(",") if v.strip()]


def authorized(header: str | None, token: str) -> bool:
    """No token configured, or ``Authorization: Bearer <token>`` carries it (constant-time comparison)."""
    if not token:
        return True
    scheme, _, given = (header or "").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), token.encode())


def from_state(state: UserState | StoredList, query: Query, unavailable: frozenset[str],
               only: frozenset[str] | None) -> list[ScoredItem] | None:
    """The stored list cut to the query: ``n`` items that are not excluded, unavailable or outside ``only``;
    None when the stored list cannot fill ``n`` (the model ranks the user then)."""
    out = []
    for item_id, score in zip(state.last_recs, state.last_scores):
        if item_id in query.exclude or item_id in unavailable or (only is not None and item_id not in only):
            continue
        out.append(ScoredItem(item_id=item_id, score=score))
        if len(out) == query.n:
            return out
    return None


def error(status: int, message: str, headers: Mapping[str, str] | None = None) -> Reply:
    return status, encode_error(message), dict(headers or {})


def _ts(value: float, fallback: float) -> float:
    """A timestamp the schema accepts (``Timestamp``'s range), else ``fallback``."""
    return value if TS_MIN <= value <= TS_MAX else fallback


class ApiMetrics:
    """Requests by status and where they were answered, on the worker's registry."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.requests = Counter("metarec_api_requests", "Read-API requests, by status and how they were answered.",
                                ["status", "source"], registry=registry)
        self.seconds = Histogram("metarec_api_request_seconds", "Read-API request time on this worker.",
                                 ["source"], registry=registry,
                                 buckets=(0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 1.0, 5.0))


class ReadApi:
    """Answers read-API requests: routing to the owner, the owner's answer from state or from the model."""

    def __init__(self, app: Any, settings: Settings, worker: ModelWorker, table: Any,
                 categories: "CategorySource", metrics: ApiMetrics) -> None:
        self._app = app
        self._settings = settings
        self._worker = worker
        self._table = table
        self._categories = categories
        self._metrics = metrics
        self._rules = Rules.of(settings)
        self._token = settings.api_token.reveal()
        self._session: Any = None  # the web thread's own HTTP session (settings.api_thread), made on first use

    async def handle(self, user_id: str, params: Any, headers: Mapping[str, str], path_qs: str) -> Reply:
        """One request, wherever it arrived."""
        began = time.perf_counter()
        try:
            reply, source = await self._handle(user_id, params, headers, path_qs)
        except asyncio.TimeoutError:
            reply, source = error(503, "the model did not answer in time; retry", {"Retry-After": "1"}), "timeout"
        except Exception:  # noqa: BLE001 - one failed request must not take the web server's task down
            log.exception("read API: request for a user failed")
            reply, source = error(500, "internal error"), "failed"
        self._metrics.requests.labels(status=str(reply[0]), source=source).inc()
        self._metrics.seconds.labels(source=source).observe(time.perf_counter() - began)
        return reply

    async def _handle(self, user_id: str, params: Any, headers: Mapping[str, str],
                      path_qs: str) -> tuple[Reply, str]:
        if not authorized(headers.get("Authorization"), self._token):
            return error(401, "a valid bearer token is required", {"WWW-Authenticate": "Bearer"}), "refused"
        if not 1 <= len(user_id) <= USER_ID_MAX:
            return error(400, f"user_id must be 1..{USER_ID_MAX} characters"), "refused"
        try:
            query = parse_query(params)
        except BadRequest as exc:
            return error(400, str(exc)), "refused"
        partition = key_partition(user_id.encode(), self._settings.partitions, self._settings.key_partitioner)
        owner = faust_compat.owner_url(self._app, self._table, partition)
        if owner is None:
            return error(503, "partitions are being assigned; retry", {"Retry-After": "1"}), "unassigned"
        if not faust_compat.is_this_worker(self._app, owner):
            if headers.get(ROUTED_HEADER):
                return error(503, "the partition is moving between workers; retry", {"Retry-After": "1"}), "moved"
            return await self._forward(owner, headers, path_qs), "forwarded"
        return await self.answer(user_id, partition, query)

    async def _forward(self, owner: Any, headers: Mapping[str, str], path_qs: str) -> Reply:
        sent = {ROUTED_HEADER: "1"}
        if "Authorization" in headers:
            sent["Authorization"] = headers["Authorization"]
        import aiohttp

        if self._settings.api_thread and self._session is None:
            self._session = aiohttp.ClientSession()  # in the web thread's loop; closed with the server
        try:
            status, body, _type = await faust_compat.forward(self._app, owner, path_qs, sent, FORWARD_TIMEOUT_S,
                                                             self._session)
        except (OSError, aiohttp.ClientError, asyncio.TimeoutError) as exc:
            log.warning("read API: forwarding to %s failed: %s", owner, exc)
            return error(503, "the worker owning this user did not answer; retry", {"Retry-After": "1"})
        return status, body, {}

    async def close(self, _web_app: Any = None) -> None:
        """Close the web thread's HTTP session (aiohttp's cleanup signal calls this in the server's loop)."""
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def answer(self, user_id: str, partition: int, query: Query) -> tuple[Reply, str]:
        """The owner's answer: 404, the stored list, or a list ranked now."""
        raw = faust_compat.partition_db(self._table, partition).get(user_id.encode())
        stored = decode_list(raw) if raw else None
        if stored is not None and is_deleted(stored):
            return error(404, "user deleted"), "deleted"
        now = time.time()
        only = self._categories.items_in(query.categories) if query.categories else None
        if stored is not None:
            items = from_state(stored, query, self._worker.model.availability.unavailable, only)
            if items is not None:
                rec = Recommendation(user_id=user_id, items=items, model_version=stored.model_version or "unknown",
                                     event_id=stored.list_event_id or COLD_START_EVENT_ID,
                                     event_ts=_ts(stored.list_event_ts, now), produced_ts=_ts(stored.list_ts, now),
                                     seq=stored.seq)
                return (200, encode(rec), {}), "state"
        state = decode_state(raw) if raw else None
        request = adapt_request(user_id, state or UserState(), self._worker.objective, rules=self._rules,
                                exclude=query.exclude)
        served: Served = await asyncio.wait_for(self._worker.rank(request, query.n, only), RANK_TIMEOUT_S)
        result = served.result
        known = state if state is not None and state.interactions > 0 else None
        rec = Recommendation(
            user_id=user_id,
            items=[ScoredItem(item_id=i, score=s) for i, s in zip(result.items, result.scores)],
            model_version=served.version,
            event_id=(known.list_event_id or known.last_event_id) if known else COLD_START_EVENT_ID,
            event_ts=_ts(known.list_event_ts or known.last_ts, now) if known else now,
            produced_ts=now,
        )
        return (200, encode(rec), {}), "ranked" if known else "cold_start"


class CategorySource:
    """Which items belong to a category: the serving model's category features (``jazz``, ``genre:Action``:
    every item whose row flags it) and the categories of the items' own events (the item store)."""

    def __init__(self, worker: ModelWorker, stored: Any = None) -> None:
        self._worker = worker
        self._stored = stored  # an object with ``categories``: dict category -> frozenset of item ids (or None)
        self._cache: dict[tuple, frozenset[str]] = {}

    def items_in(self, categories: Sequence[str]) -> frozenset[str]:
        model = self._worker.model
        stored = getattr(self._stored, "categories", None) or {}
        key = (model.version, len(model.item_ids), id(stored), tuple(categories))
        hit = self._cache.get(key)
        if hit is not None:
            return hit
        names = model.item_feature_names
        feats = model.model.item_features  # (N, F)
        ids = model.item_ids
        out: set[str] = set()
        for category in categories:
            if category in names:
                rows = (feats[:, names.index(category)] > 0).nonzero().flatten().tolist()
                out.update(ids[r] for r in rows if r < len(ids))
            out.update(stored.get(category, ()))
        if len(self._cache) > 256:
            self._cache.clear()
        self._cache[key] = result = frozenset(out)
        return result


def install_read_api(app: Any, settings: Settings, worker: ModelWorker, table: Any, registry: CollectorRegistry,
                     stored_categories: Any = None) -> ReadApi:
    """Serve ``PATH`` on the app's web server (call from ``build_app`` when the API is enabled)."""
    from faust.web import Request, Response, View

    api = ReadApi(app, settings, worker, table, CategorySource(worker, stored_categories), ApiMetrics(registry))

    @app.page(PATH, name="recommendations")
    class Recommendations(View):
        async def get(self, request: Request, user_id: str) -> Response:
            status, body, headers = await api.handle(user_id, request.query, request.headers,
                                                     request.path_qs)
            return self.bytes(body, content_type=JSON, status=status, headers=headers)

    faust_compat.on_web_cleanup(app, api.close)
    return api
