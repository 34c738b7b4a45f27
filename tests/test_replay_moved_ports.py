"""A test suite's stub servers listen on ports the operating system picks, other ones each run:
replay answers a call to a loopback service on another port than recorded from the calls made
to that service, through uvicorn, with the stubs running again on new ports and reached by none
of the replayed calls. Two stubs are never taken for each other, and a port the recording
called is never moved: a call to it that the cassette does not hold fails as a mismatch."""

from __future__ import annotations

import contextlib
import json
import random
import socket
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
import requests
from _replay import assert_same_response, cassette_files, new_reports, replay_config, send
from conftest import served_in_a_thread
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

import timetracer_otel
from timetracer_otel.config import TraceConfig
from timetracer_otel.integrations.starlette import auto_setup


@dataclass
class Stub:
    """A stub server a test suite starts on a port the OS picks; it answers with its own port."""

    url: str
    requests: list[str] = field(default_factory=list)


@contextlib.contextmanager
def _running_stub(port: int = 0) -> Iterator[Stub]:
    """A stub on ``port``, or on one the OS picks."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            stub.requests.append(self.path)
            body = json.dumps({"port": server.server_address[1], "path": self.path}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    stub = Stub(f"http://127.0.0.1:{server.server_address[1]}")
    with served_in_a_thread(server):
        yield stub


def _app(rates: str, stock: str, config: TraceConfig, third: str = "rates") -> Starlette:
    """Asks both stubs the same question (each answers with its port),
    then the ``third`` stub a second one; httpx for the rates stub, requests for the stock stub."""
    then = rates if third == "rates" else stock

    async def both(request: Request) -> JSONResponse:
        async with httpx.AsyncClient() as client:
            first = (await client.get(f"{rates}/quote", params={"n": "1"})).json()
            second = requests.get(f"{stock}/quote", params={"n": "1"}, timeout=10).json()
            third = (await client.get(f"{then}/quote", params={"n": "2"})).json()
        return JSONResponse([first, second, third])

    app = Starlette(routes=[Route("/both", both)])
    auto_setup(app, config=config, plugins=["httpx", "requests"])
    return app


@pytest.fixture
def two_stubs() -> Iterator[tuple[Stub, Stub]]:
    with _running_stub() as rates, _running_stub() as stock:
        yield rates, stock


@pytest.fixture
def recorded(
    serve: Callable[..., Any], cassette_dir: Path
) -> tuple[httpx.Response, Path, tuple[str, str]]:
    """``/both`` recorded against two stubs that are gone afterwards: (response, cassette, their URLs)."""
    with _running_stub() as rates, _running_stub() as stock:
        config = TraceConfig(mode="record", cassette_dir=str(cassette_dir))
        (response,) = send(serve(_app(rates.url, stock.url, config)).url, [("GET", "/both", {})])
        assert timetracer_otel.flush(30)
        urls = (rates.url, stock.url)
    (cassette,) = cassette_files(cassette_dir)
    ports = [f"http://127.0.0.1:{answer['port']}" for answer in response.json()]
    assert ports == [urls[0], urls[1], urls[0]]
    return response, cassette, urls


def _replayed(
    serve: Callable[..., Any], cassette: Path, rates: str, stock: str, third: str = "rates"
) -> tuple[httpx.Response, Any]:
    with new_reports() as reports:
        server = serve(_app(rates, stock, replay_config(cassette), third))
        (response,) = send(server.url, [("GET", "/both", {})])
        server.stop()
    (report,) = reports
    return response, report


@pytest.mark.parametrize("wired", ["as recorded", "the other way round"])
def test_stub_servers_on_new_ports_are_answered_as_the_recorded_ones(
    wired: str,
    serve: Callable[..., Any],
    recorded: tuple[httpx.Response, Path, tuple[str, str]],
    two_stubs: tuple[Stub, Stub],
) -> None:
    """Wired the other way round, the app calls the same stubs in the same order under other
    names: the first new port it calls is the first recorded one, as far as anyone can tell."""
    response, cassette, _ = recorded
    rates, stock = two_stubs if wired == "as recorded" else reversed(two_stubs)
    replayed, report = _replayed(serve, cassette, rates.url, stock.url)
    assert_same_response(response, replayed)
    assert report.ok and not report.unused and len(report.answered) == 3
    assert rates.requests == [] and stock.requests == []


def test_two_stubs_are_never_taken_for_each_other(
    serve: Callable[..., Any],
    recorded: tuple[httpx.Response, Path, tuple[str, str]],
    two_stubs: tuple[Stub, Stub],
) -> None:
    """Once each new port is tied to a recorded one, the stock stub's port asked what only the
    rates stub was asked is a mismatch, not the rates stub's answer."""
    _, cassette, _ = recorded
    rates, stock = two_stubs
    replayed, report = _replayed(serve, cassette, rates.url, stock.url, third="stock")
    assert replayed.status_code == 500
    (error,) = report.unmatched
    assert f"no recorded call matches GET {stock.url}/quote?n=2" in error
    assert rates.requests == [] and stock.requests == []


def test_a_port_the_recording_called_is_not_moved(
    serve: Callable[..., Any], recorded: tuple[httpx.Response, Path, tuple[str, str]]
) -> None:
    """The app given the two recorded addresses the other way round: its calls to those ports
    are matched as they are, and the third (``n=2`` to the stock stub's recorded port, which
    only the rates stub's was asked) fails instead of being answered from the other port."""
    _, cassette, (recorded_rates, recorded_stock) = recorded
    replayed, report = _replayed(serve, cassette, recorded_stock, recorded_rates)
    assert replayed.status_code == 500
    (error,) = report.unmatched
    assert f"no recorded call matches GET {recorded_stock}/quote?n=2" in error


def _fixed_port() -> int:
    """A free port below those the OS picks, as a service's configured port is."""
    for port in random.sample(range(20_000, 32_000), 200):
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise AssertionError("no free port below 32000")


def _fixed_and_stub_app(stub: str, fixed: str, config: TraceConfig, stub_first: bool) -> Starlette:
    """Asks the suite's stub (on a port the OS picks) and a service on a fixed port the same,
    in the order given; answers with what each said, the stub's first."""

    async def both(request: Request) -> JSONResponse:
        order = (stub, fixed) if stub_first else (fixed, stub)
        async with httpx.AsyncClient() as client:
            answers = {url: (await client.get(f"{url}/quote")).json() for url in order}
        return JSONResponse([answers[stub], answers[fixed]])

    app = Starlette(routes=[Route("/both", both)])
    auto_setup(app, config=config, plugins=["httpx"])
    return app


def test_a_new_port_the_os_picked_is_tied_to_the_recorded_one_the_os_picked(
    serve: Callable[..., Any], cassette_dir: Path
) -> None:
    """Recorded asking the service on its fixed port first; replayed asking the stub, on its
    new port, first: the stub takes the stub's recorded answer, not the fixed service's (the
    earliest recorded call asked that way), and the service still gets its own."""
    fixed = _fixed_port()
    with _running_stub(fixed) as service:
        with _running_stub() as stub:
            config = TraceConfig(mode="record", cassette_dir=str(cassette_dir))
            app = _fixed_and_stub_app(stub.url, service.url, config, stub_first=False)
            recorded = send(serve(app).url, [("GET", "/both", {})])
        assert timetracer_otel.flush(30)
        with _running_stub() as stub, new_reports() as reports:
            replaying = replay_config(cassette_files(cassette_dir)[0])
            app = _fixed_and_stub_app(stub.url, service.url, replaying, stub_first=True)
            server = serve(app)
            (replayed,) = send(server.url, [("GET", "/both", {})])
            server.stop()
            assert stub.requests == [] and service.requests == ["/quote"]
    assert replayed.json() == recorded[0].json()
    assert reports[0].ok
