"""Fixtures as in the template's ``tests/conftest.py``; configuration comes from the environment.

Each pytest-xdist worker gets a database schema of its own (as pytest-django gives each a
database of its own): ``TEST_DATABASE_SCHEMA`` with the worker's name appended, in the
database ``TEST_DATABASE_URL`` names.
"""

import os
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from sqlmodel import Session, delete

_worker = os.environ.get("PYTEST_XDIST_WORKER", "main")
os.environ["DATABASE_URL"] = (
    f"{os.environ['TEST_DATABASE_URL']}?options=-csearch_path%3D{os.environ['TEST_DATABASE_SCHEMA']}_{_worker}"
)

from real_service.db import engine, init_db  # noqa: E402  (the settings are read at import)
from real_service.main import app  # noqa: E402
from real_service.models import Item, User  # noqa: E402
from real_service.routes.login import get_user_by_email  # noqa: E402
from utils import (  # noqa: E402
    ADMIN_EMAIL,
    ADMIN_PASSWORD,
    create_user,
    login_headers,
    random_email,
    random_lower_string,
)  # noqa: E402


@pytest.fixture(scope="session", autouse=True)
def db() -> Iterator[Session]:
    init_db()
    with Session(engine) as session:
        if get_user_by_email(session, ADMIN_EMAIL) is None:
            create_user(session, ADMIN_EMAIL, ADMIN_PASSWORD, full_name="Admin")
        yield session
        session.execute(delete(Item))
        session.execute(delete(User))
        session.commit()


@pytest.fixture(scope="module")
def client() -> Iterator[TestClient]:
    with TestClient(app) as c:
        yield c


@pytest.fixture(scope="module")
def superuser_token_headers(client: TestClient) -> dict[str, str]:
    return login_headers(client, ADMIN_EMAIL, ADMIN_PASSWORD)


@pytest.fixture(scope="module")
def normal_user(db: Session) -> tuple[User, str]:
    password = random_lower_string()
    return create_user(db, random_email(), password), password


@pytest.fixture(scope="module")
def normal_user_token_headers(client: TestClient, normal_user: tuple[User, str]) -> dict[str, str]:
    user, password = normal_user
    return login_headers(client, user.email, password)


@pytest.fixture
def other_user_token_headers(client: TestClient, db: Session) -> dict[str, str]:
    password = random_lower_string()
    user = create_user(db, random_email(), password)
    return login_headers(client, user.email, password)
