"""Outgoing aiohttp calls (read whole or piecewise, streamed, chunked uploads, errors) land in the cassette."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from _outgoing_http import (
    CLOSED_PORT_URL,
    SCRIPT,
    UPLOAD_PARTS,
    GatedStream,
    check_script,
    check_stream,
    check_transport_error,
    check_upload,
    make_app,
    only_cassette,
    record_when_app_instrumented_first,
    record_with_early_client,
    seen,
)
from conftest import Upstream, load_cassettes
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from timetracer_otel.config import TraceConfig

# How the app reads a response body: all at once, or piece by piece as it arrives.
_READERS: dict[str, Callable[[aiohttp.StreamReader], Any]] = {
    "any": lambda content: content.iter_any(),
    "chunked": lambda content: content.iter_chunked(100),
}


async def _read(response: aiohttp.ClientResponse, reader: str) -> bytes:
    if reader == "read":
        return await response.read()
    return b"".join([data async for data in _READERS[reader](response.content)])


def _routes(upstream: Upstream) -> list[Route]:
    """Async endpoints using aiohttp; each returns what it got from upstream."""
    early: dict[str, aiohttp.ClientSession] = {}

    async def script(request: Request) -> JSONResponse:
        reader = request.query_params["reader"]
        async with aiohttp.ClientSession() as session:
            got = []
            for method, path, kw in SCRIPT:
                async with session.request(method, upstream.url + path, **kw) as response:
                    got.append(
                        seen(
                            response.status, response.headers.items(), await _read(response, reader)
                        )
                    )
        return JSONResponse(got)

    async def stream(request: Request) -> JSONResponse:
        gated = GatedStream(upstream)
        timeout = aiohttp.ClientTimeout(total=5)
        async with (
            aiohttp.ClientSession(timeout=timeout) as session,
            session.get(gated.url) as response,
        ):
            async for data in _READERS[request.query_params["reader"]](response.content):
                gated.received(data)
        return JSONResponse(gated.result())

    async def upload(request: Request) -> JSONResponse:
        async def parts() -> AsyncIterator[bytes]:
            for part in UPLOAD_PARTS:
                yield part

        async with (
            aiohttp.ClientSession() as session,
            session.post(upstream.url + "/echo", data=parts()) as response,
        ):
            return JSONResponse(await response.json())

    async def unreachable(request: Request) -> JSONResponse:
        async with aiohttp.ClientSession() as session:
            try:
                await session.get(CLOSED_PORT_URL)
            except aiohttp.ClientConnectorError as exc:
                return JSONResponse({"caught": type(exc).__name__}, status_code=502)
        return JSONResponse({"caught": None})

    async def create_client(request: Request) -> JSONResponse:
        early["session"] = aiohttp.ClientSession()
        return JSONResponse({})

    async def use_client(request: Request) -> JSONResponse:
        async with early.pop("session") as session, session.get(upstream.url + "/json") as response:
            return JSONResponse(
                seen(response.status, response.headers.items(), await response.read())
            )

    return [
        Route("/script", script),
        Route("/stream", stream),
        Route("/upload", upload),
        Route("/unreachable", unreachable),
        Route("/client/create", create_client),
        Route("/client/use", use_client),
    ]


def _get(url: str) -> tuple[int, Any]:
    """The test's own call to the app, with aiohttp too: status and JSON body."""

    async def call() -> tuple[int, Any]:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
            async with session.get(url) as response:
                return response.status, await response.json(content_type=None)

    return asyncio.run(call())


def _serve_recorded(serve: Callable[..., Any], upstream: Upstream, config: TraceConfig) -> str:
    return serve(make_app(_routes(upstream), config, "aiohttp")).url


@pytest.mark.parametrize("reader", ["read", "any", "chunked"])
def test_every_call_of_a_request_is_recorded_in_order(
    reader: str,
    serve: Callable[..., Any],
    upstream: Upstream,
    record_config: TraceConfig,
    cassette_dir: Path,
) -> None:
    """JSON, form, binary, gzip, 404, whichever way the app reads the bodies."""
    status, app_saw = _get(
        _serve_recorded(serve, upstream, record_config) + f"/script?reader={reader}"
    )
    assert status == 200
    _get(upstream.url + "/json")  # outside any app request: recorded nowhere
    check_script(only_cassette(cassette_dir, "GET", "script"), upstream, "aiohttp", app_saw)


@pytest.mark.parametrize("reader", ["any", "chunked"])
def test_streamed_response_reaches_the_app_chunk_by_chunk(
    reader: str,
    serve: Callable[..., Any],
    upstream: Upstream,
    record_config: TraceConfig,
    cassette_dir: Path,
) -> None:
    """``iter_any`` and ``iter_chunked``: the read hook must not hold data back."""
    status, got = _get(_serve_recorded(serve, upstream, record_config) + f"/stream?reader={reader}")
    assert status == 200, got
    check_stream(only_cassette(cassette_dir, "GET", "stream"), got)


def test_streamed_upload_is_sent_and_recorded(
    serve: Callable[..., Any], upstream: Upstream, record_config: TraceConfig, cassette_dir: Path
) -> None:
    status, echoed = _get(_serve_recorded(serve, upstream, record_config) + "/upload")
    assert status == 200, echoed
    check_upload(only_cassette(cassette_dir, "GET", "upload"), echoed)


def test_transport_error_is_recorded_and_still_reaches_the_app(
    serve: Callable[..., Any], upstream: Upstream, record_config: TraceConfig, cassette_dir: Path
) -> None:
    assert _get(_serve_recorded(serve, upstream, record_config) + "/unreachable") == (
        502,
        {"caught": "ClientConnectorError"},
    )
    doc = only_cassette(cassette_dir, "GET", "unreachable")
    check_transport_error(doc, "aiohttp.client_exceptions.ClientConnectorError")


def test_capture_does_not_change_what_the_app_gets(
    serve: Callable[..., Any], upstream: Upstream, record_config: TraceConfig, cassette_dir: Path
) -> None:
    recorded = _get(_serve_recorded(serve, upstream, record_config) + "/script?reader=chunked")
    plain = _get(
        _serve_recorded(serve, upstream, TraceConfig(mode="off")) + "/script?reader=chunked"
    )
    assert recorded == plain
    assert len(load_cassettes(cassette_dir)) == 1


def test_session_created_before_enable_is_captured(
    serve: Callable[..., Any], upstream: Upstream, record_config: TraceConfig
) -> None:
    doc = record_with_early_client(serve, _get, _routes(upstream), record_config, "aiohttp")
    (call,) = doc["calls"]
    assert (call["request"]["url"], call["response"]["status"]) == (upstream.url + "/json", 200)


def test_app_instrumented_with_opentelemetry_first(
    serve: Callable[..., Any], upstream: Upstream, record_config: TraceConfig
) -> None:
    """``AioHttpClientInstrumentor().instrument()`` before timetracer: still one client span per call."""
    doc = record_when_app_instrumented_first(
        serve, _get, _routes(upstream), record_config, "aiohttp", "/script?reader=read"
    )
    assert len(doc["calls"]) == len(SCRIPT)
