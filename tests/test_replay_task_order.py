"""A task the request starts runs while the request's own call waits on its server; replayed,
the answer comes at once, yet the task still runs first, as it did when recorded: the UUIDs the
two draw, and the calls that carry them, come in the recorded order (a log sink or an audit
write started with ``create_task``, as real services do).

Recorded through uvicorn against the real Redis, PostgreSQL (asyncpg under SQLAlchemy's asyncio
engine) and a loopback upstream (httpx); replayed with every one of them unreachable."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis.asyncio
from _replay import assert_same_response, cassette_files, new_reports
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

import timetracer_otel
from timetracer_otel.config import TraceConfig
from timetracer_otel.integrations.starlette import auto_setup

_REDIS = "redis://127.0.0.1:{port}/0"
_PG = "postgresql+asyncpg://postgres@127.0.0.1:{port}/test"
_HTTP = "http://127.0.0.1:{port}"
_LIVE_PORTS = {"redis": 6379, "sqlalchemy": 5432}


def _app(library: str, port: int, config: TraceConfig) -> Starlette:
    """``/order``: starts a task that draws a UUID and sends it, then makes a call of its own,
    draws a UUID and sends it; answers with both."""
    if library == "redis":
        client = redis.asyncio.Redis.from_url(_REDIS.format(port=port))

        async def send(kind: str, value: str) -> None:
            await client.rpush("tt-test:task-order", f"{kind}:{value}")

        async def wait() -> None:
            await client.get("tt-test:task-order:settings")

    elif library == "sqlalchemy":
        engine = create_async_engine(_PG.format(port=port))

        async def send(kind: str, value: str) -> None:
            async with engine.connect() as connection:
                await connection.execute(
                    text("SELECT :kind, :value"), {"kind": kind, "value": value}
                )

        async def wait() -> None:
            async with engine.connect() as connection:
                await connection.execute(text("SELECT 1"))

    else:
        base = _HTTP.format(port=port)

        async def send(kind: str, value: str) -> None:
            async with httpx.AsyncClient() as http:
                await http.get(f"{base}/echo", params={kind: value})

        async def wait() -> None:
            async with httpx.AsyncClient() as http:
                await http.get(f"{base}/currencies")

    async def audit() -> str:
        value = str(uuid.uuid4())
        await send("audit", value)
        return value

    async def order(request: Request) -> JSONResponse:
        task = asyncio.get_running_loop().create_task(audit())
        await wait()  # a real call yields to the loop: the task draws and sends first
        value = str(uuid.uuid4())
        await send("order", value)
        return JSONResponse({"audit": await task, "order": value})

    app = Starlette(routes=[Route("/order", order)])
    auto_setup(app, config=config, plugins=[library])
    return app


@pytest.mark.parametrize("library", ["redis", "sqlalchemy", "httpx"])
def test_a_task_the_request_started_runs_first_in_replay_as_it_did_recorded(
    library: str, serve: Callable[..., Any], upstream: Any, cassette_dir: Path
) -> None:
    live_port = _LIVE_PORTS.get(library) or int(upstream.url.rsplit(":", 1)[1])
    recording = serve(
        _app(library, live_port, TraceConfig(mode="record", cassette_dir=str(cassette_dir)))
    )
    recorded = httpx.get(f"{recording.url}/order", timeout=30)
    assert recorded.status_code == 200, recorded.text
    assert timetracer_otel.flush(30)
    (cassette,) = cassette_files(cassette_dir)
    sent_upstream = len(upstream.requests)

    replay_config = TraceConfig(mode="replay", cassette_path=str(cassette))
    # the databases unreachable (nothing listens on port 1); the upstream's URL is part of the call
    replay_port = 1 if library in _LIVE_PORTS else live_port
    with new_reports() as reports:
        server = serve(_app(library, replay_port, replay_config))
        replayed = httpx.get(f"{server.url}/order", timeout=30)
        server.stop()

    assert_same_response(recorded, replayed)
    (report,) = reports
    assert report.ok and report.unmatched == [] and report.unused == []
    assert len(upstream.requests) == sent_upstream
