"""Outgoing httpx and httpx2 calls (sync, async, streaming both ways) are recorded into the request's cassette."""

from __future__ import annotations

import importlib
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
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
from apps.replay_app import HTTPX_CLIENTS
from conftest import Upstream, load_cassettes
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from timetracer_otel.config import TraceConfig


@pytest.fixture(params=HTTPX_CLIENTS)
def client(request: pytest.FixtureRequest) -> str:
    """The httpx family member the app calls with: httpx, then httpx2."""
    return request.param


def _seen(response: Any) -> dict[str, Any]:
    return seen(response.status_code, response.headers.multi_items(), response.content)


def _sync_script(upstream: Upstream, lib: Any) -> list[dict[str, Any]]:
    with lib.Client() as client:
        return [
            _seen(client.request(method, upstream.url + path, **kw)) for method, path, kw in SCRIPT
        ]


def _routes(upstream: Upstream, name: str) -> list[Route]:
    """One route per way of using httpx (or httpx2: ``name``); each returns what it got from upstream."""
    lib = importlib.import_module(name)
    early: dict[str, Any] = {}

    async def script_async(request: Request) -> JSONResponse:
        async with lib.AsyncClient() as client:
            return JSONResponse(
                [_seen(await client.request(m, upstream.url + p, **kw)) for m, p, kw in SCRIPT]
            )

    def script_sync(request: Request) -> JSONResponse:
        return JSONResponse(_sync_script(upstream, lib))

    async def script_thread(request: Request) -> JSONResponse:
        return JSONResponse(await run_in_threadpool(_sync_script, upstream, lib))

    async def stream_async(request: Request) -> JSONResponse:
        gated = GatedStream(upstream)
        async with lib.AsyncClient() as client, client.stream("GET", gated.url) as response:
            async for data in response.aiter_bytes():
                gated.received(data)
        return JSONResponse(gated.result())

    def stream_sync(request: Request) -> JSONResponse:
        gated = GatedStream(upstream)
        with lib.Client() as client, client.stream("GET", gated.url) as response:
            for data in response.iter_bytes():
                gated.received(data)
        return JSONResponse(gated.result())

    async def upload_async(request: Request) -> JSONResponse:
        async def parts() -> AsyncIterator[bytes]:
            for part in UPLOAD_PARTS:
                yield part

        async with lib.AsyncClient() as client:
            return JSONResponse((await client.post(upstream.url + "/echo", content=parts())).json())

    def upload_sync(request: Request) -> JSONResponse:
        with lib.Client() as client:
            return JSONResponse(
                client.post(upstream.url + "/echo", content=iter(UPLOAD_PARTS)).json()
            )

    async def unreachable(request: Request) -> JSONResponse:
        async with lib.AsyncClient() as client:
            try:
                await client.get(CLOSED_PORT_URL)
            except lib.ConnectError as exc:
                return JSONResponse({"caught": type(exc).__name__}, status_code=502)
        return JSONResponse({"caught": None})

    def create_client(request: Request) -> JSONResponse:
        early["client"] = lib.Client()
        return JSONResponse({})

    def use_client(request: Request) -> JSONResponse:
        with early.pop("client") as client:
            return JSONResponse(_seen(client.get(upstream.url + "/json")))

    return [
        Route("/script-async", script_async),
        Route("/script-sync", script_sync),
        Route("/script-thread", script_thread),
        Route("/stream-async", stream_async),
        Route("/stream-sync", stream_sync),
        Route("/upload-async", upload_async),
        Route("/upload-sync", upload_sync),
        Route("/unreachable", unreachable),
        Route("/client/create", create_client),
        Route("/client/use", use_client),
    ]


def _get(url: str) -> httpx.Response:
    """The test's own call to the app: httpx too, so it passes through the patched transport."""
    with httpx.Client(timeout=10) as client:
        return client.get(url)


def _serve_recorded(
    serve: Callable[..., Any], upstream: Upstream, config: TraceConfig, client: str
) -> str:
    return serve(make_app(_routes(upstream, client), config, client)).url


@pytest.mark.parametrize("flavor", ["async", "sync", "thread"])
def test_every_call_of_a_request_is_recorded_in_order(
    flavor: str,
    client: str,
    serve: Callable[..., Any],
    upstream: Upstream,
    record_config: TraceConfig,
    cassette_dir: Path,
) -> None:
    """AsyncClient, Client in a def endpoint, Client in the threadpool: JSON, form, binary, gzip, 404."""
    response = _get(_serve_recorded(serve, upstream, record_config, client) + f"/script-{flavor}")
    assert response.status_code == 200
    _get(upstream.url + "/json")  # outside any app request: recorded nowhere
    check_script(
        only_cassette(cassette_dir, "GET", f"script-{flavor}"), upstream, client, response.json()
    )


@pytest.mark.parametrize("flavor", ["async", "sync"])
def test_streamed_response_reaches_the_app_chunk_by_chunk(
    flavor: str,
    client: str,
    serve: Callable[..., Any],
    upstream: Upstream,
    record_config: TraceConfig,
    cassette_dir: Path,
) -> None:
    """``client.stream`` with ``aiter_bytes``/``iter_bytes``: the tee must not buffer the body."""
    response = _get(_serve_recorded(serve, upstream, record_config, client) + f"/stream-{flavor}")
    assert response.status_code == 200, response.text
    check_stream(only_cassette(cassette_dir, "GET", f"stream-{flavor}"), response.json())


@pytest.mark.parametrize("flavor", ["async", "sync"])
def test_streamed_upload_is_sent_and_recorded(
    flavor: str,
    client: str,
    serve: Callable[..., Any],
    upstream: Upstream,
    record_config: TraceConfig,
    cassette_dir: Path,
) -> None:
    response = _get(_serve_recorded(serve, upstream, record_config, client) + f"/upload-{flavor}")
    check_upload(only_cassette(cassette_dir, "GET", f"upload-{flavor}"), response.json())


def test_transport_error_is_recorded_and_still_reaches_the_app(
    client: str,
    serve: Callable[..., Any],
    upstream: Upstream,
    record_config: TraceConfig,
    cassette_dir: Path,
) -> None:
    response = _get(_serve_recorded(serve, upstream, record_config, client) + "/unreachable")
    assert (response.status_code, response.json()) == (502, {"caught": "ConnectError"})
    check_transport_error(
        only_cassette(cassette_dir, "GET", "unreachable"), f"{client}.ConnectError"
    )


def test_capture_does_not_change_what_the_app_gets(
    client: str,
    serve: Callable[..., Any],
    upstream: Upstream,
    record_config: TraceConfig,
    cassette_dir: Path,
) -> None:
    recorded = _get(
        _serve_recorded(serve, upstream, record_config, client) + "/script-async"
    ).json()
    plain = _get(
        _serve_recorded(serve, upstream, TraceConfig(mode="off"), client) + "/script-async"
    ).json()
    assert recorded == plain
    assert len(load_cassettes(cassette_dir)) == 1


def test_client_created_before_enable_is_captured(
    client: str, serve: Callable[..., Any], upstream: Upstream, record_config: TraceConfig
) -> None:
    doc = record_with_early_client(serve, _get, _routes(upstream, client), record_config, client)
    (call,) = doc["calls"]
    assert (call["request"]["url"], call["response"]["status"]) == (upstream.url + "/json", 200)


def test_app_instrumented_with_opentelemetry_first(
    client: str, serve: Callable[..., Any], upstream: Upstream, record_config: TraceConfig
) -> None:
    """``HTTPXClientInstrumentor().instrument()`` (or httpx2's) before timetracer: still one client span per call."""
    doc = record_when_app_instrumented_first(
        serve, _get, _routes(upstream, client), record_config, client, "/script-async"
    )
    assert len(doc["calls"]) == len(SCRIPT)


def test_a_json_body_with_an_int_beyond_64_bits_is_recorded(
    serve: Callable[..., Any], upstream: Upstream, record_config: TraceConfig, cassette_dir: Path
) -> None:
    """An amount in wei (10**21) is no 64-bit int: the cassette is written all the same, the
    body kept as the JSON it was."""
    wei = 10**21

    async def pay(request: Request) -> JSONResponse:
        async with httpx.AsyncClient() as client:
            sent = await client.post(f"{upstream.url}/echo", json={"wei": wei})
        return JSONResponse(sent.json())

    app = make_app([Route("/pay", pay, methods=["POST"])], record_config, "httpx")
    assert httpx.post(serve(app).url + "/pay", timeout=30).status_code == 200
    (document,) = load_cassettes(cassette_dir)
    assert document["calls"][0]["request"]["body"]["json"] == {"wei": wei}
