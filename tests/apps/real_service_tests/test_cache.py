"""The Redis helpers used directly."""

import uuid

from real_service import cache
from real_service.config import settings
from utils import random_lower_string


def test_rate_limit_counts_each_request() -> None:
    user_id = uuid.uuid4()
    assert [cache.hit_rate_limit(user_id) for _ in range(3)] == [1, 2, 3]


def test_rate_limit_window_expires_within_the_hour() -> None:
    user_id = uuid.uuid4()
    cache.hit_rate_limit(user_id)
    keys = list(cache.redis_client.scan_iter(match=cache.key("ratelimit", user_id, "*")))
    assert len(keys) == 1
    assert 0 < cache.redis_client.ttl(keys[0]) <= 3600


def test_set_and_get_cached() -> None:
    key, value = cache.key("test", random_lower_string(8)), random_lower_string()
    cache.set_cached(key, value)
    assert cache.get_cached(key) == value
    assert 0 < cache.redis_client.ttl(key) <= settings.CACHE_TTL_SECONDS


def test_invalidate_items_forgets_every_page() -> None:
    owner = uuid.uuid4()
    for skip in (0, 10, 20):
        cache.set_cached(cache.items_key(owner, skip, 10), "[]")
    cache.invalidate_items(owner)
    assert [cache.get_cached(cache.items_key(owner, skip, 10)) for skip in (0, 10, 20)] == [
        None,
        None,
        None,
    ]


def test_keys_carry_the_deployment_prefix() -> None:
    assert cache.key("a", 1).startswith(settings.CACHE_PREFIX)
    assert cache.key("a", 1).endswith("a:1")
