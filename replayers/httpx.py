"""httpx replay at the transport seam, under OpenTelemetry's wrapper (so spans still appear).

Covers every ``httpx.Client``/``AsyncClient`` using the default transport, including
clients created before replay started: the patch is on the transport class.
"""

from __future__ import annotations

from typing import Any

import httpx

from timetracer_otel.capture import _patch

from .http import error_kind, http_answer, recorded_exception_class
from .session import ReplaySession, replay_session_for

__all__ = ["install", "uninstall"]

_BY_KIND: dict[str, type[httpx.TransportError]] = {
    "connect": httpx.ConnectError,
    "connect_timeout": httpx.ConnectTimeout,
    "read_timeout": httpx.ReadTimeout,
    "other": httpx.TransportError,
}


def _headers(request: httpx.Request) -> list[tuple[str, str]]:
    return [(k.decode("latin-1"), v.decode("latin-1")) for k, v in request.headers.raw]


def _respond(session: ReplaySession, request: httpx.Request, body: bytes) -> httpx.Response:
    call = session.answer_http("httpx", request.method, str(request.url), body, _headers(request))
    answer = http_answer(call)
    if answer is None:
        error = call.get("error") or {
            "type": "httpx.TransportError",
            "message": "recorded without a response",
        }
        cls = (
            recorded_exception_class(error, "httpx", httpx.RequestError)
            or _BY_KIND[error_kind(error)]
        )
        raise cls(error.get("message", ""), request=request)
    return httpx.Response(
        answer.status,
        headers=answer.headers,
        stream=httpx.ByteStream(answer.wire_body()),
        request=request,
        extensions={"http_version": b"HTTP/1.1"},
    )


def _session(request: httpx.Request) -> ReplaySession | None:
    return replay_session_for("httpx", lambda: f"{request.method} {request.url}", str(request.url))


def _handle_request(wrapped: Any, instance: Any, args: tuple, kwargs: dict) -> Any:
    request: httpx.Request = args[0] if args else kwargs["request"]
    session = _session(request)
    if session is None:
        return wrapped(*args, **kwargs)
    return _respond(session, request, request.read())


async def _handle_async_request(wrapped: Any, instance: Any, args: tuple, kwargs: dict) -> Any:
    request: httpx.Request = args[0] if args else kwargs["request"]
    session = _session(request)
    if session is None:
        return await wrapped(*args, **kwargs)
    return _respond(session, request, await request.aread())


def install() -> None:
    _patch.install(httpx.HTTPTransport, "handle_request", _handle_request, layer="replay")
    _patch.install(
        httpx.AsyncHTTPTransport, "handle_async_request", _handle_async_request, layer="replay"
    )


def uninstall() -> None:
    _patch.uninstall(httpx.HTTPTransport, "handle_request", layer="replay")
    _patch.uninstall(httpx.AsyncHTTPTransport, "handle_async_request", layer="replay")
