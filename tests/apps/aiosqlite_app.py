"""The application of the aiosqlite tests: a small accounts-and-notes service on aiosqlite used directly.

Its connection is opened in the lifespan (``row_factory = aiosqlite.Row``), which also creates
the schema (``executescript``). Users sign up with a salted PBKDF2 hash (``os.urandom``) and are
inserted with ``execute_insert``; a second sign-up with the same e-mail is the UNIQUE
constraint's ``IntegrityError`` (409). Notes get a ``uuid4`` id and a ``now()`` time stamp made
in Python, and are listed with ``execute_fetchall``; search runs on a connection of its own with a
dict row factory, its cursor read with ``async for`` (``fetchmany`` in chunks); ``/notes/first`` reads one
row of a longer result; ``/import`` opens a connection of its own per request and runs
``executemany`` in a transaction; ``/sqlalchemy`` runs SQLAlchemy's ``sqlite+aiosqlite``
engine on the same file. Responses hold the ``repr`` of what aiosqlite gave, so equal
responses mean equal values of equal types.

``from_environment()`` is the ``uvicorn --factory`` entry: ``AIOSQLITE_APP_DB`` is the
database file, the config comes from ``TIMETRACER_*``.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import sqlite3
import uuid
from collections.abc import AsyncIterator
from datetime import datetime, timezone
from typing import Any

import aiosqlite
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from timetracer_otel.integrations.starlette import auto_setup

SCHEMA = """
CREATE TABLE IF NOT EXISTS users (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    email TEXT UNIQUE NOT NULL,
    password_hash TEXT NOT NULL,
    created_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS notes (
    id TEXT PRIMARY KEY,
    user_id INTEGER NOT NULL REFERENCES users(id),
    body TEXT NOT NULL,
    score REAL,
    blob BLOB,
    created_at TEXT NOT NULL
);
"""


def _now() -> str:
    return datetime.now(timezone.utc).isoformat()


def _hashed(password: str) -> str:
    salt = os.urandom(16)
    digest = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, 1000)
    return f"pbkdf2${salt.hex()}${digest.hex()}"


async def sign_up(request: Request) -> JSONResponse:
    body = await request.json()
    db: aiosqlite.Connection = request.app.state.db
    try:
        row = await db.execute_insert(
            "INSERT INTO users (email, password_hash, created_at) VALUES (?, ?, ?)",
            (body["email"], _hashed(body["password"]), _now()),
        )
    except sqlite3.IntegrityError as exc:
        return JSONResponse(
            {"error": repr(exc), "code": getattr(exc, "sqlite_errorname", None)}, status_code=409
        )
    finally:
        await db.commit()
    assert row is not None
    return JSONResponse({"id": row[0], "row": repr(tuple(row)), "keys": list(row.keys())}, 201)


async def user(request: Request) -> JSONResponse:
    db: aiosqlite.Connection = request.app.state.db
    async with db.execute(
        "SELECT id, email, created_at FROM users WHERE id = ?", (request.path_params["id"],)
    ) as cursor:
        row = await cursor.fetchone()
        description = [column[0] for column in cursor.description]
    if row is None:
        return JSONResponse({"error": "no such user"}, 404)
    return JSONResponse({"user": dict(row), "description": description})


async def add_note(request: Request) -> JSONResponse:
    body = await request.json()
    db: aiosqlite.Connection = request.app.state.db
    note = (str(uuid.uuid4()), request.path_params["id"], body["body"], 0.5, b"\x00\xff", _now())
    cursor = await db.execute("INSERT INTO notes VALUES (?, ?, ?, ?, ?, ?)", note)
    await db.commit()
    return JSONResponse({"id": note[0], "rowcount": cursor.rowcount, "created_at": note[5]}, 201)


async def notes(request: Request) -> JSONResponse:
    db: aiosqlite.Connection = request.app.state.db
    rows = await db.execute_fetchall(
        "SELECT id, body, score, blob, created_at FROM notes WHERE user_id = ? ORDER BY created_at",
        [request.path_params["id"]],
    )
    return JSONResponse({"notes": [repr(tuple(row)) for row in rows]})


def _as_dict(cursor: Any, row: tuple[Any, ...]) -> dict[str, Any]:
    return {column[0]: value for column, value in zip(cursor.description, row, strict=True)}


async def search(request: Request) -> JSONResponse:
    async with aiosqlite.connect(request.app.state.path) as db:
        db.row_factory = _as_dict
        cursor = await db.cursor()
        cursor.iter_chunk_size = 2
        await cursor.execute(
            "SELECT n.body, u.email FROM notes n JOIN users u ON u.id = n.user_id"
            " WHERE n.body LIKE :q ORDER BY n.body",
            {"q": f"%{request.query_params['q']}%"},
        )
        found = [row async for row in cursor]
        await cursor.close()
    return JSONResponse({"found": repr(found)})


async def first_note(request: Request) -> JSONResponse:
    db: aiosqlite.Connection = request.app.state.db
    async with db.execute("SELECT body FROM notes ORDER BY body") as cursor:
        row = await cursor.fetchone()
    return JSONResponse({"first": None if row is None else row["body"]})


async def import_notes(request: Request) -> JSONResponse:
    body = await request.json()
    async with aiosqlite.connect(request.app.state.path) as db:
        await db.execute("BEGIN")
        await db.executemany(
            "INSERT INTO notes (id, user_id, body, created_at) VALUES (?, ?, ?, ?)",
            ((str(uuid.uuid4()), body["user"], text, _now()) for text in body["bodies"]),
        )
        await db.commit()
        async with db.execute("SELECT count(*) FROM notes") as cursor:
            (count,) = await cursor.fetchone()  # type: ignore[misc]
    return JSONResponse({"count": count})


async def through_sqlalchemy(request: Request) -> JSONResponse:
    async with request.app.state.engine.connect() as connection:
        count = (await connection.execute(text("SELECT count(*) FROM users"))).scalar_one()
    return JSONResponse({"users": count})


def create_app(path: str) -> Starlette:
    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        app.state.path = path
        app.state.engine = create_async_engine(f"sqlite+aiosqlite:///{path}")
        async with aiosqlite.connect(path) as db:
            db.row_factory = aiosqlite.Row
            await db.executescript(SCHEMA)
            app.state.db = db
            yield
        await app.state.engine.dispose()

    app = Starlette(
        routes=[
            Route("/users", sign_up, methods=["POST"]),
            Route("/users/{id:int}", user),
            Route("/users/{id:int}/notes", add_note, methods=["POST"]),
            Route("/users/{id:int}/notes", notes),
            Route("/notes/search", search),
            Route("/notes/first", first_note),
            Route("/import", import_notes, methods=["POST"]),
            Route("/sqlalchemy", through_sqlalchemy),
        ],
        lifespan=lifespan,
    )
    auto_setup(app)  # every installed plugin: sqlite3's too, under aiosqlite
    return app


def from_environment() -> Starlette:
    return create_app(os.environ["AIOSQLITE_APP_DB"])
