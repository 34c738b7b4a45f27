"""Finding text in cassettes: headers, bodies and URLs of the request, the response and each call,
and the spans, errors and draws."""

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


def _text(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, default=str)


def places(doc: dict[str, Any]) -> Iterator[tuple[str, str]]:
    """``(where, text)`` for every part of a cassette, in document order: a search for a secret
    must see all that a file holds (a process cassette has no request or response)."""
    request = doc.get("request")
    if isinstance(request, dict):
        target = request.get("path", "") + (f"?{request['query']}" if request.get("query") else "")
        yield from _message(request, "request", target)
    yield from _message(doc.get("response"), "response", "")
    if doc.get("error"):
        yield "error", _text(doc["error"])
    for index, call in enumerate(doc.get("calls") or ()):
        where = f"calls[{index}]"
        if not isinstance(call, dict):
            continue
        if call.get("protocol") == "http":
            yield from _message(
                call.get("request"), f"{where}.request", (call.get("request") or {}).get("url", "")
            )
            yield from _message(call.get("response"), f"{where}.response", "")
        else:
            for part in ("request", "response"):
                yield f"{where}.{part}", _text(call.get(part))
        if call.get("error"):
            yield f"{where}.error", _text(call["error"])
    for index, span in enumerate(doc.get("spans") or ()):
        yield f"spans[{index}]", _text(span)
    if doc.get("draws"):
        yield "draws", _text(doc["draws"])


def matches(doc: dict[str, Any], text: str, case_sensitive: bool = False) -> list[str]:
    """Where ``text`` occurs in ``doc`` (``request.body``, ``calls[0].response.headers``, ...)."""
    needle = text if case_sensitive else text.lower()
    return [
        where for where, hay in places(doc) if needle in (hay if case_sensitive else hay.lower())
    ]
