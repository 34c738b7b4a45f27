"""The service served by uvicorn in a thread of the test process and called over HTTP, as
suites that test through a real server do (a "live server" fixture)."""

import threading
import uuid
from collections.abc import Iterator

import httpx
import pytest
import uvicorn
from real_service.main import app
from real_service.models import Item
from sqlmodel import Session
from utils import ADMIN_EMAIL, ADMIN_PASSWORD, API, random_email, random_lower_string, random_title


class _Server(uvicorn.Server):
    """Sets :attr:`ready` once its sockets listen."""

    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self.ready = threading.Event()

    async def startup(self, sockets: list | None = None) -> None:
        await super().startup(sockets)
        self.ready.set()


@pytest.fixture(scope="module")
def live_url() -> Iterator[str]:
    server = _Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    assert server.ready.wait(30), "the live server did not start"
    port = server.servers[0].sockets[0].getsockname()[1]
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(30)


def _token(client: httpx.Client, email: str, password: str) -> dict[str, str]:
    response = client.post(
        f"{API}/login/access-token", data={"username": email, "password": password}
    )
    assert response.status_code == 200, response.text
    return {"Authorization": f"Bearer {response.json()['access_token']}"}


def test_sign_up_and_read_me_through_the_live_server(live_url: str) -> None:
    email, password = random_email(), random_lower_string()
    with httpx.Client(base_url=live_url) as client:
        signed_up = client.post(f"{API}/users/signup", json={"email": email, "password": password})
        assert signed_up.status_code == 200, signed_up.text
        me = client.get(f"{API}/users/me", headers=_token(client, email, password))
    assert me.status_code == 200
    assert (me.json()["email"], me.json()["id"]) == (email, signed_up.json()["id"])


def test_an_item_made_through_the_live_server_is_in_the_database(
    live_url: str, db: Session
) -> None:
    title = random_title()
    with httpx.Client(base_url=live_url) as client:
        headers = _token(client, ADMIN_EMAIL, ADMIN_PASSWORD)
        response = client.post(f"{API}/items/", headers=headers, json={"title": title})
    assert response.status_code == 200, response.text
    stored = db.get(Item, uuid.UUID(response.json()["id"]))
    assert stored is not None and stored.title == title
