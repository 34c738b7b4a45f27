"""A scripted client session against tests/apps/real_service: what a real front end does in one sitting.

The session is a list of :class:`Step`. A step may use values that earlier responses
gave (a token, an item id): ``keep`` names the JSON fields to remember, ``path`` and
``auth`` refer to them. So the session computes its requests from the answers it gets,
as a real client does, and re-running it against a replay sends the recorded requests
only if the replay answers as the recording did. A value an earlier response did not
give (that step failed) is sent as ``missing-<name>``: the session always runs to its end,
and the comparison shows every step that differs, not only the first.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import httpx

API = "/api/v1"
HEALTH_PATH = f"{API}/utils/health-check/"

ALICE = {
    "email": "alice@example.com",
    "password": "correct horse battery",
    "full_name": "Alice Liddell",
}
BOB = {"email": "bob@example.com", "password": "hunter2hunter2", "full_name": "Bob Builder"}
ALICE_NEW_PASSWORD = "staple battery horse"
NO_SUCH_ITEM = "00000000-0000-4000-8000-000000000000"
FORGED_TOKEN = (
    "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4In0.Zm9yZ2Vk"  # a well-formed JWT signed with no one's key
)
LOGIN = f"{API}/login/access-token"


def _login(email: str, password: str) -> dict[str, str]:
    return {"username": email, "password": password}


@dataclass(frozen=True)
class Step:
    """One request. ``auth``: the remembered token to send as a bearer token, or a literal ``Authorization`` value."""

    name: str
    method: str
    path: str  # str.format fields name remembered values: "/items/{item1}"
    status: int  # what the service answers when it works: the recording is checked against it
    auth: str | None = None
    json: Any = None
    form: dict[str, str] | None = None
    params: dict[str, Any] | None = None
    # remembered name -> top-level JSON field of the response
    keep: dict[str, str] = field(default_factory=dict)


STEPS: list[Step] = [
    # accounts
    Step("sign up alice", "POST", f"{API}/users/signup", 200, json=ALICE, keep={"alice_id": "id"}),
    Step("sign up alice again", "POST", f"{API}/users/signup", 400, json=ALICE),
    Step("sign up bob", "POST", f"{API}/users/signup", 200, json=BOB, keep={"bob_id": "id"}),
    Step("sign up with a bad email and a short password", "POST", f"{API}/users/signup", 422, json={"email": "nope", "password": "short"}),
    Step("log in alice, wrong password", "POST", LOGIN, 400, form=_login(ALICE["email"], "not her password")),
    Step("log in alice", "POST", LOGIN, 200, form=_login(ALICE["email"], ALICE["password"]), keep={"alice": "access_token"}),
    Step("log in bob", "POST", LOGIN, 200, form=_login(BOB["email"], BOB["password"]), keep={"bob": "access_token"}),
    Step("log in an unknown user", "POST", LOGIN, 400, form=_login("carol@example.com", "whatever123")),
    Step("log in without a password", "POST", LOGIN, 422, form={"username": ALICE["email"]}),
    Step("me without a token", "GET", f"{API}/users/me", 401),
    Step("me with a forged token", "GET", f"{API}/users/me", 401, auth=f"Bearer {FORGED_TOKEN}"),
    Step("me as alice", "GET", f"{API}/users/me", 200, auth="alice"),
    Step("me as bob", "GET", f"{API}/users/me", 200, auth="bob"),
    Step("alice renames herself", "PATCH", f"{API}/users/me", 200, auth="alice", json={"full_name": "Alice P. Liddell"}),
    # items
    Step("alice lists no items", "GET", f"{API}/items/", 200, auth="alice"),
    Step("alice creates item 1", "POST", f"{API}/items/", 200, auth="alice", json={"title": "Teapot", "price": "24.50"}, keep={"item1": "id"}),
    Step("alice creates item 2", "POST", f"{API}/items/", 200, auth="alice", json={"title": "Cup", "description": "Porcelain"}, keep={"item2": "id"}),
    Step("alice creates item 3", "POST", f"{API}/items/", 200, auth="alice", json={"title": "Saucer", "price": "3.10"}, keep={"item3": "id"}),
    Step("bob creates an item", "POST", f"{API}/items/", 200, auth="bob", json={"title": "Hammer", "price": "12.00"}, keep={"bob_item": "id"}),
    Step("create an item with an empty title", "POST", f"{API}/items/", 422, auth="alice", json={"title": ""}),
    Step("create an item with no token", "POST", f"{API}/items/", 401, json={"title": "Spoon"}),
    Step("alice lists her items", "GET", f"{API}/items/", 200, auth="alice"),
    Step("alice lists her items again (cached)", "GET", f"{API}/items/", 200, auth="alice"),
    Step("alice pages 1", "GET", f"{API}/items/", 200, auth="alice", params={"skip": 0, "limit": 2}),
    Step("alice pages 2", "GET", f"{API}/items/", 200, auth="alice", params={"skip": 2, "limit": 2}),
    Step("alice pages with a bad limit", "GET", f"{API}/items/", 422, auth="alice", params={"limit": "many"}),
    Step("alice reads item 1", "GET", f"{API}/items/{{item1}}", 200, auth="alice"),
    Step("alice reads bob's item", "GET", f"{API}/items/{{bob_item}}", 403, auth="alice"),
    Step("alice reads an item that does not exist", "GET", f"{API}/items/{NO_SUCH_ITEM}", 404, auth="alice"),
    Step("alice reads an item with a malformed id", "GET", f"{API}/items/not-a-uuid", 422, auth="alice"),
    Step("alice updates item 1", "PUT", f"{API}/items/{{item1}}", 200, auth="alice", json={"description": "Holds 1.2 l", "price": "26.00"}),
    Step("alice updates item 1 with a negative price", "PUT", f"{API}/items/{{item1}}", 422, auth="alice", json={"price": "-1"}),
    Step("alice updates bob's item", "PUT", f"{API}/items/{{bob_item}}", 403, auth="alice", json={"title": "Mine now"}),
    Step("alice reads item 1 after the update", "GET", f"{API}/items/{{item1}}", 200, auth="alice"),
    Step("alice gets item 1's price in EUR", "GET", f"{API}/items/{{item1}}/price", 200, auth="alice", params={"currency": "EUR"}),
    Step("alice gets item 3's price in GBP", "GET", f"{API}/items/{{item3}}/price", 200, auth="alice", params={"currency": "GBP"}),
    Step("alice deletes item 2", "DELETE", f"{API}/items/{{item2}}", 200, auth="alice"),
    Step("alice deletes item 2 again", "DELETE", f"{API}/items/{{item2}}", 404, auth="alice"),
    Step("alice deletes bob's item", "DELETE", f"{API}/items/{{bob_item}}", 403, auth="alice"),
    Step("alice lists her items after the delete", "GET", f"{API}/items/", 200, auth="alice"),
    Step("bob lists his items", "GET", f"{API}/items/", 200, auth="bob"),
    # password change
    Step("alice changes her password, wrong current one", "PATCH", f"{API}/users/me/password", 400, auth="alice",
         json={"current_password": "not her password", "new_password": ALICE_NEW_PASSWORD}),
    Step("alice changes her password", "PATCH", f"{API}/users/me/password", 200, auth="alice",
         json={"current_password": ALICE["password"], "new_password": ALICE_NEW_PASSWORD}),
    Step("log in alice with the old password", "POST", LOGIN, 400, form=_login(ALICE["email"], ALICE["password"])),
    Step("log in alice with the new password", "POST", LOGIN, 200, form=_login(ALICE["email"], ALICE_NEW_PASSWORD),
         keep={"alice2": "access_token"}),
    Step("me as alice with the new token", "GET", f"{API}/users/me", 200, auth="alice2"),
    Step("alice reads item 3 with the new token", "GET", f"{API}/items/{{item3}}", 200, auth="alice2"),
    Step("bob deletes his item", "DELETE", f"{API}/items/{{bob_item}}", 200, auth="bob"),
    Step("bob lists his items after the delete", "GET", f"{API}/items/", 200, auth="bob"),
]  # fmt: skip


@dataclass
class Exchange:
    """One step as sent and as answered."""

    step: Step
    request: httpx.Request
    status: int
    headers: list[tuple[str, str]]
    body: bytes


class _Memory(dict):
    def __missing__(self, name: str) -> str:
        return f"missing-{name}"


def _authorization(step: Step, memory: _Memory) -> dict[str, str]:
    if step.auth is None:
        return {}
    return {"Authorization": step.auth if " " in step.auth else f"Bearer {memory[step.auth]}"}


def _remember(step: Step, response: httpx.Response, memory: _Memory) -> None:
    if not step.keep:
        return
    try:
        answer = response.json()
    except ValueError:
        return
    for name, json_field in step.keep.items():
        if isinstance(answer, dict) and isinstance(answer.get(json_field), str):
            memory[name] = answer[json_field]


def run_session(base_url: str, steps: list[Step] = STEPS) -> list[Exchange]:
    """Run ``steps`` against the service at ``base_url``, one after the other.

    Each request has a connection of its own: after an exception in the app uvicorn closes
    the connection its 500 went out on, and a kept-alive connection would race that close.
    """
    memory = _Memory()
    exchanges: list[Exchange] = []
    with httpx.Client(
        base_url=base_url, timeout=30, limits=httpx.Limits(max_keepalive_connections=0)
    ) as client:
        for step in steps:
            request = client.build_request(
                step.method,
                step.path.format_map(memory),
                params=step.params,
                json=step.json,
                data=step.form,
                headers=_authorization(step, memory),
            )
            response = client.send(request)
            exchanges.append(
                Exchange(
                    step,
                    request,
                    response.status_code,
                    response.headers.multi_items(),
                    response.content,
                )
            )
            _remember(step, response, memory)
    return exchanges
