"""The application of the psycopg2 tests: a posts-and-users service on psycopg2 used directly, as
FastAPI tutorials and many services are written.

One connection, ``cursor_factory=RealDictCursor``, is opened as the app is made (outside every
request, in the retry loop those services have) and serves the posts routes from the threads
sync routes run in. A ``ThreadedConnectionPool`` opened in the lifespan serves the users
routes: sign-up (a ``uuid4`` id and a ``now()`` made in Python, a salted PBKDF2 hash, a unique
violation answered 409 from its ``pgcode``), login (``NamedTupleCursor``, a signed token that
expires in an hour) and ``with conn:`` transactions. Other routes run what remains of psycopg2's
API: ``DictCursor`` and PostgreSQL's types, ``psycopg2.sql`` compositions, ``callproc``,
``executemany``, ``execute_values``, ``fetchmany``, iteration, ``scroll``, ``mogrify``; one
runs SQLAlchemy on psycopg2, one what replay refuses (a named cursor, ``copy_from``).
Answers carry the ``repr`` of what psycopg2 gave, so equal responses mean equal values of equal types.

The tables live in the schema ``PSYCOPG2_APP_SCHEMA`` names (the test creates them with
:func:`create_tables`). ``from_environment()`` is the ``uvicorn --factory`` entry
(``PSYCOPG2_APP_DSN``, ``PSYCOPG2_APP_SCHEMA``; the config comes from ``TIMETRACER_*``).
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import io
import logging
import os
import time
import uuid
from collections.abc import AsyncIterator
from datetime import datetime, timezone
from typing import Any

import psycopg2
import psycopg2.errors
import psycopg2.extras
import psycopg2.pool
from fastapi import FastAPI, HTTPException, Request, Response
from fastapi.responses import JSONResponse
from psycopg2 import sql
from pydantic import BaseModel
from sqlalchemy import create_engine, text

from timetracer_otel.config import TraceConfig
from timetracer_otel.integrations.starlette import auto_setup

TABLES = """
CREATE TABLE posts (
    id serial PRIMARY KEY, title text NOT NULL, content text NOT NULL,
    published boolean NOT NULL DEFAULT true, created_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE users (
    id uuid PRIMARY KEY, email text UNIQUE NOT NULL, password text NOT NULL,
    created_at timestamptz NOT NULL
);
CREATE TABLE tags (id serial PRIMARY KEY, post_id int NOT NULL, name text NOT NULL);
CREATE TABLE kinds (
    id int PRIMARY KEY, u uuid, n numeric(10, 3), t timestamptz, d date, j jsonb, arr int[],
    raw bytea, nothing int
);
INSERT INTO kinds VALUES (
    1, '6f1c1f9e-9b3a-4a57-8f0e-2f5d0c7a1b23', 12.345, '2026-01-22 10:30:00.123+00',
    '2026-01-22', '{"k": [1, "two"]}', ARRAY[1, 2, 3], '\\x00ff', NULL
);
"""
SIGNING_KEY = b"psycopg2-app-signing-key"


def create_tables(dsn: str, schema: str) -> None:
    conn = psycopg2.connect(dsn, options=f"-c search_path={schema}")
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute(TABLES)
    conn.close()


class Post(BaseModel):
    title: str
    content: str
    published: bool = True


class Credentials(BaseModel):
    email: str
    password: str


def _hash(password: str, salt: bytes | None = None) -> str:
    salt = salt or os.urandom(16)
    digest = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, 1000)
    return f"{salt.hex()}${digest.hex()}"


def _token(user_id: str) -> str:
    claims = f"{user_id}.{int(time.time()) + 3600}"
    signature = hmac.new(SIGNING_KEY, claims.encode(), hashlib.sha256).hexdigest()
    return f"{claims}.{signature}"


def _pooled(request: Request) -> Any:
    """A connection of the pool, its statements logged (``LoggingConnection``)."""
    pooled = request.app.state.pool.getconn()
    pooled.initialize(logging.getLogger("psycopg2_app.sql"))
    return pooled


def create_app(dsn: str, schema: str, config: TraceConfig | None = None) -> FastAPI:
    options = f"-c search_path={schema}"
    while True:  # as the tutorials have it: wait for the database
        try:
            conn = psycopg2.connect(
                dsn, options=options, cursor_factory=psycopg2.extras.RealDictCursor
            )
            break
        except psycopg2.OperationalError as exc:  # pragma: no cover - the database is up in tests
            print("connecting to the database failed:", exc)
            time.sleep(1)
    cursor = conn.cursor()

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.pool = psycopg2.pool.ThreadedConnectionPool(
            1, 5, dsn, options=options, connection_factory=psycopg2.extras.LoggingConnection
        )
        yield
        app.state.pool.closeall()

    app = FastAPI(lifespan=lifespan)
    engine = create_engine(
        dsn.replace("postgresql://", "postgresql+psycopg2://"), connect_args={"options": options}
    )

    @app.post("/posts", status_code=201)
    def create_post(post: Post) -> dict[str, Any]:
        cursor.execute(
            "INSERT INTO posts (title, content, published) VALUES (%s, %s, %s) RETURNING *",
            (post.title, post.content, post.published),
        )
        new_post = cursor.fetchone()
        conn.commit()
        return {"data": new_post}

    @app.get("/posts")
    def get_posts() -> dict[str, Any]:
        cursor.execute("SELECT * FROM posts ORDER BY id")
        return {"data": cursor.fetchall()}

    @app.get("/posts/{id}")
    def get_post(id: int) -> dict[str, Any]:  # noqa: A002
        cursor.execute("SELECT * FROM posts WHERE id = %s", (str(id),))
        post = cursor.fetchone()
        if not post:
            raise HTTPException(404, f"post with id: {id} was not found")
        return {"post_detail": post}

    @app.put("/posts/{id}")
    def update_post(id: int, post: Post) -> dict[str, Any]:  # noqa: A002
        cursor.execute(
            "UPDATE posts SET title = %s, content = %s, published = %s WHERE id = %s RETURNING *",
            (post.title, post.content, post.published, str(id)),
        )
        updated = cursor.fetchone()
        conn.commit()
        if updated is None:
            raise HTTPException(404, f"post with id: {id} does not exist")
        return {"data": updated}

    @app.delete("/posts/{id}", status_code=204)
    def delete_post(id: int) -> Response:  # noqa: A002
        cursor.execute("DELETE FROM posts WHERE id = %s RETURNING *", (str(id),))
        deleted = cursor.fetchone()
        conn.commit()
        if deleted is None:
            raise HTTPException(404, f"post with id: {id} does not exist")
        return Response(status_code=204)

    @app.post("/users", status_code=201)
    def create_user(user: Credentials, request: Request) -> Any:
        pool = request.app.state.pool
        pooled = _pooled(request)
        try:
            with pooled, pooled.cursor(cursor_factory=psycopg2.extras.DictCursor) as cur:
                cur.execute(
                    "INSERT INTO users (id, email, password, created_at) VALUES (%s, %s, %s, %s)"
                    " RETURNING id, email, created_at",
                    (
                        str(uuid.uuid4()),
                        user.email,
                        _hash(user.password),
                        datetime.now(timezone.utc),
                    ),
                )
                row = cur.fetchone()
        except psycopg2.errors.UniqueViolation as exc:
            error = (type(exc), exc.pgcode, exc.diag.constraint_name, exc.diag.message_detail)
            return JSONResponse({"detail": f"{user.email} is taken", "error": repr(error)}, 409)
        finally:
            pool.putconn(pooled)
        return {"id": row["id"], "email": row[1], "created_at": repr(row["created_at"])}

    @app.post("/login")
    def login(user: Credentials, request: Request) -> dict[str, Any]:
        pool = request.app.state.pool
        pooled = _pooled(request)
        try:
            with pooled.cursor(cursor_factory=psycopg2.extras.NamedTupleCursor) as cur:
                cur.execute(
                    "SELECT id, email, password FROM users WHERE email = %(email)s",
                    {"email": user.email},
                )
                found = cur.fetchone()
            pooled.rollback()
        finally:
            pool.putconn(pooled)
        if found is None:
            raise HTTPException(403, "Invalid Credentials")
        salt, _ = found.password.split("$")
        if not hmac.compare_digest(_hash(user.password, bytes.fromhex(salt)), found.password):
            raise HTTPException(403, "Invalid Credentials")
        return {"access_token": _token(found.id), "token_type": "bearer"}

    @app.get("/kinds")
    def kinds(request: Request) -> dict[str, str]:
        statement = "SELECT id, u, n, t, d, j, arr, raw, nothing FROM kinds WHERE id = %s"
        pooled = _pooled(request)
        try:
            with pooled.cursor(cursor_factory=psycopg2.extras.DictCursor) as cur:
                cur.execute(statement, (1,))
                row = cur.fetchone()
                description = [(c.name, c.type_code) for c in cur.description]
            with pooled.cursor() as cur:
                cur.execute(statement, (1,))
                plain = cur.fetchall()
            pooled.commit()
        finally:
            request.app.state.pool.putconn(pooled)
        return {
            "dict": repr({key: value for key, value in row.items() if key != "raw"}),
            "by_index": repr((row[0], row["n"], bytes(row["raw"]))),
            "plain": repr([value for value in plain[0] if not isinstance(value, memoryview)]),
            "description": repr(description),
        }

    @app.post("/posts/{id}/tags")
    def tag_post(id: int, names: list[str], request: Request) -> dict[str, str]:  # noqa: A002
        pooled = _pooled(request)
        with pooled, pooled.cursor() as cur:  # the pool's: OpenTelemetry's traced cursor
            added = psycopg2.extras.execute_values(
                cur,
                "INSERT INTO tags (post_id, name) VALUES %s RETURNING id, name",
                [(id, name) for name in names],
                fetch=True,
            )
            cur.executemany(
                "INSERT INTO tags (post_id, name) VALUES (%s, %s)",
                ((id, f"{name}-copy") for name in names),
            )
            many = cur.rowcount
            quoted = cur.mogrify("SELECT %s, %s", ("it's", [1, 2]))
        request.app.state.pool.putconn(pooled)
        return {"added": repr(added), "many": repr(many), "mogrify": repr(quoted)}

    @app.get("/stats")
    def stats() -> dict[str, str]:
        out: dict[str, str] = {}
        with conn.cursor(cursor_factory=psycopg2.extensions.cursor) as cur:
            cur.execute(
                sql.SQL("SELECT count(*) FROM {} WHERE published = {}").format(
                    sql.Identifier("posts"), sql.Literal(True)
                )
            )
            out["published"] = repr(cur.fetchone())
            cur.callproc("lower", ("ABC",))
            out["callproc"] = repr(cur.fetchall())
            cur.execute("SELECT n FROM generate_series(1, %s) AS n", (5,))
            out["fetchmany"] = repr(cur.fetchmany(2))
            cur.scroll(0, mode="absolute")
            out["iterated"] = repr([row for row in cur])
            out["status"] = repr((cur.rowcount, cur.statusmessage, cur.rownumber))
        conn.commit()
        return out

    @app.get("/orm")
    def through_sqlalchemy() -> dict[str, str]:
        with engine.begin() as connection:
            rows = connection.execute(
                text("SELECT title FROM posts WHERE published = :published ORDER BY id"),
                {"published": True},
            ).all()
        return {"titles": repr([tuple(row) for row in rows])}

    @app.get("/refused")
    def refused() -> dict[str, str]:
        out: dict[str, str] = {}
        try:
            with conn.cursor("named") as named:
                named.execute("SELECT 1 AS one")
                out["named"] = repr(named.fetchall())
        except Exception as exc:
            out["named"] = f"{type(exc).__name__}: {exc}"
        try:
            with conn.cursor() as cur:
                cur.copy_from(io.StringIO("1\tcopied\n"), "tags", columns=("post_id", "name"))
            out["copy"] = "done"
        except Exception as exc:
            out["copy"] = f"{type(exc).__name__}: {exc}"
        conn.rollback()
        return out

    auto_setup(app, config=config, plugins=["psycopg2", "sqlalchemy"])
    return app


def from_environment() -> FastAPI:
    return create_app(os.environ["PSYCOPG2_APP_DSN"], os.environ["PSYCOPG2_APP_SCHEMA"])
