"""A transactional outbox row carries the request's trace context (``propagate.inject``) for
the worker that relays it: replayed under new trace and span ids, the ``INSERT`` still matches
the recorded one, and a row that differs otherwise still does not (SQLAlchemy on a SQLite
file, uvicorn). The Redis case (a task message's labels) is in test_redis.py."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from _replay import assert_same_response, new_reports, send
from opentelemetry import propagate
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

import timetracer_otel
from timetracer_otel.config import TraceConfig
from timetracer_otel.integrations.starlette import auto_setup


def _outbox_app(config: TraceConfig, database: Path) -> Starlette:
    engine = sa.create_engine(f"sqlite:///{database}")
    with engine.begin() as connection:
        connection.execute(
            sa.text("CREATE TABLE IF NOT EXISTS outbox (event TEXT, trace_context TEXT)")
        )

    async def order(request: Request) -> JSONResponse:
        carrier: dict[str, str] = {}
        propagate.inject(carrier)
        with engine.begin() as connection:
            connection.execute(
                sa.text("INSERT INTO outbox (event, trace_context) VALUES (:event, :context)"),
                {"event": f"order {request.path_params['item']}", "context": json.dumps(carrier)},
            )
            pending = connection.execute(sa.text("SELECT count(*) FROM outbox")).scalar()
        return JSONResponse({"pending": pending})

    app = Starlette(routes=[Route("/orders/{item}", order, methods=["POST"])])
    auto_setup(app, config=config, plugins=["sqlalchemy"])
    return app


def test_an_outbox_row_carrying_the_trace_context_replays(
    serve: Callable[..., Any], cassette_dir: Path, tmp_path: Path
) -> None:
    database = tmp_path / "shop.sqlite"
    config = TraceConfig(mode="record", cassette_dir=str(cassette_dir))
    recorded = send(serve(_outbox_app(config, database)).url, [("POST", "/orders/mug", {})])
    assert timetracer_otel.flush(30)
    with sa.create_engine(f"sqlite:///{database}").connect() as connection:
        (stored,) = connection.execute(sa.text("SELECT trace_context FROM outbox")).scalars()
    assert json.loads(stored)["traceparent"].startswith("00-")

    replaying = TraceConfig(mode="replay", cassette_path=str(cassette_dir))
    for item, matches in (("mug", True), ("pen", False)):
        with new_reports() as reports:
            server = serve(_outbox_app(replaying, tmp_path / "empty.sqlite"))
            (replayed,) = send(server.url, [("POST", f"/orders/{item}", {})])
            server.stop()
        (report,) = reports
        assert report.ok is matches, report.console_text()
        if matches:
            assert_same_response(recorded[0], replayed)
