"""A sign-up service shaped like the FastAPI boilerplates: SQLAlchemy ORM on asyncpg with
``uuid4()`` and ``datetime.now()`` defaults, a Redis cache, a JSON sign-up and a form login,
both carrying a password that redaction seals in the cassette, and a user list paged by its
query string and cached in Redis per page.

``create_app(postgres_url, schema, redis_url, prefix, config)``; ``create_tables`` makes the
table outside any request.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from datetime import datetime, timezone

import redis.asyncio as aioredis
from sqlalchemy import DateTime, String, func, select
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker, create_async_engine
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from timetracer_otel.config import TraceConfig
from timetracer_otel.integrations.starlette import auto_setup


class _Base(DeclarativeBase):
    pass


class User(_Base):
    __tablename__ = "signup_users"

    uuid: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    username: Mapped[str] = mapped_column(String(20), unique=True)
    email: Mapped[str] = mapped_column(String(50), unique=True)
    hashed_password: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), default=lambda: datetime.now(timezone.utc)
    )


def engine_for(postgres_url: str, schema: str) -> AsyncEngine:
    """An asyncpg engine whose tables live in ``schema``."""
    return create_async_engine(
        postgres_url, connect_args={"server_settings": {"search_path": schema}}
    )


async def create_tables(postgres_url: str, schema: str) -> None:
    engine = engine_for(postgres_url, schema)
    async with engine.begin() as conn:
        await conn.run_sync(_Base.metadata.create_all)
    await engine.dispose()


def _hashed(password: str) -> str:
    return hashlib.sha256(password.encode()).hexdigest()


def _shown(user: User) -> dict[str, str]:
    return {
        "uuid": str(user.uuid),
        "username": user.username,
        "email": user.email,
        "created_at": user.created_at.isoformat(),
    }


def create_app(
    postgres_url: str,
    schema: str,
    redis_url: str,
    prefix: str,
    config: TraceConfig,
    login_hint: bool = False,
) -> Starlette:
    """``login_hint``: a login answers with a cookie holding the username, as fief's does."""
    sessions = async_sessionmaker(engine_for(postgres_url, schema), expire_on_commit=False)
    cache = aioredis.Redis.from_url(redis_url)

    async def sign_up(request: Request) -> JSONResponse:
        body = await request.json()
        async with sessions() as db:
            taken = await db.scalar(select(User.uuid).where(User.email == body["email"]))
            if taken is not None:
                return JSONResponse({"detail": "Email is already registered"}, status_code=422)
            user = User(
                username=body["username"],
                email=body["email"],
                hashed_password=_hashed(body["password"]),
            )
            db.add(user)
            await db.commit()
        await cache.set(f"{prefix}:user:{user.username}", str(user.uuid), ex=60)
        return JSONResponse(_shown(user), status_code=201)

    async def login(request: Request) -> JSONResponse:
        form = await request.form()
        async with sessions() as db:
            user = await db.scalar(select(User).where(User.username == form["username"]))
        if user is None or user.hashed_password != _hashed(str(form["password"])):
            return JSONResponse({"detail": "Wrong username or password"}, status_code=401)
        await cache.incr(f"{prefix}:logins:{user.username}")
        response = JSONResponse(_shown(user))
        if login_hint:  # the next login form is filled in with the last username
            response.set_cookie("login_hint", user.username)
        return response

    async def list_users(request: Request) -> JSONResponse:
        page = int(request.query_params.get("page", 1))
        per_page = int(request.query_params.get("items_per_page", 10))
        key = f"{prefix}:users:page_{page}:items_per_page_{per_page}"
        cached = await cache.get(key)
        if cached is not None:
            return JSONResponse(json.loads(cached))
        async with sessions() as db:
            users = await db.scalars(
                select(User).order_by(User.username).offset((page - 1) * per_page).limit(per_page)
            )
            total = await db.scalar(select(func.count()).select_from(User))
        shown = {"data": [_shown(user) for user in users], "total_count": total, "page": page}
        await cache.set(key, json.dumps(shown), ex=60)
        return JSONResponse(shown)

    app = Starlette(
        routes=[
            Route("/users", sign_up, methods=["POST"]),
            Route("/users/", list_users),
            Route("/login", login, methods=["POST"]),
        ]
    )
    auto_setup(app, config, plugins=["sqlalchemy", "redis"])
    return app
