"""The engine, made when the module loads (as the template's ``core/db.py`` does), and sessions."""

from __future__ import annotations

from collections.abc import Iterator

from sqlmodel import Session, SQLModel, create_engine

from .config import settings

engine = create_engine(settings.DATABASE_URL, pool_pre_ping=True)


def init_db() -> None:
    """Create the tables. Real services without migrations do this at start-up."""
    from . import models  # noqa: F401  (the tables must be registered on SQLModel.metadata)

    SQLModel.metadata.create_all(engine)


def get_db() -> Iterator[Session]:
    with Session(engine) as session:
        yield session
