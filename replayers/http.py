"""What a recorded HTTP call answers: status, headers and body as the client expects them.

Cassettes store compressed bodies decoded; a replayer gives the client the body encoded
again as its ``Content-Encoding`` says, so the client decodes it to the recorded bytes.
Recorded transport errors are sorted into kinds (connect, connect timeout, read timeout)
so a call recorded with one library can fail the same way in another.
"""

from __future__ import annotations

import builtins
import contextlib
import gzip
import importlib
import sys
import zlib
from dataclasses import dataclass
from typing import Any, TypeVar

from timetracer_otel.cassette.body import decode_body
from timetracer_otel.cassette.calls import CassetteCall, ErrorInfo

__all__ = [
    "HttpAnswer",
    "http_answer",
    "error_kind",
    "recorded_error_class",
    "recorded_exception_class",
    "request_body_bytes",
    "with_recorded_attributes",
]


@dataclass(frozen=True)
class HttpAnswer:
    status: int
    headers: list[tuple[str, str]]
    body: bytes  # plain, as recorded
    content_encoding: str | None  # the encoding the recorded body was stored decoded from

    def wire_body(self) -> bytes:
        """The body encoded as the recorded ``Content-Encoding`` says."""
        encoding = (self.content_encoding or "").strip().lower()
        if encoding in ("gzip", "x-gzip"):
            return gzip.compress(self.body, mtime=0)
        if encoding == "deflate":
            return zlib.compress(self.body)
        return self.body


def request_body_bytes(body: Any) -> bytes:
    """The bytes a request body given as bytes, text, a file or an iterable of chunks sends (requests, urllib3)."""
    if body is None:
        return b""
    if isinstance(body, str):
        return body.encode("utf-8")
    if isinstance(body, (bytes, bytearray, memoryview)):
        return bytes(body)
    if hasattr(body, "read"):
        data = body.read()
        return data.encode("utf-8") if isinstance(data, str) else bytes(data)
    return b"".join(
        chunk.encode("utf-8") if isinstance(chunk, str) else bytes(chunk) for chunk in body
    )


def http_answer(call: CassetteCall) -> HttpAnswer | None:
    """The answer of a recorded call, or None when it recorded an error instead."""
    response = call.http_response()
    if response is None:
        return None
    return HttpAnswer(
        status=response.status,
        headers=response.headers,
        body=decode_body(response.body),
        content_encoding=response.body.get("content_encoding"),
    )


def error_kind(error: ErrorInfo) -> str:
    """``connect``, ``connect_timeout``, ``read_timeout`` or ``other`` for a recorded exception type."""
    name = error.get("type", "").rsplit(".", 1)[-1].lower()
    if "timeout" in name:
        return "connect_timeout" if "connect" in name or "pool" in name else "read_timeout"
    if "connect" in name:
        return "connect"
    return "other"


_Error = TypeVar("_Error", bound=BaseException)


def recorded_exception_class(
    error: ErrorInfo, package: str | None, base: type[_Error]
) -> type[_Error] | None:
    """The exact recorded exception class, if it is a ``base`` of ``package`` (``None``: of any
    package this process has imported, a drop-in driver such as sqlean's) and can be imported;
    a nested class (``module.Outer.Inner``) too. Only modules of that package are imported:
    never a package a cassette names into being."""
    path = error.get("type", "").split(".")
    allowed = path[0] == package if package is not None else path[0] in sys.modules
    if len(path) < 2 or not allowed:
        return None
    for cut in range(len(path) - 1, 0, -1):  # "pkg.module.Outer.Inner": find where the module ends
        try:
            found: Any = importlib.import_module(".".join(path[:cut]))
        except (ImportError, ValueError):
            continue
        for name in path[cut:]:
            found = getattr(found, name, None)
        return found if isinstance(found, type) and issubclass(found, base) else None
    return None


def recorded_error_class(
    error: ErrorInfo, package: str | None, default: type[Exception]
) -> type[Exception]:
    """The recorded class when it is a built-in exception or one of ``package``'s (see
    :func:`recorded_exception_class`), else ``default``."""
    name = error.get("type", "")
    found = (
        getattr(builtins, name, None)
        if "." not in name
        else recorded_exception_class(error, package, Exception)
    )
    return found if isinstance(found, type) and issubclass(found, Exception) else default


def with_recorded_attributes(exc: _Error, attributes: dict[str, Any]) -> _Error:
    """``exc`` with a driver error's recorded attributes set again: those it will not take as
    attributes (psycopg2's ``pgcode``/``pgerror``) through its ``__setstate__``."""
    readonly = {}
    for name, value in attributes.items():
        try:
            setattr(exc, name, value)
        except (AttributeError, TypeError):
            readonly[name] = value
    if readonly and hasattr(exc, "__setstate__"):
        with contextlib.suppress(Exception):
            exc.__setstate__(readonly)
    return exc
