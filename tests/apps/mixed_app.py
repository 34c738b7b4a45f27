"""The application of the mixed-protocol tests: HTTP, SQL, Redis and Mongo in one request.

Each route calls the upstream with httpx, PostgreSQL (asyncpg) and a SQLite file through
SQLAlchemy, Redis with redis.asyncio, and a Mongo server with AsyncMongoClient, each in
its own order: one after the other, the other way round, all at once (``asyncio.gather``),
and, in a ``def`` route, with the sync clients. It answers with the ``repr`` of what each
client gave it, so equal responses mean equal values of equal types.

Everything is made with the app, outside any request and after ``auto_setup``: the
engines, the clients (a ``MongoClient`` with its default ``connect=True``, which starts
connecting at once) and the SQLite schema, with ``create_all`` as the spec's example does.
``/outside`` makes calls from a thread that has lost the request's context.

``create_app(deps, config)``; ``from_environment()`` is the ``uvicorn --factory`` entry
(``MIXED_APP_DEPS`` holds the :class:`Deps` as JSON, the config comes from ``TIMETRACER_*``).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime as dt
import json
import os
import threading
from collections.abc import AsyncIterator, Callable
from decimal import Decimal
from typing import Any

import httpx
import pymongo
import redis
import redis.asyncio
from bson.decimal128 import Decimal128
from sqlalchemy import (
    Column,
    DateTime,
    Integer,
    MetaData,
    Numeric,
    String,
    Table,
    create_engine,
    func,
    insert,
    select,
)
from sqlalchemy.ext.asyncio import create_async_engine
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from timetracer_otel.config import TraceConfig
from timetracer_otel.integrations.starlette import auto_setup

# asyncpg too: SQLAlchemy's statements on it are recorded once, as SQLAlchemy's
PLUGINS = ["httpx", "sqlalchemy", "asyncpg", "redis", "pymongo"]
ROUTES = ("/mixed/sequence", "/mixed/reverse", "/mixed/gather", "/mixed/sync")
AT = dt.datetime(2026, 1, 22, 10, 30, 0, 123000)
AT_UTC = AT.replace(tzinfo=dt.timezone.utc)

ITEMS = Table(
    "items",
    MetaData(),
    Column("id", Integer, primary_key=True),
    Column("n", Integer),
    Column("label", String(40)),
)


@dataclasses.dataclass(frozen=True)
class Deps:
    """Where the dependencies are; ``suffix`` names this test's table, keys and collection."""

    upstream: str
    postgres: str  # postgresql+asyncpg://...
    sqlite: str  # a file path
    redis: str
    mongo: str
    suffix: str


def ledger(suffix: str) -> Table:
    """The PostgreSQL table of the test with ``suffix``: the test creates and drops it."""
    return Table(
        f"tt_mixed_{suffix}",
        MetaData(),
        Column("id", Integer, primary_key=True),
        Column("route", String(40)),
        Column("amount", Numeric(10, 2)),
        Column("at", DateTime(timezone=True)),
    )


class _Clients:
    """Engines and clients of one app, made before any request."""

    def __init__(self, deps: Deps) -> None:
        self.deps = deps
        self.ledger = ledger(deps.suffix)
        self.postgres = create_async_engine(deps.postgres)
        self.lite = create_engine(f"sqlite:///{deps.sqlite}")
        ITEMS.metadata.create_all(self.lite)  # as the spec's example does at import
        self.alite = create_async_engine(f"sqlite+aiosqlite:///{deps.sqlite}")
        self.redis = redis.asyncio.Redis.from_url(deps.redis)
        self.sync_redis = redis.Redis.from_url(deps.redis)
        self.mongo = pymongo.AsyncMongoClient(deps.mongo)
        # connect=True: starts at once
        self.sync_mongo: pymongo.MongoClient = pymongo.MongoClient(deps.mongo)

    def key(self, name: str) -> str:
        return f"tt-mixed:{self.deps.suffix}:{name}"

    def events(self, mongo: Any) -> Any:
        return mongo["mixed"][f"events_{self.deps.suffix}"]

    async def close(self) -> None:
        self.sync_mongo.close()
        await self.mongo.close()
        await self.redis.aclose()
        self.sync_redis.close()
        await self.postgres.dispose()
        await self.alite.dispose()
        self.lite.dispose()

    # -- one step per dependency, shared by the async routes --------------------------
    async def http_get(self, route: str) -> Any:
        async with httpx.AsyncClient() as client:
            response = await client.get(f"{self.deps.upstream}/json", params={"route": route})
        return {"status": response.status_code, "login": response.json()["login"]}

    async def http_echo(self, payload: Any) -> Any:
        async with httpx.AsyncClient() as client:
            response = await client.post(f"{self.deps.upstream}/echo", json=payload)
        return response.json()["body"]

    async def sql_postgres(self, route: str) -> str:
        table = self.ledger
        row = insert(table).values(route=route, amount=Decimal("12.50"), at=AT_UTC)
        async with self.postgres.begin() as conn:
            added = await conn.execute(row.returning(table.c.id, table.c.amount, table.c.at))
            totals = await conn.execute(
                select(func.count(), func.sum(table.c.amount)).where(table.c.route == route)
            )
            return repr((tuple(added.one()), tuple(totals.one())))

    async def sql_sqlite(self, route: str) -> str:
        async with self.alite.begin() as conn:
            added = await conn.execute(insert(ITEMS).values(n=100, label=route))
            rows = await conn.execute(select(ITEMS).where(ITEMS.c.n <= 2).order_by(ITEMS.c.n))
            return repr((tuple(added.inserted_primary_key), [tuple(row) for row in rows]))

    async def redis_work(self, route: str) -> str:
        hits = await self.redis.incr(self.key("hits"))
        await self.redis.hset(self.key(route), mapping={"route": route, "n": 1})
        fields = await self.redis.hgetall(self.key(route))
        pipe = self.redis.pipeline(transaction=True)
        pipe.set(self.key(f"{route}:raw"), b"\x00\xffbin").get(
            self.key(f"{route}:raw")
        ).incrbyfloat(self.key("f"), 0.5)
        return repr((hits, fields, await pipe.execute()))

    async def mongo_work(self, route: str) -> str:
        events = self.events(self.mongo)
        added = await events.insert_one(
            {"route": route, "at": AT, "price": Decimal128("9.99"), "raw": b"\x01"}
        )
        found = await events.find({"route": route}).to_list(None)
        return repr((added.inserted_id, found, await events.count_documents({})))


# ----------------------------------------------------------------------------- routes
def _clients(request: Request) -> _Clients:
    return request.app.state.clients


async def sequence(request: Request) -> JSONResponse:
    """HTTP, PostgreSQL, Redis, Mongo, SQLite, HTTP: one after the other."""
    c, route = _clients(request), "sequence"
    out = {
        "get": await c.http_get(route),
        "postgres": await c.sql_postgres(route),
        "redis": await c.redis_work(route),
    }
    out.update(mongo=await c.mongo_work(route), sqlite=await c.sql_sqlite(route))
    out["echo"] = await c.http_echo(out)
    return JSONResponse(out)


async def reverse(request: Request) -> JSONResponse:
    """The other way round: HTTP, SQLite, Mongo, Redis, PostgreSQL, HTTP."""
    c, route = _clients(request), "reverse"
    out = {"echo": await c.http_echo({"route": route}), "sqlite": await c.sql_sqlite(route)}
    out.update(mongo=await c.mongo_work(route), redis=await c.redis_work(route))
    out.update(postgres=await c.sql_postgres(route), get=await c.http_get(route))
    return JSONResponse(out)


async def gather(request: Request) -> JSONResponse:
    """All five at once, their calls interleaved as the event loop runs them; then HTTP with the results."""
    c, route = _clients(request), "gather"
    steps = (
        c.http_get(route),
        c.sql_postgres(route),
        c.redis_work(route),
        c.mongo_work(route),
        c.sql_sqlite(route),
    )
    out = dict(
        zip(
            ("get", "postgres", "redis", "mongo", "sqlite"),
            await asyncio.gather(*steps),
            strict=False,
        )
    )
    out["echo"] = await c.http_echo(out)
    return JSONResponse(out)


def sync(request: Request) -> JSONResponse:
    """The sync clients, in a threadpool thread: MongoClient, SQLite, httpx.Client, redis.Redis."""
    c = _clients(request)
    events = c.events(c.sync_mongo)
    updated = events.update_many({"route": "sequence"}, {"$set": {"seen": True}})
    out = {"mongo": repr((updated.modified_count, events.find_one({"seen": True})))}
    with c.lite.connect() as conn:
        out["sqlite"] = repr(
            [tuple(row) for row in conn.execute(select(ITEMS.c.label).where(ITEMS.c.n == 100))]
        )
    with httpx.Client() as client:
        out["get"] = client.get(f"{c.deps.upstream}/json", params={"route": "sync"}).json()["login"]
    out["redis"] = repr(c.sync_redis.mget(c.key("hits"), c.key("sequence:raw")))
    return JSONResponse(out)


def _outcome(call: Callable[[], Any]) -> str:
    try:
        return f"ran: {call()!r}"
    except Exception as exc:  # noqa: BLE001 - what the call raised is the answer
        return f"{type(exc).__module__}.{type(exc).__qualname__}: {str(exc).splitlines()[0]}"


def _outside_calls(c: _Clients) -> dict[str, str]:
    """Calls made in a thread started without the request's context: they belong to no request."""

    async def postgres() -> Any:
        async with c.postgres.connect() as conn:
            return (await conn.execute(select(func.count()).select_from(c.ledger))).scalar_one()

    def sqlite() -> Any:
        with c.lite.connect() as conn:
            return conn.execute(select(func.count()).select_from(ITEMS)).scalar_one()

    return {
        "postgres": _outcome(lambda: asyncio.run(postgres())),
        "sqlite": _outcome(sqlite),
        "mongo": _outcome(lambda: c.events(c.sync_mongo).find_one({"route": "sequence"})),
        "redis": _outcome(lambda: c.sync_redis.get(c.key("hits"))),
        "http": _outcome(
            lambda: httpx.get(f"{c.deps.upstream}/json", params={"route": "outside"}).status_code
        ),
    }


def outside(request: Request) -> JSONResponse:
    found: dict[str, str] = {}
    worker = threading.Thread(target=lambda: found.update(_outside_calls(_clients(request))))
    worker.start()
    worker.join()
    return JSONResponse(found)


def create_app(deps: Deps, config: TraceConfig | None = None) -> Starlette:
    """The app; ``app.state.clients`` holds its engines and clients."""

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        await app.state.clients.close()

    routes = [
        Route(path, endpoint)
        for path, endpoint in zip(ROUTES, (sequence, reverse, gather, sync), strict=False)
    ]
    app = Starlette(routes=[*routes, Route("/outside", outside)], lifespan=lifespan)
    # before the Mongo clients: pymongo hands them its listeners
    auto_setup(app, config=config, plugins=PLUGINS)
    app.state.clients = _Clients(deps)
    return app


def from_environment() -> Starlette:
    return create_app(Deps(**json.loads(os.environ["MIXED_APP_DEPS"])))


def deps_json(deps: Deps) -> str:
    return json.dumps(dataclasses.asdict(deps))
