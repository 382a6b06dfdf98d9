"""Pins on what the read API relies on in Faust (stream/faust_compat.py, point 7, and stream/app.py's web
options): they fail when a faust-streaming upgrade changes them. No broker, no server started."""

from __future__ import annotations

import asyncio
from typing import Iterator

import faust
import pytest
from yarl import URL

from stream import faust_compat
from stream.app import _web_options
from stream.settings import Settings


@pytest.fixture
def app(tmp_path) -> Iterator[faust.App]:
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    settings = Settings(api_enabled=True, web_port=7071, api_url="http://10.0.0.5:7071")
    yield faust.App("pins-api", broker="kafka://127.0.0.1:1", store="rocksdb://", datadir=str(tmp_path),
                    autodiscover=False, **_web_options(settings))
    asyncio.set_event_loop(None)
    loop.close()


def test_the_web_options_reach_faust_and_its_own_pages_are_off(app):
    conf = app.conf
    assert conf.web_enabled and conf.web_port == 7071 and conf.web_bind == "127.0.0.1" and conf.web_in_thread
    assert conf.canonical_url == URL("http://10.0.0.5:7071")
    assert not (conf.web_tables_enabled or conf.web_router_enabled or conf.web_stats_enabled
                or conf.web_graph_enabled or conf.web_metrics_enabled), "Faust's pages would show table data"
    assert _web_options(Settings()) == {"web_enabled": False}


def test_the_owner_of_a_partition_comes_from_the_assignor_s_table_metadata(app):
    table = app.Table("users", key_type=bytes, value_type=bytes, partitions=4)
    topic = faust_compat.changelog_topic_name(table)
    assert faust_compat.owner_url(app, table, 0) is None, "no assignment yet"
    # what the partition assignor holds after a rebalance: each member's URL and its active partitions
    app.assignor.changelog_distribution = {"http://10.0.0.5:7071": {topic: [0, 2]},
                                           "http://10.0.0.6:7071": {topic: [1, 3], "other-changelog": [0]}}
    assert app.router.table_metadata(table.name)["http://10.0.0.6:7071"] == {topic: [1, 3]}
    assert faust_compat.owner_url(app, table, 3) == URL("http://10.0.0.6:7071")
    assert faust_compat.is_this_worker(app, faust_compat.owner_url(app, table, 2))
    assert not faust_compat.is_this_worker(app, URL("http://10.0.0.6:7071"))


def test_faust_s_http_client_and_page_registration_are_there(app):
    from faust.web import View

    assert callable(getattr(type(app), "page")) and hasattr(type(app), "http_client")

    @app.page("/users/{user_id}/recommendations", name="pins")
    class Pinned(View):
        async def get(self, request, user_id):  # dispatch passes match_info as keyword arguments
            return self.bytes(b"{}", content_type="application/json")

    assert Pinned.view_path == "/users/{user_id}/recommendations"

    async def cleanup(_web_app):
        return None

    faust_compat.on_web_cleanup(app, cleanup)
    assert cleanup in app.web.web_app.on_cleanup
