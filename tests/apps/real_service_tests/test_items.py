import uuid
from decimal import Decimal

import httpx
import pytest
from fastapi.testclient import TestClient
from real_service import cache
from utils import API, random_title

ITEMS = f"{API}/items/"


def _create(client: TestClient, headers: dict[str, str], **fields: object) -> dict:
    response = client.post(ITEMS, headers=headers, json={"title": random_title(), **fields})
    assert response.status_code == 200, response.text
    return response.json()


def test_create_item(client: TestClient, superuser_token_headers: dict[str, str]) -> None:
    title = random_title()
    item = _create(client, superuser_token_headers, title=title, description="Something to sell")
    assert (item["title"], item["description"]) == (title, "Something to sell")
    assert uuid.UUID(item["id"]) and uuid.UUID(item["owner_id"])


def test_create_item_with_a_price(
    client: TestClient, normal_user_token_headers: dict[str, str]
) -> None:
    item = _create(client, normal_user_token_headers, price="19.90")
    assert Decimal(item["price"]) == Decimal("19.90")


def test_create_item_without_a_title(
    client: TestClient, normal_user_token_headers: dict[str, str]
) -> None:
    assert (
        client.post(ITEMS, headers=normal_user_token_headers, json={"title": ""}).status_code == 422
    )


def test_read_item(client: TestClient, normal_user_token_headers: dict[str, str]) -> None:
    item = _create(client, normal_user_token_headers)
    response = client.get(f"{ITEMS}{item['id']}", headers=normal_user_token_headers)
    assert response.json() == item


def test_read_item_not_found(client: TestClient, normal_user_token_headers: dict[str, str]) -> None:
    response = client.get(f"{ITEMS}{uuid.uuid4()}", headers=normal_user_token_headers)
    assert response.status_code == 404


def test_read_item_of_another_user(
    client: TestClient,
    normal_user_token_headers: dict[str, str],
    other_user_token_headers: dict[str, str],
) -> None:
    item = _create(client, other_user_token_headers)
    response = client.get(f"{ITEMS}{item['id']}", headers=normal_user_token_headers)
    assert response.status_code == 403


def test_read_items_lists_mine_newest_first(
    client: TestClient, other_user_token_headers: dict[str, str]
) -> None:
    first = _create(client, other_user_token_headers)
    second = _create(client, other_user_token_headers)
    page = client.get(ITEMS, headers=other_user_token_headers).json()
    assert page["count"] == 2
    assert [item["id"] for item in page["data"]] == [second["id"], first["id"]]


def test_read_items_pages(client: TestClient, other_user_token_headers: dict[str, str]) -> None:
    for _ in range(3):
        _create(client, other_user_token_headers)
    page = client.get(
        ITEMS, headers=other_user_token_headers, params={"skip": 1, "limit": 1}
    ).json()
    assert (page["count"], len(page["data"])) == (3, 1)


def test_read_items_is_cached_until_a_write(
    client: TestClient, other_user_token_headers: dict[str, str]
) -> None:
    _create(client, other_user_token_headers)
    me = client.get(f"{API}/users/me", headers=other_user_token_headers).json()
    assert client.get(ITEMS, headers=other_user_token_headers).json()["count"] == 1
    assert cache.get_cached(cache.items_key(uuid.UUID(me["id"]), 0, 100)) is not None
    _create(client, other_user_token_headers)
    assert cache.get_cached(cache.items_key(uuid.UUID(me["id"]), 0, 100)) is None
    assert client.get(ITEMS, headers=other_user_token_headers).json()["count"] == 2


def test_update_item(client: TestClient, normal_user_token_headers: dict[str, str]) -> None:
    item = _create(client, normal_user_token_headers)
    title = random_title()
    updated = client.put(
        f"{ITEMS}{item['id']}", headers=normal_user_token_headers, json={"title": title}
    ).json()
    assert (updated["title"], updated["created_at"]) == (title, item["created_at"])
    assert updated["updated_at"] > item["updated_at"]


def test_update_item_not_found(
    client: TestClient, normal_user_token_headers: dict[str, str]
) -> None:
    response = client.put(
        f"{ITEMS}{uuid.uuid4()}", headers=normal_user_token_headers, json={"title": "x"}
    )
    assert response.status_code == 404


def test_update_item_of_another_user(
    client: TestClient,
    normal_user_token_headers: dict[str, str],
    other_user_token_headers: dict[str, str],
) -> None:
    item = _create(client, other_user_token_headers)
    response = client.put(
        f"{ITEMS}{item['id']}", headers=normal_user_token_headers, json={"title": "mine now"}
    )
    assert response.status_code == 403


def test_delete_item(client: TestClient, normal_user_token_headers: dict[str, str]) -> None:
    item = _create(client, normal_user_token_headers)
    response = client.delete(f"{ITEMS}{item['id']}", headers=normal_user_token_headers)
    assert response.json() == {"message": "Item deleted successfully"}
    assert client.get(f"{ITEMS}{item['id']}", headers=normal_user_token_headers).status_code == 404


def test_delete_item_not_found(
    client: TestClient, normal_user_token_headers: dict[str, str]
) -> None:
    assert (
        client.delete(f"{ITEMS}{uuid.uuid4()}", headers=normal_user_token_headers).status_code
        == 404
    )


def test_price_quote_from_the_rates_api(
    client: TestClient, normal_user_token_headers: dict[str, str]
) -> None:
    item = _create(client, normal_user_token_headers, price="5.00")
    quote = client.get(
        f"{ITEMS}{item['id']}/price", headers=normal_user_token_headers, params={"currency": "JPY"}
    ).json()
    assert quote["item_id"] == item["id"] and quote["currency"] == "JPY"
    assert "symbols=JPY" in quote["rates"]["query"]


@pytest.mark.asyncio
async def test_read_items_through_the_asgi_transport(
    client: TestClient, normal_user_token_headers: dict[str, str]
) -> None:
    item = _create(client, normal_user_token_headers)
    transport = httpx.ASGITransport(app=client.app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as asgi_client:
        response = await asgi_client.get(f"{ITEMS}{item['id']}", headers=normal_user_token_headers)
    assert response.json() == item
