"""With ``auto_setup``, the spans of each cassette also go to an OTLP/HTTP collector: the same
spans, redacted as cassettes are, without payload attributes unless asked, and never at the
cost of a request."""

from __future__ import annotations

import json
import threading
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from _replay import send, uvicorn_process
from conftest import Upstream, load_cassettes
from opentelemetry.sdk.trace import TracerProvider
from otlp_receiver import Receiver, running_receiver
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from timetracer_otel._tracing import otlp_processor, tracer_provider
from timetracer_otel.config import TraceConfig
from timetracer_otel.exporters.otlp import otlp_span_processor
from timetracer_otel.integrations.starlette import auto_setup

SECRETS = ("header-secret", "query-secret")

# environment, explicit otlp_endpoint (or None), the endpoint in force
ENDPOINTS = [
    ({}, None, None),
    ({}, "http://collector:4318", "http://collector:4318/v1/traces"),
    ({}, "https://collector/custom/path", "https://collector/custom/path"),
    (
        {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"},
        None,
        "http://collector:4318/v1/traces",
    ),
    (
        {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://gateway/otlp/"},
        None,
        "http://gateway/otlp/v1/traces",
    ),
    (
        {
            "OTEL_EXPORTER_OTLP_ENDPOINT": "http://base:4318",
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://t:4318/v1/traces",
        },
        None,
        "http://t:4318/v1/traces",
    ),
    (
        {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://base:4318"},
        "http://mine:4318",
        "http://mine:4318/v1/traces",
    ),
]


@pytest.mark.parametrize(("environ", "given", "expected"), ENDPOINTS)
def test_the_endpoint_comes_from_the_config_or_the_standard_variables(
    environ: dict[str, str], given: Any, expected: Any
) -> None:
    overrides = {} if given is None else {"otlp_endpoint": given}
    assert TraceConfig.from_env(environ, **overrides).otlp_endpoint == expected


def test_bad_endpoints_and_the_payload_switch() -> None:
    with pytest.raises(
        ValueError,
        match=r"^OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: invalid OTLP endpoint 'localhost:4318'",
    ):
        TraceConfig.from_env({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "localhost:4318"})
    with pytest.raises(
        ValueError, match=r"^TraceConfig\(otlp_endpoint=...\): invalid OTLP endpoint"
    ):
        TraceConfig(otlp_endpoint="ftp://collector")
    assert TraceConfig.from_env({}).export_payloads is False
    assert TraceConfig.from_env({"TIMETRACER_EXPORT_PAYLOADS": "true"}).export_payloads is True


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with running_receiver() as running:
        yield running


def _app(upstream: Upstream, config: TraceConfig) -> Starlette:
    async def profile(request: Request) -> JSONResponse:
        async with httpx.AsyncClient() as client:
            user = (
                await client.get(
                    f"{upstream.url}/json",
                    headers={"Authorization": request.headers["authorization"]},
                )
            ).json()
        return JSONResponse({"login": user["login"]})

    app = Starlette(routes=[Route("/profile", profile)])
    auto_setup(app, config, plugins=["httpx"])
    return app


def test_auto_setup_exports_the_spans_of_each_cassette(
    receiver: Receiver,
    serve: Callable[..., Any],
    upstream: Upstream,
    cassette_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SERVER_REQUEST", "authorization")
    config = TraceConfig(mode="record", cassette_dir=str(cassette_dir), otlp_endpoint=receiver.url)
    processor = otlp_processor(tracer_provider(), config)
    try:
        server = serve(_app(upstream, config))
        # urllib: the test's own request makes no client span (httpx is instrumented), so the trace is the app's alone
        request = urllib.request.Request(
            f"{server.url}/profile?token=query-secret",
            headers={"Authorization": "Bearer header-secret"},
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            assert json.loads(response.read()) == {"login": "octocat"}
        (cassette,) = load_cassettes(cassette_dir)
        assert processor.force_flush()
    finally:
        processor.shutdown()  # later tests' spans must not go to this test's collector
    received = receiver.trace(cassette["trace_id"])
    assert {s.span_id for s in received} == {s["span_id"] for s in cassette["spans"]}
    (server_span,) = [s for s in received if "http.request.header.authorization" in s.attributes]
    assert server_span.attributes["http.request.header.authorization"] == ["[REDACTED]"]
    assert not [secret for secret in SECRETS for body in receiver.bodies if secret.encode() in body]


def _span_with_payload(provider: TracerProvider) -> None:
    with provider.get_tracer("test").start_as_current_span("GET /pay") as span:
        span.set_attribute("timetracer.response.body", '{"card": "4111"}')
        span.set_attribute("http.request.header.authorization", ["Bearer header-secret"])
        span.set_attribute("url.full", "http://shop/pay?token=query-secret&page=2")
        # OpenTelemetry's SDK keeps bytes (psycopg2's instrumentor sets such a db.statement)
        span.set_attribute("http.url", b"http://shop/pay?token=query-secret")
        span.add_event(
            "exception", {"exception.message": "GET http://shop/pay?token=query-secret failed"}
        )


@pytest.mark.parametrize(
    "opted_in", [False, True], ids=["default", "TIMETRACER_EXPORT_PAYLOADS=true"]
)
def test_payload_attributes_leave_only_when_asked_secrets_never(
    receiver: Receiver, opted_in: bool
) -> None:
    environ = {
        "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.url,
        **({"TIMETRACER_EXPORT_PAYLOADS": "true"} if opted_in else {}),
    }
    provider = TracerProvider()  # not the global one: nothing else of the session goes through it
    processor = otlp_span_processor(TraceConfig.from_env(environ))
    provider.add_span_processor(processor)
    _span_with_payload(provider)
    provider.shutdown()
    (span,) = receiver.spans
    assert ("timetracer.response.body" in span.attributes) is opted_in
    assert span.attributes["http.request.header.authorization"] == ["[REDACTED]"]
    assert span.attributes["url.full"] == "http://shop/pay?token=%5BREDACTED%5D&page=2"
    assert span.attributes["http.url"] == "http://shop/pay?token=%5BREDACTED%5D"
    assert not [secret for secret in SECRETS for body in receiver.bodies if secret.encode() in body]


def test_a_full_queue_drops_spans_instead_of_holding_the_app(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """While the collector holds an export, spans beyond the bounded queue are dropped, not waited for."""
    monkeypatch.setenv("OTEL_BSP_MAX_QUEUE_SIZE", "8")
    monkeypatch.setenv("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "4")
    hold = threading.Event()
    with running_receiver(hold=hold) as receiver:
        provider = TracerProvider()
        provider.add_span_processor(otlp_span_processor(TraceConfig(otlp_endpoint=receiver.url)))
        tracer = provider.get_tracer("test")
        for index in range(4):  # one full batch: the export starts and is held
            tracer.start_span(f"first-{index}").end()
        assert receiver.entered.wait(10)
        for index in range(100):
            tracer.start_span(f"more-{index}").end()
        hold.set()
        provider.shutdown()
    assert len(receiver.spans) == 4 + 8


def test_standard_variables_alone_export_from_a_fresh_process(
    receiver: Receiver, upstream: Upstream, cassette_dir: Path
) -> None:
    """The replay app (``auto_setup`` from the environment) under uvicorn; stopping it flushes the exports."""
    env = {
        "TIMETRACER_MODE": "record",
        "TIMETRACER_DIR": str(cassette_dir),
        "REPLAY_APP_UPSTREAM": upstream.url,
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": f"{receiver.url}/v1/traces",
    }
    with uvicorn_process(env) as app:
        assert [r.status_code for r in send(app.url, [("GET", "/mixed", {})])] == [200]
    (cassette,) = load_cassettes(cassette_dir)
    assert [c["library"] for c in cassette["calls"]] == ["httpx", "requests"]
    assert {s.span_id for s in receiver.trace(cassette["trace_id"])} == {
        s["span_id"] for s in cassette["spans"]
    }


def test_a_collector_that_is_down_fails_no_request(upstream: Upstream, cassette_dir: Path) -> None:
    """Requests succeed and are recorded; the failed export is logged. (A short export timeout keeps the exit quick.)"""
    env = {
        "TIMETRACER_MODE": "record",
        "TIMETRACER_DIR": str(cassette_dir),
        "REPLAY_APP_UPSTREAM": upstream.url,
        "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:1",
        "OTEL_EXPORTER_OTLP_TIMEOUT": "1",
    }
    with uvicorn_process(env) as app:
        responses = send(app.url, [("GET", "/mixed", {})] * 3)
    assert [r.status_code for r in responses] == [200] * 3
    assert len(load_cassettes(cassette_dir)) == 3
    assert (
        "timetracer: OTLP export of" in app.stderr
        and "to http://127.0.0.1:1/v1/traces failed" in app.stderr
    ), app.stderr


def test_a_replaying_process_still_exports_its_spans(
    receiver: Receiver, upstream: Upstream, cassette_dir: Path
) -> None:
    """Under TIMETRACER_MODE=replay the exporter's own POST (made with requests, outside any request) goes out."""
    record_env = {
        "TIMETRACER_MODE": "record",
        "TIMETRACER_DIR": str(cassette_dir),
        "REPLAY_APP_UPSTREAM": upstream.url,
    }
    with uvicorn_process(record_env) as app:
        assert [r.status_code for r in send(app.url, [("GET", "/mixed", {})])] == [200]
    (cassette,) = load_cassettes(cassette_dir)
    replay_env = {
        "TIMETRACER_MODE": "replay",
        "TIMETRACER_CASSETTE": str(cassette_dir),
        "REPLAY_APP_UPSTREAM": upstream.url,
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": f"{receiver.url}/v1/traces",
    }
    before = len(upstream.requests)
    with uvicorn_process(replay_env) as app:
        assert [r.status_code for r in send(app.url, [("GET", "/mixed", {})])] == [200]
    assert len(upstream.requests) == before
    assert "OTLP export" not in app.stderr, app.stderr
    assert any(span.name == "GET /mixed" for span in receiver.spans), app.stderr
