"""The read API's owner side without Faust: queries, the token, the stored list or a list ranked now, 404 for
a deleted user, no unavailable item, and every answer as the OpenAPI document says."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import pytest
import torch
from multidict import MultiDict
from prometheus_client import CollectorRegistry

from models.core.config import ModelConfig
from models.core.metalearner import MetaRec
from models.serving.recommender import Recommender
from schemas import export
from schemas.decode import decode_recommendation
from schemas.read_api import COLD_START_EVENT_ID
from stream import faust_compat
from stream.metrics import Metrics
from stream.model_worker import ModelWorker
from stream.partitioning import key_partition
from stream.pipeline import adapt_request
from stream.read_api import (
    ApiMetrics,
    BadRequest,
    CategorySource,
    Query,
    ReadApi,
    authorized,
    from_state,
    parse_query,
)
from stream.settings import Settings
from stream.state import Shown, UserState, encode_state
from tests.openapi_check import check_response

ITEMS = [f"i{n}" for n in range(40)]
TS = 1_700_000_000.0


def test_queries_take_repeated_or_comma_separated_values_and_refuse_bad_n():
    q = parse_query(MultiDict([("n", "3"), ("exclude", "a,b"), ("exclude", "c"), ("category", "jazz")]))
    assert q == Query(3, frozenset({"a", "b", "c"}), ("jazz",))
    assert parse_query(MultiDict()) == Query()
    for bad in ("0", "101", "x"):
        with pytest.raises(BadRequest, match="n="):
            parse_query(MultiDict([("n", bad)]))


def test_the_token_is_required_only_when_set():
    assert authorized(None, "") and authorized("Bearer whatever", "")
    assert authorized("Bearer s3cret", "s3cret") and authorized("bearer  s3cret", "s3cret")
    for header in (None, "", "Bearer", "Bearer wrong", "Basic s3cret", "s3cret"):
        assert not authorized(header, "s3cret")


def test_the_stored_list_is_cut_to_the_query_or_refused_when_it_cannot_fill_it():
    state = UserState(last_recs=["a", "b", "c", "d"], last_scores=[4.0, 3.0, 2.0, 1.0])
    got = from_state(state, Query(2, frozenset({"a"})), frozenset({"c"}), None)
    assert [(s.item_id, s.score) for s in got] == [("b", 3.0), ("d", 1.0)]
    assert from_state(state, Query(3, frozenset({"a"})), frozenset({"c"}), None) is None
    assert [s.item_id for s in from_state(state, Query(1), frozenset(), frozenset({"d"}))] == ["d"]


def test_the_partitioners_agree_with_the_clients():
    """Partitions that confluent-kafka 2.16 chose on the embedded broker (4 partitions) for keys user-0..7: its
    default partitioner (consistent_random) and ``partitioner=murmur2_random`` (the Java client's)."""
    keys = [f"user-{n}".encode() for n in range(8)]
    assert [key_partition(k, 4) for k in keys] == [2, 0, 2, 0, 3, 1, 3, 1]
    assert [key_partition(k, 4, "murmur2") for k in keys] == [3, 0, 0, 3, 3, 2, 1, 0]
    with pytest.raises(ValueError):
        key_partition(b"k", 4, "random")


def test_the_openapi_document_is_committed_and_current():
    assert "read-api.openapi.json" in export.rendered() and not export.drifted()


@pytest.fixture
def api(monkeypatch):
    """A ReadApi over a real model worker, whose table is a dict of partition databases."""
    torch.manual_seed(0)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    cfg = ModelConfig(n_items=len(ITEMS), n_item_features=2, dim=8, head_dim=8, n_negatives=4, max_support=8)
    model = Recommender(MetaRec(cfg), ITEMS, version="v1", item_feature_names=("jazz", "garden"))
    model.model.item_features[:10, 0] = 1.0  # i0..i9 are jazz
    settings = Settings(partitions=2, impression_demote_after=3)
    worker = ModelWorker(model, settings, Metrics(CollectorRegistry())).start()
    dbs = {0: {}, 1: {}}
    monkeypatch.setattr(faust_compat, "partition_db", lambda _table, p: dbs[p])
    stored = SimpleNamespace(categories={"vinyl": frozenset({"i30", "i31"})})
    reader = ReadApi(None, settings, worker, None, CategorySource(worker, stored), ApiMetrics(CollectorRegistry()))
    yield reader, dbs, worker
    worker.stop()
    torch.set_num_threads(threads)


def ask(reader, dbs, user, query=Query()):
    partition = key_partition(user.encode(), 2)
    (status, body, _headers), source = asyncio.run(reader.answer(user, partition, query))
    check_response(status, body)
    return status, body, source


def put(dbs, user, state):
    dbs[key_partition(user.encode(), 2)][user.encode()] = encode_state(state)


def test_a_known_user_gets_the_stored_list_with_its_trigger_and_version(api):
    reader, dbs, _ = api
    state = UserState(interactions=3, seen=["i1"], last_recs=[f"i{n}" for n in range(10, 20)],
                      last_scores=[float(20 - n) for n in range(10)], model_version="v0", list_event_id="e9",
                      list_event_ts=TS, list_ts=TS + 5, last_ts=TS, seq=4)
    put(dbs, "u", state)
    status, body, source = ask(reader, dbs, "u", Query(n=3))
    rec = decode_recommendation(body)
    assert (status, source) == (200, "state")
    assert [s.item_id for s in rec.items] == ["i10", "i11", "i12"] and rec.items[0].score == 20.0
    assert (rec.event_id, rec.event_ts, rec.produced_ts, rec.model_version) == ("e9", TS, TS + 5, "v0")
    assert rec.seq == 4, "the stored list is the user's 4th on the topic"


def test_unavailable_excluded_and_off_category_items_are_never_answered(api):
    reader, dbs, worker = api
    put(dbs, "u", UserState(interactions=1, seen=["i39"], last_ts=TS, last_event_id="e1", list_event_id="e1",
                            last_recs=[f"i{n}" for n in range(10)], last_scores=[1.0] * 10, list_ts=TS))
    worker.model.availability.set({"i0": False, "i5": False})
    status, body, source = ask(reader, dbs, "u", Query(n=8, exclude=frozenset({"i1"})))
    items = [s.item_id for s in decode_recommendation(body).items]
    assert source == "ranked", "7 stored items are left: too few for 8"
    status, body, source = ask(reader, dbs, "u", Query(n=9, exclude=frozenset({"i1"})))
    items = [s.item_id for s in decode_recommendation(body).items]
    assert source == "ranked" and len(items) == 9
    assert not {"i0", "i5", "i1", "i39"} & set(items), "unavailable, excluded or seen items were answered"
    status, body, source = ask(reader, dbs, "u", Query(n=5, categories=("jazz", "vinyl")))
    items = [s.item_id for s in decode_recommendation(body).items]
    assert source == "state" and items == ["i1", "i2", "i3", "i4", "i6"]  # the stored list's jazz items
    status, body, source = ask(reader, dbs, "u", Query(n=12, categories=("jazz", "vinyl")))
    items = [s.item_id for s in decode_recommendation(body).items]
    assert source == "ranked" and set(items) <= {f"i{n}" for n in range(1, 10)} | {"i30", "i31"}
    assert len(items) == 10 and "i5" not in items and "i0" not in items  # 8 jazz, 2 vinyl


def test_an_unknown_user_gets_the_cold_start_list(api):
    reader, dbs, worker = api
    status, body, source = ask(reader, dbs, "nobody", Query(n=4))
    rec = decode_recommendation(body)
    assert (status, source, rec.event_id, rec.model_version) == (200, "cold_start", COLD_START_EVENT_ID, "v1")
    (want,) = worker.model.recommend([adapt_request("nobody", UserState(), "implicit")], 4)
    assert [s.item_id for s in rec.items] == want.items


def test_a_deleted_user_gets_404_until_they_come_back(api):
    reader, dbs, _ = api
    put(dbs, "gone", UserState(deleted_ts=TS, offsets={"interactions:0": 4}))
    status, body, source = ask(reader, dbs, "gone")
    assert (status, source) == (404, "deleted")
    put(dbs, "gone", UserState(interactions=1, seen=["i3"], last_ts=TS + 1, last_event_id="e5"))
    status, body, source = ask(reader, dbs, "gone")
    assert (status, source) == (200, "ranked") and decode_recommendation(body).event_id == "e5"


def test_a_known_user_ranked_now_keeps_their_demotions(api):
    reader, dbs, _ = api
    put(dbs, "u", UserState(interactions=1, seen=["i1"], last_ts=TS, last_event_id="e1",
                            shown=[Shown("i2", TS - 1000, TS, 5, 0, 3)]))  # skipped 3 times: demoted
    _status, body, source = ask(reader, dbs, "u", Query(n=30))
    assert source == "ranked" and "i2" not in [s.item_id for s in decode_recommendation(body).items]


def test_the_list_view_reads_a_stored_state_s_fields_at_their_positions():
    """``StoredList`` mirrors ``UserState``'s leading fields one for one (msgpack arrays are positional)."""
    import msgspec

    from stream.state import StoredList, SupportEvent, decode_list

    names = [f.name for f in msgspec.structs.fields(StoredList)]
    assert names == [f.name for f in msgspec.structs.fields(UserState)][: len(names)]
    state = UserState(support=[SupportEvent("a", 1, None, TS)], seen=["a"], interactions=7, last_ts=TS,
                      model_version="v3", last_recs=["x", "y"], last_scores=[2.0, 1.0], list_event_id="e7",
                      list_event_ts=TS, list_ts=TS + 1, deleted_ts=0.0, shown=[Shown("z", TS, TS, 1)])
    view = decode_list(encode_state(state))
    for name in names:
        if not isinstance(getattr(view, name), msgspec.Raw):
            assert getattr(view, name) == getattr(state, name), name


def test_the_api_settings_keep_the_token_secret_and_check_the_partitioner():
    from stream.pipeline import Rules
    from stream.settings import Secret, SettingsError

    s = Settings.from_env({"METAREC_API_ENABLED": "true", "METAREC_API_TOKEN": "s3cret", "METAREC_WEB_PORT": "7000",
                           "METAREC_IMPRESSION_SKIPS": "true", "METAREC_IMPRESSION_DEMOTE_AFTER": "0"})
    assert s.api_enabled and isinstance(s.api_token, Secret) and s.api_token.reveal() == "s3cret"
    assert "s3cret" not in repr(s) and s.redacted()["api_token"] == "**********"
    assert s.web_url == "http://127.0.0.1:7000"
    rules = Rules.of(s)
    assert rules.by_skips and rules.demote_after == 0 and rules.limits.shown_max == s.shown_max
    with pytest.raises(SettingsError, match="METAREC_KEY_PARTITIONER"):
        Settings.from_env({"METAREC_KEY_PARTITIONER": "random"})
