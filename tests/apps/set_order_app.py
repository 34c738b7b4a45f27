"""The application of the SQL list order tests: asyncpg with its column lists built from a set.

Tortoise ORM builds a model's ``SELECT`` list (and a ``GROUP BY`` over its columns) from
``Model._meta.db_fields``, a ``set`` of column names, so their order changes from one process
to the next with string hash randomisation (``PYTHONHASHSEED``). This app does the same with
:data:`COLUMNS` and reads each row by position, in the order it selected them (as an ORM zips
its column list with a row): a replay answering with the recorded column order would mix
the values up. ``/columns`` binds the set's members in an ``IN`` list. ``/copy`` copies the
table through one made with its constraints taken from a set, as alembic's batch mode copies
a SQLite table with SQLAlchemy's ``Table.constraints``. ``/meta`` writes a ``jsonb`` value from
JSON text whose keys come in the set's order.

``from_environment()`` is the ``uvicorn --factory`` entry (``SET_ORDER_APP_DSN``,
``SET_ORDER_APP_SCHEMA``; the config comes from ``TIMETRACER_*``).
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import AsyncIterator

import asyncpg
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from timetracer_otel.integrations.starlette import auto_setup

COLUMNS = {"id", "name", "meta", "created_at"}  # a set, as Tortoise's Model._meta.db_fields
SELECTED = list(COLUMNS)  # this process's order
CONSTRAINTS = {
    "CONSTRAINT copy_pk PRIMARY KEY (id)",
    "CONSTRAINT copy_name UNIQUE (name)",
    "CHECK (length(name) > 0)",
    "FOREIGN KEY (id) REFERENCES author (id)",
}
TABLES = """
CREATE TABLE author (
    id uuid PRIMARY KEY, name text UNIQUE NOT NULL, meta jsonb NOT NULL, created_at timestamptz NOT NULL
);
CREATE TABLE book (id serial PRIMARY KEY, title text NOT NULL, author_id uuid NOT NULL REFERENCES author);
INSERT INTO author VALUES
    ('6f1c1f9e-9b3a-4a57-8f0e-2f5d0c7a1b23', 'ada', '{"lang": ["en"]}', '2026-01-22 10:30:00+00'),
    ('0b7d3c2e-1a4f-4e5b-9c6d-7e8f9a0b1c2d', 'alan', '{}', '2026-01-23 11:00:00+00');
INSERT INTO book (title, author_id) VALUES
    ('Notes', '6f1c1f9e-9b3a-4a57-8f0e-2f5d0c7a1b23'),
    ('Engine', '6f1c1f9e-9b3a-4a57-8f0e-2f5d0c7a1b23'),
    ('Computing', '0b7d3c2e-1a4f-4e5b-9c6d-7e8f9a0b1c2d');
"""
_AUTHOR = ",".join(f'"{column}"' for column in SELECTED)
_GROUPED = ",".join(f'"author"."{column}"' for column in SELECTED)


async def create_tables(dsn: str, schema: str) -> None:
    connection = await asyncpg.connect(dsn, server_settings={"search_path": schema})
    try:
        await connection.execute(TABLES)
    finally:
        await connection.close()


def _by_position(row: asyncpg.Record) -> dict[str, str]:
    """The row read by position, keyed by column (sorted: the response is the same in any process)."""
    return dict(sorted((column, str(value)) for column, value in zip(SELECTED, row, strict=True)))


async def author(request: Request) -> JSONResponse:
    """The model's columns: ``fetch``, ``fetchrow`` and ``fetchval`` (by index), and a cursor."""
    name = request.path_params["name"]
    query = f'SELECT {_AUTHOR} FROM "author" WHERE "name"=$1 LIMIT 2'
    async with request.app.state.pool.acquire() as connection:
        rows = await connection.fetch(query, name)
        row = await connection.fetchrow(query, name)
        created = await connection.fetchval(query, name, column=SELECTED.index("created_at"))
        async with connection.transaction():
            iterated = [_by_position(each) async for each in connection.cursor(query, name)]
    return JSONResponse(
        {
            "fetch": [_by_position(each) for each in rows],
            "fetchrow": row and _by_position(row),
            "fetchval": str(created),
            "cursor": iterated,
        }
    )


async def authors(request: Request) -> JSONResponse:
    """Books per author, grouped by every column of the model, as Tortoise's ``annotate`` groups."""
    rows = await request.app.state.pool.fetch(
        'SELECT "author"."name" "name",COUNT("book"."id") "n" FROM "author" LEFT OUTER JOIN "book" '
        f'ON "author"."id"="book"."author_id" GROUP BY {_GROUPED} ORDER BY "name"'
    )
    return JSONResponse([[row["name"], row["n"]] for row in rows])


async def columns(request: Request) -> JSONResponse:
    """The model's columns the database has, asked with an ``IN`` list bound from the set."""
    placeholders = ", ".join(f"${n}" for n in range(1, len(SELECTED) + 1))
    rows = await request.app.state.pool.fetch(
        "SELECT column_name FROM information_schema.columns WHERE table_schema = current_schema() "
        f"AND table_name = 'author' AND column_name IN ({placeholders})",
        *SELECTED,
    )
    return JSONResponse(sorted(row["column_name"] for row in rows))


async def copy(request: Request) -> JSONResponse:
    """The table copied through a table made with its constraints in this process's order."""
    async with request.app.state.pool.acquire() as connection, connection.transaction():
        await connection.execute(
            f"CREATE TABLE author_copy (id uuid, name text, {', '.join(CONSTRAINTS)})"
        )
        await connection.execute("INSERT INTO author_copy SELECT id, name FROM author")
        copied = await connection.fetchval("SELECT count(*) FROM author_copy")
        await connection.execute("DROP TABLE author_copy")
    return JSONResponse({"copied": copied})


async def meta(request: Request) -> JSONResponse:
    """An author's ``jsonb`` written from JSON text whose keys come in the set's order (an app
    serialising attributes it gathered in a set)."""
    written = json.dumps({column: len(column) for column in COLUMNS})
    status = await request.app.state.pool.execute(
        'UPDATE "author" SET "meta"=$1::jsonb WHERE "name"=$2', written, "alan"
    )
    return JSONResponse({"status": status})


def create_app(dsn: str, schema: str) -> Starlette:
    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        app.state.pool = await asyncpg.create_pool(dsn, server_settings={"search_path": schema})
        yield
        await app.state.pool.close()

    routes = [
        Route("/authors/{name}", author),
        Route("/authors", authors),
        Route("/columns", columns),
        Route("/copy", copy),
        Route("/meta", meta),
    ]
    app = Starlette(routes=routes, lifespan=lifespan)
    auto_setup(app, plugins=["asyncpg"])
    return app


def from_environment() -> Starlette:
    return create_app(os.environ["SET_ORDER_APP_DSN"], os.environ["SET_ORDER_APP_SCHEMA"])
