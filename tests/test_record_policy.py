"""What gets recorded: sampling, errors-only, excluded paths, mode ``off``, and the console line."""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from _record_support import run_python, stat
from conftest import load_cassettes
from opentelemetry import trace
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse
from starlette.routing import Route

from timetracer_otel.config import TraceConfig
from timetracer_otel.integrations.starlette import TimeTracerMiddleware, auto_setup

_LINE = (
    r"timetracer \[(?P<tag>OK|ERR)\] recorded (?P<method>GET) (?P<path>\S+)  id=(?P<id>[0-9a-f]{8})"
    r"  status=(?P<status>\d{3})  total=\d+ms  deps=(?P<deps>\S+)\n  cassette: (?P<cassette>\S+)"
)


def _span_is_current() -> bool:
    return trace.get_current_span().get_span_context().is_valid


def policy_app(config: TraceConfig, upstream_url: str) -> Starlette:
    """``/`` makes one httpx call; ``/fail`` answers 503; ``/boom`` raises; ``/health*`` report the span."""

    async def home(request: Request) -> PlainTextResponse:
        async with httpx.AsyncClient() as client:
            (await client.get(f"{upstream_url}/json")).raise_for_status()
        return PlainTextResponse("home")

    async def fail(request: Request) -> JSONResponse:
        return JSONResponse({"error": "unavailable"}, status_code=503)

    async def boom(request: Request) -> None:
        raise RuntimeError("kaboom")

    async def span_state(request: Request) -> JSONResponse:
        return JSONResponse({"span": _span_is_current()})

    routes = [Route("/", home), Route("/fail", fail), Route("/boom", boom)]
    routes += [Route(path, span_state) for path in ("/health", "/health/deep", "/healthz")]
    app = Starlette(routes=routes)
    auto_setup(app, config=config, plugins=["httpx"])
    return app


@pytest.mark.parametrize(("rate", "expected"), [(0.0, 0), (1.0, 5)])
def test_sample_rate_decides_how_many_are_written(
    rate: float, expected: int, serve: Callable[..., Any], upstream: Any, cassette_dir: Path
) -> None:
    skipped_before = stat("skipped.sample_rate")
    config = TraceConfig(mode="record", cassette_dir=str(cassette_dir), sample_rate=rate)
    url = serve(policy_app(config, upstream.url)).url
    for _ in range(5):
        assert httpx.get(f"{url}/", timeout=15).text == "home"
    assert len(load_cassettes(cassette_dir)) == expected
    assert stat("skipped.sample_rate") - skipped_before == 5 - expected


def test_errors_only_writes_server_errors_and_exceptions(
    serve: Callable[..., Any], upstream: Any, cassette_dir: Path
) -> None:
    skipped_before = stat("skipped.errors_only")
    config = TraceConfig(mode="record", cassette_dir=str(cassette_dir), errors_only=True)
    url = serve(policy_app(config, upstream.url)).url
    with httpx.Client(timeout=15) as client:
        statuses = {
            path: client.get(f"{url}{path}") for path in ("/", "/missing", "/fail", "/boom")
        }
    assert {path: r.status_code for path, r in statuses.items()} == {
        "/": 200,
        "/missing": 404,
        "/fail": 503,
        "/boom": 500,
    }
    # Starlette's own 500 still reaches the client
    assert statuses["/boom"].text == "Internal Server Error"

    cassettes = {c["request"]["path"]: c for c in load_cassettes(cassette_dir)}
    assert set(cassettes) == {"/fail", "/boom"}
    assert cassettes["/fail"]["response"]["status"] == 503
    assert cassettes["/fail"]["error"] is None
    assert cassettes["/boom"]["response"]["status"] == 500
    assert cassettes["/boom"]["error"] == {"type": "RuntimeError", "message": "kaboom"}
    assert stat("skipped.errors_only") - skipped_before == 2


def test_excluded_paths_write_nothing_and_have_no_span(
    serve: Callable[..., Any], upstream: Any, cassette_dir: Path
) -> None:
    config = TraceConfig(mode="record", cassette_dir=str(cassette_dir), exclude_paths=["/health"])
    url = serve(policy_app(config, upstream.url)).url
    with httpx.Client(timeout=15) as client:
        spans = {
            path: client.get(f"{url}{path}").json()["span"]
            for path in ("/health", "/health/deep", "/healthz")
        }
    assert spans == {"/health": False, "/health/deep": False, "/healthz": True}
    assert [c["request"]["path"] for c in load_cassettes(cassette_dir)] == ["/healthz"]


def test_mode_off_installs_nothing(upstream: Any) -> None:
    app = policy_app(TraceConfig(mode="off"), upstream.url)
    assert app.user_middleware == []


def test_mode_off_middleware_passes_the_original_callables(serve: Callable[..., Any]) -> None:
    """The app gets uvicorn's own scope, receive and send objects, and runs with no span."""
    seen: dict[str, Any] = {}

    async def inner(scope: dict, receive: Any, send: Any) -> None:
        seen["inner"] = (scope, receive, send)
        seen["span"] = _span_is_current()
        await PlainTextResponse("off")(scope, receive, send)

    middleware = TimeTracerMiddleware(inner, config=TraceConfig(mode="off"))

    async def outer(scope: dict, receive: Any, send: Any) -> None:
        seen["outer"] = (scope, receive, send)
        await middleware(scope, receive, send)

    assert httpx.get(serve(outer).url + "/", timeout=15).text == "off"
    assert all(a is b for a, b in zip(seen["inner"], seen["outer"], strict=False))
    assert seen["span"] is False


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.getMessage().startswith("timetracer ["):
            self.lines.append(record.getMessage())


@pytest.fixture
def console() -> Iterator[_Records]:
    """The record lines logged on logger ``timetracer``; its level is restored afterwards."""
    logger = logging.getLogger("timetracer")
    handler, level = _Records(), logger.level
    logger.addHandler(handler)
    yield handler
    logger.removeHandler(handler)
    logger.setLevel(level)


def test_console_line_per_recorded_request(
    serve: Callable[..., Any],
    upstream: Any,
    record_config: TraceConfig,
    cassette_dir: Path,
    console: _Records,
) -> None:
    url = serve(policy_app(record_config, upstream.url)).url
    httpx.get(f"{url}/", timeout=15)
    httpx.get(f"{url}/fail", timeout=15)
    cassettes = load_cassettes(cassette_dir)
    assert len(console.lines) == 2
    lines = {m["path"]: m for m in (re.fullmatch(_LINE, line) for line in console.lines) if m}
    assert {path: (m["tag"], m["status"], m["deps"]) for path, m in lines.items()} == {
        "/": ("OK", "200", "http.client:1"),
        "/fail": ("ERR", "503", "none"),
    }
    for cassette in cassettes:
        match = lines[cassette["request"]["path"]]
        assert match["id"] == cassette["id"]
        assert (
            Path(match["cassette"]).name
            == f"GET__{cassette['request']['path'].strip('/')}__{cassette['id']}.json"
        )
        assert Path(match["cassette"]).is_file()

    logging.getLogger("timetracer").setLevel(logging.WARNING)
    httpx.get(f"{url}/", timeout=15)
    assert len(load_cassettes(cassette_dir)) == 3
    assert len(console.lines) == 2


_SUBPROCESS_SCRIPT = """
import logging, sys
import httpx, timetracer_otel
from conftest import start_uvicorn
from test_record_policy import policy_app
from timetracer_otel.config import TraceConfig

server = start_uvicorn(policy_app(TraceConfig(mode="record", cassette_dir="cassettes"), sys.argv[1]))
assert not logging.getLogger().handlers
httpx.get(server.url + "/", timeout=15).raise_for_status()
assert timetracer_otel.flush(30)
print("--- silenced ---", file=sys.stderr, flush=True)
logging.getLogger("timetracer").setLevel(logging.WARNING)
httpx.get(server.url + "/", timeout=15).raise_for_status()
assert timetracer_otel.flush(30)
server.stop()
"""


def test_console_line_on_default_stderr_handler(tmp_path: Path, upstream: Any) -> None:
    """With no logging configured, the line goes to stderr exactly as the user guide shows it."""
    result = run_python(_SUBPROCESS_SCRIPT, upstream.url, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    recorded, silenced = result.stderr.split("--- silenced ---\n")
    assert silenced == ""
    match = re.fullmatch(_LINE + "\n", recorded)
    assert match, recorded
    assert (match["tag"], match["path"], match["deps"]) == ("OK", "/", "http.client:1")
    assert re.fullmatch(
        rf"cassettes/\d{{4}}-\d\d-\d\d/GET____{match['id']}\.json", match["cassette"]
    )
    assert (tmp_path / match["cassette"]).is_file()
