"""Sealed secrets: what redaction takes out of a cassette, encrypted with timetracer's key.

With a key (``TIMETRACER_SECRET_KEY`` or the key file, see :mod:`timetracer_otel._keys`),
redaction writes ``[SEALED:<key id>:<data>]`` where it would write ``[REDACTED]``: the
value, AES-256-GCM encrypted under a key derived from timetracer's key, padded to a
multiple of 16 bytes so only its length bucket shows. Replay with the same key opens them,
so the app, the replayed inbound request and the report see the real values; without it
they read as ``[REDACTED]``, exactly as an unsealed cassette would. A cassette sealed with
another key than the replaying process's is refused with the key id it needs.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import os
import re
from collections.abc import Callable
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from timetracer_otel._json_text import member_text
from timetracer_otel._keys import Key

__all__ = [
    "BYTES_TYPES",
    "REDACTED",
    "SEALED_TOKEN",
    "Sealer",
    "SealError",
    "hidden_whole",
    "redacted",
    "unsealed",
    "is_sealed",
]

REDACTED = "[REDACTED]"  # what stands for a secret that is not sealed (no key), and what a sealed one reads as without it
# A token, raw or percent-encoded (in a form body or query), with the JSON quotes around it if any.
SEALED_TOKEN = re.compile(
    r'("?)(?:\[|%5B)SEALED(?::|%3A)([0-9a-f]{8})(?::|%3A)([A-Za-z0-9_-]+)(?:\]|%5D)("?)'
)
_AAD = b"timetracer sealed value v1"
# What a token stands for, the first byte of its plaintext:
TEXT = "s"  # a string, put back as it is
JSON = (
    "j"  # a JSON value (a number, an object, ...) that was a whole member: put back as that value
)
RAW_JSON = (
    "r"  # raw JSON text that stood where the token and its quotes stand (a body cut at the limit)
)


class SealError(ValueError):
    """A sealed value this process cannot open: another key, or damaged data."""


def _pad(data: bytes) -> bytes:
    data += b"\x80"
    return data + b"\x00" * (-len(data) % 16)


def _unpad(data: bytes) -> bytes:
    return data.rstrip(b"\x00")[:-1]


class Sealer:
    """Seals and opens values with one key."""

    def __init__(self, key: Key) -> None:
        self.key_id = key.key_id
        self._aead = AESGCM(hmac.new(key.material, b"timetracer seal", hashlib.sha256).digest())
        self._digest_key = hmac.new(
            key.material, b"timetracer sealed digest", hashlib.sha256
        ).digest()

    def seal(self, text: str, kind: str = TEXT) -> str:
        nonce = os.urandom(12)
        sealed = self._aead.encrypt(nonce, _pad((kind + text).encode("utf-8")), _AAD)
        # no "=": nothing to escape in a query
        data = base64.urlsafe_b64encode(nonce + sealed).decode("ascii").rstrip("=")
        return f"[SEALED:{self.key_id}:{data}]"

    def seal_json(self, value: Any) -> str:
        """A whole JSON member's value: a string stays a string, anything else is put back as JSON."""
        return (
            self.seal(value)
            if isinstance(value, str)
            else self.seal(json.dumps(value, ensure_ascii=False), JSON)
        )

    def digest(self, kind: str, text: str) -> str:
        """A short keyed digest of a sealed value: equal for equal values, and no way back to them
        without the key (which opens the value anyway)."""
        return hmac.new(
            self._digest_key, (kind + text).encode("utf-8"), hashlib.sha256
        ).hexdigest()[:12]

    def open(self, key_id: str, data: str) -> tuple[str, str]:
        """(kind, text) of a token's data; :class:`SealError` for another key or damaged data."""
        if key_id != self.key_id:
            raise SealError(
                f"it is sealed with key {key_id}, and this process has key {self.key_id}; "
                "replay with that key (TIMETRACER_SECRET_KEY or TIMETRACER_KEY_FILE)"
            )
        try:
            raw = base64.urlsafe_b64decode(data + "=" * (-len(data) % 4))
            plain = _unpad(self._aead.decrypt(raw[:12], raw[12:], _AAD)).decode("utf-8")
        except (InvalidTag, ValueError, binascii.Error) as exc:
            raise SealError(
                f"a value sealed with key {key_id}, this process's, is damaged ({type(exc).__name__}): "
                "it was changed after it was sealed, or timetracer did not seal it"
            ) from None
        return plain[:1], plain[1:]


def is_sealed(text: str) -> bool:
    return "SEALED" in text and SEALED_TOKEN.search(text) is not None


def _strings(value: Any, change: Callable[[str], Any]) -> Any:
    """``value`` with ``change`` applied to every string holding a sealed value: a copy, or ``value``
    itself when none does. Iterative, so a deeply nested document cannot exhaust the stack."""
    holder: list[Any] = [value]
    pending: list[tuple[Any, Any, Any]] = [(holder, 0, value)]
    changed = False
    while pending:
        parent, key, item = pending.pop()
        if isinstance(item, str):
            if "SEALED" in item:
                parent[key] = change(item)
                changed = changed or parent[key] != item
        elif isinstance(item, dict):
            parent[key] = copy = dict(item)
            pending.extend((copy, name, child) for name, child in item.items())
        elif isinstance(item, list):
            parent[key] = items = list(item)
            pending.extend((items, index, child) for index, child in enumerate(item))
    return holder[0] if changed else value


# The ``$type`` names of a cassette's typed bytes (see cassette.values): hidden, they keep their
# type around the hidden text
BYTES_TYPES = frozenset(("bytes", "bytearray", "memoryview"))


def hidden_whole(value: Any, sealer: Sealer | None, keep_type: bool = True) -> Any:
    """A member's value (a cassette's JSON form) hidden whole: sealed, which replay with the key
    opens to the value with its type, or ``[REDACTED]``. Typed bytes keep their type around
    the hidden text, so a replay without the key gives the app ``b"[REDACTED]"``, bytes as it
    expects, not a string (a bcrypt hash kept in a ``bytea`` column: SQLAlchemy's
    ``bytes(value)`` raised). ``keep_type`` False: bytes hidden whole too, where bytes standing
    for the hidden ones would be taken for real (a drawn salt of another length, a gRPC
    message's serialized form)."""
    if (
        keep_type
        and isinstance(value, dict)
        and value.get("$type") in BYTES_TYPES
        and isinstance(value.get("base64"), str)
        and len(value) == 2
    ):
        text = value["base64"]
        return {
            "$type": value["$type"],
            "base64": REDACTED if sealer is None else sealer.seal(text),
        }
    return REDACTED if sealer is None else sealer.seal_json(value)


def redacted(document: dict[str, Any]) -> dict[str, Any]:
    """``document`` with every sealed value read as ``[REDACTED]`` (what a process without the key sees)."""

    return _strings(document, lambda text: SEALED_TOKEN.sub(_hidden, text))


def _hidden(match: re.Match) -> str:
    """A sealed token as ``[REDACTED]``, percent-encoded where the token was (a query, a form)."""
    encoded = match.group(0).lstrip('"').startswith("%")
    return match.group(1) + ("%5BREDACTED%5D" if encoded else REDACTED) + match.group(4)


def comparable(document: dict[str, Any], sealer: Sealer | None) -> dict[str, Any]:
    """``document`` as two cassettes are compared: each sealed value as a keyed digest of what it
    seals (``[SEALED #1a2b3c4d5e6f]``), so values sealed alike are equal although each was sealed
    with its own nonce, and none is shown. Without the key that sealed it, ``[REDACTED]``."""
    if sealer is None:
        return redacted(document)

    def digest(match: re.Match) -> str:
        try:
            kind, plain = sealer.open(match.group(2), match.group(3))
        except SealError:
            return _hidden(match)
        return f"{match.group(1)}[SEALED #{sealer.digest(kind, plain)}]{match.group(4)}"

    return _strings(document, lambda text: SEALED_TOKEN.sub(digest, text))


def unsealed(
    document: dict[str, Any], sealer: Sealer, opened: set[str] | None = None
) -> dict[str, Any]:
    """``document`` with every sealed value opened; :class:`SealError` if one cannot be.

    ``opened``: each value opened is added to it as the text it stands for (a JSON member's
    raw text as its value's), the secrets the recording hid."""

    def open_all(text: str) -> Any:
        whole = SEALED_TOKEN.fullmatch(text)
        if whole is not None and not whole.group(1) and not whole.group(4):
            kind, plain = _open(whole, sealer, opened)
            return json.loads(plain) if kind == JSON else plain
        return SEALED_TOKEN.sub(lambda m: _opened(m, sealer, opened), text)

    return _strings(document, open_all)


def _open(match: re.Match, sealer: Sealer, opened: set[str] | None) -> tuple[str, str]:
    kind, plain = sealer.open(match.group(2), match.group(3))
    if opened is not None:
        opened.add(member_text(plain) if kind == RAW_JSON else plain)
    return kind, plain


def _opened(match: re.Match, sealer: Sealer, opened: set[str] | None) -> str:
    kind, plain = _open(match, sealer, opened)
    if kind == RAW_JSON and match.group(1) and match.group(4):
        return plain  # the quotes stood for the raw text's own delimiters
    return match.group(1) + plain + match.group(4)
