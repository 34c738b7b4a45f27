import uuid
from datetime import datetime

from fastapi.testclient import TestClient
from real_service.models import User
from real_service.routes.login import get_user_by_email
from real_service.security import verify_password
from sqlmodel import Session
from utils import API, create_user, login_headers, random_email, random_lower_string

USERS = f"{API}/users"


def test_sign_up(client: TestClient, db: Session) -> None:
    email, password = random_email(), random_lower_string()
    response = client.post(
        f"{USERS}/signup", json={"email": email, "password": password, "full_name": "Signed Up"}
    )
    assert response.status_code == 200
    created = response.json()
    user = get_user_by_email(db, email)
    assert user is not None and str(user.id) == created["id"]
    assert verify_password(password, user.hashed_password)


def test_sign_up_with_an_existing_email(client: TestClient, db: Session) -> None:
    user = create_user(db, random_email(), random_lower_string())
    response = client.post(
        f"{USERS}/signup", json={"email": user.email, "password": random_lower_string()}
    )
    assert response.status_code == 400


def test_sign_up_with_an_invalid_email(client: TestClient) -> None:
    assert (
        client.post(
            f"{USERS}/signup", json={"email": "not-an-email", "password": random_lower_string()}
        ).status_code
        == 422
    )


def test_sign_up_with_a_short_password(client: TestClient) -> None:
    assert (
        client.post(
            f"{USERS}/signup", json={"email": random_email(), "password": "short"}
        ).status_code
        == 422
    )


def test_read_me(
    client: TestClient, normal_user: tuple[User, str], normal_user_token_headers: dict[str, str]
) -> None:
    response = client.get(f"{USERS}/me", headers=normal_user_token_headers)
    assert response.status_code == 200
    assert response.json()["email"] == normal_user[0].email


def test_read_me_without_a_token(client: TestClient) -> None:
    assert client.get(f"{USERS}/me").status_code == 401


def test_read_me_counts_against_the_rate_limit(
    client: TestClient, normal_user_token_headers: dict[str, str]
) -> None:
    first = client.get(f"{USERS}/me", headers=normal_user_token_headers)
    second = client.get(f"{USERS}/me", headers=normal_user_token_headers)
    assert (
        int(second.headers["X-RateLimit-Remaining"])
        == int(first.headers["X-RateLimit-Remaining"]) - 1
    )


def test_update_my_full_name(
    client: TestClient,
    db: Session,
    normal_user: tuple[User, str],
    normal_user_token_headers: dict[str, str],
) -> None:
    name = random_lower_string(10)
    response = client.patch(
        f"{USERS}/me", headers=normal_user_token_headers, json={"full_name": name}
    )
    assert response.json()["full_name"] == name
    db.refresh(normal_user[0])
    assert normal_user[0].full_name == name


def test_update_my_password(client: TestClient, db: Session) -> None:
    password, new_password = random_lower_string(), random_lower_string()
    user = create_user(db, random_email(), password)
    headers = login_headers(client, user.email, password)
    response = client.patch(
        f"{USERS}/me/password",
        headers=headers,
        json={"current_password": password, "new_password": new_password},
    )
    assert response.status_code == 200
    assert login_headers(client, user.email, new_password)


def test_update_my_password_with_a_wrong_current_one(
    client: TestClient, normal_user_token_headers: dict[str, str]
) -> None:
    body = {"current_password": random_lower_string(), "new_password": random_lower_string()}
    response = client.patch(f"{USERS}/me/password", headers=normal_user_token_headers, json=body)
    assert response.status_code == 400
    assert response.json()["detail"] == "Incorrect password"


def test_update_my_password_to_the_same_one(
    client: TestClient, normal_user: tuple[User, str], normal_user_token_headers: dict[str, str]
) -> None:
    password = normal_user[1]
    body = {"current_password": password, "new_password": password}
    response = client.patch(f"{USERS}/me/password", headers=normal_user_token_headers, json=body)
    assert response.status_code == 400


def test_a_user_has_a_uuid_and_timestamps(client: TestClient, db: Session) -> None:
    password = random_lower_string()
    user = create_user(db, random_email(), password)
    me = client.get(f"{USERS}/me", headers=login_headers(client, user.email, password)).json()
    assert uuid.UUID(me["id"]).version == 4
    assert datetime.fromisoformat(me["created_at"]) <= datetime.fromisoformat(me["updated_at"])
