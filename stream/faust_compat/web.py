"""The read API's routing: who owns a partition, and asking them (point 7).

Why each reach into Faust is needed: the package docstring (stream/faust_compat/__init__.py)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from yarl import URL

from stream.faust_compat.tables import changelog_topic_name


# --- 7. the read API: who owns a partition, and asking them ------------------------------------------------
def owner_url(app: Any, table: Any, partition: int) -> URL | None:
    """The canonical URL of the worker whose active partitions of ``table`` include ``partition`` (None while
    no assignment says: before the first rebalance completes)."""
    topic = changelog_topic_name(table)
    for url, topics in app.router.table_metadata(table.name).items():
        if partition in (topics.get(topic) or ()):
            return URL(url)
    return None


def is_this_worker(app: Any, url: URL) -> bool:
    """``url`` is this worker's canonical URL (compared as Faust's router compares: host and port)."""
    own = app.conf.canonical_url
    return (url.host, url.port) == (own.host, own.port)


def on_web_cleanup(app: Any, cleanup: Any) -> None:
    """Run ``cleanup`` (an ``async`` function of the aiohttp application) when the web server shuts down, in
    the web server's own loop (aiohttp's ``on_cleanup`` signal of Faust's aiohttp application)."""
    app.web.web_app.on_cleanup.append(cleanup)


async def forward(app: Any, url: URL, path_qs: str, headers: Mapping[str, str], timeout_s: float,
                  session: Any = None) -> tuple[int, bytes, str]:
    """GET ``path_qs`` from the worker at ``url``: (status, body, content type). With Faust's HTTP client,
    unless ``session`` is given (a web server on its own thread has its own event loop, and an aiohttp session
    serves only the loop it was made in)."""
    import aiohttp

    target = url.join(URL(path_qs, encoded=True))
    client = app.http_client if session is None else session
    async with client.get(target, headers=dict(headers),
                          timeout=aiohttp.ClientTimeout(total=timeout_s)) as response:
        return response.status, await response.read(), response.content_type
