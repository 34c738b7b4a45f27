"""SQLAlchemy on MariaDB (MySQL's protocol), sync through PyMySQL and asyncio through aiomysql:
an ORM service with Python-side defaults (a UUID, the time), auto-increment keys and UUID
keys, recorded through uvicorn against the real server, replayed with the engines pointed at
a closed port. The URLs say ``mysql://``, as most MariaDB users' do: SQLAlchemy learns it is
MariaDB when it connects (and then types UUIDs as MariaDB's own)."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from datetime import datetime, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
from _replay import new_reports
from _services import closed_port, mariadb_database
from fastapi import FastAPI, HTTPException
from pydantic import BaseModel
from sqlalchemy import (
    JSON,
    DateTime,
    ForeignKey,
    Numeric,
    String,
    Uuid,
    create_engine,
    func,
    select,
)
from sqlalchemy.ext.asyncio import async_sessionmaker, create_async_engine
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, relationship

import timetracer_otel
from timetracer_otel.config import TraceConfig
from timetracer_otel.integrations.starlette import auto_setup


class _Base(DeclarativeBase):
    pass


class _Customer(_Base):
    __tablename__ = "customers"
    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    public_id: Mapped[str] = mapped_column(String(36), default=lambda: str(uuid.uuid4()))
    name: Mapped[str] = mapped_column(String(100))
    created: Mapped[datetime] = mapped_column(
        DateTime, default=lambda: datetime.now(timezone.utc).replace(tzinfo=None)
    )
    orders: Mapped[list[_Order]] = relationship(back_populates="customer")


class _Order(_Base):
    __tablename__ = "orders"
    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    customer_id: Mapped[int] = mapped_column(ForeignKey("customers.id"))
    total: Mapped[Decimal] = mapped_column(Numeric(10, 2))
    meta: Mapped[dict] = mapped_column(JSON, default=dict)
    customer: Mapped[_Customer] = relationship(back_populates="orders")


class _Tag(_Base):
    __tablename__ = "tags"
    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    name: Mapped[str] = mapped_column(String(50))


class _NewCustomer(BaseModel):
    name: str
    total: Decimal


def _service(database: str, config: TraceConfig) -> FastAPI:
    engine = create_engine(f"mysql+pymysql://root@{database}", pool_pre_ping=True)
    sessions = async_sessionmaker(
        create_async_engine(f"mysql+aiomysql://root@{database}"), expire_on_commit=False
    )
    app = FastAPI()

    @app.post("/customers")
    def create(body: _NewCustomer) -> dict[str, Any]:
        with Session(engine) as session:
            customer = _Customer(name=body.name)
            session.add(customer)
            session.flush()
            session.add(_Order(customer_id=customer.id, total=body.total, meta={"via": "api"}))
            session.commit()
            return {
                "id": customer.id,
                "public_id": customer.public_id,
                "created": customer.created.isoformat(),
            }

    @app.get("/customers/{number}")
    def read(number: int) -> dict[str, Any]:
        with Session(engine) as session:
            customer = session.get(_Customer, number)
            if customer is None:
                raise HTTPException(404, "no such customer")
            orders = [{"total": str(o.total), "meta": o.meta} for o in customer.orders]
            return {"name": customer.name, "orders": orders}

    @app.post("/async/customers")
    async def create_async(body: _NewCustomer) -> dict[str, Any]:
        async with sessions() as session:
            customer = _Customer(name=body.name)
            session.add(customer)
            await session.flush()
            session.add(_Order(customer_id=customer.id, total=body.total))
            await session.commit()
            return {"id": customer.id, "public_id": customer.public_id}

    @app.get("/async/stats")
    async def stats() -> dict[str, Any]:
        async with sessions() as session:
            count = (await session.execute(select(func.count(_Customer.id)))).scalar_one()
            total = (await session.execute(select(func.sum(_Order.total)))).scalar()
            latest = await session.execute(select(_Customer).order_by(_Customer.id.desc()).limit(2))
            return {
                "customers": count,
                "total": str(total),
                "latest": [c.name for c in latest.scalars()],
            }

    @app.post("/tags")
    def tag(body: _NewCustomer) -> dict[str, Any]:
        with Session(engine) as session:
            session.add_all([_Tag(name=body.name), _Tag(name=body.name.upper())])
            session.commit()
            return {"tags": session.scalar(select(func.count(_Tag.id)))}

    @app.post("/tags/rename")
    def rename() -> dict[str, Any]:
        """An UPDATE keyed by a UUID the ORM loaded: MariaDB's UUID type gives it back as one."""
        with Session(engine) as session:
            first = session.scalars(select(_Tag).order_by(_Tag.name)).first()
            assert first is not None and isinstance(first.id, uuid.UUID), first
            first.name = "renamed"
            session.commit()
            return {"renamed": str(first.id)}

    @app.delete("/tags")
    def purge() -> dict[str, Any]:
        """The ORM deletes the loaded rows in one executemany and checks the rows it matched."""
        with Session(engine) as session:
            tags = session.scalars(select(_Tag)).all()
            for tag in tags:
                session.delete(tag)
            session.commit()
            return {"deleted": len(tags)}

    @app.get("/schema/{table}")
    def has_table(table: str) -> dict[str, Any]:
        """SQLAlchemy's ``has_table`` on MySQL: ``DESCRIBE``, and the driver's error 1146 for a
        table that does not exist (read from the error's ``args``: ``create_all`` checks so)."""
        with engine.connect() as connection:
            return {"exists": engine.dialect.has_table(connection, table)}

    auto_setup(app, config=config, plugins=["sqlalchemy"])
    app.state.engine = engine
    return app


_SENT = [
    ("POST", "/customers", {"name": "ada", "total": "12.50"}),
    ("GET", "/customers/1", None),
    ("POST", "/async/customers", {"name": "grace", "total": "3.10"}),
    ("GET", "/customers/2", None),
    ("GET", "/customers/99", None),
    ("GET", "/async/stats", None),
    ("POST", "/tags", {"name": "blue", "total": "0"}),
    ("POST", "/tags/rename", None),
    ("DELETE", "/tags", None),
    ("GET", "/schema/customers", None),
    ("GET", "/schema/no_such_table", None),
]


def _send(base_url: str) -> list[tuple[int, Any]]:
    with httpx.Client(base_url=base_url, timeout=30) as client:
        return [
            (response.status_code, response.json())
            for response in (client.request(m, p, json=body) for m, p, body in _SENT)
        ]


@pytest.fixture
def database() -> Iterator[str]:
    with mariadb_database() as found:
        _Base.metadata.create_all(create_engine(f"mysql+pymysql://root@{found}"))
        yield found


def test_an_orm_service_on_mariadb_replays_every_request_with_the_server_unreachable(
    serve: Callable[..., Any], cassette_dir: Path, database: str
) -> None:
    recording = _service(database, TraceConfig(mode="record", cassette_dir=str(cassette_dir)))
    recorded = _send(serve(recording).url)
    assert timetracer_otel.flush(30)
    assert [status for status, _ in recorded] == [200] * 4 + [404] + [200] * 6
    assert recorded[-2:] == [(200, {"exists": True}), (200, {"exists": False})]
    assert recorded[1][1] == {"name": "ada", "orders": [{"total": "12.50", "meta": {"via": "api"}}]}
    assert recorded[5][1] == {"customers": 2, "total": "15.60", "latest": ["grace", "ada"]}
    assert recorded[6][1] == {"tags": 2} and recorded[8][1] == {"deleted": 2}

    unreachable = f"127.0.0.1:{closed_port()}/{database.split('/')[1]}"
    config = TraceConfig(mode="replay", cassette_path=str(cassette_dir))
    with new_reports() as reports:
        server = serve(_service(unreachable, config))
        replayed = _send(server.url)
        server.stop()
    assert replayed == recorded  # the drawn UUIDs and times, the auto-increment keys included
    assert [r.verdict for r in reports] == ["ok"] * len(_SENT)
