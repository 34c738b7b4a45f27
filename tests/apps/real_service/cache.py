"""Redis: a fixed-window rate limit per user and hour, and a read-through cache of item lists."""

from __future__ import annotations

import time
import uuid

import redis

from .config import settings

redis_client: redis.Redis[str] = redis.Redis.from_url(settings.REDIS_URL, decode_responses=True)


def key(*parts: object) -> str:
    return settings.CACHE_PREFIX + ":".join(str(part) for part in parts)


def hit_rate_limit(user_id: uuid.UUID) -> int:
    """Count one request in this hour's window; the number of requests in it so far."""
    window = key("ratelimit", user_id, int(time.time()) // 3600)
    pipe = redis_client.pipeline()
    pipe.incr(window)
    pipe.expire(window, 3600)
    count, _ = pipe.execute()
    return int(count)


def items_key(owner_id: uuid.UUID, skip: int, limit: int) -> str:
    return key("items", owner_id, skip, limit)


def get_cached(cache_key: str) -> str | None:
    return redis_client.get(cache_key)


def set_cached(cache_key: str, value: str) -> None:
    redis_client.setex(cache_key, settings.CACHE_TTL_SECONDS, value)


def invalidate_items(owner_id: uuid.UUID) -> None:
    """Forget every cached page of ``owner_id``'s items (after a write)."""
    stale = list(redis_client.scan_iter(match=key("items", owner_id, "*")))
    if stale:
        redis_client.delete(*stale)
