"""Recording never changes what the app receives or sends, and the cassette holds those same bytes.

Every request goes through a real uvicorn on loopback; the app reports a digest of
the body it read, and the cassette's body (decoded) is compared with the bytes sent.
"""

from __future__ import annotations

import enum
import hashlib
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import anyio.to_thread
import httpx
import pytest
from _replay import new_reports
from conftest import Upstream, load_cassettes
from opentelemetry import trace
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, StreamingResponse
from starlette.routing import Route

import timetracer_otel
from timetracer_otel.cassette.body import decode_body
from timetracer_otel.config import DEFAULT_MAX_BODY_BYTES, TraceConfig
from timetracer_otel.integrations.starlette import auto_setup

_GATE_WAIT_SECONDS = 10
_CHUNKS = [b"chunk-0;", b"chunk-1;", b"chunk-2;"]


def _digest(data: bytes) -> dict[str, Any]:
    return {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}


async def _upload(request: Request) -> JSONResponse:
    body = await request.body()
    return JSONResponse(
        {**_digest(body), "transfer_encoding": request.headers.get("transfer-encoding")}
    )


def _app(config: TraceConfig, gates: list[threading.Event]) -> Starlette:
    """``POST /upload`` digests the body it got; ``GET /stream`` yields chunk i only once gate i is set."""

    async def stream(request: Request) -> StreamingResponse:
        async def chunks() -> Any:
            for index, chunk in enumerate(_CHUNKS):
                if index and not await anyio.to_thread.run_sync(
                    gates[index].wait, _GATE_WAIT_SECONDS
                ):
                    yield b"gate-timeout"
                    return
                yield chunk

        return StreamingResponse(chunks(), media_type="text/plain")

    app = Starlette(routes=[Route("/upload", _upload, methods=["POST"]), Route("/stream", stream)])
    auto_setup(app, config=config)
    return app


@pytest.fixture
def app_url(
    serve: Callable[..., Any], record_config: TraceConfig
) -> tuple[str, list[threading.Event]]:
    gates = [threading.Event() for _ in _CHUNKS]
    return serve(_app(record_config, gates)).url, gates


def _cassette_for(cassette_dir: Path, query: str) -> dict[str, Any]:
    matching = [c for c in load_cassettes(cassette_dir) if c["request"]["query"] == query]
    assert len(matching) == 1, f"expected one cassette for ?{query}, got {len(matching)}"
    return matching[0]


_BODIES: dict[str, dict[str, Any]] = {
    "json": {"json": {"name": "café", "items": [1, 2.5, None, True], "nested": {"ü": "ß"}}},
    "form": {"data": {"a": "1", "b": "x y&z=ü"}},
    "multipart": {
        "data": {"field": "value"},
        "files": {"file": ("a.bin", bytes(range(256)), "application/octet-stream")},
    },
    "binary": {
        "content": bytes(range(256)) * 64,
        "headers": {"content-type": "application/octet-stream"},
    },
    "non_utf8": {
        "content": b"caf\xe9 \xff\xfe\x80 end",
        "headers": {"content-type": "text/plain; charset=latin-1"},
    },
}


@pytest.mark.parametrize("case", list(_BODIES))
def test_app_and_cassette_get_the_exact_request_bytes(
    case: str, app_url: tuple, cassette_dir: Path
) -> None:
    url, _ = app_url
    with httpx.Client(timeout=15) as client:
        request = client.build_request("POST", f"{url}/upload?case={case}", **_BODIES[case])
        sent = request.read()
        response = client.send(request)
    assert response.status_code == 200
    assert response.json()["sha256"] == _digest(sent)["sha256"]

    body = _cassette_for(cassette_dir, f"case={case}")["request"]["body"]
    assert decode_body(body) == sent
    assert body["size"] == len(sent)
    assert "truncated" not in body


def _uploads_then_calls_app(upstream: Upstream, config: TraceConfig) -> Starlette:
    """``POST /upload`` digests the body; ``GET /hello`` calls the upstream."""

    async def hello(request: Request) -> JSONResponse:
        async with httpx.AsyncClient() as client:
            called = await client.get(f"{upstream.url}/json")
        return JSONResponse({"upstream": called.status_code})

    app = Starlette(routes=[Route("/upload", _upload, methods=["POST"]), Route("/hello", hello)])
    auto_setup(app, config=config, plugins=["httpx"])
    return app


def _upload_then_calls(url: str) -> list[httpx.Response]:
    with httpx.Client(base_url=url, timeout=15) as client:  # one connection, kept alive
        return [client.post("/upload", content=b"x" * 200_000)] + [
            client.get("/hello") for _ in range(3)
        ]


def test_requests_after_a_large_body_on_the_same_connection_are_recorded_with_their_own_calls(
    serve: Callable[..., Any], upstream: Upstream, record_config: TraceConfig, cassette_dir: Path
) -> None:
    """A body above the server's flow-control limit (uvicorn pauses reading at 64 KiB) makes it
    resume reading from inside the request's receive, in a callback that copies the context:
    the connection's next request started with the upload's recording current, was not
    recorded, and its call went to the upload's cassette. Replay on one connection answers
    each request from its own cassette."""
    recorded = _upload_then_calls(serve(_uploads_then_calls_app(upstream, record_config)).url)
    assert [r.status_code for r in recorded] == [200] * 4
    kept = [(doc["request"]["path"], len(doc["calls"])) for doc in load_cassettes(cassette_dir)]
    assert sorted(kept) == [("/hello", 1)] * 3 + [("/upload", 0)]

    replay_config = TraceConfig(mode="replay", cassette_path=str(cassette_dir))
    sent_upstream = len(upstream.requests)
    with new_reports() as reports:
        server = serve(_uploads_then_calls_app(upstream, replay_config))
        replayed = _upload_then_calls(server.url)
        server.stop()
    assert [r.json() for r in replayed] == [r.json() for r in recorded]
    assert [(r.ok, len(r.unmatched), len(r.unused)) for r in reports] == [(True, 0, 0)] * 4
    assert len(upstream.requests) == sent_upstream  # replay sent none


def test_five_mib_body_reaches_the_app_whole_and_the_cassette_truncated(
    app_url: tuple, cassette_dir: Path
) -> None:
    url, _ = app_url
    sent = (b"0123456789abcdef" * 65536) * 5  # 5 MiB
    response = httpx.post(f"{url}/upload?case=big", content=sent, timeout=15)
    assert response.json()["sha256"] == _digest(sent)["sha256"]

    body = _cassette_for(cassette_dir, "case=big")["request"]["body"]
    assert body["truncated"] is True
    assert body["size"] == len(sent)
    assert decode_body(body) == sent[:DEFAULT_MAX_BODY_BYTES]


def test_chunked_upload_reaches_the_app_and_the_cassette(
    app_url: tuple, cassette_dir: Path
) -> None:
    url, _ = app_url
    parts = [b"first part;", b"\x00\x01 second;", b"third" * 1000]

    def generate() -> Iterator[bytes]:
        yield from parts

    response = httpx.post(f"{url}/upload?case=chunked", content=generate(), timeout=15)
    sent = b"".join(parts)
    assert response.json() == {**_digest(sent), "transfer_encoding": "chunked"}

    cassette = _cassette_for(cassette_dir, "case=chunked")
    assert ["transfer-encoding", "chunked"] in cassette["request"]["headers"]
    assert decode_body(cassette["request"]["body"]) == sent


def test_streaming_response_reaches_the_client_chunk_by_chunk(
    app_url: tuple, cassette_dir: Path
) -> None:
    """Chunk i is produced only after the client has read chunk i-1: a buffering layer would deadlock."""
    url, gates = app_url
    received = []
    with (
        httpx.Client(timeout=15) as client,
        client.stream("GET", f"{url}/stream?case=stream") as response,
    ):
        stream = response.iter_raw()
        for index, expected in enumerate(_CHUNKS):
            got = b""
            while len(got) < len(expected) and (piece := next(stream, b"")):
                got += piece
            received.append(got)
            if index + 1 < len(gates):
                gates[index + 1].set()
        assert next(stream, b"") == b""
    assert received == _CHUNKS

    body = _cassette_for(cassette_dir, "case=stream")["response"]["body"]
    assert decode_body(body) == b"".join(_CHUNKS)
    assert body.get("complete", True) is True


def test_the_route_of_a_path_is_found_on_a_starlette_without_get_route_path(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Starlette before 0.35 has no ``get_route_path``: its routes match by ``matches``, and
    the route template is still found (replay falls back to it for a path no cassette has,
    one holding a sealed token, say); importing the name made it none."""
    import builtins

    from timetracer_otel.inbound import route_template

    async def show(request: Request) -> JSONResponse:
        return JSONResponse({})

    app = Starlette(routes=[Route("/articles/{slug}", show)])
    scope = {"type": "http", "method": "GET", "path": "/articles/a-b", "root_path": "", "app": app}
    real_import = builtins.__import__

    def import_of_an_older_starlette(name: str, *args: Any, **kwargs: Any) -> Any:
        fromlist = kwargs.get("fromlist") or (args[2] if len(args) > 2 else ())
        if name == "starlette.routing" and "get_route_path" in (fromlist or ()):
            raise ImportError("cannot import name 'get_route_path' from 'starlette.routing'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", import_of_an_older_starlette)
    assert route_template(scope, scope) == "/articles/{slug}"


class _StateType(str, enum.Enum):
    """A ``str`` enum, as Prefect's ``StateType``: OpenTelemetry takes it as a string attribute."""

    RUNNING = "RUNNING"


def test_a_span_event_whose_attribute_is_the_apps_str_enum_is_kept_as_its_value(
    serve: Callable[..., Any], cassette_dir: Path
) -> None:
    """Prefect's run telemetry adds span events with its state type: the writer failed on the
    value the app's own type travels as, and the request's cassette was never written."""

    async def run(request: Request) -> JSONResponse:
        tracer = trace.get_tracer("flows")
        with tracer.start_as_current_span("flow-run") as span:
            span.add_event("Running", attributes={"state.type": _StateType.RUNNING})
            span.set_attribute("state.types", [_StateType.RUNNING, "PENDING"])
        return JSONResponse({"state": _StateType.RUNNING.value})

    app = Starlette(routes=[Route("/run", run)])
    auto_setup(app, config=TraceConfig(mode="record", cassette_dir=str(cassette_dir)), plugins=[])
    assert httpx.get(f"{serve(app).url}/run").json() == {"state": "RUNNING"}
    assert timetracer_otel.flush(30)
    (document,) = load_cassettes(cassette_dir)
    (flow_run,) = [span for span in document["spans"] if span["name"] == "flow-run"]
    assert flow_run["events"][0]["attributes"] == {"state.type": "RUNNING"}
    assert flow_run["attributes"]["state.types"] == ["RUNNING", "PENDING"]
