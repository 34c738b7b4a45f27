"""An application whose startup needs its dependencies: the process-cassette tests.

Its lifespan pings Redis, creates its PostgreSQL table with ``metadata.create_all``
(async SQLAlchemy, asyncpg), warms a cache with a Redis GET and SET, and starts a
background task that increments a Redis counter. ``/state`` answers what startup and the
background task got; ``/items`` reads the cache and counts the table's rows in a request.
With ``STARTUP_APP_WORK=checks`` startup only checks its dependencies: a Redis PING and a
``SELECT 1`` on an engine with ``pool_pre_ping``; with ``seed`` it stores an admin keyed by
a new ``uuid4()`` and stamped ``now()`` in Redis, as a first start seeds a database; with
``fail`` it pings Redis and raises; with ``heartbeat`` it starts a task that stamps a Redis
key with ``now()`` three times, after startup (``/state`` shows the stamps); with ``migrate``
it sets a Redis key 1,200 times, as a start running migrations makes thousands of calls. With
``STARTUP_APP_HELPER`` set, startup also runs a helper script in a Python child process
that draws a UUID (a migration or a check, started with the app's environment).

``STARTUP_APP_REDIS`` and ``STARTUP_APP_POSTGRES`` are the URLs, ``STARTUP_APP_SUFFIX``
names the test's keys and table. ``uvicorn --factory startup_app:traced`` sets timetracer
up with ``auto_setup``; ``startup_app:plain`` has no timetracer code (the distro's case).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import secrets
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from datetime import datetime, timezone
from typing import Any

import redis.asyncio
from sqlalchemy import Column, Integer, MetaData, String, Table, func, select, text
from sqlalchemy.ext.asyncio import create_async_engine
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

SUFFIX = os.environ.get("STARTUP_APP_SUFFIX", "")
METADATA = MetaData()
ITEMS = Table(
    f"tt_startup_{SUFFIX}",
    METADATA,
    Column("id", Integer, primary_key=True),
    Column("name", String(40)),
)


def key(name: str) -> str:
    return f"tt-startup:{SUFFIX}:{name}"


async def _full_startup(app: Starlette) -> None:
    cache = app.state.redis
    app.state.found["ping"] = await cache.ping()
    async with app.state.engine.begin() as conn:
        await conn.run_sync(METADATA.create_all)
    warm = await cache.get(key("config"))
    if warm is None:
        await cache.set(key("config"), "warm-v1")
        warm = await cache.get(key("config"))
    app.state.found["cache"] = warm
    app.state.background = asyncio.create_task(cache.incr(key("ticks")))


async def _seed(app: Starlette) -> None:
    """A first-start seed: an admin row keyed by a new ``uuid4()``, stamped ``now()``, sent to Redis;
    and a signing key made at start when none is configured (``/state`` shows its digest)."""
    admin = f"{uuid.uuid4()}@{datetime.now(timezone.utc).isoformat()}"
    await app.state.redis.set(key("admin"), admin)
    app.state.found["admin"] = admin
    signing_key = secrets.token_hex(16)
    app.state.found["signing_key_id"] = hashlib.sha256(signing_key.encode()).hexdigest()[:12]


async def _beat(app: Starlette) -> list[str]:
    stamps = []
    for _ in range(3):
        await asyncio.sleep(0.01)  # the app has started: this runs after the lifespan's startup
        stamps.append(datetime.now(timezone.utc).isoformat())
        await app.state.redis.set(key("heartbeat"), stamps[-1])
    return stamps


async def _heartbeat(app: Starlette) -> None:
    app.state.background = asyncio.create_task(_beat(app))


async def _migrate(app: Starlette) -> None:
    """A start that migrates: a step a command, more than a process cassette keeps after it."""
    for step in range(1_200):
        await app.state.redis.set(key("migration"), step)
    app.state.found["migration"] = await app.state.redis.get(key("migration"))


async def _fail(app: Starlette) -> None:
    await app.state.redis.ping()
    raise RuntimeError("no config")


async def _checks(app: Starlette) -> None:
    app.state.found["ping"] = await app.state.redis.ping()
    async with app.state.engine.connect() as conn:
        app.state.found["select1"] = (await conn.execute(text("SELECT 1"))).scalar_one()


@contextlib.asynccontextmanager
async def lifespan(app: Starlette) -> AsyncIterator[None]:
    app.state.redis = redis.asyncio.Redis.from_url(
        os.environ["STARTUP_APP_REDIS"], decode_responses=True
    )
    app.state.engine = create_async_engine(os.environ["STARTUP_APP_POSTGRES"], pool_pre_ping=True)
    app.state.found = {}
    app.state.background = None
    work = os.environ.get("STARTUP_APP_WORK")
    if os.environ.get("STARTUP_APP_HELPER"):
        helper = [sys.executable, "-c", "import uuid; uuid.uuid4()"]
        await asyncio.to_thread(subprocess.run, helper, check=True, timeout=120)
    chosen = {"checks": _checks, "seed": _seed, "fail": _fail, "heartbeat": _heartbeat}
    await {**chosen, "migrate": _migrate}.get(work or "", _full_startup)(app)
    yield
    await app.state.redis.aclose()
    await app.state.engine.dispose()


async def state(request: Request) -> JSONResponse:
    found: dict[str, Any] = dict(request.app.state.found)
    if hasattr(request.app.state, "imported"):
        found["imported"] = request.app.state.imported
    if request.app.state.background is not None:
        found["ticks"] = await request.app.state.background
    return JSONResponse({name: repr(value) for name, value in found.items()})


async def items(request: Request) -> JSONResponse:
    async with request.app.state.engine.connect() as conn:
        count = (await conn.execute(select(func.count()).select_from(ITEMS))).scalar_one()
    return JSONResponse({"cache": await request.app.state.redis.get(key("config")), "count": count})


def plain() -> Starlette:
    return Starlette(routes=[Route("/state", state), Route("/items", items)], lifespan=lifespan)


def traced() -> Starlette:
    from timetracer_otel.integrations.starlette import auto_setup

    app = plain()
    auto_setup(app, plugins=["redis", "sqlalchemy"])
    return app


def seeded_at_import() -> Starlette:
    """``traced``, then a seed run as the module is set up, before the server starts (Piccolo
    Admin's example): a row keyed by a new ``uuid4()``, sent to Redis with the sync client."""
    app = traced()
    admin = str(uuid.uuid4())
    with redis.Redis.from_url(os.environ["STARTUP_APP_REDIS"], decode_responses=True) as cache:
        cache.set(key("imported"), admin)
    app.state.imported = admin
    return app
