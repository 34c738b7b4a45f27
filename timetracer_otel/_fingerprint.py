"""The keyed fingerprint of the secrets redaction removes from an inbound request.

Two requests that differ only in a redacted value (a wrong and a right password, another
``Authorization`` header) look the same in their cassettes. The fingerprint, an
HMAC-SHA256 under timetracer's key of every value redaction removes (with where it was),
tells them apart in replay without storing the values: it cannot be reversed, and without
the key it cannot be checked against guesses either. See :meth:`~timetracer_otel.redaction.Redactor.request_secrets`.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import json
from typing import Any

from timetracer_otel._keys import Key

__all__ = ["SCHEME", "fingerprint", "key_id_of"]

SCHEME = "hmac-sha256"


def fingerprint(secrets: list[tuple[str, str]], key: Key) -> str:
    """``hmac-sha256:<key id>:<64 hex digits>`` of an inbound request's :meth:`Redactor.request_secrets`.

    A request without secrets has a fingerprint too (of nothing), so it is told apart from one with them.
    """
    if not secrets:
        return _of_nothing(key)
    return _digest(key, json.dumps(secrets, ensure_ascii=False, separators=(",", ":")))


@functools.lru_cache(maxsize=8)
def _of_nothing(key: Key) -> str:
    """The fingerprint of a request without secrets, most requests': worked out once per key."""
    return _digest(key, "[]")


def _digest(key: Key, data: str) -> str:
    digest = hmac.new(key.material, data.encode("utf-8"), hashlib.sha256).hexdigest()
    return f"{SCHEME}:{key.key_id}:{digest}"


def key_id_of(value: Any) -> str | None:
    """The key id in a fingerprint, or None for anything that is not one."""
    if not isinstance(value, str):
        return None
    scheme, _, rest = value.partition(":")
    key_id, _, digest = rest.partition(":")
    return key_id if scheme == SCHEME and key_id and digest else None
