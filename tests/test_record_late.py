"""Spans that end after their request (background work) join its cassette; the span table is bounded."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from _record_support import stat
from _replay import new_reports
from conftest import load_cassettes
from opentelemetry import trace
from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware
from opentelemetry.sdk.trace import TracerProvider
from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse
from starlette.routing import Route

import timetracer_otel
from timetracer_otel._recording import MAX_LATE, ProtocolCall, TraceRecording, activate, deactivate
from timetracer_otel.config import TraceConfig
from timetracer_otel.exporters import CassetteSpanProcessor
from timetracer_otel.integrations.starlette import auto_setup


def test_a_call_made_after_the_response_is_added_to_the_cassette(
    serve: Callable[..., Any], upstream: Any, cassette_dir: Path
) -> None:
    """A task the handler leaves running calls upstream after the response; the cassette is rewritten with it."""
    release = threading.Event()
    finished = threading.Event()
    tasks: set[asyncio.Task] = set()

    async def later() -> None:
        await asyncio.get_running_loop().run_in_executor(None, release.wait, 10)
        async with httpx.AsyncClient() as client:
            await client.get(f"{upstream.url}/echo?late=1")
        finished.set()

    async def handler(request: Request) -> PlainTextResponse:
        async with httpx.AsyncClient() as client:
            await client.get(f"{upstream.url}/echo?early=1")
        task = asyncio.create_task(later())
        tasks.add(task)
        return PlainTextResponse("answered")

    app = Starlette(routes=[Route("/", handler)])
    auto_setup(
        app, config=TraceConfig(mode="record", cassette_dir=str(cassette_dir)), plugins=["httpx"]
    )
    server = serve(app)
    rewrites_before = stat("rewritten")

    assert httpx.get(server.url + "/").text == "answered"
    [first] = load_cassettes(cassette_dir)
    assert [c["request"]["url"].rsplit("?", 1)[1] for c in first["calls"]] == ["early=1"]

    release.set()
    assert finished.wait(10), "the background call did not finish"
    [cassette] = load_cassettes(cassette_dir)
    assert [c["request"]["url"].rsplit("?", 1)[1] for c in cassette["calls"]] == [
        "early=1",
        "late=1",
    ]
    late_call = cassette["calls"][1]
    span_ids = {span["span_id"] for span in cassette["spans"]}
    assert late_call["span_id"] in span_ids
    assert cassette["id"] == first["id"]
    assert stat("rewritten") > rewrites_before


def _processor(**options: Any) -> tuple[CassetteSpanProcessor, trace.Tracer]:
    processor = CassetteSpanProcessor(**options)
    provider = TracerProvider()
    provider.add_span_processor(processor)
    return processor, provider.get_tracer("late-test")


def _start_request(
    processor: CassetteSpanProcessor, tracer: trace.Tracer, directory: Path, index: int = 0
) -> tuple[trace.Span, trace.Span]:
    """A recorded request's root span and one child span, both still open."""
    root = tracer.start_span(f"request {index}")
    context = root.get_span_context()
    recording = TraceRecording(
        TraceConfig(mode="record", cassette_dir=str(directory)),
        trace_id=context.trace_id,
        root_span_id=context.span_id,
        method="GET",
        path=f"/{index}",
        query="",
        headers=[],
        service="test",
    )
    processor.begin(recording)
    token = activate(recording)
    try:
        return root, tracer.start_span(f"child {index}", context=trace.set_span_in_context(root))
    finally:
        deactivate(token)


def test_a_span_still_open_when_the_request_ends_is_waited_for(tmp_path: Path) -> None:
    """An inner middleware's span ends just after the server span: the cassette is written once, with it."""
    processor, tracer = _processor()
    recorded, rewritten = stat("recorded"), stat("rewritten")
    root, child = _start_request(processor, tracer, tmp_path)
    root.end()
    child.end()
    assert processor.force_flush(5_000)
    [cassette] = load_cassettes(tmp_path)
    assert [span["name"] for span in cassette["spans"]] == ["request 0", "child 0"]
    assert (stat("recorded") - recorded, stat("rewritten") - rewritten) == (1, 0)


def test_a_span_that_never_ends_holds_its_cassette_only_for_the_grace_period(
    tmp_path: Path,
) -> None:
    """No flush: the writer's own timer writes the cassette once the grace period is over."""
    processor, tracer = _processor(grace_seconds=0.05)
    written = threading.Event()
    handler = logging.Handler()
    handler.emit = lambda record: (
        written.set() if "recorded GET /0" in record.getMessage() else None
    )  # type: ignore[method-assign]
    logging.getLogger("timetracer").addHandler(handler)
    try:
        root, _never_ended = _start_request(processor, tracer, tmp_path)
        root.end()
        assert written.wait(10), "the cassette was never written"
    finally:
        logging.getLogger("timetracer").removeHandler(handler)
    [cassette] = load_cassettes(tmp_path)
    assert [span["name"] for span in cassette["spans"]] == ["request 0"]


def test_evicting_a_written_requests_open_span_does_not_rewrite_its_cassette(
    tmp_path: Path,
) -> None:
    """Eviction is not a span ending: only a span that really ends late rewrites a cassette."""
    processor, tracer = _processor(max_open_spans=2)
    recorded, rewritten = stat("recorded"), stat("rewritten")
    first_root, _never_ended = _start_request(processor, tracer, tmp_path, 1)
    first_root.end()
    assert processor.force_flush(5_000)  # written without waiting out the grace period
    # evicts the first request's span
    second_root, second_child = _start_request(processor, tracer, tmp_path, 2)
    second_child.end()
    second_root.end()
    assert processor.force_flush(5_000)
    assert (stat("recorded") - recorded, stat("rewritten") - rewritten) == (2, 0)


def test_a_task_calling_on_after_the_response_rewrites_once_per_grace_period_and_is_bounded(
    tmp_path: Path,
) -> None:
    """A poller the request left running: each of its calls rewrote the whole cassette and
    printed its console line again (300 of them for 300 calls), and the recording grew for
    as long as the process lived. Now the late spans of a grace period make one rewrite, and
    the first MAX_LATE calls and spans are kept."""
    processor, tracer = _processor(grace_seconds=3600)
    root, child = _start_request(processor, tracer, tmp_path)
    recording = processor._owner[child.get_span_context().span_id]
    child.end()
    root.end()
    assert processor.force_flush(5_000)
    rewritten, dropped = stat("rewritten"), stat("dropped.late_spans")
    late = MAX_LATE + 200
    token = activate(recording)
    try:
        for index in range(late):
            with tracer.start_as_current_span(
                f"late {index}", context=trace.set_span_in_context(root)
            ):
                recording.add_call(
                    ProtocolCall("redis", "redis", {"command": "GET", "args": [f"k{index}"]})
                )
    finally:
        deactivate(token)
    assert stat("rewritten") == rewritten  # due at the end of the grace period
    assert processor.force_flush(5_000)
    assert stat("rewritten") == rewritten + 1
    [cassette] = load_cassettes(tmp_path)
    assert len(cassette["spans"]) == 2 + MAX_LATE
    assert [c["request"]["args"] for c in cassette["calls"]] == [[f"k{i}"] for i in range(MAX_LATE)]
    assert stat("dropped.late_spans") - dropped == late - MAX_LATE


def _calling_upstream(upstream: Any) -> Starlette:
    """An app whose one route makes one httpx call to the upstream, then answers "answered"."""

    async def handler(request: Request) -> PlainTextResponse:
        async with httpx.AsyncClient() as client:
            await client.get(f"{upstream.url}/echo")
        return PlainTextResponse("answered")

    return Starlette(routes=[Route("/", handler)])


def test_the_apps_own_opentelemetry_middleware_makes_the_only_server_span(
    serve: Callable[..., Any], upstream: Any, cassette_dir: Path
) -> None:
    """auto_setup after ``add_middleware(OpenTelemetryMiddleware)``: one server span, no internal twin, no rewrite."""

    app = _calling_upstream(upstream)
    app.add_middleware(OpenTelemetryMiddleware, exclude_spans=["receive", "send"])
    auto_setup(
        app, config=TraceConfig(mode="record", cassette_dir=str(cassette_dir)), plugins=["httpx"]
    )
    rewritten = stat("rewritten")
    assert httpx.get(serve(app).url + "/").text == "answered"
    [cassette] = load_cassettes(cassette_dir)
    assert [(span["name"], span["kind"]) for span in cassette["spans"]] == [
        ("GET /", "SERVER"),
        ("GET", "CLIENT"),
    ]
    assert stat("rewritten") == rewritten


def test_an_outer_span_of_another_provider_is_not_taken_as_the_root(
    serve: Callable[..., Any], upstream: Any, cassette_dir: Path
) -> None:
    """Its end would never reach the cassette processor: timetracer makes its own span below it."""

    app = _calling_upstream(upstream)
    auto_setup(
        app, config=TraceConfig(mode="record", cassette_dir=str(cassette_dir)), plugins=["httpx"]
    )
    app.add_middleware(
        OpenTelemetryMiddleware, tracer_provider=TracerProvider(), exclude_spans=["receive", "send"]
    )
    assert httpx.get(serve(app).url + "/").text == "answered"
    [cassette] = load_cassettes(cassette_dir)
    assert [span["name"] for span in cassette["spans"]] == ["GET /", "GET"]
    assert [call["request"]["url"] for call in cassette["calls"]] == [f"{upstream.url}/echo"]


def test_open_spans_are_bounded_and_the_oldest_evicted(tmp_path: Path) -> None:
    """Requests whose spans never end cannot grow the processor without bound."""
    processor, tracer = _processor(max_open_spans=10)
    evicted_before = stat("evicted.open_spans")
    roots = [_start_request(processor, tracer, tmp_path, index)[0] for index in range(25)]
    assert len(processor._owner) == 10
    assert stat("evicted.open_spans") - evicted_before == 40
    for root in roots[-5:]:  # the requests still tracked finish; the evicted ones never will
        root.end()
    assert processor.force_flush(5_000), "flush still waits for requests whose spans were evicted"
    assert len(list(tmp_path.rglob("*.json"))) == 5


def test_an_error_raised_after_the_response_is_in_the_cassette_and_replays(
    serve: Callable[..., Any], upstream: Any, cassette_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A background task that calls upstream and then raises, after the response went out: the
    cassette, first written with the response, is written again with the call and the error, so
    replay, which raises it too, reports the same request. The console line is given again."""

    async def notify(name: str) -> None:
        async with httpx.AsyncClient() as client:
            await client.get(f"{upstream.url}/status/404", params={"page": name})
        raise LookupError(f"no page for {name}")

    async def handler(request: Request) -> JSONResponse:
        return JSONResponse({"queued": True}, background=BackgroundTask(notify, "ada"))

    def app(config: TraceConfig) -> Starlette:
        app = Starlette(routes=[Route("/summaries", handler, methods=["POST"])])
        auto_setup(app, config=config, plugins=["httpx"])
        return app

    server = serve(app(TraceConfig(mode="record", cassette_dir=str(cassette_dir))))
    recorded = httpx.post(server.url + "/summaries")
    server.stop()  # its requests' tasks done
    assert timetracer_otel.flush(30)
    (doc,) = load_cassettes(cassette_dir)
    assert (recorded.status_code, doc["response"]["status"], len(doc["calls"])) == (200, 200, 1)
    assert doc["error"] == {"type": "LookupError", "message": "no page for ada"}
    lines = [
        r.getMessage().split("\n")[0] for r in caplog.records if "recorded POST" in r.getMessage()
    ]
    assert (
        lines[0].startswith("timetracer [OK] recorded POST /summaries") and "deps=none" in lines[0]
    )
    assert lines[-1].startswith("timetracer [ERR] recorded POST /summaries")
    assert lines[-1].endswith("deps=http.client:1  (updated after the response)")

    (cassette,) = cassette_dir.rglob("*.json")
    with new_reports() as reports:
        server = serve(app(TraceConfig(mode="replay", cassette_path=str(cassette))))
        assert httpx.post(server.url + "/summaries").content == recorded.content
        server.stop()
    (report,) = reports
    assert report.ok and report.differences == [], report.console_text()
