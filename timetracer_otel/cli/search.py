"""Finding text in cassettes: headers, bodies and URLs of the request, the response and each call."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

from timetracer_otel.cassette.body import decode_body

__all__ = ["places", "matches"]


def _body(body: Any) -> str:
    if not isinstance(body, dict):
        return ""
    try:
        return decode_body(body).decode("utf-8", errors="replace")
    except (ValueError, KeyError, TypeError):
        return json.dumps(body, ensure_ascii=False)


def _headers(pairs: Any) -> str:
    return "\n".join(f"{name}: {value}" for name, value in pairs or ())


def _message(message: Any, where: str, url: str) -> Iterator[tuple[str, str]]:
    if not isinstance(message, dict):
        return
    if url:
        yield f"{where}.url", url
    yield f"{where}.headers", _headers(message.get("headers"))
    yield f"{where}.body", _body(message.get("body"))


def places(doc: dict[str, Any]) -> Iterator[tuple[str, str]]:
    """``(where, text)`` for every searchable part of a cassette, in document order."""
    request = doc["request"]
    target = request["path"] + (f"?{request['query']}" if request.get("query") else "")
    yield from _message(request, "request", target)
    yield from _message(doc["response"], "response", "")
    for index, call in enumerate(doc.get("calls", [])):
        where = f"calls[{index}]"
        if call.get("protocol") == "http":
            yield from _message(
                call.get("request"), f"{where}.request", (call.get("request") or {}).get("url", "")
            )
            yield from _message(call.get("response"), f"{where}.response", "")
        else:
            for part in ("request", "response"):
                yield f"{where}.{part}", json.dumps(call.get(part), ensure_ascii=False, default=str)
        if call.get("error"):
            yield f"{where}.error", json.dumps(call["error"], ensure_ascii=False)


def matches(doc: dict[str, Any], text: str, case_sensitive: bool = False) -> list[str]:
    """Where ``text`` occurs in ``doc`` (``request.body``, ``calls[0].response.headers``, ...)."""
    needle = text if case_sensitive else text.lower()
    return [
        where for where, hay in places(doc) if needle in (hay if case_sensitive else hay.lower())
    ]
