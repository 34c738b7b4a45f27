"""Matching outgoing calls to recorded ones: normalised signatures, an O(1) index, and diffs.

A signature is what must be equal for a recorded call to answer a live one. For HTTP it
is the method, the URL with its query sorted, and the body in canonical form (JSON with
sorted keys, form fields sorted); headers never count. It does not depend on the client
library, so a call recorded with ``requests`` answers the same call made with ``httpx``.
The live call is redacted the way the recording was, so a redacted password still matches.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import re
from collections import deque
from collections.abc import Hashable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from timetracer_otel.cassette.body import decode_body, encode_body, header_value, load_json
from timetracer_otel.redaction import Redactor
from timetracer_otel.secret_values import ValueScrubber

__all__ = [
    "CallView", "RecordedCall", "CallIndex", "body_digest", "live_body", "http_view", "recorded_http_view", "describe_mismatch",
    "closest_call", "call_differences",
]  # fmt: skip

_DEFAULT_PORTS = {"http": 80, "https": 443}
_BOUNDARY = re.compile(r'boundary="?([^";]+)"?', re.IGNORECASE)
_MAX_SHOWN = 200


@dataclass(frozen=True)
class CallView:
    """A call reduced to what matching compares. ``fields`` are shown in mismatch diffs."""

    protocol: str
    label: str  # "GET http://host/path?q=1", for messages
    key: Hashable  # the signature: equal keys answer each other
    fields: dict[str, Any] = field(compare=False)


def _multipart(data: bytes, content_type: str) -> str | None:
    """The parts of a multipart body without its random boundary: each part's headers and content digest."""
    boundary = _BOUNDARY.search(content_type)
    if boundary is None:
        return None
    parts = []
    for chunk in data.split(b"--" + boundary.group(1).encode("latin-1"))[1:]:
        if chunk.startswith(b"--"):
            break
        chunk = chunk[2:] if chunk.startswith(b"\r\n") else chunk
        chunk = chunk[:-2] if chunk.endswith(b"\r\n") else chunk
        head, _, content = chunk.partition(b"\r\n\r\n")
        parts.append(f"{head.decode('latin-1')}\n{hashlib.sha256(content).hexdigest()}")
    return "\n--\n".join(parts)


def _canonical_body(body: dict | None, headers: list | None) -> tuple[str, Any]:
    """(kind, canonical value) of an encoded cassette body."""
    if not body or body.get("encoding") in (None, "empty"):
        return "empty", ""
    if body.get("truncated"):
        return "truncated", body.get("size")
    content_type = header_value(headers or [], "content-type") or ""
    if content_type.lower().startswith("multipart/"):
        parts = _multipart(decode_body(body), content_type)
        if parts is not None:
            return "multipart", parts
    encoding = body["encoding"]
    if encoding == "json":
        return "json", json.dumps(
            body["json"], sort_keys=True, ensure_ascii=False, separators=(",", ":")
        )
    if encoding == "text":
        text = body["text"]
        if "application/x-www-form-urlencoded" in content_type.lower():
            return "form", "&".join(
                f"{k}={v}" for k, v in sorted(parse_qsl(text, keep_blank_values=True))
            )
        try:
            return "json", json.dumps(
                load_json(text), sort_keys=True, ensure_ascii=False, separators=(",", ":")
            )
        except ValueError:
            return "text", text
    return "bytes", hashlib.sha256(body.get("base64", "").encode("ascii")).hexdigest()


def _digest(kind: str, canonical: Any) -> str:
    return hashlib.sha256(f"{kind}:{canonical}".encode()).hexdigest()


def body_digest(body: dict | None, headers: list | None) -> str:
    """The body's part of a signature, as a SHA-256: equal for bodies that match (a body in cassette form, redacted)."""
    return _digest(*_canonical_body(body, headers))


def live_body(body: bytes, headers: list[tuple[str, str]], limit: int) -> dict[str, Any]:
    """A live body in cassette form, cut at ``limit`` and decoded as the recording would have stored it (not redacted)."""
    encoding = header_value(headers, "content-encoding")
    return encode_body(
        body[:limit],
        size=len(body),
        truncated=len(body) > limit,
        content_encoding=encoding,
        limit=limit,
    )


def http_view(method: str, url: str, body: dict | None, headers: list | None) -> CallView:
    """The view of an HTTP call whose body is already in cassette form (and redacted)."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    host = (parts.hostname or "").lower()
    port = parts.port or _DEFAULT_PORTS.get(scheme)
    query = tuple(sorted(parse_qsl(parts.query, keep_blank_values=True)))
    kind, canonical = _canonical_body(body, headers)
    digest = _digest(kind, canonical)
    target = (method.upper(), scheme, host, port, parts.path or "/", query)
    return CallView(
        protocol="http",
        label=f"{method.upper()} {url}",
        key=("http", *target, digest),
        fields={
            "method": method.upper(),
            "host": f"{host}:{port}",
            "path": parts.path or "/",
            "query": dict(query),
            "body": canonical
            if kind != "truncated"
            else f"<{canonical} bytes, truncated in the cassette>",
        },
    )


def recorded_http_view(call: dict[str, Any]) -> CallView:
    """The view of a recorded HTTP call document."""
    request = call["request"]
    return http_view(request["method"], request["url"], request.get("body"), request.get("headers"))


def live_http_view(
    method: str,
    url: str,
    body: bytes,
    headers: list[tuple[str, str]],
    redactor: Redactor | None,
    limit: int,
    values: ValueScrubber | None = None,
) -> CallView:
    """The view of a live HTTP call, redacted and cut the way a recording would have been.

    A body over ``limit`` matches a recorded body that was truncated at the same size; a
    compressed body (``Content-Encoding``) is compared decoded, as the recording stored it.
    """
    encoded = live_body(body, headers, limit)
    if redactor is not None:
        redactor.body(encoded, [list(h) for h in headers])
        url = redactor.url(url)
    if values:  # the secret values the recording hid by value, hidden the same way
        encoded, url = values.value(encoded), values.text(url)
    return http_view(method, url, encoded, [list(h) for h in headers])


@dataclass
class RecordedCall:
    """One call of the cassette, with its view, and whether replay has used it."""

    index: int
    document: dict[str, Any]
    view: CallView
    used: bool = False


class CallIndex:
    """Recorded calls by signature; ``take`` gives the first unused one, in recorded order."""

    def __init__(self, calls: list[RecordedCall]) -> None:
        self.calls = calls
        self._by_key: dict[Hashable, deque[RecordedCall]] = {}
        for call in calls:
            self._by_key.setdefault(call.view.key, deque()).append(call)

    def take(self, view: CallView) -> RecordedCall | None:
        """The first unused recorded call with ``view``'s signature, marked used; None if none."""
        queue = self._by_key.get(view.key)
        if not queue:
            return None
        found = queue.popleft()
        found.used = True
        return found

    def unused(self) -> list[RecordedCall]:
        return [c for c in self.calls if not c.used]


def _shown(value: Any) -> str:
    text = (
        value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, sort_keys=True)
    )
    return text if len(text) <= _MAX_SHOWN else text[: _MAX_SHOWN - 3] + "..."


def _field_diff(name: str, recorded: Any, live: Any) -> list[str]:
    if name == "query" and isinstance(recorded, dict) and isinstance(live, dict):
        lines = []
        for key in sorted(set(recorded) | set(live)):
            if recorded.get(key) != live.get(key):
                lines.append(
                    f"query {key!r}: recorded {_shown(recorded.get(key, '<absent>'))}, this call {_shown(live.get(key, '<absent>'))}"
                )
        return lines
    if (
        name == "body"
        and isinstance(recorded, str)
        and isinstance(live, str)
        and "\n" not in recorded + live
    ):
        if len(recorded) > 60 or len(live) > 60:
            diff = difflib.ndiff([recorded], [live])
            return ["body differs:"] + [
                f"  {line[:_MAX_SHOWN]}" for line in diff if line[:1] in "-+?"
            ][:6]
    return [f"{name}: recorded {_shown(recorded)}, this call {_shown(live)}"]


def _similarity(a: CallView, b: CallView) -> int:
    weights = {"method": 3, "host": 3, "path": 4, "query": 2, "body": 2}
    return sum(
        weights.get(name, 1) for name, value in a.fields.items() if b.fields.get(name) == value
    )


def _ranked(view: CallView, calls: list[RecordedCall]) -> list[RecordedCall]:
    """The recorded calls of ``view``'s protocol, the most alike first (unused before used)."""
    candidates = [c for c in calls if c.view.protocol == view.protocol]
    return sorted(candidates, key=lambda c: (-_similarity(view, c.view), c.used, c.index))


def call_differences(view: CallView, recorded: RecordedCall) -> list[str]:
    """How the live call ``view`` differs from ``recorded``, one line per field (``path: recorded ..., this call ...``)."""
    lines = []
    for name, value in recorded.view.fields.items():
        live = view.fields.get(name)
        if value != live:
            lines.extend(_field_diff(name, value, live))
    if recorded.view.key == view.key:
        lines.append("same call; every recorded answer for it is used up")
    return lines


def closest_call(view: CallView, calls: list[RecordedCall]) -> RecordedCall | None:
    """The recorded call most like ``view``, or None when the cassette has none of its protocol."""
    ranked = _ranked(view, calls)
    return ranked[0] if ranked else None


def describe_mismatch(view: CallView, calls: list[RecordedCall], limit: int = 3) -> str:
    """The closest recorded calls of the same protocol and how each differs from ``view``."""
    ranked = _ranked(view, calls)[:limit]
    if not ranked:
        return f"the cassette has no recorded {view.protocol} calls"
    lines = ["closest recorded calls:"]
    for call in ranked:
        state = "already used" if call.used else "unused"
        lines.append(f"  #{call.index} {call.view.label} ({state})")
        lines.extend(f"      {line}" for line in call_differences(view, call))
    return "\n".join(lines)
