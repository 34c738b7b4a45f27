"""The reference application of the overhead benchmark, in one of four modes (``BENCH_MODE``).

``/dep`` makes one httpx call to a loopback upstream and one SQLite query through
SQLAlchemy; ``/plain`` has no dependencies. Modes:

- ``bare``: no instrumentation at all;
- ``otel``: plain OpenTelemetry: an SDK provider with a ``BatchSpanProcessor`` (to an
  exporter that drops the batches), the ASGI middleware, the httpx and SQLAlchemy
  instrumentors; no timetracer;
- ``record`` / ``replay``: the same OpenTelemetry set-up, plus timetracer
  (``auto_setup(app, plugins=["httpx", "sqlalchemy"])``, configured by ``TIMETRACER_*``);
- ``peer``: no OpenTelemetry; the ``timetracer`` 1.6.0 package's own Starlette
  ``auto_setup`` with the same plugins (run by the interpreter of its venv, bench/_peer.py).

``BENCH_DISCARD=1`` (record mode, for ``bench/cpu_split.py``): every finished recording
is dropped where it would be queued for the writer, so capture costs can be told apart
from writing costs.

Run by uvicorn: ``uvicorn --factory --app-dir bench _app:create_app``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

MODES = ("bare", "otel", "record", "replay", "peer")


class _DroppingExporter:
    """A span exporter that accepts every batch and keeps nothing: the cost of OTel without a network."""

    def export(self, spans: Sequence[Any]) -> Any:
        from opentelemetry.sdk.trace.export import SpanExportResult

        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        pass

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return True


def _opentelemetry(app: Starlette) -> None:
    """The plain OpenTelemetry set-up every instrumented mode shares."""
    from opentelemetry import trace
    from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware
    from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor
    from opentelemetry.instrumentation.sqlalchemy import SQLAlchemyInstrumentor
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(_DroppingExporter()))  # type: ignore[arg-type]
    trace.set_tracer_provider(provider)
    HTTPXClientInstrumentor().instrument()
    SQLAlchemyInstrumentor().instrument(skip_dep_check=True)
    app.add_middleware(
        OpenTelemetryMiddleware, tracer_provider=provider, exclude_spans=["receive", "send"]
    )


def create_app() -> Starlette:
    """The app for ``BENCH_MODE``, calling ``BENCH_UPSTREAM`` and querying the SQLite file ``BENCH_SQLITE``."""
    mode = os.environ["BENCH_MODE"]
    if mode not in MODES:
        raise ValueError(f"BENCH_MODE must be one of {MODES}, not {mode!r}")
    upstream = os.environ["BENCH_UPSTREAM"]
    state: dict[str, Any] = {}

    async def dep(request: Request) -> JSONResponse:
        from sqlalchemy import text

        item = (await state["client"].get(f"{upstream}/item", params={"id": 42})).json()
        with state["engine"].connect() as connection:
            name, price = connection.execute(
                text("SELECT name, price FROM items WHERE id = :id"), {"id": 42}
            ).one()
        return JSONResponse({"upstream": item, "name": name, "price": price})

    async def plain(request: Request) -> JSONResponse:
        return JSONResponse({"ok": True})

    app = Starlette(routes=[Route("/dep", dep), Route("/plain", plain)])
    if mode not in ("bare", "peer"):
        _opentelemetry(app)
    if mode == "peer":
        from timetracer.integrations.starlette import auto_setup as peer_setup

        peer_setup(app, plugins=["httpx", "sqlalchemy"])
    if mode in ("record", "replay"):
        from timetracer_otel.integrations.starlette import auto_setup

        auto_setup(app, plugins=["httpx", "sqlalchemy"])
        if os.environ.get("BENCH_DISCARD") == "1":
            from opentelemetry import trace

            from timetracer_otel._tracing import cassette_processor

            cassette_processor(trace.get_tracer_provider()).writer.submit = lambda recording: True  # type: ignore
    from sqlalchemy import create_engine  # after the instrumentors, as an application would

    state["engine"] = create_engine(f"sqlite:///{os.environ['BENCH_SQLITE']}")
    state["client"] = httpx.AsyncClient(timeout=30)
    return app
