"""uuid6's ``uuid7()`` copied into an app, as fastapi-alembic-sqlmodel-async ships
``app/utils/uuid6.py``: it keeps the last timestamp it gave in the module, and makes the
next id from it when the clock is not past it."""

from __future__ import annotations

import secrets
import time
import uuid


class UUID(uuid.UUID):
    """The copy's own type, as the package has."""


_last_v7_timestamp: int | None = None


def uuid7() -> UUID:
    global _last_v7_timestamp
    timestamp_ms = time.time_ns() // 10**6
    if _last_v7_timestamp is not None and timestamp_ms <= _last_v7_timestamp:
        timestamp_ms = _last_v7_timestamp + 1
    _last_v7_timestamp = timestamp_ms
    bits = (timestamp_ms & 0xFFFF_FFFF_FFFF) << 80 | secrets.randbits(76)
    bits = bits & ~(0xF << 76) | 7 << 76  # version 7
    bits = bits & ~(0x3 << 62) | 0x2 << 62  # RFC 4122 variant
    return UUID(int=bits)
