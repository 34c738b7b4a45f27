"""requests replay at ``HTTPAdapter.send``, under OpenTelemetry's wrapper.

The answer is built as a urllib3 response and passed through the adapter's own
``build_response``, so cookies, encoding detection and ``iter_content`` behave as live.
"""

from __future__ import annotations

import http
import io
from typing import Any

import requests
import requests.exceptions as rex
from requests.adapters import HTTPAdapter
from urllib3 import HTTPResponse
from urllib3._collections import HTTPHeaderDict

from timetracer_otel.capture import _patch

from .http import error_kind, http_answer, recorded_exception_class
from .session import replay_session_for

__all__ = ["install", "uninstall"]

_BY_KIND: dict[str, type[rex.RequestException]] = {
    "connect": rex.ConnectionError,
    "connect_timeout": rex.ConnectTimeout,
    "read_timeout": rex.ReadTimeout,
    "other": rex.ConnectionError,
}


def _body_bytes(body: Any) -> bytes:
    if body is None:
        return b""
    if isinstance(body, str):
        return body.encode("utf-8")
    if isinstance(body, (bytes, bytearray)):
        return bytes(body)
    if hasattr(body, "read"):
        data = body.read()
        return data.encode("utf-8") if isinstance(data, str) else bytes(data)
    return b"".join(
        chunk.encode("utf-8") if isinstance(chunk, str) else bytes(chunk) for chunk in body
    )


def _reason(status: int) -> str:
    try:
        return http.HTTPStatus(status).phrase
    except ValueError:
        return ""


def _send(wrapped: Any, instance: HTTPAdapter, args: tuple, kwargs: dict) -> Any:
    request: requests.PreparedRequest = args[0] if args else kwargs["request"]
    session = replay_session_for(
        "requests", lambda: f"{request.method} {request.url}", str(request.url)
    )
    if session is None:
        return wrapped(*args, **kwargs)
    headers = [(str(k), str(v)) for k, v in request.headers.items()]
    call = session.answer_http(
        "requests", request.method or "GET", request.url or "", _body_bytes(request.body), headers
    )
    answer = http_answer(call)
    if answer is None:
        error = call.get("error") or {
            "type": "requests.exceptions.ConnectionError",
            "message": "recorded without a response",
        }
        cls = (
            recorded_exception_class(error, "requests", rex.RequestException)
            or _BY_KIND[error_kind(error)]
        )
        raise cls(error.get("message", ""), request=request)
    header_dict = HTTPHeaderDict()
    for name, value in answer.headers:
        header_dict.add(name, value)
    raw = HTTPResponse(
        body=io.BytesIO(answer.wire_body()),
        headers=header_dict,
        status=answer.status,
        reason=_reason(answer.status),
        preload_content=False,
        decode_content=False,
        enforce_content_length=False,
        request_url=request.url,
    )
    return instance.build_response(request, raw)


def install() -> None:
    _patch.install(HTTPAdapter, "send", _send, layer="replay")


def uninstall() -> None:
    _patch.uninstall(HTTPAdapter, "send", layer="replay")
