from fastapi.testclient import TestClient
from sqlmodel import Session
from utils import ADMIN_EMAIL, ADMIN_PASSWORD, API, create_user, random_email, random_lower_string

LOGIN = f"{API}/login/access-token"


def test_get_access_token(client: TestClient) -> None:
    response = client.post(LOGIN, data={"username": ADMIN_EMAIL, "password": ADMIN_PASSWORD})
    tokens = response.json()
    assert response.status_code == 200
    assert tokens["token_type"] == "bearer"
    assert tokens["access_token"].count(".") == 2


def test_get_access_token_incorrect_password(client: TestClient) -> None:
    response = client.post(LOGIN, data={"username": ADMIN_EMAIL, "password": "incorrect"})
    assert response.status_code == 400
    assert response.json()["detail"] == "Incorrect email or password"


def test_login_with_an_unknown_email(client: TestClient) -> None:
    response = client.post(
        LOGIN, data={"username": random_email(), "password": random_lower_string()}
    )
    assert response.status_code == 400


def test_login_without_a_password(client: TestClient) -> None:
    assert client.post(LOGIN, data={"username": ADMIN_EMAIL}).status_code == 422


def test_use_access_token(client: TestClient, superuser_token_headers: dict[str, str]) -> None:
    response = client.get(f"{API}/users/me", headers=superuser_token_headers)
    assert response.status_code == 200
    assert response.json()["email"] == ADMIN_EMAIL


def test_forged_token_is_rejected(client: TestClient) -> None:
    forged = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4In0.Zm9yZ2Vk"
    response = client.get(f"{API}/users/me", headers={"Authorization": f"Bearer {forged}"})
    assert response.status_code == 401


def test_inactive_user_cannot_log_in(client: TestClient, db: Session) -> None:
    password = random_lower_string()
    user = create_user(db, random_email(), password, is_active=False)
    response = client.post(LOGIN, data={"username": user.email, "password": password})
    assert response.status_code == 400
    assert response.json()["detail"] == "Inactive user"


def test_a_new_user_logs_in(client: TestClient, db: Session) -> None:
    password = random_lower_string()
    user = create_user(db, random_email(), password, full_name="New User")
    response = client.post(LOGIN, data={"username": user.email, "password": password})
    me = client.get(
        f"{API}/users/me", headers={"Authorization": f"Bearer {response.json()['access_token']}"}
    )
    assert me.json()["id"] == str(user.id)
