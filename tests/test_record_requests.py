"""Outgoing requests calls (plain, streamed, chunked uploads, errors) are recorded into the request's cassette."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import requests
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
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from timetracer_otel.config import TraceConfig


def _seen(response: requests.Response) -> dict[str, Any]:
    return seen(response.status_code, response.headers.items(), response.content)


def _script(upstream: Upstream) -> list[dict[str, Any]]:
    with requests.Session() as session:
        return [
            _seen(session.request(method, upstream.url + path, **kw)) for method, path, kw in SCRIPT
        ]


def _routes(upstream: Upstream) -> list[Route]:
    """Sync endpoints using requests the usual ways; each returns what it got from upstream."""
    early: dict[str, requests.Session] = {}

    def script(request: Request) -> JSONResponse:
        return JSONResponse(_script(upstream))

    async def script_thread(request: Request) -> JSONResponse:
        return JSONResponse(await run_in_threadpool(_script, upstream))

    def stream(request: Request) -> JSONResponse:
        gated = GatedStream(upstream)
        with requests.get(gated.url, stream=True, timeout=5) as response:
            for data in response.iter_content(chunk_size=None):
                gated.received(data)
        return JSONResponse(gated.result())

    def upload(request: Request) -> JSONResponse:
        return JSONResponse(
            requests.post(upstream.url + "/echo", data=iter(UPLOAD_PARTS), timeout=5).json()
        )

    def unreachable(request: Request) -> JSONResponse:
        try:
            requests.get(CLOSED_PORT_URL, timeout=5)
        except requests.exceptions.ConnectionError as exc:
            return JSONResponse({"caught": type(exc).__name__}, status_code=502)
        return JSONResponse({"caught": None})

    def create_client(request: Request) -> JSONResponse:
        early["session"] = requests.Session()
        return JSONResponse({})

    def use_client(request: Request) -> JSONResponse:
        with early.pop("session") as session:
            return JSONResponse(_seen(session.get(upstream.url + "/json")))

    return [
        Route("/script", script),
        Route("/script-thread", script_thread),
        Route("/stream", stream),
        Route("/upload", upload),
        Route("/unreachable", unreachable),
        Route("/client/create", create_client),
        Route("/client/use", use_client),
    ]


def _get(url: str) -> requests.Response:
    """The test's own call to the app: requests too, so it passes through the patched adapter."""
    return requests.get(url, timeout=10)


def _serve_recorded(serve: Callable[..., Any], upstream: Upstream, config: TraceConfig) -> str:
    return serve(make_app(_routes(upstream), config, "requests")).url


@pytest.mark.parametrize("route", ["script", "script-thread"])
def test_every_call_of_a_request_is_recorded_in_order(
    route: str,
    serve: Callable[..., Any],
    upstream: Upstream,
    record_config: TraceConfig,
    cassette_dir: Path,
) -> None:
    """In a def endpoint and from the threadpool: JSON, form, binary, gzip, 404."""
    response = _get(_serve_recorded(serve, upstream, record_config) + f"/{route}")
    assert response.status_code == 200
    _get(upstream.url + "/json")  # outside any app request: recorded nowhere
    check_script(only_cassette(cassette_dir, "GET", route), upstream, "requests", response.json())


def test_streamed_response_reaches_the_app_chunk_by_chunk(
    serve: Callable[..., Any], upstream: Upstream, record_config: TraceConfig, cassette_dir: Path
) -> None:
    """``stream=True`` with ``iter_content``: the raw tee must not read ahead."""
    response = _get(_serve_recorded(serve, upstream, record_config) + "/stream")
    assert response.status_code == 200, response.text
    check_stream(only_cassette(cassette_dir, "GET", "stream"), response.json())


def test_streamed_upload_is_sent_and_recorded(
    serve: Callable[..., Any], upstream: Upstream, record_config: TraceConfig, cassette_dir: Path
) -> None:
    response = _get(_serve_recorded(serve, upstream, record_config) + "/upload")
    check_upload(only_cassette(cassette_dir, "GET", "upload"), response.json())


def test_transport_error_is_recorded_and_still_reaches_the_app(
    serve: Callable[..., Any], upstream: Upstream, record_config: TraceConfig, cassette_dir: Path
) -> None:
    response = _get(_serve_recorded(serve, upstream, record_config) + "/unreachable")
    assert (response.status_code, response.json()) == (502, {"caught": "ConnectionError"})
    check_transport_error(
        only_cassette(cassette_dir, "GET", "unreachable"), "requests.exceptions.ConnectionError"
    )


def test_capture_does_not_change_what_the_app_gets(
    serve: Callable[..., Any], upstream: Upstream, record_config: TraceConfig, cassette_dir: Path
) -> None:
    recorded = _get(_serve_recorded(serve, upstream, record_config) + "/script").json()
    plain = _get(_serve_recorded(serve, upstream, TraceConfig(mode="off")) + "/script").json()
    assert recorded == plain
    assert len(load_cassettes(cassette_dir)) == 1


def test_session_created_before_enable_is_captured(
    serve: Callable[..., Any], upstream: Upstream, record_config: TraceConfig
) -> None:
    doc = record_with_early_client(serve, _get, _routes(upstream), record_config, "requests")
    (call,) = doc["calls"]
    assert (call["request"]["url"], call["response"]["status"]) == (upstream.url + "/json", 200)


def test_app_instrumented_with_opentelemetry_first(
    serve: Callable[..., Any], upstream: Upstream, record_config: TraceConfig
) -> None:
    """``RequestsInstrumentor().instrument()`` before timetracer: still one client span per call."""
    doc = record_when_app_instrumented_first(
        serve, _get, _routes(upstream), record_config, "requests", "/script"
    )
    assert len(doc["calls"]) == len(SCRIPT)
