"""The application of the sqlite3 tests: a small bookmarks service on sqlite3 used directly, with synchronous routes.

The schema is made at start-up (``executescript`` on a connection of the lifespan's, shared
across the threads routes run in: ``check_same_thread=False``). Each route opens a
connection of its own, as a ``get_db`` dependency does (``detect_types`` for the time stamps,
``sqlite3.Row`` rows), inside ``with connection:`` transactions: sign-up with a salted hash
(``os.urandom``) and ``lastrowid``, the UNIQUE constraint's ``IntegrityError`` (409),
bookmarks with a ``uuid4`` id and a ``datetime.now()`` time stamp, ``executemany`` of tags,
listings read by iterating the cursor, a dict row factory on a cursor of the application's own
class, and one row of a longer result. Responses hold the ``repr`` of what sqlite3 gave, so
equal responses mean equal values of equal types. One route runs SQLAlchemy's ``sqlite``
engine on the same file.

``from_environment()`` is the ``uvicorn --factory`` entry: ``SQLITE3_APP_DB`` is the database
file, the config comes from ``TIMETRACER_*``.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import sqlite3
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import datetime
from typing import Any

from sqlalchemy import create_engine, text
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from timetracer_otel.integrations.starlette import auto_setup

SCHEMA = """
CREATE TABLE IF NOT EXISTS accounts (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT UNIQUE NOT NULL,
    password_hash TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS bookmarks (
    id TEXT PRIMARY KEY,
    account_id INTEGER NOT NULL REFERENCES accounts(id),
    url TEXT NOT NULL,
    saved_at TIMESTAMP NOT NULL
);
CREATE TABLE IF NOT EXISTS tags (bookmark_id TEXT NOT NULL, tag TEXT NOT NULL);
"""


class DictCursor(sqlite3.Cursor):
    """An application's own cursor class: rows as dicts."""

    def __init__(self, connection: sqlite3.Connection) -> None:
        super().__init__(connection)
        self.row_factory = lambda cursor, row: {
            column[0]: value for column, value in zip(cursor.description, row, strict=True)
        }


@contextlib.contextmanager
def _db(request: Request) -> Iterator[sqlite3.Connection]:
    connection = sqlite3.connect(request.app.state.path, detect_types=sqlite3.PARSE_DECLTYPES)
    connection.row_factory = sqlite3.Row
    try:
        yield connection
    finally:
        connection.close()


def sign_up(request: Request) -> JSONResponse:
    name = request.path_params["name"]
    salt = os.urandom(16)
    hashed = f"{salt.hex()}${hashlib.sha256(salt + b'secret-pass').hexdigest()}"
    with _db(request) as db:
        try:
            with db:
                cursor = db.execute(
                    "INSERT INTO accounts (name, password_hash) VALUES (?, ?)", (name, hashed)
                )
        except sqlite3.IntegrityError as exc:
            return JSONResponse(
                {"error": repr(exc), "code": getattr(exc, "sqlite_errorname", None)}, 409
            )
    return JSONResponse({"id": cursor.lastrowid, "rowcount": cursor.rowcount}, 201)


def save(request: Request) -> JSONResponse:
    account = request.path_params["account"]
    bookmark = str(uuid.uuid4())
    with _db(request) as db, db:
        db.execute(
            "INSERT INTO bookmarks VALUES (:id, :account, :url, :at)",
            {"id": bookmark, "account": account, "url": request.query_params["url"],
             "at": datetime.now()},
        )  # fmt: skip
        db.executemany(
            "INSERT INTO tags VALUES (?, ?)",
            ((bookmark, tag) for tag in request.query_params["tags"].split(",")),
        )
    return JSONResponse({"id": bookmark}, 201)


def listing(request: Request) -> JSONResponse:
    with _db(request) as db:
        cursor = db.cursor()
        cursor.execute(
            "SELECT b.url, b.saved_at, count(t.tag) AS tags FROM bookmarks b"
            " LEFT JOIN tags t ON t.bookmark_id = b.id WHERE b.account_id = ?"
            " GROUP BY b.id ORDER BY b.saved_at",
            (request.path_params["account"],),
        )
        description = [column[0] for column in cursor.description]
        rows = [(tuple(row), row.keys()) for row in cursor]
    return JSONResponse({"rows": repr(rows), "description": description})


def tags(request: Request) -> JSONResponse:
    with _db(request) as db:
        db.row_factory = None  # else sqlite3 gives the cursor the connection's
        cursor = db.cursor(DictCursor)
        cursor.execute("SELECT tag, count(*) AS n FROM tags GROUP BY tag ORDER BY tag")
        first = cursor.fetchmany(2)
        rest = cursor.fetchall()
    return JSONResponse({"first": repr(first), "rest": repr(rest)})


def newest(request: Request) -> JSONResponse:
    db = request.app.state.shared
    row = db.execute("SELECT url FROM bookmarks ORDER BY saved_at DESC").fetchone()
    return JSONResponse({"newest": None if row is None else row[0]})


def through_sqlalchemy(request: Request) -> JSONResponse:
    with request.app.state.engine.connect() as connection:
        count = connection.execute(text("SELECT count(*) FROM accounts")).scalar_one()
    return JSONResponse({"accounts": count})


def create_app(path: str) -> Starlette:
    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        app.state.path = path
        app.state.engine = create_engine(f"sqlite:///{path}")
        app.state.shared = sqlite3.connect(path, check_same_thread=False)
        app.state.shared.executescript(SCHEMA)
        yield
        app.state.shared.close()
        app.state.engine.dispose()

    app = Starlette(
        routes=[
            Route("/accounts/{name}", sign_up, methods=["POST"]),
            Route("/accounts/{account:int}/bookmarks", save, methods=["POST"]),
            Route("/accounts/{account:int}/bookmarks", listing),
            Route("/tags", tags),
            Route("/newest", newest),
            Route("/sqlalchemy", through_sqlalchemy),
        ],
        lifespan=lifespan,
    )
    auto_setup(app, plugins=["sqlite3", "sqlalchemy"])
    return app


def from_environment() -> Starlette:
    return create_app(os.environ["SQLITE3_APP_DB"])


def rows_of(path: str) -> list[Any]:
    """Every row of the app's tables: what a replay must leave as it was."""
    with contextlib.closing(sqlite3.connect(path)) as connection:
        return [
            *connection.execute("SELECT * FROM accounts ORDER BY id"),
            *connection.execute("SELECT * FROM bookmarks ORDER BY id"),
            *connection.execute("SELECT * FROM tags ORDER BY bookmark_id, tag"),
        ]
