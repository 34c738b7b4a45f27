"""The application of the psycopg tests: psycopg 3 used directly, with synchronous routes.

A ``psycopg_pool.ConnectionPool`` and an ``AsyncConnectionPool`` are opened in the lifespan, before any request (its
connections made in the pool's own threads); the routes use it, and connections of their own
(``psycopg.connect``), every way psycopg offers: ``conn.execute``, cursors with
``execute``/``executemany``/``fetchone``/``fetchmany``/``fetchall``/iteration, ``RETURNING``,
``executemany(..., returning=True)``, the ``dict_row`` and ``namedtuple_row`` row factories,
transactions (``conn.transaction()`` committed, one rolled back by a unique violation,
``commit()``), and PostgreSQL's types; one route does the same with the asyncio API. It answers with the ``repr`` of what psycopg gave it, so
equal responses mean equal values of equal types. One route runs SQLAlchemy on psycopg.

The tables live in the schema ``PSYCOPG_APP_SCHEMA`` names (the test creates them with
:func:`create_tables`). ``from_environment()`` is the ``uvicorn --factory`` entry
(``PSYCOPG_APP_DSN``, ``PSYCOPG_APP_SCHEMA``; the config comes from ``TIMETRACER_*``).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator
from typing import Any

import psycopg
import psycopg.errors
from psycopg.rows import dict_row, namedtuple_row
from psycopg_pool import AsyncConnectionPool, ConnectionPool
from sqlalchemy import create_engine, text
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from timetracer_otel.config import TraceConfig
from timetracer_otel.integrations.starlette import auto_setup

TABLES = """
CREATE TABLE kinds (
    id int PRIMARY KEY, u uuid, n numeric(10, 3), t timestamptz, j jsonb, i int, f float8,
    s text, b bool, raw bytea, arr int[], nothing int, ip inet, net cidr, r int4range
);
INSERT INTO kinds VALUES (
    1, '6f1c1f9e-9b3a-4a57-8f0e-2f5d0c7a1b23', 12.345, '2026-01-22 10:30:00.123+00',
    '{"k": [1, "two"]}', 7, 2.5, 'text', true, '\\x00ff', ARRAY[1, 2, 3], NULL,
    '10.0.0.1', '10.0.0.0/8', '[1,5)'
);
CREATE TABLE users (id serial PRIMARY KEY, name text UNIQUE NOT NULL, password_hash text NOT NULL);
CREATE TABLE notes (id serial PRIMARY KEY, body text NOT NULL);
"""
KINDS = "SELECT id, u, n, t, j, i, f, s, b, raw, arr, nothing, ip, net, r FROM kinds WHERE id = %s"


def create_tables(dsn: str, schema: str) -> None:
    with psycopg.connect(dsn, options=f"-c search_path={schema}", autocommit=True) as conn:
        conn.execute(TABLES)


def kinds(request: Request) -> JSONResponse:
    with request.app.state.pool.connection() as conn:
        row = conn.execute(KINDS, (1,)).fetchone()
        as_dict = conn.cursor(row_factory=dict_row).execute(KINDS, [1]).fetchone()
        named = conn.cursor(row_factory=namedtuple_row).execute(KINDS, (1,)).fetchall()
        missing = conn.execute(KINDS, (2,)).fetchone()
        described = conn.execute("SELECT j, arr FROM kinds WHERE id = %(id)s", {"id": 1})
        return JSONResponse(
            {
                "row": repr(row),
                "dict": repr(as_dict),
                "namedtuple": repr(named),
                "field": repr(named[0].u),
                "missing": repr(missing),
                "description": repr([(c.name, c.type_code) for c in described.description or ()]),
                "described": repr(described.fetchall()),
            }
        )


def calls(request: Request) -> JSONResponse:
    n = int(request.path_params["n"])
    out: dict[str, str] = {}
    with request.app.state.pool.connection() as conn:
        with conn.cursor() as cur:
            cur.execute("INSERT INTO notes (body) VALUES (%s)", (f"n{n}",))
            out["insert"] = repr((cur.rowcount, cur.statusmessage))
            cur.executemany(
                "INSERT INTO notes (body) VALUES (%s)", ((f"m{n}-{i}",) for i in range(3))
            )
            out["executemany"] = repr(cur.rowcount)
            cur.execute("SELECT body FROM notes WHERE body LIKE %s ORDER BY body", (f"m{n}-%",))
            out["fetches"] = repr(
                (cur.fetchone(), cur.fetchmany(1), cur.fetchall(), cur.fetchone())
            )
            cur.execute("SELECT n, n * 2 AS twice FROM generate_series(1, %s) AS n", (4,))
            out["iterated"] = repr([row for row in cur])
            cur.executemany(
                "INSERT INTO notes (body) VALUES (%(body)s) RETURNING id > 0, body",
                [{"body": f"r{n}-a"}, {"body": f"r{n}-b"}],
                returning=True,
            )
            returned = [cur.fetchall()]
            while cur.nextset():
                returned.append((cur.rowcount, cur.statusmessage, cur.fetchall()))
            out["returning"] = repr(returned)
        with conn.transaction():
            conn.execute("INSERT INTO notes (body) VALUES (%s)", (f"t{n}",))
        try:
            with conn.transaction():
                conn.execute("INSERT INTO notes (body) VALUES (%s)", (f"x{n}",))
                conn.execute(
                    "INSERT INTO users (id, name, password_hash) VALUES (0, 'x', 'x'), (0, 'y', 'y')"
                )
        except psycopg.errors.UniqueViolation as exc:
            out["rolled_back"] = repr((type(exc), str(exc), exc.sqlstate, exc.diag.constraint_name))
        out["after"] = repr(
            conn.execute(
                "SELECT count(*) FROM notes WHERE body IN (%s, %s)", (f"t{n}", f"x{n}")
            ).fetchone()
        )
        conn.commit()
    return JSONResponse(out)


def item(request: Request) -> JSONResponse:
    """One statement per request, its parameter the request's: concurrent requests keep their own."""
    n = int(request.path_params["n"])
    with request.app.state.pool.connection() as conn:
        (value,) = conn.execute("SELECT %s::int * 10 + 1", (n,)).fetchone() or (None,)
    return JSONResponse({"n": n, "value": value})


async def async_item(request: Request) -> JSONResponse:
    """``item`` on the ``AsyncConnectionPool``."""
    n = int(request.path_params["n"])
    async with request.app.state.async_pool.connection() as conn:
        cursor = await conn.execute("SELECT %s::int * 10 + 1", (n,))
        (value,) = await cursor.fetchone() or (None,)
    return JSONResponse({"n": n, "value": value})


def add_user(request: Request) -> JSONResponse:
    name = request.path_params["name"]
    try:
        with psycopg.connect(request.app.state.dsn, **request.app.state.options) as conn:
            row = conn.execute(
                "INSERT INTO users (name, password_hash) VALUES (%s, %s) RETURNING name, password_hash",
                (name, f"argon2-hash-of-{name}"),
            ).fetchone()
    except psycopg.errors.UniqueViolation as exc:
        error = (
            type(exc),
            str(exc),
            exc.sqlstate,
            exc.diag.constraint_name,
            exc.diag.message_detail,
        )
        return JSONResponse({"error": repr(error)}, status_code=409)
    return JSONResponse({"user": repr(row)})


def refused(request: Request) -> JSONResponse:
    """What replay does not answer unless recorded: the error it raises, by kind."""
    out: dict[str, Any] = {}
    with psycopg.connect(request.app.state.dsn, **request.app.state.options) as conn:
        with conn.cursor() as cur:
            try:
                with cur.copy("COPY notes (body) FROM STDIN") as copy:
                    copy.write_row(("copied",))
                out["copy"] = "done"
            except Exception as exc:
                out["copy"] = f"{type(exc).__name__}: {exc}"
        try:
            with conn.cursor("named") as named:
                named.execute("SELECT 1")
                out["named"] = repr(named.fetchall())
        except Exception as exc:
            out["named"] = f"{type(exc).__name__}: {exc}"
    return JSONResponse(out)


def through_sqlalchemy(request: Request) -> JSONResponse:
    """SQLAlchemy on psycopg (``postgresql+psycopg://``): its statements are SQLAlchemy's calls, kept once."""
    with request.app.state.engine.begin() as conn:
        conn.execute(text("INSERT INTO notes (body) VALUES (:body)"), {"body": "via sqlalchemy"})
        rows = conn.execute(text("SELECT s, n FROM kinds WHERE id = :id"), {"id": 1}).all()
    return JSONResponse({"rows": repr([tuple(row) for row in rows])})


async def asynchronous(request: Request) -> JSONResponse:
    """The asyncio API: ``AsyncConnectionPool``, ``AsyncConnection.connect``, async cursors."""
    n = int(request.path_params["n"])
    out: dict[str, str] = {}
    async with request.app.state.async_pool.connection() as conn:
        cursor = await conn.execute(KINDS, (1,))
        out["row"] = repr(await cursor.fetchone())
        async with conn.cursor(row_factory=dict_row) as cur:
            await cur.execute("SELECT n, n * %s AS times FROM generate_series(1, 3) AS n", (n,))
            out["fetches"] = repr(
                (await cur.fetchone(), await cur.fetchmany(1), await cur.fetchall())
            )
            await cur.executemany(
                "INSERT INTO notes (body) VALUES (%s)", [(f"a{n}-{i}",) for i in range(2)]
            )
            await cur.execute(
                "SELECT body FROM notes WHERE body LIKE %s ORDER BY body", (f"a{n}-%",)
            )
            out["iterated"] = repr([row async for row in cur])
    async with await psycopg.AsyncConnection.connect(
        request.app.state.dsn, row_factory=namedtuple_row, **request.app.state.options
    ) as conn:
        try:
            async with conn.transaction():
                await conn.execute("INSERT INTO notes (body) VALUES (%s)", (f"ax{n}",))
                await conn.execute(
                    "INSERT INTO users (id, name, password_hash) VALUES (0, 'x', 'x'), (0, 'y', 'y')"
                )
        except psycopg.errors.UniqueViolation as exc:
            out["rolled_back"] = repr((type(exc), str(exc), exc.sqlstate, exc.diag.constraint_name))
        cursor = await conn.execute("SELECT count(*) AS c FROM notes WHERE body = %s", (f"ax{n}",))
        out["after"] = repr(await cursor.fetchall())
    return JSONResponse(out)


def create_app(dsn: str, schema: str, config: TraceConfig | None = None) -> Starlette:
    options = {"options": f"-c search_path={schema}"}

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        pool = ConnectionPool(dsn, kwargs=options, min_size=2, max_size=10, open=False)
        pool.open(wait=True)
        async_pool = AsyncConnectionPool(dsn, kwargs=options, min_size=2, open=False)
        await async_pool.open(wait=True)
        app.state.pool, app.state.async_pool = pool, async_pool
        yield
        pool.close()
        await async_pool.close()

    routes = [
        Route("/kinds", kinds),
        Route("/calls/{n:int}", calls),
        Route("/item/{n:int}", item),
        Route("/async-item/{n:int}", async_item),
        Route("/users/{name}", add_user, methods=["POST"]),
        Route("/refused", refused),
        Route("/sqlalchemy", through_sqlalchemy),
        Route("/async/{n:int}", asynchronous),
    ]
    app = Starlette(routes=routes, lifespan=lifespan)
    app.state.dsn, app.state.options = dsn, options
    app.state.engine = create_engine(
        dsn.replace("postgresql://", "postgresql+psycopg://"), connect_args=options
    )
    auto_setup(app, config=config, plugins=["psycopg", "sqlalchemy"])
    return app


def from_environment() -> Starlette:
    return create_app(os.environ["PSYCOPG_APP_DSN"], os.environ["PSYCOPG_APP_SCHEMA"])
