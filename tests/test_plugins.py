"""The plugin facade: names checked up front, enable idempotent, disable really stops, user instrumentation kept."""

from __future__ import annotations

import importlib
import inspect
import re
import subprocess
import sys
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import anyio.to_thread
import httpx
import pytest
import redis
import requests
import urllib3
import wrapt
from apps.replay_app import HTTPX_CLIENTS
from conftest import Upstream, load_cassettes
from opentelemetry.instrumentation.aiohttp_client import AioHttpClientInstrumentor
from opentelemetry.instrumentation.httpx import HTTPX2ClientInstrumentor, HTTPXClientInstrumentor
from opentelemetry.instrumentation.requests import RequestsInstrumentor
from opentelemetry.instrumentation.urllib3 import URLLib3Instrumentor
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from timetracer_otel import plugins
from timetracer_otel.config import TraceConfig
from timetracer_otel.integrations.starlette import auto_setup

INSTRUMENTORS = {
    "httpx": HTTPXClientInstrumentor,
    **({"httpx2": HTTPX2ClientInstrumentor} if "httpx2" in HTTPX_CLIENTS else {}),
    "requests": RequestsInstrumentor,
    "aiohttp": AioHttpClientInstrumentor,
    "urllib3": URLLib3Instrumentor,
}


def _get_with(client: str) -> Callable[[str], Awaitable[Any]]:
    """A GET with httpx or httpx2's ``AsyncClient``."""

    async def get(url: str) -> Any:
        async with importlib.import_module(client).AsyncClient() as session:
            return (await session.get(url)).json()

    return get


async def _get_requests(url: str) -> Any:
    return await anyio.to_thread.run_sync(lambda: requests.get(url, timeout=10).json())


async def _get_aiohttp(url: str) -> Any:
    async with aiohttp.ClientSession() as session, session.get(url) as response:
        return await response.json()


async def _get_urllib3(url: str) -> Any:
    return await anyio.to_thread.run_sync(lambda: urllib3.request("GET", url, timeout=10).json())


CALLERS: dict[str, Callable[[str], Awaitable[Any]]] = {
    **{client: _get_with(client) for client in HTTPX_CLIENTS},
    "requests": _get_requests,
    "aiohttp": _get_aiohttp,
    "urllib3": _get_urllib3,
}


def _reset_plugins() -> None:
    """No library captured or instrumented, whoever instrumented it."""
    for name, instrumentor in INSTRUMENTORS.items():
        plugins.disable(name)
        if instrumentor().is_instrumented_by_opentelemetry:
            instrumentor().uninstrument()


@pytest.fixture(autouse=True)
def _clean_plugins() -> Iterator[None]:
    """Each test starts and ends with no client library instrumented: the facade's state is global."""
    _reset_plugins()
    yield
    _reset_plugins()


def _app(upstream: Upstream) -> Starlette:
    """``GET /call/{library}`` fetches the upstream's ``/json`` with that client library."""

    async def call(request: Request) -> JSONResponse:
        return JSONResponse(await CALLERS[request.path_params["library"]](f"{upstream.url}/json"))

    return Starlette(routes=[Route("/call/{library}", call)])


def _wrappers(owner: type, name: str) -> int:
    """How many wrapt wrappers are stacked on ``owner.name``."""
    layer, count = inspect.getattr_static(owner, name), 0
    while issubclass(type(layer), wrapt.FunctionWrapper):
        layer, count = layer.__wrapped__, count + 1
    return count


def _recorded(
    serve: Callable[..., Any],
    upstream: Upstream,
    cassette_dir: Path,
    library: str,
    steps: list[Callable[[], None]],
) -> list[dict[str, Any]]:
    """Serve the recorded app; before each request run one step. The cassettes, in request order."""
    app = _app(upstream)
    auto_setup(app, config=TraceConfig(mode="record", cassette_dir=str(cassette_dir)))
    url = serve(app).url
    for index, step in enumerate(steps):
        step()
        assert (
            httpx.get(f"{url}/call/{library}", params={"step": index}).json()["login"] == "octocat"
        )
    return sorted(load_cassettes(cassette_dir), key=lambda doc: doc["request"]["query"])


def _client_spans(doc: dict[str, Any]) -> list[dict[str, Any]]:
    return [span for span in doc["spans"] if span["kind"] == "CLIENT"]


def test_unknown_plugin_names_raise_and_change_nothing(record_config: TraceConfig) -> None:
    app = Starlette()
    message = "unknown timetracer plugin(s): 'nope'; known plugins: httpx, httpx2, requests, aiohttp, urllib3, sqlalchemy, asyncpg, psycopg, psycopg2, pymysql, aiomysql, asyncmy, sqlite3, aiosqlite, redis, pymongo, motor, grpc, smtplib, aiosmtplib, amqp, aio_pika"
    # counted, not assumed 0: a replay test earlier in the process leaves its replay layer
    layers = _wrappers(httpx.AsyncHTTPTransport, "handle_async_request")
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        auto_setup(app, config=record_config, plugins=["httpx", "nope"])
    assert app.user_middleware == []
    assert not HTTPXClientInstrumentor().is_instrumented_by_opentelemetry
    assert _wrappers(httpx.AsyncHTTPTransport, "handle_async_request") == layers


def test_auto_setup_without_plugins_records_every_installed_library(
    serve: Callable[..., Any], upstream: Upstream, cassette_dir: Path
) -> None:
    """``auto_setup(app)`` alone records the calls of every installed client library, as replay
    answers every installed library: a cassette of such an app replays."""
    app = _app(upstream)
    auto_setup(app, config=TraceConfig(mode="record", cassette_dir=str(cassette_dir)))
    url = serve(app).url
    for library in CALLERS:
        assert httpx.get(f"{url}/call/{library}").json()["login"] == "octocat"
    docs = sorted(load_cassettes(cassette_dir), key=lambda doc: doc["request"]["path"])
    assert [[call["library"] for call in doc["calls"]] for doc in docs] == [
        [library] for library in sorted(CALLERS)
    ]


def test_mode_off_enables_no_plugin() -> None:
    app = Starlette()
    auto_setup(app, config=TraceConfig(mode="off"), plugins=["httpx", "requests", "aiohttp"])
    assert app.user_middleware == []
    assert not any(
        instrumentor().is_instrumented_by_opentelemetry for instrumentor in INSTRUMENTORS.values()
    )


def test_enabling_httpx_again_is_idempotent(
    serve: Callable[..., Any], upstream: Upstream, cassette_dir: Path
) -> None:
    """``auto_setup(plugins=["httpx"])`` plus the spec's ``enable_httpx()``: one layer, one span, one call."""
    plugins.enable_httpx()
    plugins.enable_httpx()
    (doc,) = _recorded(serve, upstream, cassette_dir, "httpx", [plugins.enable_httpx])

    # OpenTelemetry's wrapper and timetracer's capture, once each
    assert _wrappers(httpx.AsyncHTTPTransport, "handle_async_request") == 2
    assert _wrappers(httpx.HTTPTransport, "handle_request") == 2
    assert [call["library"] for call in doc["calls"]] == ["httpx"]
    assert [span["span_id"] for span in _client_spans(doc)] == [doc["calls"][0]["span_id"]]


_ALIASED_APP = """
import sys

import httpx2

httpx2.alias_httpx()  # an app moving from httpx: its `import httpx` is httpx2
import httpx
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route
from starlette.testclient import TestClient

from timetracer_otel.config import TraceConfig
from timetracer_otel.integrations.starlette import auto_setup


async def home(request):
    async with httpx.AsyncClient() as client:
        return PlainTextResponse((await client.get(sys.argv[1] + "/json")).text)


app = Starlette(routes=[Route("/", home)])
auto_setup(app, config=TraceConfig(mode="record", cassette_dir=sys.argv[2]))
with TestClient(app) as client:
    assert client.get("/").status_code == 200
"""


@pytest.mark.skipif("httpx2" not in HTTPX_CLIENTS, reason="httpx2 needs Python 3.11")
def test_an_app_importing_httpx2_as_httpx_gets_one_client_span_per_call(
    upstream: Upstream, cassette_dir: Path
) -> None:
    """``httpx2.alias_httpx()``: httpx's plugin is httpx2's, enabled once, under httpx2's name."""
    subprocess.run(
        [sys.executable, "-c", _ALIASED_APP, upstream.url, str(cassette_dir)],
        check=True,
        timeout=60,
    )
    (doc,) = load_cassettes(cassette_dir)
    assert [call["library"] for call in doc["calls"]] == ["httpx2"]
    assert [span["span_id"] for span in _client_spans(doc)] == [doc["calls"][0]["span_id"]]


_COMPANION_IMPORTED_BY_ITS_ENABLE = """
import sys
from timetracer_otel import plugins
from timetracer_otel._diagnostics import counters
assert "aiosqlite" not in sys.modules
plugins.enable_installed()  # aiosqlite awaited: enabled when it is imported
plugins.enable("aiosqlite")  # its instrumentor's module imports aiosqlite
import aiosqlite
failed = {k: v for k, v in counters.snapshot().items() if k.startswith("errors.")}
assert failed == {}, failed
assert "aiosqlite" in plugins._enabled
from timetracer_otel import wrapper_layers
assert wrapper_layers.is_installed(aiosqlite.Connection, "_execute")  # its capture
print("enabled")
"""


def test_a_library_first_imported_by_its_own_plugin_is_enabled_once_without_error() -> None:
    """Enabling a plugin imports its instrumentor's module, which imports the library: the
    library's post-import hook (``enable_installed``) must not enable it a second time from
    inside that half-made module (an error was logged for every such plugin)."""
    done = subprocess.run(
        [sys.executable, "-c", _COMPANION_IMPORTED_BY_ITS_ENABLE],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert (done.returncode, done.stdout.strip()) == (0, "enabled"), done.stderr
    assert "plugins.enable failed" not in done.stderr


_SIBLING_IMPORTED_BY_SHARED_INSTRUMENTOR = """
import sys
from timetracer_otel import plugins
from timetracer_otel._diagnostics import counters
assert "httpx" not in sys.modules and "httpx2" not in sys.modules
plugins.enable_installed()  # both awaited: enabled when imported
import {first}  # its instrumentor module, httpx's and httpx2's, imports the other one too
failed = {{k: v for k, v in counters.snapshot().items() if k.startswith("errors.")}}
assert failed == {{}}, failed
print(sorted(plugins._enabled & {{"httpx", "httpx2"}}))
"""


@pytest.mark.skipif("httpx2" not in HTTPX_CLIENTS, reason="httpx2 needs Python 3.11")
@pytest.mark.parametrize("first", ["httpx", "httpx2"])
def test_httpx_and_httpx2_are_both_enabled_whichever_the_app_imports_first(first: str) -> None:
    """httpx and httpx2 share one instrumentor module, which imports both: the hook of the one
    it imports fired while that module was half made, and its plugin was never enabled (its
    calls went out unrecorded)."""
    done = subprocess.run(
        [sys.executable, "-c", _SIBLING_IMPORTED_BY_SHARED_INSTRUMENTOR.format(first=first)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert (done.returncode, done.stdout.strip()) == (0, "['httpx', 'httpx2']"), done.stderr
    assert "plugins.enable failed" not in done.stderr


@pytest.mark.parametrize("library", list(CALLERS))
def test_disable_stops_recording_the_library(
    serve: Callable[..., Any], upstream: Upstream, cassette_dir: Path, library: str
) -> None:
    enabled, disabled = _recorded(
        serve,
        upstream,
        cassette_dir,
        library,
        [getattr(plugins, f"enable_{library}"), getattr(plugins, f"disable_{library}")],
    )
    assert [call["library"] for call in enabled["calls"]] == [library]
    assert len(_client_spans(enabled)) == 1
    # requests sends through urllib3, whose plugin auto_setup enabled too: it has the call now
    below = ["urllib3"] if library == "requests" else []
    assert [call["library"] for call in disabled["calls"]] == below
    assert len(_client_spans(disabled)) == len(below)
    assert not INSTRUMENTORS[library]().is_instrumented_by_opentelemetry


def test_disable_keeps_the_users_own_instrumentation(
    serve: Callable[..., Any], upstream: Upstream, cassette_dir: Path
) -> None:
    HTTPXClientInstrumentor().instrument()
    enabled, disabled = _recorded(
        serve, upstream, cassette_dir, "httpx", [plugins.enable_httpx, plugins.disable_httpx]
    )

    assert HTTPXClientInstrumentor().is_instrumented_by_opentelemetry
    assert [call["library"] for call in enabled["calls"]] == ["httpx"] and len(
        _client_spans(enabled)
    ) == 1
    assert disabled["calls"] == []  # timetracer's capture is gone ...
    assert len(_client_spans(disabled)) == 1  # ... the user's spans are not


_LATE_IMPORT_APP = """
import sys
from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.testclient import TestClient
import timetracer_otel
from timetracer_otel.config import TraceConfig
from timetracer_otel.integrations.starlette import auto_setup

mode, where, url = sys.argv[1:4]


async def visits(request):
    import redis  # first imported here, after timetracer was set up

    client = redis.Redis.from_url(url, socket_connect_timeout=2)
    return JSONResponse({"visits": client.incr("tt-test:late-import:" + where.replace("/", ":"))})


app = Starlette(routes=[Route("/visits", visits)])
config = TraceConfig(mode=mode, cassette_dir=where, cassette_path=where)
auto_setup(app, config)  # every installed library: redis is, not imported yet
print("redis imported at start:", "redis" in sys.modules, flush=True)
with TestClient(app) as client:
    print(client.get("/visits").text, flush=True)
timetracer_otel.flush(30)
"""


def test_a_library_first_imported_by_a_request_is_recorded_and_answered_from_the_cassette(
    tmp_path: Path,
) -> None:
    """Recording and replay take a client library on when the app imports it, not by importing
    every installed library at start (seconds of start-up, and twice a replaying process's
    objects): a library first imported by a request handler is still recorded, then answered
    from the cassette, never from the network."""
    script = tmp_path / "late_import_app.py"
    script.write_text(_LATE_IMPORT_APP)
    cassettes = tmp_path / "cassettes"
    recorded = subprocess.run(
        [sys.executable, str(script), "record", str(cassettes), "redis://127.0.0.1:6379/0"],
        capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    replayed = subprocess.run(
        [sys.executable, str(script), "replay", str(cassettes), "redis://127.0.0.1:1/0"],
        capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    redis.Redis.from_url("redis://127.0.0.1:6379/0").delete(
        "tt-test:late-import:" + str(cassettes).replace("/", ":")
    )
    recorded_lines, replayed_lines = recorded.stdout.splitlines(), replayed.stdout.splitlines()
    assert recorded_lines == ["redis imported at start: False", '{"visits":1}'], recorded.stderr
    assert replayed_lines == ["redis imported at start: False", '{"visits":1}'], replayed.stderr
    assert re.search(
        r"\[OK\] replayed GET /visits .* calls=1/1  unused=0  response=same", replayed.stderr
    )
