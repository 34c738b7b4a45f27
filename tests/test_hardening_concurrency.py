"""1,000 requests recorded at once, all in flight together: each cassette holds exactly its own call.

As in ``test_record_concurrency``, every handler waits until all requests have arrived,
then makes one upstream call. At this scale each request (test side and app side) gets
its own httpx client sharing one SSL context: one pool of 1,000 connections is slow in
httpx's scheduling, and 1,000 clients each loading the CA bundle are slow too.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
from _record_support import SHARED_SSL, barrier_app, calls_by_path, stat
from conftest import load_cassettes
from opentelemetry.instrumentation.utils import suppress_http_instrumentation

from timetracer_otel.config import TraceConfig

_COUNT = 1000
_BARRIER_SECONDS = 30


async def _get_each(url: str, count: int) -> list[httpx.Response]:
    """``GET /items/<i>`` for every i at once, each on its own connection; the test's client is not traced."""

    async def get(i: int) -> httpx.Response:
        async with httpx.AsyncClient(timeout=60, verify=SHARED_SSL) as client:
            return await client.get(f"{url}/items/{i}")

    with suppress_http_instrumentation():
        return await asyncio.gather(*(get(i) for i in range(count)))


def test_1000_concurrent_recordings_have_no_cross_talk(
    serve: Callable[..., Any], upstream: Any, record_config: TraceConfig, cassette_dir: Path
) -> None:
    losses = ("dropped.queue_full", "evicted.open_spans", "errors.write")
    before = {name: stat(name) for name in losses}
    url = serve(
        barrier_app(record_config, upstream.url, _COUNT, _BARRIER_SECONDS)
    ).url  # its socket listens with a backlog of 2048
    responses = asyncio.run(_get_each(url, _COUNT))
    assert [r.json() for r in responses] == [{"echo": f"i={i}"} for i in range(_COUNT)]

    cassettes = load_cassettes(cassette_dir)
    assert len(cassettes) == _COUNT
    assert calls_by_path(cassettes) == {
        f"/items/{i}": [f"{upstream.url}/echo?i={i}"] for i in range(_COUNT)
    }
    for cassette in cassettes:
        (call,) = cassette["calls"]
        number = cassette["request"]["path"].rsplit("/", 1)[1]
        assert call["response"]["body"]["json"]["query"] == f"i={number}"
        assert cassette["response"]["body"]["json"] == {"echo": f"i={number}"}
        # its own span, in its own trace
        assert call["span_id"] in {span["span_id"] for span in cassette["spans"]}
    assert len({c["trace_id"] for c in cassettes}) == _COUNT
    assert {
        name: stat(name) for name in losses
    } == before  # nothing dropped, evicted or failed to write
