"""The machine's PostgreSQL, MariaDB and Redis, shared by every test: a schema, a database or a key prefix per use, and a port nothing answers on."""

from __future__ import annotations

import contextlib
import socket
import uuid
from collections.abc import Iterator

import psycopg
import pymysql
import redis

from timetracer_otel._own_io import own_io

POSTGRES_ADMIN = "postgresql://postgres@127.0.0.1:5432/test"
POSTGRES = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
REDIS = "redis://127.0.0.1:{port}/3"
MARIADB = "127.0.0.1:3306"  # root, no password


def closed_port() -> int:
    """A loopback port nothing listens on: a connection attempt there is refused."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _postgres_admin(statements: list[str]) -> None:
    """The test's own statements: live and unrecorded even where the test has psycopg replaying
    (``TIMETRACER_MODE=replay`` set while its schema is dropped)."""
    with own_io(), psycopg.connect(POSTGRES_ADMIN, autocommit=True) as conn:
        for statement in statements:
            conn.execute(statement)


@contextlib.contextmanager
def postgres_schemas(*suffixes: str) -> Iterator[str]:
    """A fresh schema name; a schema of that name plus each suffix exists in the block and is dropped after it."""
    base = f"real_service_{uuid.uuid4().hex[:12]}"
    _postgres_admin([f"CREATE SCHEMA {base}{suffix}" for suffix in suffixes])
    try:
        yield base
    finally:
        _postgres_admin([f"DROP SCHEMA {base}{suffix} CASCADE" for suffix in suffixes])


@contextlib.contextmanager
def postgres_schema() -> Iterator[str]:
    """A PostgreSQL URL whose tables live in a schema of their own, dropped afterwards (other tests share the database)."""
    with postgres_schemas("") as schema:
        yield f"{POSTGRES}?options=-csearch_path%3D{schema}"


@contextlib.contextmanager
def mariadb_database() -> Iterator[str]:
    """``host:port/name`` of a fresh MariaDB database, dropped afterwards."""
    name = f"tt_{uuid.uuid4().hex[:12]}"
    host, port = MARIADB.split(":")
    with pymysql.connect(host=host, port=int(port), user="root", autocommit=True) as conn:
        conn.cursor().execute(f"CREATE DATABASE {name}")
    try:
        yield f"{MARIADB}/{name}"
    finally:
        with pymysql.connect(host=host, port=int(port), user="root", autocommit=True) as conn:
            conn.cursor().execute(f"DROP DATABASE {name}")


@contextlib.contextmanager
def redis_namespace() -> Iterator[str]:
    """A key prefix of its own in the shared Redis; its keys are deleted afterwards."""
    prefix = f"real-service-{uuid.uuid4().hex[:12]}:"
    client = redis.Redis.from_url(REDIS.format(port=6379))
    try:
        yield prefix
    finally:
        stale = list(client.scan_iter(match=f"{prefix}*"))
        if stale:
            client.delete(*stale)
        client.close()
