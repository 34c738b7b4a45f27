"""requests replay at ``HTTPAdapter.send``, under OpenTelemetry's wrapper.

The answer is built as a urllib3 response and passed through the adapter's own
``build_response``, so cookies, encoding detection and ``iter_content`` behave as live.
"""

from __future__ import annotations

from typing import Any

import requests
import requests.exceptions as rex
from requests.adapters import HTTPAdapter

from timetracer_otel import wrapper_layers
from timetracer_otel._recording import outer_call

from .http import error_kind, http_answer, recorded_exception_class, request_body_bytes
from .session import ReplaySession, goes_live, replay_session_for
from .urllib3 import urllib3_response

__all__ = ["install", "uninstall"]

_BY_KIND: dict[str, type[rex.RequestException]] = {
    "connect": rex.ConnectionError,
    "connect_timeout": rex.ConnectTimeout,
    "read_timeout": rex.ReadTimeout,
    "other": rex.ConnectionError,
}


def _send(wrapped: Any, instance: HTTPAdapter, args: tuple, kwargs: dict) -> Any:
    request: requests.PreparedRequest = args[0] if args else kwargs["request"]
    session = replay_session_for(
        "requests", lambda: f"{request.method} {request.url}", str(request.url)
    )
    if session is not None:
        return _answer(session, instance, request)
    if goes_live("requests"):
        with outer_call():  # urllib3's replayer, which requests sends through, lets it go too
            return wrapped(*args, **kwargs)
    return wrapped(*args, **kwargs)


def _answer(
    session: ReplaySession, instance: HTTPAdapter, request: requests.PreparedRequest
) -> Any:
    headers = [(str(k), str(v)) for k, v in request.headers.items()]
    call = session.answer_http(
        "requests",
        request.method or "GET",
        request.url or "",
        request_body_bytes(request.body),
        headers,
    )
    answer = http_answer(call)
    if answer is None:
        error = call.error or {
            "type": "requests.exceptions.ConnectionError",
            "message": "recorded without a response",
        }
        cls = (
            recorded_exception_class(error, "requests", rex.RequestException)
            or _BY_KIND[error_kind(error)]
        )
        raise cls(error.get("message", ""), request=request)
    raw = urllib3_response(
        answer,
        request.method or "GET",
        request.url or "",
        preload_content=False,
        decode_content=False,
    )
    return instance.build_response(request, raw)


def install() -> None:
    wrapper_layers.install(HTTPAdapter, "send", _send, layer="replay")


def uninstall() -> None:
    wrapper_layers.uninstall(HTTPAdapter, "send", layer="replay")
