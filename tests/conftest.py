"""Shared fixtures: a real upstream HTTP server and real uvicorn servers on 127.0.0.1.

Servers listen on sockets the fixtures bind before starting them, so a client can
connect at once (the kernel queues the connection): no waiting, no sleeps.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import json
import os
import secrets
import socket
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlsplit

import pytest
import uvicorn
import uvloop

if TYPE_CHECKING:
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import timetracer_otel
from timetracer_otel.config import TraceConfig

SCHEMA_PATH = Path(timetracer_otel.__file__).parent / "cassette" / "cassette.schema.json"

# the apps tests drive, with test suites of their own (tests/apps/real_service_tests)
collect_ignore_glob = ["apps/*"]


# --------------------------------------------------------------------------- upstream
@dataclass
class Upstream:
    """A real HTTP server on 127.0.0.1 with a few routes the tests call.

    ``gates`` lets a test hold the ``/stream`` route between chunks until the
    application signals that it has received the previous chunk, and hold ``/slow``
    before it answers at all (a client read timeout).
    """

    url: str
    requests: list[dict[str, Any]] = field(default_factory=list)
    gates: dict[str, threading.Event] = field(default_factory=dict)

    def gate(self, name: str) -> threading.Event:
        return self.gates.setdefault(name, threading.Event())


def _make_handler(state: Upstream) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: Any) -> None:
            pass

        def _body(self) -> bytes:
            if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                data = b""
                while True:
                    size = int(self.rfile.readline().strip(), 16)
                    if size == 0:
                        self.rfile.readline()
                        return data
                    data += self.rfile.read(size)
                    self.rfile.readline()
            return self.rfile.read(int(self.headers.get("Content-Length") or 0))

        def _send(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
            self.send_response(status)
            for name, value in (headers or {"Content-Type": "application/json"}).items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def _handle(self) -> None:
            url = urlsplit(self.path)
            query = {k: v[-1] for k, v in parse_qs(url.query).items()}
            body = self._body()
            state.requests.append(
                {
                    "method": self.command,
                    "path": url.path,
                    "query": url.query,
                    "headers": dict(self.headers),
                    "body": body,
                }
            )
            route = url.path
            if route == "/json":
                self._send(
                    200,
                    json.dumps({"login": "octocat", "id": 1, "token": "upstream-secret"}).encode(),
                )
            elif route == "/currencies":  # what a rates API supports: services fetch it once
                self._send(200, json.dumps(["EUR", "GBP", "JPY", "USD"]).encode())
            elif route == "/echo":
                echo = {
                    "method": self.command,
                    "query": url.query,
                    "body": body.decode("latin-1"),
                    "content_type": self.headers.get("Content-Type"),
                }
                self._send(200, json.dumps(echo).encode())
            elif route == "/auth":  # the one right password is "right"
                right = json.loads(body or b"{}").get("password") == "right"
                self._send(200 if right else 401, json.dumps({"authenticated": right}).encode())
            elif route == "/gzip":
                self._send(
                    200,
                    gzip.compress(
                        json.dumps({"compressed": True, "items": list(range(50))}).encode()
                    ),
                    {"Content-Type": "application/json", "Content-Encoding": "gzip"},
                )
            elif route == "/binary":
                self._send(200, bytes(range(256)) * 4, {"Content-Type": "application/octet-stream"})
            elif route == "/bytes":
                size = int(query.get("size", "0"))
                self._send(
                    200,
                    (b"0123456789abcdef" * (size // 16 + 1))[:size],
                    {"Content-Type": "application/octet-stream"},
                )
            elif route.startswith("/status/"):
                self._send(int(route.rsplit("/", 1)[1]), b'{"status": "set"}')
            elif route == "/stream":
                self._stream(int(query.get("chunks", "3")), query.get("gate"))
            elif route == "/slow":  # nothing, not even the status line, until the gate opens
                state.gate(query["gate"]).wait(10)
                self._send(200, b'{"slow": true}')
            else:
                self._send(404, b'{"error": "no such route"}')

        def _stream(self, chunks: int, gate: str | None) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for index in range(chunks + 1):
                # Chunk i > 0, and the terminator after the last, wait for the client to have read chunk i - 1.
                if gate is not None and index > 0 and not state.gate(f"{gate}-{index}").wait(10):
                    break
                if index == chunks:
                    break
                chunk = f"chunk-{index};".encode()
                self.wfile.write(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
                self.wfile.flush()
            self.wfile.write(b"0\r\n\r\n")
            self.wfile.flush()

        do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = _handle

    return Handler


class _UpstreamServer(ThreadingHTTPServer):
    request_queue_size = (
        1024  # the default listen backlog of 5 stalls bursts of concurrent connections
    )


@contextlib.contextmanager
def served_in_a_thread(server: ThreadingHTTPServer) -> Iterator[None]:
    """``server`` serving from a thread for the block; afterwards its port refuses connections."""
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


@contextlib.contextmanager
def running_upstream() -> Iterator[Upstream]:
    """An upstream server for the block; afterwards its port refuses connections (the upstream is down)."""
    state = Upstream(url="")
    server = _UpstreamServer(("127.0.0.1", 0), _make_handler(state))
    server.daemon_threads = True
    state.url = f"http://127.0.0.1:{server.server_address[1]}"
    with served_in_a_thread(server):
        yield state


@pytest.fixture(scope="session")
def upstream() -> Iterator[Upstream]:
    with running_upstream() as state:
        yield state


# --------------------------------------------------------------------------- uvicorn
@dataclass
class RunningServer:
    url: str
    server: uvicorn.Server
    thread: threading.Thread

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(15)


def start_uvicorn(app: Any, **config: Any) -> RunningServer:
    """Run ``app`` under uvicorn on 127.0.0.1 in a thread; connectable as soon as this returns."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(2048)
    options = {"log_level": "warning", "lifespan": "off", "timeout_graceful_shutdown": 5, **config}
    server = uvicorn.Server(uvicorn.Config(app, **options))
    # serve() runs on the loop that runs it, whatever the config says
    run = uvloop.run if options.get("loop") == "uvloop" else asyncio.run
    thread = threading.Thread(target=run, args=(server.serve(sockets=[sock]),), daemon=True)
    thread.start()
    return RunningServer(f"http://127.0.0.1:{sock.getsockname()[1]}", server, thread)


@pytest.fixture
def serve() -> Iterator[Callable[..., RunningServer]]:
    """``serve(app)`` starts uvicorn for ``app``; every server is stopped after the test."""
    running: list[RunningServer] = []

    def _serve(app: Any, **config: Any) -> RunningServer:
        server = start_uvicorn(app, **config)
        running.append(server)
        return server

    yield _serve
    for server in running:
        server.stop()


# --------------------------------------------------------------------------- cassettes
@pytest.fixture(scope="session", autouse=True)
def key_file(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The tests' secret key, never the developer's own key: set
    for the whole session, so module fixtures that record use it too, and so do processes started without
    TIMETRACER_* variables (the default key file is under XDG_CONFIG_HOME). The cassette indexes go to
    the session's own cache (XDG_CACHE_HOME) too, not the developer's."""
    path = tmp_path_factory.mktemp("config") / "timetracer" / "key"
    path.parent.mkdir(mode=0o700)
    # made here: the console lines tests expect stay alone
    path.write_text(secrets.token_hex(32) + "\n", "ascii")
    path.chmod(0o600)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TIMETRACER_KEY_FILE", str(path))
        patch.setenv("XDG_CONFIG_HOME", str(path.parent.parent))
        patch.setenv("XDG_CACHE_HOME", str(tmp_path_factory.mktemp("cache")))
        yield path


@pytest.fixture(autouse=True)
def _clean_timetracer_env(monkeypatch: pytest.MonkeyPatch, key_file: Path) -> None:
    """Tests see no TIMETRACER_* variables from the developer's shell; the secret key is the tests' own."""
    for name in list(os.environ):
        if name.startswith("TIMETRACER_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("TIMETRACER_KEY_FILE", str(key_file))


def load_cassettes(directory: Path) -> list[dict[str, Any]]:
    """Flush pending writes, then every request cassette under ``directory``, oldest first (not
    the process cassette: a library drawing a random value at import, after the setup, makes one)."""
    assert timetracer_otel.flush(30), "cassette writer did not drain"
    paths = sorted(
        (p for p in directory.rglob("*.json") if not p.name.startswith("process__")),
        key=lambda p: p.stat().st_mtime_ns,
    )
    return [json.loads(p.read_text("utf-8")) for p in paths]


def cassettes_by_request(directory: Path) -> dict[tuple[str, str], list[dict[str, Any]]]:
    """The request cassettes under ``directory`` by (method, path), each request's in the order recorded."""
    found: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for doc in sorted(load_cassettes(directory), key=lambda doc: doc["recorded_at"]):
        found.setdefault((doc["request"]["method"], doc["request"]["path"]), []).append(doc)
    return found


def sql_calls(doc: dict[str, Any]) -> list[dict[str, Any]]:
    """The ``sql`` calls of a cassette, in order."""
    return [call for call in doc["calls"] if call["protocol"] == "sql"]


def _validate_all(directory: Path) -> None:
    import jsonschema

    timetracer_otel.flush(30)
    schema = json.loads(SCHEMA_PATH.read_text("utf-8"))
    validator = jsonschema.Draft202012Validator(schema)
    for path in directory.rglob("*.json"):
        errors = sorted(validator.iter_errors(json.loads(path.read_text("utf-8"))), key=str)
        assert not errors, (
            f"{path} does not match the cassette schema: {errors[0].message} at {list(errors[0].path)}"
        )


@pytest.fixture
def cassette_dir(tmp_path: Path) -> Iterator[Path]:
    """A cassette directory for the test; every cassette written there is checked against the schema."""
    directory = tmp_path / "cassettes"
    yield directory
    _validate_all(directory)


@pytest.fixture
def record_config(cassette_dir: Path) -> TraceConfig:
    return TraceConfig(mode="record", cassette_dir=str(cassette_dir))


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    """Every span the global SDK provider finishes during the test."""
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from timetracer_otel._tracing import tracer_provider

    exporter = InMemorySpanExporter()
    tracer_provider().add_span_processor(SimpleSpanProcessor(exporter))
    yield exporter
    exporter.shutdown()  # the processor stays on the provider; a shut down exporter keeps nothing


@pytest.fixture
def connects(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """Every address a ``socket.socket`` of this process tries to connect to during the test."""
    attempts: list[Any] = []
    real = socket.socket.connect

    def connect(sock: socket.socket, address: Any) -> Any:
        attempts.append(address)
        return real(sock, address)

    monkeypatch.setattr(socket.socket, "connect", connect)
    return attempts
