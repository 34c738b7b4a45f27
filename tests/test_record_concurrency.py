"""Concurrent requests never see each other's calls: one cassette per request, only its own calls.

The handlers wait at a barrier until every request is in flight, so the requests
really overlap inside one event loop before any of them calls upstream.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
from _record_support import barrier_app, calls_by_path
from conftest import load_cassettes
from opentelemetry.instrumentation.utils import suppress_http_instrumentation

from timetracer_otel.config import TraceConfig

_BARRIER_SECONDS = 10
_TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"


async def _get_all(
    url: str, paths: list[str], headers: dict[str, str] | None = None
) -> list[httpx.Response]:
    """GET all ``paths`` at once; the test's own client is kept out of tracing (it would replace ``traceparent``)."""
    limits = httpx.Limits(max_connections=len(paths))
    with suppress_http_instrumentation():
        async with httpx.AsyncClient(timeout=30, limits=limits) as client:
            return await asyncio.gather(
                *(client.get(f"{url}{path}", headers=headers) for path in paths)
            )


def test_200_concurrent_requests_give_200_cassettes_with_their_own_calls(
    serve: Callable[..., Any], upstream: Any, record_config: TraceConfig, cassette_dir: Path
) -> None:
    count = 200
    url = serve(barrier_app(record_config, upstream.url, count, _BARRIER_SECONDS)).url
    responses = asyncio.run(_get_all(url, [f"/items/{i}" for i in range(count)]))
    assert [r.json() for r in responses] == [{"echo": f"i={i}"} for i in range(count)]

    cassettes = load_cassettes(cassette_dir)
    assert len(cassettes) == count
    assert calls_by_path(cassettes) == {
        f"/items/{i}": [f"{upstream.url}/echo?i={i}"] for i in range(count)
    }
    for cassette in cassettes:
        (call,) = cassette["calls"]
        assert (
            call["response"]["body"]["json"]["query"]
            == f"i={cassette['request']['path'].rsplit('/', 1)[1]}"
        )


def test_requests_sharing_one_traceparent_are_separate_cassettes(
    serve: Callable[..., Any], upstream: Any, record_config: TraceConfig, cassette_dir: Path
) -> None:
    url = serve(barrier_app(record_config, upstream.url, 2, _BARRIER_SECONDS)).url
    traceparent = {"traceparent": f"00-{_TRACE_ID}-00f067aa0ba902b7-01"}
    responses = asyncio.run(_get_all(url, ["/items/1", "/items/2"], traceparent))
    assert [r.status_code for r in responses] == [200, 200]

    cassettes = load_cassettes(cassette_dir)
    assert {c["trace_id"] for c in cassettes} == {_TRACE_ID}
    assert calls_by_path(cassettes) == {
        f"/items/{i}": [f"{upstream.url}/echo?i={i}"] for i in (1, 2)
    }
    assert len({c["id"] for c in cassettes}) == 2
