"""The read API on the embedded broker with two workers in one group: any worker answers for any user with
the owner's answer (the user's last list as the topic has it), a deleted user gets 404 from both until they
come back, an item made unavailable appears in no later list and no answer, and every answer is what the
OpenAPI document says."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections import Counter

import pytest

from models.data.synthetic import generate
from schemas.decode import encode
from schemas.records import Interaction, ItemEvent, UserDeletion
from stream.broker import free_port
from stream.replay import interactions
from tests.integration.kafka_helpers import produce
from tests.integration.workers import (
    WorkerProcess,
    WorkerSpec,
    await_recommendations,
    last_recommendations,
    scrape,
    wait_until,
)
from tests.openapi_check import check_response

pytestmark = pytest.mark.integration

TOKEN = "t0ken"
TS = 1_700_200_000.0


def get(port: int, path: str, token: str | None = TOKEN) -> tuple[int, bytes]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def answer(port: int, user: str, query: str = "") -> tuple[int, dict]:
    status, body = get(port, f"/users/{user}/recommendations{query}")
    return status, check_response(status, body)


def api_count(worker: WorkerProcess, source: str) -> float:
    samples = scrape(worker.metrics_port)
    return sum(v for (name, labels), v in samples.items()
               if name == "metarec_api_requests_total" and ("source", source) in labels)


def items_updated(worker: WorkerProcess) -> float:
    return scrape(worker.metrics_port).get(("metarec_items_total", (("result", "updated"),)), 0.0)


def split_events(seed: int) -> tuple[list[Interaction], list[Interaction]]:
    log = generate(seed=seed, n_users=40, n_items=200, mean_events=12).sorted_by_time()
    by_user: dict[str, list[Interaction]] = {}
    for e in interactions(log, id_prefix="ra"):
        by_user.setdefault(e.user_id, []).append(e)
    first, second = [], []
    for evs in by_user.values():
        if len(evs) >= 4:
            half = len(evs) // 2
            first += evs[:half]
            second += evs[half:]
    return sorted(first, key=lambda e: e.ts), sorted(second, key=lambda e: e.ts)


@pytest.mark.timeout(600)
def test_any_worker_answers_with_the_owner_s_list_404_for_the_deleted_and_no_unavailable_item(
        broker, topic_prefix, tmp_path, checkpoint):
    ports = free_port(), free_port()
    specs = [WorkerSpec(broker.bootstrap, topic_prefix, checkpoint, tmp_path / name,
                        extra_env={"METAREC_API_ENABLED": "true", "METAREC_WEB_PORT": str(port),
                                   "METAREC_API_TOKEN": TOKEN})
             for name, port in zip("ab", ports)]
    specs[0].create_topics()
    settings = specs[0].settings()
    first, second = split_events(seed=31)
    send = lambda evs: produce(broker.bootstrap, settings.interactions_topic,  # noqa: E731
                               [(e.user_id.encode(), encode(e)) for e in evs])
    workers = [WorkerProcess(spec, tmp_path / f"{name}.log") for spec, name in zip(specs, "ab")]
    try:
        wait_until(lambda: all(w.log_text().count("Worker ready") >= 1 for w in workers), 180,
                   "both workers to be ready", alive=workers)
        send(first)
        await_recommendations(broker.bootstrap, settings.recommendations_topic,
                              {e.user_id: e.event_id for e in first}, 240, alive=workers)
        lists = last_recommendations(broker.bootstrap, settings.recommendations_topic)
        users = sorted(lists)

        # every user, asked at either worker, gets the owner's answer: the last list the topic holds
        wait_until(lambda: all(answer(p, users[0])[0] == 200 for p in ports), 120,
                   "both workers to know the partitions' owners", alive=workers)
        for user in users:
            want = lists[user]
            for port in ports:
                status, got = answer(port, user)
                assert status == 200 and got["event_id"] == want.event_id, (user, port, got)
                assert [i["item_id"] for i in got["items"]] == [s.item_id for s in want.items]
                assert got["model_version"] == want.model_version
        assert all(api_count(w, "forwarded") > 0 for w in workers), "each worker forwarded some requests"
        assert all(api_count(w, "state") > 0 for w in workers), "each worker owned some users"
        assert get(ports[0], f"/users/{users[0]}/recommendations", token=None)[0] == 401
        assert get(ports[1], f"/users/{users[0]}/recommendations", token="wrong")[0] == 401
        status, cold = answer(ports[1], "never-seen", "?n=5")
        assert status == 200 and cold["event_id"] == "cold-start" and len(cold["items"]) == 5

        # an item withdrawn: the most recommended one, so later lists would have shown it
        counts = Counter(s.item_id for rec in lists.values() for s in rec.items)
        withdrawn = counts.most_common(1)[0][0]
        produce(broker.bootstrap, settings.items_topic,
                [(withdrawn.encode(), encode(ItemEvent(event_id="off", item_id=withdrawn, ts=TS, available=False)))])
        wait_until(lambda: all(items_updated(w) >= 1 for w in workers), 120,
                   "both workers to take the availability in", alive=workers)
        for user in users:
            for port in ports:
                status, got = answer(port, user, "?n=12")
                assert status == 200 and withdrawn not in [i["item_id"] for i in got["items"]]

        # a deletion: 404 everywhere until the user's next event
        gone, back = users[0], users[1]
        send([UserDeletion(event_id=f"del-{u}", user_id=u, ts=TS) for u in (gone, back)])
        wait_until(lambda: all(answer(p, u)[0] == 404 for p in ports for u in (gone, back)), 120,
                   "404 for the deleted users at both workers", alive=workers)
        returning = Interaction(event_id="again", user_id=back, item_id=first[0].item_id, type="click",
                                ts=TS + 1)
        second = [e for e in second if e.user_id != gone]  # the deleted user stays away
        send(second + [returning])
        recs = await_recommendations(broker.bootstrap, settings.recommendations_topic,
                                     {**{e.user_id: e.event_id for e in second}, back: "again"}, 240,
                                     alive=workers)
        later = [r for r in recs if r.event_id in {e.event_id for e in second} | {"again"}]
        assert later and not [r for r in later if withdrawn in [s.item_id for s in r.items]], \
            "an unavailable item was recommended"
        assert all(answer(p, gone)[0] == 404 for p in ports), "the deleted user came back without an event"
        status, got = answer(ports[0], back)
        assert status == 200 and got["event_id"] == "again"
        assert json.loads(get(ports[1], f"/users/{back}/recommendations?n=0")[1])["error"].startswith("n=")
    finally:
        codes = [w.stop() for w in workers]
    assert codes == [0, 0], [w.log_text()[-3000:] for w in workers]
