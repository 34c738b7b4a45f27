"""Checking a cassette document: the type and range of every field a reader uses.

Readers (listing, ``show``, ``diff``, ``search``, the dashboard, export, replay) index into
these fields and format them; each is checked once here, so that a wrong-typed or
out-of-range value is one :class:`CassetteError` naming the field, never an exception in
a reader. Fields readers do not use (span attributes, the values a non-HTTP call holds)
are left to the code that gives them meaning (replay's call views).
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Callable
from datetime import datetime
from typing import Any

from timetracer_otel.config import ReadLimits

from . import FORMAT_NAME, FORMAT_VERSION
from .body import JSON_FORMATS, decode_body, expands_beyond
from .errors import CassetteError

__all__ = ["SCOPES", "validate_document"]

# what a cassette records; a document without "scope" records a request
SCOPES = (
    "request",
    "process",
)

_ENCODINGS = ("empty", "text", "json", "base64", "segments")
_PROTOCOL = re.compile(r"[a-z][a-z0-9_.-]*")
# and a length divisible by 4 (a repeated group is slow on 50 MB)
_BASE64 = re.compile(r"[A-Za-z0-9+/]*={0,2}")
_ID_CHARS = 64
_ID = re.compile(r"[A-Za-z0-9_.-]+")
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")  # RFC 9110's token: what a header name is
# a line break that is not a folded line's (obs-fold: CRLF then a space, which old servers send and
# http.client keeps), or a NUL
_LINE_BREAK = re.compile(r"\x00|\r(?!\n[ \t])|\n(?![ \t])")
_MOST = 2**64 - 1  # the largest integer a count, size or time may be (OTLP's fixed64)
_SHOWN_CHARS = 40


class _Invalid(Exception):
    """A field that is not as readers need it: ``where`` and what is wrong."""

    def __init__(self, where: str, problem: str) -> None:
        super().__init__(f"{where} {problem}")


def _shown(value: Any) -> str:
    """A value as a message quotes it: short, whatever it is."""
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, list):
        return "a list"
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int) and value.bit_length() > 64:
        return f"an integer of {value.bit_length()} bits"
    text = repr(value)
    return text if len(text) <= _SHOWN_CHARS else text[: _SHOWN_CHARS - 1] + "…"


def _fail(value: Any, where: str, expected: str) -> None:
    raise _Invalid(where, f"is {_shown(value)}, expected {expected}")


def _string(value: Any, where: str, empty: bool = True, nullable: bool = False) -> None:
    if nullable and value is None:
        return
    if not isinstance(value, str) or (not empty and not value):
        _fail(
            value,
            where,
            ("a non-empty string" if not empty else "a string") + (" or null" if nullable else ""),
        )


def _number(value: Any, where: str, lowest: float | None = None, nullable: bool = False) -> None:
    """A number readers can compute with as a float: finite, and an integer no larger than a float holds."""
    if nullable and value is None:
        return
    try:
        number = (
            float(value)
            if isinstance(value, (int, float)) and not isinstance(value, bool)
            else math.nan
        )
    except OverflowError:
        number = math.inf
    if not math.isfinite(number) or (lowest is not None and number < lowest):
        _fail(
            value,
            where,
            "a number"
            + (f" >= {lowest:g}" if lowest is not None else "")
            + (" or null" if nullable else ""),
        )


def _integer(value: Any, where: str, lowest: int, highest: int = _MOST) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not lowest <= value <= highest:
        _fail(value, where, f"an integer from {lowest} to {highest}")


def _object(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        _fail(value, where, "an object")
    return value


def _list(value: Any, where: str) -> list[Any]:
    if not isinstance(value, list):
        _fail(value, where, "a list")
    return value


def _required(message: dict[str, Any], where: str, *keys: str) -> None:
    missing = [key for key in keys if key not in message]
    if missing:
        raise _Invalid(where, f"lacks {', '.join(missing)}")


def _optional(
    message: dict[str, Any], key: str, where: str, check: Callable[[Any, str], Any]
) -> None:
    """``check`` the field ``key`` of ``message`` if it has one (``where`` is the message's place, "" at the top)."""
    if key in message:
        check(message[key], f"{where}.{key}" if where else key)


def _json_format(value: Any, where: str) -> None:
    """One of :data:`JSON_FORMATS`' names, with ``_nl`` after it for a body ending in a line break."""
    if not isinstance(value, str) or value.removesuffix("_nl") not in JSON_FORMATS:
        _fail(value, where, "a JSON layout such as compact or indent2 (docs/cassette-format.md)")


def _boolean(value: Any, where: str) -> None:
    if not isinstance(value, bool):
        _fail(value, where, "true or false")


def _hex(digits: int, nullable: bool = False) -> Callable[[Any, str], None]:
    """A check of an id: ``digits`` lower-case hex digits (or null when ``nullable``)."""
    pattern = re.compile(f"[0-9a-f]{{{digits}}}")

    def check(value: Any, where: str) -> None:
        if not (nullable and value is None) and not (
            isinstance(value, str) and pattern.fullmatch(value)
        ):
            _fail(value, where, f"{digits} hex digits" + (" or null" if nullable else ""))

    return check


_span_id = _hex(16)
_span_id_or_null = _hex(16, nullable=True)


def _time(value: Any, where: str) -> None:
    if value is None:
        return
    _string(value, where)
    try:
        datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        _fail(value, where, "an ISO 8601 time such as 2026-01-22T09:15:00.123456Z")


def _headers(value: Any, where: str) -> None:
    for index, pair in enumerate(_list(value, where)):
        if not (
            isinstance(pair, list)
            and len(pair) == 2
            and all(isinstance(part, str) for part in pair)
        ):
            _fail(pair, f"{where}[{index}]", "a [name, value] pair of strings")


def _parsed_headers(value: Any, where: str) -> None:
    """Headers an HTTP parser gave (the inbound request's, a call's answer): replay hands them to
    the app as they were, and no parser lets through a name that is not a token, or a line
    break or NUL in a value. What the app itself sent (its response's headers, its calls'
    request headers) is kept whatever it was."""
    _headers(value, where)
    for index, (name, text) in enumerate(value):
        if not _TOKEN.fullmatch(name):
            _fail(
                name, f"{where}[{index}][0]", "a header name (letters, digits and !#$%&'*+-.^_`|~)"
            )
        if _LINE_BREAK.search(text):
            raise _Invalid(
                f"{where}[{index}][1]",
                "holds a line break (not a folded line's) or NUL, which no parsed header value does",
            )


def _body(value: Any, where: str) -> None:
    body = _object(value, where)
    _required(body, where, "encoding")
    encoding = body["encoding"]
    if encoding not in _ENCODINGS:
        _fail(encoding, f"{where}.encoding", f"one of {', '.join(_ENCODINGS)}")
    _optional(body, "size", where, lambda size, at: _integer(size, at, 0))
    for flag in ("truncated", "complete"):
        _optional(body, flag, where, _boolean)
    _optional(body, "content_encoding", where, _string)
    if encoding == "text":
        _required(body, where, "text")
        _string(body["text"], f"{where}.text")
    elif encoding == "json":
        _required(body, where, "json")
        _optional(body, "json_format", where, _json_format)
    elif encoding == "base64":
        _required(body, where, "base64")
        _string(body["base64"], f"{where}.base64")
        if len(body["base64"]) % 4 or not _BASE64.fullmatch(body["base64"]):
            raise _Invalid(f"{where}.base64", "is not base64")
    elif encoding == "segments":
        _required(body, where, "segments")
        for index, segment in enumerate(_list(body["segments"], f"{where}.segments")):
            at = f"{where}.segments[{index}]"
            part = _object(segment, at)
            if len(part) != 1 or not isinstance(part.get("base64", part.get("text")), str):
                _fail(segment, at, 'one {"base64": string} or {"text": string}')


def _nullable(check: Callable[[Any, str], Any]) -> Callable[[Any, str], None]:
    def checked(value: Any, where: str) -> None:
        if value is not None:
            check(value, where)

    return checked


def _error(value: Any, where: str) -> None:
    if value is None:
        return
    error = _object(value, where)
    _required(error, where, "type", "message")
    _string(error["type"], f"{where}.type")
    _string(error["message"], f"{where}.message")


def _inbound_request(value: Any, where: str) -> None:
    request = _object(value, where)
    _required(request, where, "method", "path", "headers", "body")
    _string(request["method"], f"{where}.method", empty=False)
    _string(request["path"], f"{where}.path")
    _optional(request, "route", where, lambda v, at: _string(v, at, nullable=True))
    _optional(request, "query", where, _string)
    _parsed_headers(request["headers"], f"{where}.headers")
    _body(request["body"], f"{where}.body")
    _optional(request, "fingerprint", where, lambda v, at: _string(v, at, nullable=True))
    _optional(request, "client", where, _client)
    _optional(request, "scheme", where, lambda v, at: _string(v, at, empty=False))
    _optional(request, "root_path", where, _string)
    _optional(request, "worker", where, lambda v, at: _string(v, at, empty=False))


def _client(value: Any, where: str) -> None:
    """``[host, port]``, the ASGI scope's client."""
    if len(_list(value, where)) != 2:
        _fail(value, where, "[host, port]")
    _string(value[0], f"{where}[0]")
    _integer(value[1], f"{where}[1]", 0, 65535)


def _status(value: Any, where: str) -> None:
    _integer(value, where, 100, 599)


def _response(value: Any, where: str, outgoing: bool = False) -> None:
    response = _object(value, where)
    _required(response, where, "status", *(() if outgoing else ("headers", "body")))
    _status(response["status"], f"{where}.status")
    _optional(response, "headers", where, _nullable(_parsed_headers) if outgoing else _headers)
    _optional(response, "body", where, _nullable(_body) if outgoing else _body)


def _http_call(call: dict[str, Any], where: str) -> None:
    request = _object(call.get("request"), f"{where}.request")
    _required(request, f"{where}.request", "method", "url", "body")
    _string(request["method"], f"{where}.request.method", empty=False)
    _string(request["url"], f"{where}.request.url", empty=False)
    _optional(request, "headers", f"{where}.request", _headers)
    _nullable(_body)(request["body"], f"{where}.request.body")
    _optional(call, "response", where, _nullable(lambda v, at: _response(v, at, outgoing=True)))


def _call(value: Any, where: str) -> None:
    call = _object(value, where)
    _required(call, where, "protocol")
    protocol = call["protocol"]
    if not isinstance(protocol, str) or not _PROTOCOL.fullmatch(protocol):
        _fail(protocol, f"{where}.protocol", "a protocol name such as http, sql, redis or mongo")
    for key in ("kind", "library"):
        _optional(call, key, where, _string)
    _optional(call, "span_id", where, _span_id_or_null)
    _optional(call, "start_offset_ms", where, lambda v, at: _number(v, at, nullable=True))
    _optional(call, "error", where, _error)
    if protocol == "http":
        _http_call(call, where)
    else:
        for key in ("request", "response"):
            _optional(call, key, where, _nullable(_object))


def _inflatable(message: dict[str, Any], where: str, limit: int) -> None:
    """A body kept as the wire carried it, compressed, is inflated by the client or app it is
    replayed to: a small file must not stand for more than ``limit`` bytes (a gzip bomb)."""
    body = message.get("body")
    if not body or "content_encoding" in body:  # stored decoded (what recording does)
        return
    # every Content-Encoding header: a coding each
    encoding = ", ".join(
        value for name, value in message.get("headers") or () if name.lower() == "content-encoding"
    )
    if encoding and expands_beyond(decode_body(body), encoding, limit):
        raise _Invalid(
            f"{where}.body",
            f"expands beyond TIMETRACER_READ_MAX_BYTES ({limit} bytes) when its Content-Encoding is undone",
        )


def _span(value: Any, where: str) -> None:
    span = _object(value, where)
    _required(
        span,
        where,
        "span_id",
        "parent_id",
        "name",
        "kind",
        "start_offset_ms",
        "duration_ms",
        "status",
    )
    _span_id(span["span_id"], f"{where}.span_id")
    _span_id_or_null(span["parent_id"], f"{where}.parent_id")
    _string(span["name"], f"{where}.name")
    _string(span["kind"], f"{where}.kind")
    _number(span["start_offset_ms"], f"{where}.start_offset_ms")
    _number(span["duration_ms"], f"{where}.duration_ms", lowest=0)
    status = _object(span["status"], f"{where}.status")
    _required(status, f"{where}.status", "code")
    _string(status["code"], f"{where}.status.code")
    for key in ("start_time_unix_nano", "end_time_unix_nano"):
        _optional(span, key, where, lambda v, at: _integer(v, at, 0))
    _optional(span, "attributes", where, _object)
    _optional(span, "events", where, _events)


def _events(value: Any, where: str) -> None:
    for index, item in enumerate(_list(value, where)):
        event = _object(item, f"{where}[{index}]")
        _required(event, f"{where}[{index}]", "name", "attributes")
        _string(event["name"], f"{where}[{index}].name")
        _object(event["attributes"], f"{where}[{index}].attributes")


def _draw(value: Any, where: str) -> None:
    draw = _object(value, where)
    _required(draw, where, "source", "kind", "caller", "value")
    for key in ("source", "kind", "caller"):
        _string(draw[key], f"{where}.{key}")
    if "site" in draw:
        _string(draw["site"], f"{where}.site")


def _id(value: Any, where: str) -> None:
    """Letters, digits, ``_``, ``.`` and ``-``: an id names files (``GET__users__<id>.json``) and is
    shown on the console, so it holds no path separator or control character."""
    _string(value, where, nullable=True)
    if value is not None and not (_ID.fullmatch(value) and len(value) <= _ID_CHARS):
        _fail(value, where, f"at most {_ID_CHARS} letters, digits, '_', '.' or '-'")


def _items(
    doc: dict[str, Any], key: str, check: Callable[[Any, str], None], required: bool = False
) -> None:
    if key not in doc and not required:
        return
    for index, item in enumerate(_list(doc.get(key), key)):
        check(item, f"{key}[{index}]")


def _identity(doc: dict[str, Any], path: str | os.PathLike, scope: str) -> None:
    """A timetracer cassette, of a version this code reads, recording ``scope``."""
    if doc.get("format") != FORMAT_NAME:
        if "resourceSpans" in doc:
            raise CassetteError(
                path, "is OTLP JSON, not a cassette: turn it into cassettes with timetracer import"
            )
        found = (
            f"its 'format' is {_shown(doc['format'])}"
            if "format" in doc
            else "it has no 'format' field"
        )
        raise CassetteError(
            path, f"is JSON but not a timetracer cassette ({found}, expected {FORMAT_NAME!r})"
        )
    version = doc.get("version")
    if type(version) is not int or version != FORMAT_VERSION:  # true and 1.0 equal 1
        raise CassetteError(
            path,
            f"format version {_shown(version)} is not supported (this timetracer reads version {FORMAT_VERSION})",
        )
    found = doc.get("scope", "request")
    if found not in SCOPES:
        raise CassetteError(path, f"'scope' is {_shown(found)}, expected 'process' or none")
    if found != scope:
        raise CassetteError(
            path,
            "is a process cassette (the calls made outside requests), not a request's"
            if found == "process"
            else "is a request's cassette, not a process cassette",
        )


def _bounded_bodies(doc: dict[str, Any], scope: str, limit: int | None) -> None:
    """The compressed bodies replay hands over (the request to the app, each HTTP answer to its client)."""
    if limit is None:
        limit = ReadLimits.from_env().max_bytes
    if scope == "request":
        _inflatable(doc["request"], "request", limit)
    for index, call in enumerate(doc["calls"]):
        if call["protocol"] == "http" and call.get("response"):
            _inflatable(call["response"], f"calls[{index}].response", limit)


def validate_document(
    doc: Any, path: str | os.PathLike, scope: str = "request", inflate_limit: int | None = None
) -> dict[str, Any]:
    """``doc`` if it is a cassette recording ``scope`` whose every field readers use is usable;
    else :class:`CassetteError` naming the field and what is wrong with it. ``inflate_limit``
    (default: the environment's ``TIMETRACER_READ_MAX_BYTES``) bounds what a compressed body
    given to a replayed client or app may expand to."""
    if not isinstance(doc, dict):
        raise CassetteError(
            path,
            f"is JSON but not a timetracer cassette (the top level is {_shown(doc)}, expected an object)",
        )
    _identity(doc, path, scope)
    try:
        _optional(doc, "id", "", _id)
        _optional(doc, "trace_id", "", _hex(32))
        _optional(doc, "service", "", lambda v, at: _string(v, at, nullable=True))
        _optional(doc, "duration_ms", "", lambda v, at: _number(v, at, lowest=0, nullable=True))
        _optional(doc, "error", "", _error)
        if scope == "process":
            _required(doc, "the cassette", "recorded_at")
            _string(doc["recorded_at"], "recorded_at")
            _optional(doc, "dropped_calls", "", lambda v, at: _integer(v, at, 0))
        else:
            _required(doc, "the cassette", "request", "response")
            _inbound_request(doc["request"], "request")
            _response(doc["response"], "response")
        _optional(doc, "recorded_at", "", _time)
        _items(doc, "calls", _call, required=True)
        _items(doc, "spans", _span)
        _items(doc, "draws", _draw)
        _bounded_bodies(doc, scope, inflate_limit)
    except _Invalid as exc:
        raise CassetteError(path, str(exc)) from None
    return doc
