"""An application's own OpenTelemetry exporter: its traffic is telemetry, not a dependency of
the request it reports on, so it is neither recorded nor answered nor refused in replay."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from _replay import new_reports
from conftest import load_cassettes
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from otlp_receiver import Receiver, running_receiver
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

import timetracer_otel
from timetracer_otel._tracing import tracer_provider
from timetracer_otel.config import TraceConfig
from timetracer_otel.integrations.starlette import auto_setup


@pytest.fixture
def collector() -> Iterator[Receiver]:
    """The application's own exporter, sending each span as it ends (inside the request) with
    requests to a collector on loopback."""
    with running_receiver() as receiver:
        exporter = OTLPSpanExporter(endpoint=f"{receiver.url}/v1/traces")
        tracer_provider().add_span_processor(SimpleSpanProcessor(exporter))
        yield receiver
        exporter.shutdown()  # the processor stays on the provider; a shut down exporter sends nothing


def _app(upstream_url: str, config: TraceConfig) -> Starlette:
    async def price(request: Request) -> JSONResponse:
        async with httpx.AsyncClient() as client:
            answer = await client.get(f"{upstream_url}/json")
        return JSONResponse({"upstream": answer.status_code})

    app = Starlette(routes=[Route("/price", price)])
    auto_setup(app, config=config, plugins=["httpx", "requests"])
    return app


def test_an_applications_own_span_exports_are_not_dependencies_of_its_requests(
    serve: Callable[..., Any], upstream: Any, cassette_dir: Path, collector: Receiver
) -> None:
    recording = serve(
        _app(upstream.url, TraceConfig(mode="record", cassette_dir=str(cassette_dir)))
    )
    assert httpx.get(f"{recording.url}/price", timeout=30).json() == {"upstream": 200}
    assert timetracer_otel.flush(30)
    exported = len(collector.bodies)
    assert exported > 0  # the exporter posted spans while the request ran
    [cassette] = load_cassettes(cassette_dir)
    assert [call["request"]["url"] for call in cassette["calls"]] == [f"{upstream.url}/json"]

    config = TraceConfig(mode="replay", cassette_path=str(cassette_dir))
    with new_reports() as reports:
        replaying = serve(_app(upstream.url, config))
        assert httpx.get(f"{replaying.url}/price", timeout=30).json() == {"upstream": 200}
        replaying.stop()
    [report] = reports
    assert (report.verdict, report.refused, report.unmatched) == ("ok", [], [])
    assert len(collector.bodies) > exported  # the replay's spans were exported too
