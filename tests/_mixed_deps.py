"""The live dependencies of the mixed-protocol app (PostgreSQL, a seeded SQLite file, Redis, a Mongo
wire-protocol server, the upstream) with one test's own names, as fixtures any test module imports;
and a recording of a request of every protocol beside a failed one, for the readers' tests."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from _replay import record, send
from apps.mixed_app import ITEMS, Deps, create_app, ledger
from conftest import Upstream
from mongo_server import MongoWireServer, running_mongo
from sqlalchemy import create_engine, insert

import timetracer_otel
from timetracer_otel.config import TraceConfig

__all__ = ["PG", "REDIS", "mongo", "deps", "record_crash_and_mixed"]

PG = "postgresql+{driver}://postgres@127.0.0.1:{port}/test"
REDIS = "redis://127.0.0.1:{port}/0"


@pytest.fixture
def mongo() -> Iterator[MongoWireServer]:
    with running_mongo() as server:
        yield server


@pytest.fixture
def deps(upstream: Upstream, mongo: MongoWireServer, tmp_path: Path) -> Iterator[Deps]:
    """Live dependencies with this test's own names: the PostgreSQL table, a seeded SQLite file; cleaned up after."""
    suffix = uuid.uuid4().hex[:12]
    postgres_url, redis_url = PG.format(driver="asyncpg", port=5432), REDIS.format(port=6379)
    found = Deps(
        upstream.url, postgres_url, str(tmp_path / "mixed.db"), redis_url, mongo.url, suffix
    )
    postgres = create_engine(PG.format(driver="psycopg", port=5432))
    ledger(suffix).metadata.create_all(postgres)
    lite = create_engine(f"sqlite:///{found.sqlite}")
    with lite.begin() as conn:
        ITEMS.metadata.create_all(conn)
        conn.execute(insert(ITEMS), [{"n": n, "label": f"item-{n}"} for n in range(4)])
    lite.dispose()
    try:
        yield found
    finally:
        ledger(suffix).metadata.drop_all(postgres)
        postgres.dispose()
        with contextlib.closing(redis.Redis.from_url(found.redis)) as client:
            client.delete(*client.keys(f"tt-mixed:{suffix}:*") or ["tt-mixed:none"])


def record_crash_and_mixed(
    serve: Callable[..., Any], upstream: Upstream, deps: Deps, cassette_dir: Path
) -> None:
    """Record ``GET /crash`` of the replay app (an upstream call, then ``LookupError``) and ``GET /mixed/sequence``
    (HTTP, PostgreSQL, Redis, Mongo, SQLite, HTTP) into ``cassette_dir``."""
    record(serve, upstream.url, cassette_dir, [("GET", "/crash", {})])
    mixed = serve(
        create_app(deps, TraceConfig(mode="record", cassette_dir=str(cassette_dir))), lifespan="on"
    )
    send(mixed.url, [("GET", "/mixed/sequence", {})])
    mixed.stop()
    assert timetracer_otel.flush(30), "cassette writer did not drain"
