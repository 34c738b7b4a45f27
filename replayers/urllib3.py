"""urllib3 replay at ``HTTPConnectionPool.urlopen``, under OpenTelemetry's wrapper (so spans still appear).

Covers every pool, ``PoolManager`` and ``urllib3.request``, including pools made before
replay started: the patch is on the pool class. The answer is a real ``HTTPResponse``
over the recorded body, read as the caller asked (``preload_content``,
``decode_content``), so ``data``, ``read``, ``stream`` and ``json`` behave as live. A
recorded error is raised as its own urllib3 class with its recorded message. Calls a
library layered on urllib3 answers itself (requests) pass through.
"""

from __future__ import annotations

import ast
import http
import inspect
import io
import re
from typing import Any

from urllib3 import exceptions
from urllib3._collections import HTTPHeaderDict
from urllib3.connectionpool import HTTPConnectionPool
from urllib3.response import HTTPResponse

from timetracer_otel import wrapper_layers
from timetracer_otel._recording import in_outer_call
from timetracer_otel.protocols.http import absolute_url

from .http import HttpAnswer, error_kind, http_answer, recorded_exception_class, request_body_bytes
from .session import replay_session_for

__all__ = ["install", "uninstall", "urllib3_response"]

_URLOPEN = inspect.signature(HTTPConnectionPool.urlopen)
_BY_KIND: dict[str, type[exceptions.HTTPError]] = {
    "connect": exceptions.NewConnectionError,
    "connect_timeout": exceptions.ConnectTimeoutError,
    "read_timeout": exceptions.ReadTimeoutError,
    "other": exceptions.ProtocolError,
}


def _reason(status: int) -> str:
    try:
        return http.HTTPStatus(status).phrase
    except ValueError:
        return ""


def urllib3_response(
    answer: HttpAnswer,
    method: str,
    url: str,
    *,
    preload_content: bool,
    decode_content: bool,
    pool: HTTPConnectionPool | None = None,
) -> HTTPResponse:
    """A urllib3 response giving the recorded answer, its body as the recorded ``Content-Encoding`` sent it."""
    headers = HTTPHeaderDict()
    for name, value in answer.headers:
        headers.add(name, value)
    return HTTPResponse(
        body=io.BytesIO(answer.wire_body()),
        headers=headers,
        status=answer.status,
        reason=_reason(answer.status),
        preload_content=preload_content,
        decode_content=decode_content,
        # the body is encoded again: its length may differ from the recorded Content-Length
        enforce_content_length=False,
        pool=pool,
        request_method=method,
        request_url=url,
    )


# A MaxRetryError's message ends with the cause's repr: "(Caused by NewConnectionError('...'))".
_CAUSE = re.compile(r"\(Caused by (\w+)\((.*)\)\)$", re.DOTALL)


def _rebuilt(
    cls: type[exceptions.HTTPError], message: str, pool: HTTPConnectionPool, url: str
) -> exceptions.HTTPError:
    """An instance of ``cls`` saying ``message``.

    urllib3's exception classes take the pool, the connection or the cause as arguments;
    the recorded message stands for them, and the attributes they set are this call's pool
    and URL, the cause read back from the message, and no connection (replay has none).
    """
    exc = cls.__new__(cls)
    Exception.__init__(exc, message)
    known = {"pool": pool, "url": url, "conn": None, "reason": _cause(message, pool, url)}
    for name in inspect.signature(cls.__init__).parameters:
        if name in known:
            setattr(exc, name, known[name])
    return exc


def _cause(message: str, pool: HTTPConnectionPool, url: str) -> exceptions.HTTPError | None:
    """The urllib3 exception a MaxRetryError's message names as its cause, or None."""
    found = _CAUSE.search(message)
    cls = getattr(exceptions, found.group(1), None) if found else None
    if found is None or not (isinstance(cls, type) and issubclass(cls, exceptions.HTTPError)):
        return None
    try:
        text = ast.literal_eval(found.group(2))
    except (ValueError, SyntaxError):
        text = found.group(2)
    return _rebuilt(cls, str(text), pool, url)


def _recorded_error(error: dict[str, str], pool: HTTPConnectionPool, url: str) -> Exception:
    """The recorded exception: its urllib3 class (or the nearest for another library's), its message."""
    cls = (
        recorded_exception_class(error, "urllib3", exceptions.HTTPError)
        or _BY_KIND[error_kind(error)]
    )
    return _rebuilt(cls, error.get("message", ""), pool, url)


def _urlopen(wrapped: Any, instance: HTTPConnectionPool, args: tuple, kwargs: dict) -> Any:
    if in_outer_call():  # requests' call, let go live by its replayer
        return wrapped(*args, **kwargs)
    try:
        bound = _URLOPEN.bind(instance, *args, **kwargs)
    except TypeError:
        return wrapped(*args, **kwargs)  # urllib3 raises it, as live
    bound.apply_defaults()
    arguments = bound.arguments
    method = str(arguments["method"]).upper()
    url = absolute_url(instance.scheme, instance.host, instance.port, str(arguments["url"]))
    session = replay_session_for("urllib3", lambda: f"{method} {url}", url)
    if session is None:
        return wrapped(*args, **kwargs)
    given = instance.headers if arguments["headers"] is None else arguments["headers"]
    headers = [(str(k), str(v)) for k, v in given.items()]
    call = session.answer_http(
        "urllib3", method, url, request_body_bytes(arguments["body"]), headers
    )
    answer = http_answer(call)
    if answer is None:
        error = call.error or {
            "type": "urllib3.exceptions.ProtocolError",
            "message": "recorded without a response",
        }
        raise _recorded_error(error, instance, url)
    return urllib3_response(
        answer,
        method,
        url,
        preload_content=bool(arguments["preload_content"]),
        decode_content=bool(arguments["decode_content"]),
        pool=instance,
    )


def install() -> None:
    wrapper_layers.install(HTTPConnectionPool, "urlopen", _urlopen, layer="replay")


def uninstall() -> None:
    wrapper_layers.uninstall(HTTPConnectionPool, "urlopen", layer="replay")
