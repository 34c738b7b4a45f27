"""Helpers as in the template's ``tests/utils``: random data, users made in the database, logins."""

import random
import string

from faker import Faker
from fastapi.testclient import TestClient
from real_service.models import User
from real_service.security import get_password_hash
from sqlmodel import Session

API = "/api/v1"
ADMIN_EMAIL = "admin@example.com"
ADMIN_PASSWORD = "changethis-admin"

fake = Faker()


def random_lower_string(length: int = 32) -> str:
    return "".join(random.choices(string.ascii_lowercase, k=length))


def random_email() -> str:
    return f"{random_lower_string(12)}@{random_lower_string(8)}.com"


def random_title() -> str:
    return fake.sentence(nb_words=4).rstrip(".")


def create_user(
    session: Session,
    email: str,
    password: str,
    full_name: str | None = None,
    is_active: bool = True,
) -> User:
    user = User(
        email=email,
        hashed_password=get_password_hash(password),
        full_name=full_name,
        is_active=is_active,
    )
    session.add(user)
    session.commit()
    session.refresh(user)
    return user


def login_headers(client: TestClient, email: str, password: str) -> dict[str, str]:
    response = client.post(
        f"{API}/login/access-token", data={"username": email, "password": password}
    )
    assert response.status_code == 200, response.text
    return {"Authorization": f"Bearer {response.json()['access_token']}"}
