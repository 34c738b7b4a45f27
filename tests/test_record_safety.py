"""Hostile paths give safe cassette names, and no recording failure ever reaches the app.

Paths are sent over a raw socket, since HTTP clients normalise ``..`` segments away.
"""

from __future__ import annotations

import json
import re
import socket
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import httpx
import pytest
import requests
from _record_support import run_python, stat
from conftest import load_cassettes
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

import timetracer_otel
from timetracer_otel._diagnostics import errors
from timetracer_otel.config import TraceConfig
from timetracer_otel.integrations.starlette import auto_setup

_NAME = re.compile(r"GET__[A-Za-z0-9_-]*__[0-9a-f]{8}\.json")


def safety_app(config: TraceConfig, upstream_url: str = "") -> Starlette:
    """``/``, ``POST /echo`` (the body back) and ``/raw-header`` (requests with a bytes header value).

    Every other path is a recorded 404, named after its raw path.
    """

    async def home(request: Request) -> PlainTextResponse:
        return PlainTextResponse("home")

    async def echo(request: Request) -> Response:
        return Response(await request.body(), media_type="application/octet-stream")

    def raw_header(request: Request) -> PlainTextResponse:
        requests.get(
            f"{upstream_url}/echo", headers={"X-Raw": b"caf\xe9"}, timeout=15
        ).raise_for_status()
        return PlainTextResponse("sent")

    routes = [
        Route("/", home),
        Route("/echo", echo, methods=["POST"]),
        Route("/raw-header", raw_header),
    ]
    app = Starlette(routes=routes)
    auto_setup(app, config=config, plugins=["requests"])
    return app


def _raw_get(url: str, target: str, extra_headers: bytes = b"") -> bytes:
    """Send ``GET <target>`` exactly as given; return the whole response."""
    parts = urlsplit(url)
    with socket.create_connection((parts.hostname, parts.port), timeout=10) as sock:
        request = f"GET {target} HTTP/1.1\r\nHost: {parts.netloc}\r\nConnection: close\r\n".encode(
            "ascii"
        )
        sock.sendall(request + extra_headers + b"\r\n")
        response = b""
        while chunk := sock.recv(65536):
            response += chunk
    return response


def _status(response: bytes) -> int:
    return int(response.split(b" ", 2)[1])


def _timetracer_messages(caplog: pytest.LogCaptureFixture, prefix: str) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == "timetracer" and r.getMessage().startswith(prefix)
    ]


_HOSTILE = {
    "dot_dot": "/../../etc/passwd",
    "encoded_dots": "/%2e%2e/%2e%2e/x",
    "backslashes": "/..%5C..%5Cwindows%5Cwin.ini",
    "long": "/" + "a" * 5000,
    "control_chars": "/a%0Ab%0D%0Ac%09d%00e/..%2F..%2Fetc",
}


@pytest.mark.parametrize("target", list(_HOSTILE.values()), ids=list(_HOSTILE))
def test_hostile_path_gives_a_bounded_name_inside_the_directory(
    target: str,
    serve: Callable[..., Any],
    record_config: TraceConfig,
    cassette_dir: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    assert _status(_raw_get(serve(safety_app(record_config)).url, target)) == 404
    (cassette,) = load_cassettes(cassette_dir)
    assert cassette["request"]["path"] == unquote(target)

    (path,) = cassette_dir.rglob("*.json")
    assert path.resolve().parent.parent == cassette_dir.resolve()
    assert _NAME.fullmatch(path.name) and len(path.name) <= 255

    (line,) = _timetracer_messages(caplog, "timetracer [")
    first, second = line.split("\n")
    assert first.startswith("timetracer [OK] recorded GET /") and first.isprintable()
    assert second == f"  cassette: {path}"


@pytest.fixture
def log_clock(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """The rate limiter's clock, as a one-item list a test can move; its history is restored afterwards."""
    now = [0.0]
    monkeypatch.setattr(errors, "_clock", lambda: now[0])
    monkeypatch.setattr(errors, "_last", {})
    monkeypatch.setattr(errors, "_suppressed", Counter())
    return now


def _get_many(url: str, count: int) -> list[int]:
    with httpx.Client(timeout=15) as client:
        return [client.get(f"{url}/").status_code for _ in range(count)]


def test_unwritable_directory_is_logged_once_per_minute(
    serve: Callable[..., Any],
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    log_clock: list[float],
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    url = serve(safety_app(TraceConfig(mode="record", cassette_dir=str(blocker / "cassettes")))).url
    errors_before = stat("errors.write")

    assert _get_many(url, 20) == [200] * 20
    assert timetracer_otel.flush(30)
    (report,) = _timetracer_messages(caplog, "timetracer: write failed")
    assert "NotADirectoryError" in report
    assert stat("errors.write") - errors_before == 20

    log_clock[0] += 59
    assert _get_many(url, 1) == [200]
    assert timetracer_otel.flush(30)
    assert len(_timetracer_messages(caplog, "timetracer: write failed")) == 1

    log_clock[0] += 2
    assert _get_many(url, 1) == [200]
    assert timetracer_otel.flush(30)
    assert _timetracer_messages(caplog, "timetracer: write failed")[1].endswith(
        "(20 more since the last report)"
    )
    assert stat("errors.write") - errors_before == 22


_DISK_FULL_SCRIPT = """
import json, resource, signal, sys
import httpx, timetracer_otel
from conftest import start_uvicorn
from test_record_safety import safety_app
from timetracer_otel.config import TraceConfig

server = start_uvicorn(safety_app(TraceConfig(mode="record", cassette_dir=sys.argv[1])))
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, (0, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))
with httpx.Client(timeout=15) as client:
    statuses = [client.get(server.url + "/").status_code for _ in range(30)]
assert timetracer_otel.flush(30)
server.stop()
print(json.dumps({"statuses": statuses, "write_errors": timetracer_otel.stats().get("errors.write", 0)}))
"""


def test_full_disk_is_logged_once_and_requests_succeed(tmp_path: Path) -> None:
    """A real write failure (EFBIG from a zero file-size limit) in a fresh process with default logging."""
    cassettes = tmp_path / "cassettes"
    result = run_python(_DISK_FULL_SCRIPT, str(cassettes))
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {"statuses": [200] * 30, "write_errors": 30}
    reports = [line for line in result.stderr.splitlines() if line.startswith("timetracer")]
    assert reports == ["timetracer: write failed: OSError: [Errno 27] File too large"]
    assert [p for p in cassettes.rglob("*") if p.is_file()] == []  # no partial file left behind


def test_failing_redact_hook_writes_nothing_and_is_counted(
    serve: Callable[..., Any], cassette_dir: Path
) -> None:
    def hook(doc: dict) -> None:
        raise ValueError("hook bug")

    url = serve(
        safety_app(TraceConfig(mode="record", cassette_dir=str(cassette_dir), redact_hook=hook))
    ).url
    errors_before = stat("errors.write")
    assert _get_many(url, 3) == [200] * 3
    assert load_cassettes(cassette_dir) == []  # nothing unredacted is written
    assert stat("errors.write") - errors_before == 3


def _capture_bug(*args: Any, **kwargs: Any) -> None:
    raise RuntimeError("injected capture bug")


_FAULTS = {
    "start": ("timetracer_otel.capture.asgi.latin1_headers", ["asgi.start"]),
    "bodies": ("timetracer_otel.cassette.body.BodySink.feed", ["asgi.request", "asgi.response"]),
    "route": ("timetracer_otel.capture.asgi.route_template", ["asgi.route"]),
}


@pytest.mark.parametrize(("target", "kinds"), list(_FAULTS.values()), ids=list(_FAULTS))
def test_a_capture_bug_never_breaks_the_request(
    target: str,
    kinds: list[str],
    monkeypatch: pytest.MonkeyPatch,
    serve: Callable[..., Any],
    record_config: TraceConfig,
) -> None:
    """A bug injected into capture code: the app still gets and sends every byte, and the error is counted."""
    monkeypatch.setattr(target, _capture_bug)
    url = serve(safety_app(record_config)).url
    before = {kind: stat(f"errors.{kind}") for kind in kinds}
    sent = bytes(range(256)) * 8
    response = httpx.post(f"{url}/echo", content=sent, timeout=15)
    assert (response.status_code, response.content) == (200, sent)
    assert timetracer_otel.flush(30)
    assert all(stat(f"errors.{kind}") > before[kind] for kind in kinds)


def test_malformed_header_values_are_recorded_as_text(
    serve: Callable[..., Any], upstream: Any, record_config: TraceConfig, cassette_dir: Path
) -> None:
    """Inbound obs-text bytes and a bytes header value given to requests both end up in the cassette."""
    url = serve(safety_app(record_config, upstream.url)).url
    errors_before = stat("errors.write")
    assert _status(_raw_get(url, "/raw-header", b"X-Odd: caf\xe9 \xff\x80\r\n")) == 200

    (cassette,) = load_cassettes(cassette_dir)
    assert ["x-odd", "caf\xe9 \xff\x80"] in cassette["request"]["headers"]
    (call,) = cassette["calls"]
    assert ["X-Raw", "caf\xe9"] in call["request"]["headers"]
    assert stat("errors.write") == errors_before
