"""The application the SQLAlchemy tests record and replay.

Each route answers with what SQLAlchemy gave it, every value shown with its type, so
equal responses mean the application got equal values of equal types. The engine is
created with the app, before any request and before timetracer is set up: replay must
cover engines (and pools) that already exist.

``create_app(url, config, suffix)``: tables are ``tt_orders_<suffix>`` and ``tt_items_<suffix>``;
``create_schema(url, suffix)`` / ``drop_schema(url, suffix)`` manage them outside any request.
"""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    JSON,
    Column,
    DateTime,
    Integer,
    LargeBinary,
    MetaData,
    Numeric,
    String,
    Table,
    Uuid,
    bindparam,
    create_engine,
    func,
    insert,
    select,
    update,
)
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, create_async_engine
from sqlalchemy.orm import Session, registry
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from timetracer_otel.config import TraceConfig
from timetracer_otel.integrations.starlette import auto_setup

# One row with every type the tests care about; inserted by each request, so replay must match these parameters.
ORDER = {
    "amount": Decimal("12.50"),
    "created": dt.datetime(2024, 1, 2, 3, 4, 5, 678000, tzinfo=dt.timezone.utc),
    "payload": b"\x00\x01binary\xff",
    "ref": uuid.UUID("12345678-1234-5678-1234-567812345678"),
    "data": {"k": [1, 2.5, "x", None], "nested": {"ok": True}},
    "note": None,
}


@dataclass
class Schema:
    metadata: MetaData
    orders: Table
    items: Table
    order_class: type


def schema(suffix: str) -> Schema:
    metadata = MetaData()
    orders = Table(
        f"tt_orders_{suffix}",
        metadata,
        Column("id", Integer, primary_key=True),
        Column("tag", String(40), unique=True, nullable=False),
        Column("amount", Numeric(10, 2)),
        Column("created", DateTime(timezone=True)),
        Column("payload", LargeBinary),
        Column("ref", Uuid),
        Column("data", JSON),
        Column("note", String(40), nullable=True),
    )
    items = Table(
        f"tt_items_{suffix}",
        metadata,
        Column("id", Integer, primary_key=True),
        Column("n", Integer, nullable=False),
        Column("label", String(40)),
    )
    order_class = type("Order", (), {})
    registry().map_imperatively(order_class, orders)
    return Schema(metadata, orders, items, order_class)


def sync_url(url: str) -> str:
    """The URL of the same database through a sync driver (to manage tables outside the app)."""
    return url.replace("+asyncpg", "+psycopg").replace("+aiosqlite", "")


def create_schema(url: str, suffix: str, items: int = 0) -> None:
    """The tables, with ``items`` rows numbered 0.. in the items table; made outside any request."""
    tables = schema(suffix)
    engine = create_engine(sync_url(url))
    with engine.begin() as conn:
        tables.metadata.drop_all(conn)
        tables.metadata.create_all(conn)
        if items:
            conn.execute(
                insert(tables.items), [{"n": n, "label": f"item-{n}"} for n in range(items)]
            )
    engine.dispose()


def drop_schema(url: str, suffix: str) -> None:
    engine = create_engine(sync_url(url))
    with engine.begin() as conn:
        schema(suffix).metadata.drop_all(conn)
    engine.dispose()


def shown(value: Any) -> Any:
    """A JSON value showing ``value`` and its exact type (a datetime with its UTC offset)."""
    if isinstance(value, (list, tuple)):
        return [shown(item) for item in value]
    if isinstance(value, dict):
        return {str(k): shown(v) for k, v in value.items()}
    if isinstance(value, dt.datetime):
        return f"datetime:{value.isoformat()}"
    if value is None or isinstance(value, (bool, str)):
        return value
    return f"{type(value).__name__}:{value!r}"


def orders_work(session: Session, tables: Schema, tag: str) -> dict[str, Any]:
    """Reads and writes of every kind, with the ORM and Core, on one session."""
    order_class, orders, items = tables.order_class, tables.orders, tables.items
    out: dict[str, Any] = {}
    order = order_class()
    order.tag = tag
    for name, value in ORDER.items():
        setattr(order, name, value)
    session.add(order)
    session.flush()
    out["orm_id"] = shown(order.id)
    session.commit()
    [found] = session.query(order_class).filter_by(tag=tag).all()
    out["orm"] = {name: shown(getattr(found, name)) for name in ("id", "tag", *ORDER)}
    out["core"] = shown(
        [
            tuple(row)
            for row in session.execute(select(orders.c.tag, orders.c.amount, orders.c.payload))
        ]
    )
    inserted = session.execute(insert(items), [{"n": n, "label": f"{tag}-{n}"} for n in range(3)])
    out["insert_many_rowcount"] = inserted.rowcount
    single = session.execute(insert(items).values(n=10, label=f"{tag}-10"))
    out["inserted_primary_key"] = shown(tuple(single.inserted_primary_key))
    changed = session.execute(
        update(items).where(items.c.n == bindparam("which")).values(label=bindparam("new_label")),
        [{"which": 0, "new_label": "zero"}, {"which": 1, "new_label": "one"}],
    )
    out["executemany_rowcount"] = changed.rowcount
    returned = session.execute(
        insert(items).values(n=20, label="returned").returning(items.c.id, items.c.n, items.c.label)
    )
    out["returning"] = shown([tuple(row) for row in returned])
    out["count"] = session.execute(select(func.count()).select_from(items)).scalar_one()
    session.commit()
    duplicate = order_class()
    duplicate.tag = tag
    session.add(duplicate)
    try:
        session.commit()
    except IntegrityError as exc:
        session.rollback()
        cls = type(exc.orig)
        out["integrity_error"] = f"{cls.__module__}.{cls.__qualname__}"
        out["sqlstate"] = getattr(exc.orig, "sqlstate", None) or getattr(exc.orig, "pgcode", None)
        cause = exc.orig.__cause__  # asyncpg's UniqueViolationError under SQLAlchemy's adapter
        out["cause"] = None if cause is None else f"{type(cause).__module__}.{type(cause).__name__}"
        out["cause_constraint"] = getattr(cause, "constraint_name", None)
    return out


def item_work(session: Session, tables: Schema, n: int) -> Any:
    return shown(
        [tuple(row) for row in session.execute(select(tables.items).where(tables.items.c.n == n))]
    )


def stream_work(session: Session, tables: Schema, take: int | None) -> Any:
    """A streamed result (server-side cursor where the driver has them), read fully or only its first rows."""
    result = (
        session.connection()
        .execution_options(stream_results=True, max_row_buffer=2)
        .execute(select(tables.items.c.n, tables.items.c.label).order_by(tables.items.c.n))
    )
    rows = [tuple(row) for row in (result.fetchmany(take) if take else result)]
    result.close()
    return shown(rows)


def isolation_work(session: Session, tables: Schema, level: str) -> Any:
    """A statement on a connection at an isolation level (test suites create their database in
    AUTOCOMMIT): reset when the connection goes back to its pool."""
    connection = session.connection(execution_options={"isolation_level": level})
    count = connection.execute(select(func.count()).select_from(tables.items)).scalar_one()
    # as the server has it (Alembic reads it before its AUTOCOMMIT block)
    return {"level": level, "count": count, "actual": connection.get_isolation_level()}


def _routes(engine: Any, tables: Schema) -> list[Route]:
    async def run(work: Any, *args: Any) -> Any:
        if isinstance(engine, AsyncEngine):
            async with AsyncSession(engine) as session:
                return await session.run_sync(work, tables, *args)
        with Session(engine) as session:
            return work(session, tables, *args)

    async def orders(request: Request) -> JSONResponse:
        return JSONResponse(await run(orders_work, request.path_params["tag"]))

    async def item(request: Request) -> JSONResponse:
        return JSONResponse(await run(item_work, request.path_params["n"]))

    async def stream(request: Request) -> JSONResponse:
        take = request.path_params["take"]
        return JSONResponse(await run(stream_work, None if take == "all" else int(take)))

    async def isolation(request: Request) -> JSONResponse:
        return JSONResponse(await run(isolation_work, request.path_params["level"]))

    return [
        Route("/isolation/{level}", isolation),
        Route("/orders/{tag}", orders, methods=["POST"]),
        Route("/items/{n:int}", item),
        Route("/stream/{take}", stream),
    ]


def create_app(url: str, config: TraceConfig, suffix: str, engine: Any | None = None) -> Starlette:
    """The app on a database at ``url`` (an async driver gives an async engine), or on ``engine``.

    ``app.state.engine`` is the engine underneath (the ``sync_engine`` of an async one).
    """
    if engine is None:
        engine = create_engine(url) if sync_url(url) == url else create_async_engine(url)
    app = Starlette(routes=_routes(engine, schema(suffix)))
    app.state.engine = engine.sync_engine if isinstance(engine, AsyncEngine) else engine
    auto_setup(app, config=config, plugins=["sqlalchemy"])
    return app
