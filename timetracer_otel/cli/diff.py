"""Differences between two cassettes: request, response and each call, field by field.

Ids, times and spans always differ between two recordings and are not compared. Headers
that change on every request (``date``, ``traceparent``, ``tracestate``) are ignored by
default; ``ignore`` names more: a header or a JSON field at any depth (case-insensitive),
or a location such as ``response.body`` or ``calls[1].request.headers``. Sealed secrets are
compared by what they seal, with the key, and never shown (see ``sealing.comparable``).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from timetracer_otel._keys import key_for
from timetracer_otel.cassette.body import decode_body
from timetracer_otel.config import TraceConfig
from timetracer_otel.sealing import Sealer
from timetracer_otel.sealing import comparable as _sealed_comparable

__all__ = ["Difference", "DEFAULT_IGNORED", "diff_cassettes", "environment_sealer", "show_value"]

DEFAULT_IGNORED = ("date", "traceparent", "tracestate")
_ABSENT = object()
_VALUE_CHARS = 120


@dataclass(frozen=True)
class Difference:
    where: str  # response.body.user, calls[0].request.headers.user-agent
    a: Any  # the value in the first cassette (absent: "<absent>")
    b: Any

    def to_dict(self) -> dict[str, Any]:
        return {"where": self.where, "a": self.a, "b": self.b}

    def change(self) -> str:
        """``"old" -> "new"``, each value cut to a readable length."""
        return f"{show_value(self.a)} -> {show_value(self.b)}"


def show_value(value: Any) -> str:
    """A compared value as one line of JSON, cut to a readable length."""
    text = json.dumps(value, ensure_ascii=False, default=str)
    return text if len(text) <= _VALUE_CHARS else text[: _VALUE_CHARS - 1] + "…"


def _headers(pairs: Any) -> dict[str, Any]:
    """Headers by lower-case name; a repeated header is a list of its values in order."""
    out: dict[str, Any] = {}
    for name, value in pairs or ():
        key = str(name).lower()
        out[key] = (
            [*out[key], value]
            if isinstance(out.get(key), list)
            else ([out[key], value] if key in out else value)
        )
    return out


def _body(body: Any) -> Any:
    """JSON as its value, text as text, binary as its size and digest (compared, not printed)."""
    if not isinstance(body, dict):
        return body
    encoding = body.get("encoding")
    if encoding == "json":
        value: Any = body["json"]
    elif encoding == "text":
        value = body["text"]
    elif encoding in ("base64", "segments"):
        value = f"<{body.get('size')} bytes, sha256 {hashlib.sha256(decode_body(body)).hexdigest()[:16]}>"
    else:
        value = ""
    return (
        {"truncated": True, "size": body.get("size"), "start": value}
        if body.get("truncated")
        else value
    )


def _message(message: Any, fields: tuple[str, ...]) -> Any:
    if not isinstance(message, dict):
        return message
    out = {name: message.get(name) for name in fields if name in message}
    if "headers" in message:
        out["headers"] = _headers(message["headers"])
    if "body" in message:
        out["body"] = _body(message["body"])
    return out


def _call(call: dict[str, Any]) -> dict[str, Any]:
    if call.get("protocol") != "http":  # typed values: compared as stored
        return {k: call.get(k) for k in ("protocol", "library", "request", "response", "error")}
    return {
        "protocol": "http",
        "library": call.get("library"),
        "request": _message(call.get("request"), ("method", "url")),
        "response": _message(call.get("response"), ("status",)),
        "error": call.get("error"),
    }


def comparable(doc: dict[str, Any]) -> dict[str, Any]:
    """The parts of a cassette that two recordings of the same behaviour share."""
    return {
        "request": _message(doc["request"], ("method", "path", "route", "query")),
        "response": _message(doc["response"], ("status",)),
        "error": doc.get("error"),
        "calls": [_call(c) for c in doc.get("calls", [])],
    }


def _walk(a: Any, b: Any, where: str, names: frozenset[str]) -> Iterator[Difference]:
    if isinstance(a, dict) and isinstance(b, dict):
        for key in [*a, *(k for k in b if k not in a)]:
            if str(key).lower() in names:
                continue
            yield from _walk(
                a.get(key, _ABSENT),
                b.get(key, _ABSENT),
                f"{where}.{key}" if where else str(key),
                names,
            )
    elif isinstance(a, list) and isinstance(b, list):
        for index in range(max(len(a), len(b))):
            left = a[index] if index < len(a) else _ABSENT
            right = b[index] if index < len(b) else _ABSENT
            yield from _walk(left, right, f"{where}[{index}]", names)
    elif a is _ABSENT or b is _ABSENT or a != b or type(a) is not type(b):
        yield Difference(
            where, "<absent>" if a is _ABSENT else a, "<absent>" if b is _ABSENT else b
        )


def _under(where: str, location: str) -> bool:
    return where == location or where.startswith(location + ".") or where.startswith(location + "[")


def environment_sealer() -> Sealer | None:
    """The sealer of the key this environment names (``TIMETRACER_SECRET_KEY``, the key file), if any."""
    key = key_for(TraceConfig())
    return Sealer(key) if key is not None else None


def diff_cassettes(
    a: dict[str, Any],
    b: dict[str, Any],
    ignore: Iterable[str] = DEFAULT_IGNORED,
    sealer: Sealer | None = None,
) -> list[Difference]:
    """Every difference between cassettes ``a`` and ``b``, in document order; empty when they agree.
    Sealed values are equal when ``sealer``'s key opens them to the same value; without it, they
    read as ``[REDACTED]`` and are not told apart."""
    ignored = [name.strip() for name in ignore if name.strip()]
    names = frozenset(n.lower() for n in ignored if "." not in n and "[" not in n)
    locations = [n for n in ignored if "." in n or "[" in n]
    found = _walk(
        comparable(_sealed_comparable(a, sealer)),
        comparable(_sealed_comparable(b, sealer)),
        "",
        names,
    )
    return [d for d in found if not any(_under(d.where, loc) for loc in locations)]
