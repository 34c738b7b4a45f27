"""What the outgoing-HTTP capture tests share, whatever the client library.

A *script* of upstream calls (JSON, form, binary, gzip, non-2xx, HEAD) that each library's
app runs in one request, what the app saw of each response, and the checks a
cassette must pass: the calls in order with their payloads, each tied to exactly one
OpenTelemetry client span under the server span.
"""

from __future__ import annotations

import base64
import contextlib
import importlib
import json
import uuid
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from conftest import Upstream, load_cassettes
from starlette.applications import Starlette

from timetracer_otel import plugins
from timetracer_otel.cassette.body import decode_body
from timetracer_otel.config import TraceConfig
from timetracer_otel.integrations.starlette import TimeTracerMiddleware, auto_setup

# (method, upstream path, keyword arguments): the same names work for httpx, requests and aiohttp.
SCRIPT: list[tuple[str, str, dict[str, Any]]] = [
    ("GET", "/json", {}),
    ("POST", "/echo?via=json", {"json": {"name": "ada", "n": 1}}),
    ("POST", "/echo?via=form", {"data": {"a": "1", "b": "two words"}}),
    ("GET", "/binary", {}),
    ("GET", "/gzip", {}),
    ("GET", "/status/404", {}),
    ("HEAD", "/json", {}),  # upstream has no HEAD handler: 501, a Content-Length and no body
]
BINARY = bytes(range(256)) * 4
UPLOAD_PARTS = [f"part-{i};".encode() for i in range(3)]
CLOSED_PORT_URL = "http://127.0.0.1:1/nothing"


def make_app(routes: list, config: TraceConfig, plugin: str) -> Starlette:
    """A Starlette app with ``routes``, recorded per ``config`` with the ``plugin`` client enabled."""
    app = Starlette(routes=routes)
    auto_setup(app, config=config, plugins=[plugin])
    return app


def seen(status: int, headers: Iterable[tuple[str, str]], body: bytes) -> dict[str, Any]:
    """What the app got from upstream, as JSON (``Date`` left out: it changes between runs)."""
    pairs = sorted([k.lower(), v] for k, v in headers if k.lower() != "date")
    return {"status": status, "headers": pairs, "body": base64.b64encode(body).decode()}


def _header(pairs: Iterable[Any], name: str) -> Any:
    return next((v for k, v in pairs if k.lower() == name), None)


def only_cassette(directory: Path, method: str, route: str) -> dict[str, Any]:
    """The one cassette written, after checking it sits at ``<day>/<METHOD>__<route>__<id>.json``."""
    (doc,) = load_cassettes(directory)
    (path,) = directory.rglob("*.json")
    assert (
        path.relative_to(directory).as_posix()
        == f"{doc['recorded_at'][:10]}/{method}__{route}__{doc['id']}.json"
    )
    return doc


def cassette_for(directory: Path, target: str) -> dict[str, Any]:
    """The one cassette of the request to ``target`` (path and query) among all written."""
    path, _, query = target.partition("?")
    (doc,) = [
        d
        for d in load_cassettes(directory)
        if (d["request"]["path"], d["request"]["query"]) == (path, query)
    ]
    return doc


def check_call_spans(doc: dict[str, Any]) -> None:
    """Every call names its own CLIENT span, a child of the server span; no other client spans."""
    (server,) = [s for s in doc["spans"] if s["kind"] == "SERVER"]
    clients = [s for s in doc["spans"] if s["kind"] == "CLIENT"]
    assert sorted(c["span_id"] for c in doc["calls"]) == sorted(s["span_id"] for s in clients)
    assert len(clients) == len(doc["calls"])
    assert all(s["parent_id"] == server["span_id"] for s in clients)


def check_script(
    doc: dict[str, Any], upstream: Upstream, library: str, app_saw: list[dict[str, Any]]
) -> None:
    """The cassette holds the script's calls in order, with what was sent and what the app received."""
    calls = doc["calls"]
    assert [(c["request"]["method"], c["request"]["url"]) for c in calls] == [
        (method, upstream.url + path) for method, path, _ in SCRIPT
    ]
    assert {c["library"] for c in calls} == {library}
    for call, got in zip(calls, app_saw, strict=False):
        response = call["response"]
        assert response["status"] == got["status"]
        assert _header(response["headers"], "content-type") == _header(
            got["headers"], "content-type"
        )
        # its token field is redacted in the cassette
        if call["request"]["url"] != upstream.url + "/json":
            assert decode_body(response["body"]) == base64.b64decode(got["body"])
    get_json, post_json, post_form, binary, gzipped, not_found, head = calls

    assert get_json["response"]["body"]["json"]["login"] == "octocat"
    assert get_json["response"]["body"]["json"]["token"] != "upstream-secret"

    assert post_json["request"]["body"]["json"] == {"name": "ada", "n": 1}
    assert _header(post_json["request"]["headers"], "content-type") == "application/json"
    assert json.loads(post_json["response"]["body"]["json"]["body"]) == {"name": "ada", "n": 1}

    assert post_form["request"]["body"] == {
        "size": 15,
        "encoding": "text",
        "text": "a=1&b=two+words",
    }
    assert post_form["response"]["body"]["json"]["content_type"].startswith(
        "application/x-www-form-urlencoded"
    )

    assert binary["response"]["body"]["encoding"] == "base64"
    assert base64.b64decode(binary["response"]["body"]["base64"]) == BINARY
    assert base64.b64decode(app_saw[3]["body"]) == BINARY

    assert gzipped["response"]["body"]["content_encoding"] == "gzip"
    assert gzipped["response"]["body"]["json"] == {"compressed": True, "items": list(range(50))}
    assert json.loads(base64.b64decode(app_saw[4]["body"])) == {
        "compressed": True,
        "items": list(range(50)),
    }

    assert not_found["response"]["status"] == 404 and not_found["error"] is None
    assert head["response"]["status"] == 501
    # complete: there is nothing to read
    assert head["response"]["body"] == {
        "size": 0,
        "encoding": "empty",
    }
    check_call_spans(doc)


def check_upload(doc: dict[str, Any], echoed: dict[str, Any]) -> None:
    """A streamed upload is recorded whole, and upstream got exactly the parts."""
    (call,) = doc["calls"]
    sent = b"".join(UPLOAD_PARTS).decode()
    assert echoed["body"] == sent
    assert call["request"]["body"]["text"] == sent
    assert "complete" not in call["request"]["body"]
    check_call_spans(doc)


def check_transport_error(doc: dict[str, Any], error_type: str) -> None:
    """A call that never got a response is recorded with the exception type and no response."""
    (call,) = doc["calls"]
    assert call["request"]["url"] == CLOSED_PORT_URL
    assert call["response"] is None
    assert call["error"]["type"] == error_type
    check_call_spans(doc)


class GatedStream:
    """Reads upstream ``/stream`` so that chunk ``i + 1`` is only sent once chunk ``i`` reached the app.

    If anything between upstream and app buffered the body, the first chunk would never
    arrive and the upstream would give up (after its 10 s gate timeout) with one chunk sent.
    """

    CHUNKS = 3
    TEXT = "".join(f"chunk-{i};" for i in range(CHUNKS))

    def __init__(self, upstream: Upstream) -> None:
        self._upstream = upstream
        self._name = f"gate-{uuid.uuid4().hex}"
        self.url = f"{upstream.url}/stream?chunks={self.CHUNKS}&gate={self._name}"
        self.text = ""
        self.pieces = 0

    def received(self, data: bytes) -> None:
        done_before = self.text.count(";")
        self.text += data.decode()
        self.pieces += 1
        for index in range(done_before, self.text.count(";")):
            self._upstream.gate(f"{self._name}-{index + 1}").set()

    def result(self) -> dict[str, Any]:
        return {"text": self.text, "pieces": self.pieces}


def check_stream(doc: dict[str, Any], got: dict[str, Any]) -> None:
    """The app got every chunk, one read per chunk at least; the cassette has the whole body."""
    assert got["text"] == GatedStream.TEXT
    assert got["pieces"] >= GatedStream.CHUNKS
    (call,) = doc["calls"]
    assert call["response"]["body"]["text"] == GatedStream.TEXT
    assert "complete" not in call["response"]["body"]
    check_call_spans(doc)


def record_with_early_client(
    serve: Callable[..., Any],
    get: Callable[[str], Any],
    routes: list,
    config: TraceConfig,
    name: str,
) -> dict[str, Any]:
    """Record ``/client/use`` with a client that ``/client/create`` made before ``enable(name)``."""
    with uninstrumented(name):
        app = Starlette(routes=routes)
        app.add_middleware(TimeTracerMiddleware, config=config)
        server = serve(app)
        get(server.url + "/client/create")
        plugins.enable(name)
        get(server.url + "/client/use")
        doc = cassette_for(Path(config.cassette_dir), "/client/use")
    check_call_spans(doc)
    return doc


def record_when_app_instrumented_first(
    serve: Callable[..., Any],
    get: Callable[[str], Any],
    routes: list,
    config: TraceConfig,
    name: str,
    path: str,
) -> dict[str, Any]:
    """Record ``path`` when the app ran the library's OpenTelemetry instrumentor before timetracer."""
    with uninstrumented(name) as instrumentor:
        instrumentor.instrument()
        server = serve(make_app(routes, config, name))
        get(server.url + path)
        doc = cassette_for(Path(config.cassette_dir), path)
    check_call_spans(doc)
    return doc


@contextlib.contextmanager
def uninstrumented(name: str) -> Iterator[Any]:
    """Inside: library ``name`` has neither timetracer capture nor OpenTelemetry instrumentation.

    Yields the library's OpenTelemetry instrumentor; leaves the library uninstrumented again.
    """
    (first,) = plugins.PLUGINS[name].instrumentors  # HTTP clients have one
    module, _, cls = first.partition(":")
    instrumentor = getattr(importlib.import_module(module), cls)()

    def reset() -> None:
        plugins.disable(name)
        if instrumentor.is_instrumented_by_opentelemetry:
            instrumentor.uninstrument()

    reset()
    try:
        yield instrumentor
    finally:
        reset()
