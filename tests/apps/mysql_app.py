"""The application of the PyMySQL, aiomysql and asyncmy tests: a users-and-notes service on MariaDB
with the drivers used directly, as many services are written.

Sync routes take a PyMySQL connection per request from a dependency
(``cursorclass=DictCursor``, committed and closed after); async routes use an aiomysql pool
opened in the lifespan, and ``/asyncmy/...`` routes an asyncmy pool opened there too. Sign-up makes a ``uuid4`` id, a ``now()`` and a salted PBKDF2 hash in
Python, and answers a duplicate e-mail 409 from MariaDB's error number; login checks the hash
and signs a token that expires in an hour. Other routes run what remains of the drivers' API:
``executemany`` (which PyMySQL batches into one statement), a join whose repeated column
``DictCursor`` names ``table.column``, ``fetchmany``, iteration, ``lastrowid``, ``callproc``
with ``nextset``, MariaDB's types, and an unbuffered ``SSCursor``. Answers carry the ``repr`` of
what the driver gave, so equal responses mean equal values of equal types.

``from_environment()`` is the ``uvicorn --factory`` entry (``MYSQL_APP_DATABASE``:
``host:port/name``; the config comes from ``TIMETRACER_*``); :func:`create_tables` makes the
tables.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import os
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import datetime
from typing import Annotated, Any

import aiomysql
import asyncmy
import asyncmy.cursors
import asyncmy.errors
import pymysql
import pymysql.cursors
from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from timetracer_otel.integrations.starlette import auto_setup

TABLES = [
    """CREATE TABLE users (
        id CHAR(36) PRIMARY KEY, email VARCHAR(100) UNIQUE NOT NULL,
        password VARCHAR(200) NOT NULL, created_at DATETIME(6) NOT NULL
    )""",
    """CREATE TABLE notes (
        id INT AUTO_INCREMENT PRIMARY KEY, user_id CHAR(36) NOT NULL, body TEXT NOT NULL
    )""",
    """CREATE TABLE kinds (
        id INT PRIMARY KEY, n DECIMAL(10, 3), t DATETIME(3), d DATE, j JSON, raw BLOB,
        flag TINYINT(1), nothing INT
    )""",
    """INSERT INTO kinds VALUES (1, 12.345, '2026-01-22 10:30:00.123', '2026-01-22',
        '{"k": [1, "two"]}', X'00ff', 1, NULL)""",
    "CREATE PROCEDURE double_it(IN n INT) SELECT n * 2 AS doubled",
]
SIGNING_KEY = b"mysql-app-signing-key"


def _address(database: str) -> dict[str, Any]:
    server, name = database.split("/")
    host, port = server.split(":")
    return {"host": host, "port": int(port), "user": "root", "database": name}


def create_tables(database: str) -> None:
    with pymysql.connect(**_address(database), autocommit=True) as conn, conn.cursor() as cur:
        for statement in TABLES:
            cur.execute(statement)


class Credentials(BaseModel):
    email: str
    password: str


def _hash(password: str, salt: bytes | None = None) -> str:
    salt = salt or os.urandom(16)
    return f"{salt.hex()}${hashlib.pbkdf2_hmac('sha256', password.encode(), salt, 1000).hex()}"


def _token(user_id: str) -> str:
    claims = f"{user_id}.{int(time.time()) + 3600}"
    return f"{claims}.{hmac.new(SIGNING_KEY, claims.encode(), hashlib.sha256).hexdigest()}"


def get_db(request: Request) -> Iterator[pymysql.connections.Connection]:
    conn = pymysql.connect(**request.app.state.address, cursorclass=pymysql.cursors.DictCursor)
    try:
        yield conn
        conn.commit()
    finally:
        conn.close()


Db = Annotated[Any, Depends(get_db)]


async def _pooled_sign_up(pool: Any, user: Credentials, duplicate: type[Exception]) -> Any:
    """Sign-up on a connection of an asyncio pool (aiomysql's or asyncmy's); ``duplicate``: the
    driver's error for a taken e-mail."""
    async with pool.acquire() as conn:
        async with conn.cursor() as cur:
            try:
                await cur.execute(
                    "INSERT INTO users (id, email, password, created_at) VALUES (%s, %s, %s, %s)",
                    (str(uuid.uuid4()), user.email, _hash(user.password), datetime.now()),
                )
            except duplicate as exc:
                await conn.rollback()
                return JSONResponse({"detail": "taken", "error": repr(exc.args)}, 409)
            await cur.execute("SELECT COUNT(*) FROM users")
            (count,) = await cur.fetchone()
        await conn.commit()
    return {"users": count}


def create_app(database: str) -> FastAPI:
    address = _address(database)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.pool = await aiomysql.create_pool(
            host=address["host"], port=address["port"], user="root", db=address["database"],
            minsize=1, maxsize=5,
        )  # fmt: skip
        app.state.asyncmy_pool = await asyncmy.create_pool(
            host=address["host"], port=address["port"], user="root", db=address["database"],
            minsize=1, maxsize=5, autocommit=False,
        )  # fmt: skip
        yield
        for pool in (app.state.pool, app.state.asyncmy_pool):
            pool.close()
            await pool.wait_closed()

    app = FastAPI(lifespan=lifespan)
    app.state.address = address

    @app.post("/users", status_code=201)
    def sign_up(user: Credentials, db: Db) -> Any:
        user_id = str(uuid.uuid4())
        try:
            with db.cursor() as cur:
                cur.execute(
                    "INSERT INTO users (id, email, password, created_at) VALUES (%s, %s, %s, %s)",
                    (user_id, user.email, _hash(user.password), datetime.now()),
                )
        except pymysql.err.IntegrityError as exc:
            return JSONResponse({"detail": "taken", "error": repr(exc.args)}, 409)
        with db.cursor() as cur:
            cur.execute("SELECT id, email, created_at FROM users WHERE id = %s", (user_id,))
            return {"user": repr(cur.fetchone())}

    @app.post("/login")
    def login(user: Credentials, db: Db) -> dict[str, str]:
        with db.cursor() as cur:
            cur.execute(
                "SELECT id, password FROM users WHERE email = %(email)s", {"email": user.email}
            )
            found = cur.fetchone()
        if found is None:
            raise HTTPException(403, "Invalid Credentials")
        salt = bytes.fromhex(found["password"].split("$")[0])
        if not hmac.compare_digest(_hash(user.password, salt), found["password"]):
            raise HTTPException(403, "Invalid Credentials")
        return {"access_token": _token(found["id"])}

    @app.post("/users/{email}/notes")
    def add_notes(email: str, bodies: list[str], db: Db) -> dict[str, str]:
        with db.cursor(pymysql.cursors.Cursor) as cur:
            cur.execute("SELECT id FROM users WHERE email = %s", (email,))
            row = cur.fetchone()
            if row is None:
                raise HTTPException(404, "no such user")
            added = cur.executemany(
                "INSERT INTO notes (user_id, body) VALUES (%s, %s)",
                [(row[0], body) for body in bodies],
            )
            first = cur.lastrowid
        with db.cursor() as cur:
            cur.execute(
                "SELECT notes.id, users.id, body FROM notes JOIN users ON users.id = notes.user_id"
                " WHERE users.email = %s ORDER BY notes.id",
                (email,),
            )
            some = cur.fetchmany(1)
            rest = [note for note in cur]
        return {"added": repr((added, first)), "notes": repr((some, rest))}

    @app.get("/kinds")
    def kinds(db: Db) -> dict[str, str]:
        with db.cursor() as cur:
            cur.execute("SELECT * FROM kinds WHERE id = %s", (1,))
            row = cur.fetchone()
            description = cur.description
        return {"row": repr(row), "description": repr(description)}

    @app.get("/procedure/{n}")
    def procedure(n: int, db: Db) -> dict[str, str]:
        with db.cursor() as cur:
            cur.callproc("double_it", (n,))
            doubled = cur.fetchall()
            while cur.nextset():
                pass
        return {"doubled": repr(doubled)}

    @app.get("/stream")
    def stream(db: Db) -> dict[str, str]:
        try:
            with db.cursor(pymysql.cursors.SSCursor) as cur:
                cur.execute("SELECT id FROM kinds")
                return {"rows": repr(cur.fetchall())}
        except Exception as exc:
            return {"rows": f"{type(exc).__name__}: {exc}"}

    @app.get("/async/users/{email}/notes")
    async def async_notes(email: str, request: Request) -> dict[str, str]:
        async with request.app.state.pool.acquire() as conn:
            async with conn.cursor(aiomysql.DictCursor) as cur:
                await cur.execute(
                    "SELECT notes.body FROM notes JOIN users ON users.id = notes.user_id"
                    " WHERE users.email = %s ORDER BY notes.id",
                    (email,),
                )
                rows = await cur.fetchall()
        return {"notes": repr(rows)}

    @app.post("/async/users", status_code=201)
    async def async_sign_up(user: Credentials, request: Request) -> Any:
        return await _pooled_sign_up(request.app.state.pool, user, pymysql.err.IntegrityError)

    @app.post("/asyncmy/users", status_code=201)
    async def asyncmy_sign_up(user: Credentials, request: Request) -> Any:
        return await _pooled_sign_up(
            request.app.state.asyncmy_pool, user, asyncmy.errors.IntegrityError
        )

    @app.post("/asyncmy/users/{email}/notes")
    async def asyncmy_add_notes(email: str, bodies: list[str], request: Request) -> Any:
        async with request.app.state.asyncmy_pool.acquire() as conn:
            async with conn.cursor() as cur:
                await cur.execute("SELECT id FROM users WHERE email = %s", (email,))
                row = await cur.fetchone()
                if row is None:
                    raise HTTPException(404, "no such user")
                added = await cur.executemany(
                    "INSERT INTO notes (user_id, body) VALUES (%s, %s)",
                    [(row[0], body) for body in bodies],
                )
                first = cur.lastrowid
            async with conn.cursor(asyncmy.cursors.DictCursor) as cur:
                await cur.execute(
                    "SELECT notes.id, users.id, body, created_at FROM notes"
                    " JOIN users ON users.id = notes.user_id WHERE users.email = %s"
                    " ORDER BY notes.id",
                    (email,),
                )
                notes = await cur.fetchall()
            await conn.commit()
        return {"added": repr((added, first)), "notes": repr(notes)}

    @app.get("/asyncmy/kinds")
    async def asyncmy_kinds(request: Request) -> dict[str, str]:
        async with request.app.state.asyncmy_pool.acquire() as conn:
            async with conn.cursor() as cur:
                await cur.execute("SELECT * FROM kinds WHERE id = %s", (1,))
                return {"row": repr(await cur.fetchone()), "description": repr(cur.description)}

    auto_setup(app, plugins=["pymysql", "aiomysql", "asyncmy"])
    return app


def from_environment() -> FastAPI:
    return create_app(os.environ["MYSQL_APP_DATABASE"])
