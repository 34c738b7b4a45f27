"""HTTP calls as cassette data: the matching view, shared by every HTTP client library.

A call's signature is the method, the URL with its query sorted, and the body in
canonical form (JSON with sorted keys, form fields sorted, multipart parts without their
random boundary); headers never count. It does not depend on the client library, so a
call recorded with ``requests`` answers the same call made with ``httpx``. A live call is
redacted the way the recording was, so a redacted password still matches. The request
and response shapes are :mod:`timetracer_otel.cassette.body`'s; their secrets are hidden
by :class:`~timetracer_otel.redaction.Redactor`.
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, urlsplit

from timetracer_otel.cassette.body import decode_body, encode_body, header_value, load_json
from timetracer_otel.cassette.calls import CassetteCall
from timetracer_otel.sealing import REDACTED

from .trace_context import without_trace_context
from .view import CallView, is_loopback

if TYPE_CHECKING:
    from timetracer_otel.redaction import Redactor
    from timetracer_otel.secret_values import ValueScrubber

__all__ = [
    "absolute_url",
    "body_digest",
    "content_digest",
    "content_fits",
    "content_holes",
    "live_body",
    "request_view",
    "recorded_view",
    "live_view",
]

_DEFAULT_PORTS = {"http": 80, "https": 443}
_BOUNDARY = re.compile(r'boundary="?([^";]+)"?', re.IGNORECASE)


def absolute_url(scheme: str, host: str, port: int | None, target: str) -> str:
    """The URL of a request for ``target`` (a path, or already a URL) on a connection to ``host:port``,
    as connection-pool clients (urllib3) send it; the scheme's default port left out."""
    if not target.startswith("/"):
        return target
    host = f"[{host}]" if ":" in host else host
    shown_port = "" if port is None or port == _DEFAULT_PORTS.get(scheme) else f":{port}"
    return f"{scheme}://{host}{shown_port}{target}"


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


def _body_content(body: dict | None, headers: list | None) -> tuple[str, Any]:
    """(kind, value) of an encoded cassette body: a JSON body's value, a form's fields sorted
    by name, a text; else a string standing for the content (multipart parts, a digest)."""
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
        return "json", body["json"]
    if encoding == "text":
        text = body["text"]
        if "application/x-www-form-urlencoded" in content_type.lower():
            return "form", sorted(parse_qsl(text, keep_blank_values=True))
        try:
            return "json", load_json(text)
        except ValueError:
            return "text", text
    return "bytes", hashlib.sha256(body.get("base64", "").encode("ascii")).hexdigest()


def _canonical_body(body: dict | None, headers: list | None) -> tuple[str, Any]:
    """(kind, canonical value) of an encoded cassette body: JSON with sorted keys, form fields sorted."""
    kind, value = _body_content(body, headers)
    if kind == "json":
        value = json.dumps(value, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    elif kind == "form":
        value = "&".join(f"{k}={v}" for k, v in value)
    return kind, without_trace_context(value) if kind in ("json", "form", "text") else value


def _digest(kind: str, canonical: Any) -> str:
    return hashlib.sha256(f"{kind}:{canonical}".encode()).hexdigest()


def body_digest(body: dict | None, headers: list | None) -> str:
    """The body's part of a signature, as a SHA-256: equal for bodies that match (a body in cassette form, redacted)."""
    return _digest(*_canonical_body(body, headers))


def content_digest(query: str, body: dict | None, headers: list | None) -> str:
    """An inbound request's query string and body, as a SHA-256: equal for requests whose query
    parameters (sorted) and bodies (as :func:`body_digest`) match, both redacted."""
    pairs = sorted(parse_qsl(query, keep_blank_values=True))
    return _digest(
        "content", f"{json.dumps(pairs, ensure_ascii=False)}\n{body_digest(body, headers)}"
    )


def content_holes(query: str, body: dict | None, headers: list | None) -> bool:
    """Whether a recorded query or body (redacted) hides a value: only such a request can
    :func:`content_fits` a live one it does not equal."""
    if any(REDACTED in value for _, value in _query_pairs(query)):
        return True
    kind, canonical = _canonical_body(body, headers)
    return kind in ("json", "form", "text") and REDACTED in canonical


def content_fits(
    recorded: tuple[str, dict | None, list | None], live: tuple[str, dict | None, list | None]
) -> bool:
    """Whether a live request's (query, body, headers) are a recorded request's, where each
    ``[REDACTED]`` in the recorded query or body stands for any text.

    A recording hides by value what its response or its calls made secret (a cookie set to
    the username the login form sent): the live request, which does not carry it, shows it.
    """
    recorded_query, recorded_body, recorded_headers = recorded
    live_query, live_body_, live_headers = live
    return _fits(_query_pairs(recorded_query), _query_pairs(live_query)) and _fits(
        _body_content(recorded_body, recorded_headers), _body_content(live_body_, live_headers)
    )


def _query_pairs(query: str) -> list[tuple[str, str]]:
    return sorted(parse_qsl(query, keep_blank_values=True), key=lambda pair: pair[0])


def _fits(recorded: Any, live: Any) -> bool:
    if isinstance(recorded, str):
        if REDACTED not in recorded:
            return recorded == live
        return isinstance(live, str) and _fills(recorded, live)
    if isinstance(recorded, dict):
        return (
            isinstance(live, dict)
            and recorded.keys() == live.keys()
            and all(_fits(value, live[name]) for name, value in recorded.items())
        )
    if isinstance(recorded, (list, tuple)):
        return (
            isinstance(live, (list, tuple))
            and len(recorded) == len(live)
            and all(map(_fits, recorded, live))
        )
    return recorded == live


def _fills(recorded: str, live: str) -> bool:
    """Whether ``live`` is ``recorded`` with each ``[REDACTED]`` standing for one character or
    more: its pieces found in order, each as early as it can be, which finds a fit whenever
    there is one, in linear time (a recording with many markers costs no more to compare)."""
    first, *middle, last = recorded.split(REDACTED)
    if not live.startswith(first):
        return False
    at = len(first)
    for piece in middle:
        found = live.find(piece, at + 1)
        if found < 0:
            return False
        at = found + len(piece)
    return len(live) - len(last) > at and live.endswith(last)


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


_WITHOUT_USERINFO = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*://)[^/?#]*@")


def request_view(method: str, url: str, body: dict | None, headers: list | None) -> CallView:
    """The view of an HTTP call whose body is already in cassette form (and redacted). The URL's
    user and password take no part (a hidden password, ``[SEALED:...]`` in a live URL that the
    recording's values scrubbed, would read as an IPv6 host)."""
    parts = urlsplit(_WITHOUT_USERINFO.sub(r"\1", url, count=1))
    scheme = parts.scheme.lower()
    host = (parts.hostname or "").lower()
    port = parts.port or _DEFAULT_PORTS.get(scheme)
    query = tuple(sorted(parse_qsl(parts.query, keep_blank_values=True)))
    kind, canonical = _canonical_body(body, headers)
    digest = _digest(kind, canonical)
    method = method.upper()
    path = parts.path or "/"
    return CallView(
        protocol="http",
        label=f"{method} {url}",
        key=("http", method, scheme, host, port, path, query, digest),
        fields={
            "method": method,
            "host": f"{host}:{port}",
            "path": path,
            "query": dict(query),
            "body": canonical
            if kind != "truncated"
            else f"<{canonical} bytes, truncated in the cassette>",
        },
        loopback=(port, ("http", method, scheme, host, path, query, digest))
        if port is not None and is_loopback(host)
        else None,
    )


def recorded_view(call: CassetteCall) -> CallView:
    """The view of a recorded HTTP call."""
    request = call.http_request()
    return request_view(request.method, request.url, request.body, request.headers)


def live_view(
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
    return request_view(method, url, encoded, [list(h) for h in headers])
