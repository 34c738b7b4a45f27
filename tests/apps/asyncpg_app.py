"""The application of the asyncpg tests: asyncpg used directly, as FastAPI services do.

A pool is created in the lifespan, before any request (``asyncpg.create_pool``), and used
there once if asked (``query_at_start``: a statement the process cassette keeps); the routes
use it every way asyncpg offers: the pool's shortcuts, ``pool.acquire()`` with
``fetch``/``fetchrow``/``fetchval``/``execute``/``executemany``/``fetchmany``, prepared
statements, transactions (one committed, one rolled back by a unique violation), cursors in a
transaction (iterated, and fetched from in part), and a connection of
its own (``asyncpg.connect``). It answers with the ``repr`` of what asyncpg gave it (and of
every way of reading a ``Record``), so equal responses mean equal values of equal types.

The tables live in the schema ``ASYNCPG_APP_SCHEMA`` names (the test creates them with
:func:`create_tables`). ``from_environment()`` is the ``uvicorn --factory`` entry
(``ASYNCPG_APP_DSN``, ``ASYNCPG_APP_SCHEMA``, ``ASYNCPG_APP_AT_START``; the config comes from
``TIMETRACER_*``).
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from timetracer_otel.config import TraceConfig
from timetracer_otel.integrations.starlette import auto_setup

TABLES = """
CREATE TABLE kinds (
    id int PRIMARY KEY, u uuid, n numeric(10, 3), t timestamptz, j jsonb, i int, f float8,
    s text, b bool, raw bytea, arr int[], nothing int, ip inet, net cidr, r int4range,
    bits bit(5), pt point, bx box, circ circle, seg lseg, ln line
);
INSERT INTO kinds VALUES (
    1, '6f1c1f9e-9b3a-4a57-8f0e-2f5d0c7a1b23', 12.345, '2026-01-22 10:30:00.123+00',
    '{"k": [1, "two"]}', 7, 2.5, 'text', true, '\\x00ff', ARRAY[1, 2, 3], NULL,
    '10.0.0.1', '10.0.0.0/8', '[1,5)', B'10100', '(1.5,-2)', '((3,4),(1,2))',
    '<(1,2),3.5>', '[(1,2),(3,4)]', '{1,2,3}'
);
CREATE TABLE users (id serial PRIMARY KEY, name text UNIQUE NOT NULL, password_hash text NOT NULL);
CREATE TABLE notes (id serial PRIMARY KEY, body text NOT NULL);
CREATE TABLE hooks (id serial PRIMARY KEY, payload jsonb NOT NULL);
"""
KINDS = (
    "SELECT id, u, n, t, j, i, f, s, b, raw, arr, nothing, ip, net, r, bits, pt, bx, circ, seg,"
    " ln FROM kinds WHERE id = $1"
)


async def create_tables(dsn: str, schema: str) -> None:
    connection = await asyncpg.connect(dsn, server_settings={"search_path": schema})
    try:
        await connection.execute(TABLES)
    finally:
        await connection.close()


def _reads(record: Any) -> dict[str, str]:
    """Every way the app reads a Record, as repr."""
    return {
        "record": repr(record),
        "by_name": repr(record["u"]),
        "by_index": repr(record[3]),
        "get": repr((record.get("n"), record.get("missing", "default"))),
        "dict": repr(dict(record)),
        "keys": repr(list(record.keys())),
        "values": repr(list(record.values())),
        "items": repr(list(record.items())),
        "len": repr(len(record)),
        "iter": repr(list(record)),
    }


async def kinds(request: Request) -> JSONResponse:
    pool = request.app.state.pool
    record = await pool.fetchrow(KINDS, 1)
    return JSONResponse(
        {
            **_reads(record),
            "fetch": repr(await pool.fetch(KINDS, 1)),
            "fetchval": repr(await pool.fetchval("SELECT t FROM kinds WHERE id = $1", 1)),
            "missing": repr(await pool.fetchrow(KINDS, 2)),
            "at_start": repr(getattr(request.app.state, "kinds_at_start", None)),
        }
    )


async def calls(request: Request) -> JSONResponse:
    n = int(request.path_params["n"])
    pool = request.app.state.pool
    out: dict[str, str] = {}
    async with pool.acquire() as conn:
        out["execute_plain"] = await conn.execute("SELECT 1; SELECT 2")
        out["execute_args"] = await conn.execute("INSERT INTO notes (body) VALUES ($1)", f"n{n}")
        await conn.executemany(
            "INSERT INTO notes (body) VALUES ($1)", ((f"m{n}-{i}",) for i in range(3))
        )
        out["fetch"] = repr(
            await conn.fetch("SELECT body FROM notes WHERE body LIKE $1 ORDER BY body", f"m{n}-%")
        )
        out["fetchmany"] = repr(
            await conn.fetchmany(
                "INSERT INTO notes (body) VALUES ($1) RETURNING body", [(f"f{n}-a",), (f"f{n}-b",)]
            )
        )
        out["fetchval"] = repr(
            await conn.fetchval("SELECT count(*) FROM notes WHERE body = $1", f"n{n}")
        )
        out["fetchval_column"] = repr(
            await conn.fetchval("SELECT $1::int, $2::text", n, "x", column=1)
        )
        statement = await conn.prepare("SELECT $1::int * 2 AS twice, $2::text AS label")
        out["prepared"] = repr(
            (
                await statement.fetch(n, "a"),
                await statement.fetchrow(n + 1, "b"),
                await statement.fetchval(n + 2, "c"),
            )
        )
        async with conn.transaction():
            await conn.execute("INSERT INTO notes (body) VALUES ($1)", f"t{n}")
        try:
            async with conn.transaction():
                await conn.execute("INSERT INTO notes (body) VALUES ($1)", f"r{n}")
                await conn.execute(
                    "INSERT INTO users (id, name, password_hash) VALUES (0, 'x', 'x'), (0, 'y', 'y')"
                )
        except asyncpg.exceptions.UniqueViolationError as exc:
            out["rolled_back"] = repr((type(exc), str(exc), exc.sqlstate, exc.constraint_name))
        out["after_rollback"] = repr(
            await conn.fetchval(
                "SELECT count(*) FROM notes WHERE body IN ($1, $2)", f"t{n}", f"r{n}"
            )
        )
        async with conn.transaction():  # a cursor read to its end, and one read in part
            series = "SELECT n, n * 2 AS twice FROM generate_series(1, $1) AS n"
            out["cursor_iterated"] = repr([r async for r in conn.cursor(series, 5, prefetch=2)])
            cursor = await conn.cursor(series, 6)
            out["cursor_fetched"] = repr((await cursor.fetch(2), await cursor.fetchrow()))
    return JSONResponse(out)


async def item(request: Request) -> JSONResponse:
    """One statement per request, its parameter the request's: concurrent requests keep their own."""
    n = int(request.path_params["n"])
    value = await request.app.state.pool.fetchval("SELECT $1::int * 10 + 1", n)
    return JSONResponse({"n": n, "value": value})


async def add_user(request: Request) -> JSONResponse:
    name = request.path_params["name"]
    try:
        row = await request.app.state.pool.fetchrow(
            "INSERT INTO users (name, password_hash) VALUES ($1, $2) RETURNING name, password_hash",
            name,
            f"argon2-hash-of-{name}",
        )
    except asyncpg.exceptions.UniqueViolationError as exc:
        return JSONResponse(
            {"error": repr((type(exc), str(exc), exc.sqlstate, exc.constraint_name, exc.detail))},
            status_code=409,
        )
    return JSONResponse({"user": repr(row)})


async def webhook(request: Request) -> JSONResponse:
    """A webhook payload kept as ``jsonb`` and read back as text (asyncpg's default, which
    Tortoise ORM's JSONField parses): the app reads its members that are no secret."""
    n = int(request.path_params["n"])
    payload = {
        "event": "client.updated",
        "client": {"id": f"c{n}", "client_secret": f"cs-{n}-b8f2e1d4"},
    }
    text = await request.app.state.pool.fetchval(
        "INSERT INTO hooks (payload) VALUES ($1::jsonb) RETURNING payload", json.dumps(payload)
    )
    stored = json.loads(text)
    return JSONResponse(
        {
            "event": stored["event"],
            "client": stored["client"]["id"],
            "members": sorted(stored["client"]),
        }
    )


async def direct(request: Request) -> JSONResponse:
    """A connection of its own, opened and closed in the request."""
    app = request.app
    conn = await asyncpg.connect(app.state.dsn, server_settings={"search_path": app.state.schema})
    try:
        return JSONResponse(
            {"value": repr(await conn.fetchval("SELECT s FROM kinds WHERE id = 1"))}
        )
    finally:
        await conn.close()


def create_app(
    dsn: str, schema: str, config: TraceConfig | None = None, query_at_start: bool = False
) -> Starlette:
    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        app.state.pool = await asyncpg.create_pool(
            dsn, server_settings={"search_path": schema}, min_size=2, max_size=10
        )
        if query_at_start:  # outside every request: the process cassette's
            app.state.kinds_at_start = await app.state.pool.fetchval("SELECT count(*) FROM kinds")
        yield
        await app.state.pool.close()

    routes = [
        Route("/kinds", kinds),
        Route("/calls/{n:int}", calls),
        Route("/item/{n:int}", item),
        Route("/users/{name}", add_user, methods=["POST"]),
        Route("/direct", direct),
        Route("/webhooks/{n:int}", webhook, methods=["POST"]),
    ]
    app = Starlette(routes=routes, lifespan=lifespan)
    app.state.dsn, app.state.schema = dsn, schema
    auto_setup(app, config=config, plugins=["asyncpg"])
    return app


def from_environment() -> Starlette:
    return create_app(
        os.environ["ASYNCPG_APP_DSN"],
        os.environ["ASYNCPG_APP_SCHEMA"],
        query_at_start=bool(os.environ.get("ASYNCPG_APP_AT_START")),
    )
