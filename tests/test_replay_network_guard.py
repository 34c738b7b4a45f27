"""Replay: a connection the cassette cannot answer (a client timetracer does not replay,
such as a message broker's) is refused where it is made and reported, never sent."""

from __future__ import annotations

import asyncio
import contextlib
import re
import socket
import socketserver
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from _replay import new_reports, send, uvicorn_process
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

import timetracer_otel
from timetracer_otel.config import TraceConfig
from timetracer_otel.integrations.starlette import auto_setup


class _Broker(socketserver.ThreadingTCPServer):
    """A line-based TCP service on loopback standing for a broker no replayer covers."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self) -> None:
        self.lines: list[bytes] = []
        super().__init__(("127.0.0.1", 0), _BrokerHandler)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.server_address[1]}"


class _BrokerHandler(socketserver.StreamRequestHandler):
    def handle(self) -> None:
        line = self.rfile.readline()
        self.server.lines.append(line)  # type: ignore[attr-defined]
        self.wfile.write(b"queued\n")


@pytest.fixture
def broker() -> Iterator[_Broker]:
    server = _Broker()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def _app(upstream_url: str, broker: _Broker, config: TraceConfig) -> Starlette:
    """``/order`` asks the upstream (httpx: replayed) and publishes to the broker (raw TCP: not)."""
    host, port = broker.server_address[:2]

    async def order(request: Request) -> JSONResponse:
        async with httpx.AsyncClient() as client:
            price = (await client.get(f"{upstream_url}/json")).status_code
        try:
            reader, writer = await asyncio.open_connection(host, port)
            writer.write(b"order 1\n")
            await writer.drain()
            published = (await reader.readline()).decode().strip()
            writer.close()
        except OSError as error:  # the app copes: replay must still report what happened
            published = f"unreachable ({type(error).__name__})"
        return JSONResponse({"price_status": price, "broker": published})

    app = Starlette(routes=[Route("/order", order)])
    auto_setup(app, config=config, plugins=["httpx"])
    return app


def _record_then_replay(
    serve: Callable[..., Any],
    upstream: Any,
    broker: _Broker,
    cassette_dir: Path,
    loop: str = "asyncio",
    **replay: Any,
) -> tuple[dict[str, Any], dict[str, Any], Any]:
    """The recorded and the replayed response to ``/order`` served on ``loop``, and the replay's report."""
    recording = serve(
        _app(upstream.url, broker, TraceConfig(mode="record", cassette_dir=str(cassette_dir)))
    )
    recorded = httpx.get(f"{recording.url}/order", timeout=30).json()
    assert timetracer_otel.flush(30)
    config = TraceConfig(mode="replay", cassette_path=str(cassette_dir), **replay)
    with new_reports() as reports:
        replaying = serve(_app(upstream.url, broker, config), loop=loop)
        replayed = httpx.get(f"{replaying.url}/order", timeout=30).json()
        replaying.stop()
    (report,) = reports
    return recorded, replayed, report


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_a_connection_no_replayer_answers_is_refused_at_its_call_site_and_reported(
    serve: Callable[..., Any], upstream: Any, broker: _Broker, cassette_dir: Path, loop: str
) -> None:
    """uvloop (uvicorn's loop where it is installed) connects in C, not through the socket's methods."""
    recorded, replayed, report = _record_then_replay(serve, upstream, broker, cassette_dir, loop)
    assert recorded == {"price_status": 200, "broker": "queued"}
    assert broker.lines == [b"order 1\n"]  # the recording published; the replay did not
    assert replayed == {"price_status": 200, "broker": "unreachable (NetworkBlockedError)"}
    assert report.refused == [broker.address]
    assert report.verdict == "diff"
    assert f"refused connection: {broker.address}" in report.console_text()
    assert len(report.answered) == 1  # the httpx call was answered from the cassette


def test_allowed_hosts_let_a_replayed_request_reach_a_service_no_replayer_covers(
    serve: Callable[..., Any], upstream: Any, broker: _Broker, cassette_dir: Path
) -> None:
    recorded, replayed, report = _record_then_replay(
        serve, upstream, broker, cassette_dir, allowed_hosts=[broker.address]
    )
    assert replayed == recorded
    assert broker.lines == [b"order 1\n", b"order 1\n"]
    assert (report.refused, report.verdict) == ([], "ok")


def test_a_live_library_leaves_the_network_open(
    serve: Callable[..., Any], upstream: Any, broker: _Broker, cassette_dir: Path
) -> None:
    """A library named live needs the network, so the replay cannot close it (as in pytest)."""
    _, replayed, report = _record_then_replay(
        serve, upstream, broker, cassette_dir, live_plugins=["httpx"]
    )
    assert replayed == {"price_status": 200, "broker": "queued"}
    assert report.refused == []
    assert report.answered == []  # the httpx call went out, live


@pytest.mark.parametrize(
    ("allowed", "loop"),
    [(False, "asyncio"), (False, "uvloop"), (True, "asyncio")],
    ids=["warned", "warned-uvloop", "allowed"],
)
def test_a_connection_outside_requests_goes_out_named_in_one_warning(
    cassette_dir: Path, allowed: bool, loop: str
) -> None:
    """An app opening its broker's connection as it starts (a library no replayer answers)
    still starts in replay, but the connection is named once in a warning, unless the user
    allowed that host; inside a request the same connection would be refused."""
    with socket.socket() as broker:
        broker.bind(("127.0.0.1", 0))
        broker.listen(8)
        address = f"127.0.0.1:{broker.getsockname()[1]}"
        env = {"BROKER_APP_ADDRESS": address}
        recording = {**env, "TIMETRACER_MODE": "record", "TIMETRACER_DIR": str(cassette_dir)}
        with uvicorn_process(recording, "broker_app:create", "--loop", loop) as server:
            send(server.url, [("GET", "/ping", {})])
        replaying = {**env, "TIMETRACER_MODE": "replay", "TIMETRACER_CASSETTE": str(cassette_dir)}
        if allowed:
            replaying["TIMETRACER_ALLOWED_HOSTS"] = address
        with uvicorn_process(replaying, "broker_app:create", "--loop", loop) as server:
            (pong,) = send(server.url, [("GET", "/ping", {})])
        accepted = 0
        broker.settimeout(0)
        with contextlib.suppress(BlockingIOError):
            while True:
                broker.accept()[0].close()
                accepted += 1
    assert pong.json() == {"pong": True}
    assert accepted == 4  # two at each start: the app started in replay as it did recorded
    warned = re.findall(
        rf"a connection to {re.escape(address)} went out while replaying", server.stderr
    )
    assert len(warned) == (0 if allowed else 1), server.stderr
