"""aiohttp calls replay from the cassette: same bytes to the app, nothing to the upstream.

Each test records one request through uvicorn against the real upstream, then serves a
second instance of the same app in replay mode with that cassette and sends the same
(or a changed) request.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import json
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import httpx
import pytest
from _outgoing_http import CLOSED_PORT_URL
from conftest import RunningServer, Upstream, load_cassettes
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from timetracer_otel.config import TraceConfig
from timetracer_otel.integrations.starlette import auto_setup
from timetracer_otel.replayers import ReplayMismatchError, ReplaySession, install_replayers
from timetracer_otel.replayers.session import activate, deactivate


def _seen(response: aiohttp.ClientResponse, body: bytes) -> dict[str, Any]:
    headers = sorted([k.lower(), v] for k, v in response.headers.items() if k.lower() != "date")
    return {"status": response.status, "headers": headers, "body": body.hex()}


async def _script(base: str) -> dict[str, Any]:
    """Every way the app uses aiohttp: JSON, form, gzip, binary, streamed, raise_for_status, a dead port."""
    got: dict[str, Any] = {}
    async with aiohttp.ClientSession() as session:
        async with session.get(base + "/json") as response:
            # the token field is redacted in the cassette
            got["json"] = (await response.json())["login"]
        async with session.post(base + "/echo?via=json", json={"name": "ada", "n": 1}) as response:
            got["post_json"] = await response.json()
        async with session.post(
            base + "/echo?via=form", data={"a": "1", "b": "two words"}
        ) as response:
            got["post_form"] = await response.text()
        async with session.get(base + "/gzip") as response:
            got["gzip"] = _seen(response, await response.read())
        async with session.get(base + "/binary") as response:
            got["binary"] = _seen(response, await response.read())
        async with session.get(base + "/stream?chunks=3") as response:
            pieces = [piece async for piece in response.content.iter_chunked(4)]
            got["stream"] = {"text": b"".join(pieces).decode(), "largest": max(map(len, pieces))}
        try:
            async with session.get(base + "/status/404", raise_for_status=True):
                got["404"] = "not raised"
        except aiohttp.ClientResponseError as exc:
            got["404"] = [exc.status, exc.message]
        try:
            await session.get(CLOSED_PORT_URL)
        except aiohttp.ClientConnectorError as exc:
            got["unreachable"] = [type(exc).__name__, str(exc), type(exc.os_error).__name__]
    async with aiohttp.ClientSession(auto_decompress=False, raise_for_status=True) as strict:
        response = await strict.get(base + "/gzip")
        raw = await response.read()
        response.release()
        got["gzip_raw"] = [raw[:2].hex(), json.loads(gzip.decompress(raw))]
        try:
            await strict.get(base + "/status/503")
        except aiohttp.ClientResponseError as exc:
            got["503"] = [exc.status, exc.message]
    return got


def _app(upstream: Upstream, config: TraceConfig, client: str = "aiohttp") -> Starlette:
    """The app under test; ``/lookup`` makes its one call with ``client``."""
    shared: dict[str, aiohttp.ClientSession] = {}

    async def post_aiohttp(q: str, name: str) -> Any:
        async with shared["session"].post(
            "/echo", params={"q": q}, json={"name": name}
        ) as response:
            return await response.json()

    async def post_httpx(q: str, name: str) -> Any:
        async with httpx.AsyncClient(base_url=upstream.url) as session:
            return (await session.post("/echo", params={"q": q}, json={"name": name})).json()

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        # made at startup, before any request (so before any replay session) exists
        async with aiohttp.ClientSession(base_url=upstream.url) as session:
            shared["session"] = session
            yield

    async def script(request: Request) -> JSONResponse:
        return JSONResponse(await _script(upstream.url))

    async def lookup(request: Request) -> JSONResponse:
        query = request.query_params
        try:
            post = post_aiohttp if client == "aiohttp" else post_httpx
            return JSONResponse(await post(query["q"], query["name"]))
        except ReplayMismatchError as exc:
            return JSONResponse({"mismatch": str(exc)}, status_code=409)

    app = Starlette(routes=[Route("/script", script), Route("/lookup", lookup)], lifespan=lifespan)
    auto_setup(app, config=config, plugins=[client])
    return app


def _record(
    serve: Callable[..., Any],
    upstream: Upstream,
    cassette_dir: Path,
    path: str,
    client: str = "aiohttp",
) -> tuple[bytes, Path]:
    """Record ``path`` live; the app's response bytes and the cassette file."""
    server = serve(
        _app(upstream, TraceConfig(mode="record", cassette_dir=str(cassette_dir)), client),
        lifespan="on",
    )
    response = httpx.get(server.url + path, timeout=10)
    assert response.status_code == 200, response.text
    (doc,) = load_cassettes(cassette_dir)
    (cassette,) = cassette_dir.rglob("*.json")
    assert {call["library"] for call in doc["calls"]} == {client}
    return response.content, cassette


def _replaying(serve: Callable[..., Any], upstream: Upstream, cassette: Path) -> RunningServer:
    """A second instance of the app, replaying ``cassette``."""
    return serve(
        _app(upstream, TraceConfig(mode="replay", cassette_path=str(cassette))), lifespan="on"
    )


def test_replay_gives_the_app_the_recorded_bytes_without_the_upstream(
    serve: Callable[..., Any], upstream: Upstream, cassette_dir: Path
) -> None:
    recorded, cassette = _record(serve, upstream, cassette_dir, "/script")
    got = json.loads(recorded)
    assert got["404"] == [404, "Not Found"] and got["503"] == [503, "Service Unavailable"]
    assert got["unreachable"][0::2] == ["ClientConnectorError", "ConnectionRefusedError"]
    assert got["gzip_raw"][0] == "1f8b"  # auto_decompress=False: the app got gzip bytes
    assert got["stream"] == {"text": "chunk-0;chunk-1;chunk-2;", "largest": 4}
    sent = len(upstream.requests)

    replayed = httpx.get(_replaying(serve, upstream, cassette).url + "/script", timeout=10)

    assert (replayed.status_code, replayed.content) == (200, recorded)
    assert len(upstream.requests) == sent


def test_session_created_before_replay_started_is_answered(
    serve: Callable[..., Any], upstream: Upstream, cassette_dir: Path
) -> None:
    """The app's session is made at startup; its base URL and ``params`` make the recorded URL."""
    recorded, cassette = _record(serve, upstream, cassette_dir, "/lookup?q=1&name=ada")
    assert json.loads(recorded)["query"] == "q=1"
    sent = len(upstream.requests)

    replayed = httpx.get(
        _replaying(serve, upstream, cassette).url + "/lookup?q=1&name=ada", timeout=10
    )

    assert (replayed.status_code, replayed.content) == (200, recorded)
    assert len(upstream.requests) == sent


@pytest.mark.parametrize(
    ("query", "differs"),
    [
        ("q=2&name=ada", "query 'q': recorded 1, this call 2"),
        ("q=1&name=bob", 'body: recorded {"name":"ada"}, this call {"name":"bob"}'),
    ],
)
def test_changed_call_raises_mismatch_at_the_call_site(
    query: str, differs: str, serve: Callable[..., Any], upstream: Upstream, cassette_dir: Path
) -> None:
    _, cassette = _record(serve, upstream, cassette_dir, "/lookup?q=1&name=ada")
    sent = len(upstream.requests)

    replayed = httpx.get(_replaying(serve, upstream, cassette).url + "/lookup?" + query, timeout=10)

    assert replayed.status_code == 409  # the app caught ReplayMismatchError where it made the call
    message = replayed.json()["mismatch"]
    q = query.split("&")[0]
    assert f"no recorded call matches POST {upstream.url}/echo?{q} (aiohttp)" in message
    assert f"#0 POST {upstream.url}/echo?q=1 (unused)" in message
    assert differs in message, message
    assert len(upstream.requests) == sent


def test_replayed_call_still_makes_an_opentelemetry_client_span(
    serve: Callable[..., Any], upstream: Upstream, cassette_dir: Path, spans: InMemorySpanExporter
) -> None:
    _, cassette = _record(serve, upstream, cassette_dir, "/lookup?q=1&name=ada")
    server = _replaying(serve, upstream, cassette)
    spans.clear()

    assert httpx.get(server.url + "/lookup?q=1&name=ada", timeout=10).status_code == 200
    assert httpx.get(server.url + "/lookup?q=9&name=ada", timeout=10).status_code == 409
    server.stop()  # joins the server: its requests, and so their server spans, have ended

    finished = spans.get_finished_spans()
    servers = {s.context.span_id for s in finished if s.kind is SpanKind.SERVER}
    urls = {
        s: str(s.attributes.get("url.full", s.attributes.get("http.url")))
        for s in finished
        if s.kind is SpanKind.CLIENT
    }
    # not the test's own httpx calls
    clients = [s for s, url in urls.items() if url.startswith(upstream.url)]
    assert [urls[s] for s in clients] == [f"{upstream.url}/echo?q=1", f"{upstream.url}/echo?q=9"]
    assert all(s.parent is not None and s.parent.span_id in servers for s in clients)
    answered, unmatched = clients
    assert answered.status.status_code is not StatusCode.ERROR
    assert unmatched.status.status_code is StatusCode.ERROR


def test_call_recorded_with_httpx_is_answered_for_aiohttp(
    serve: Callable[..., Any], upstream: Upstream, cassette_dir: Path
) -> None:
    recorded, cassette = _record(
        serve, upstream, cassette_dir, "/lookup?q=1&name=ada", client="httpx"
    )
    sent = len(upstream.requests)

    replayed = httpx.get(
        _replaying(serve, upstream, cassette).url + "/lookup?q=1&name=ada", timeout=10
    )

    # what httpx got, now given to aiohttp
    assert (replayed.status_code, replayed.content) == (
        200,
        recorded,
    )
    assert len(upstream.requests) == sent


@pytest.mark.parametrize(
    ("recorded", "raised"),
    [
        ("httpx.ConnectError", aiohttp.ClientConnectorError),
        ("httpx.ConnectTimeout", aiohttp.ConnectionTimeoutError),
        ("requests.exceptions.ReadTimeout", aiohttp.SocketTimeoutError),
        ("aiohttp.client_exceptions.ServerDisconnectedError", aiohttp.ServerDisconnectedError),
        (
            "aiohttp.client_exceptions.UnixClientConnectorError",
            aiohttp.ClientConnectorError,
        ),  # other arguments
        ("httpx.RemoteProtocolError", aiohttp.ClientConnectionError),
    ],
)
def test_recorded_transport_error_replays_as_aiohttp_exception(
    recorded: str, raised: type[BaseException]
) -> None:
    """The recorded class when it is aiohttp's and can be rebuilt, else aiohttp's class for the kind of failure."""
    request = {
        "method": "GET",
        "url": CLOSED_PORT_URL,
        "headers": [],
        "body": {"size": 0, "encoding": "empty"},
    }
    error = {"type": recorded, "message": "recorded failure"}
    call = {"protocol": "http", "request": request, "response": None, "error": error}
    replay = ReplaySession({"calls": [call]}, "handmade.json")
    install_replayers()

    async def call_dead_port() -> BaseException:
        token = activate(replay)
        try:
            async with aiohttp.ClientSession() as session:
                with pytest.raises(BaseException) as caught:
                    await session.get(CLOSED_PORT_URL)
        finally:
            deactivate(token)
        return caught.value

    replayed = asyncio.run(call_dead_port())
    assert type(replayed) is raised
    # a live attempt at the dead port would say "Connect call failed"
    assert "recorded failure" in str(replayed)
    assert len(replay.answered) == 1
