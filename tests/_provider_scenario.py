"""Run one request through a recorded app in a fresh process and print, as JSON, what happened.

``python _provider_scenario.py <user-provider|record|off> <cassette dir>``. The global
TracerProvider can be set only once per process, so each scenario needs its own.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import httpx
from conftest import start_uvicorn
from opentelemetry import trace
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

import timetracer_otel
from timetracer_otel.config import TraceConfig
from timetracer_otel.integrations.starlette import auto_setup


async def _home(request: Request) -> JSONResponse:
    return JSONResponse({"ok": True})


def main(scenario: str, cassette_dir: Path) -> dict[str, Any]:
    users_exporter = InMemorySpanExporter()
    users_provider = None
    if scenario == "user-provider":
        users_provider = TracerProvider(resource=Resource.create({SERVICE_NAME: "users-service"}))
        users_provider.add_span_processor(SimpleSpanProcessor(users_exporter))
        trace.set_tracer_provider(users_provider)
    app = Starlette(routes=[Route("/", _home)])
    auto_setup(
        app,
        config=TraceConfig(
            mode="off" if scenario == "off" else "record", cassette_dir=str(cassette_dir)
        ),
    )
    server = start_uvicorn(app)
    status = httpx.get(f"{server.url}/").status_code
    timetracer_otel.flush()
    server.stop()
    provider = trace.get_tracer_provider()
    return {
        "status": status,
        "provider": type(provider).__name__,
        "is_users_provider": provider is users_provider,
        "provider_service": (
            provider.resource.attributes.get(SERVICE_NAME)
            if isinstance(provider, TracerProvider)
            else None
        ),
        "users_spans": [
            [span.name, span.kind.name] for span in users_exporter.get_finished_spans()
        ],
        "cassette_services": [
            json.loads(p.read_text("utf-8"))["service"] for p in cassette_dir.rglob("*.json")
        ],
        "middleware": len(app.user_middleware),
    }


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1], Path(sys.argv[2]))))
