"""urllib3 capture at ``HTTPConnectionPool.urlopen``, the method OpenTelemetry's urllib3 wrapper wraps.

Every way of calling urllib3 reaches it (``PoolManager.request``, ``urllib3.request``, a
pool's own ``urlopen``), once per hop: ``PoolManager`` follows redirects itself, so each
hop is a call. A pool's own retries and redirects call ``urlopen`` again from inside:
those stand aside, the outer call records the outcome the application gets. Calls made
for a library layered on urllib3 that records them itself (requests) stand aside too
(:func:`~timetracer_otel._recording.in_outer_call`).

A response read with ``preload_content=True`` was read inside ``urlopen``: its body is
kept as urllib3 holds it. Otherwise the response's two raw reads (``_raw_read``, and
``_handle_chunk`` under ``stream()`` of a chunked body) are teed on that one response, so
every way of reading it (``read``, ``read1``, ``stream``, ``data``, iteration) is kept,
as it is read, undecoded.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterator
from typing import Any

from urllib3.connectionpool import HTTPConnectionPool
from urllib3.response import BaseHTTPResponse

from timetracer_otel import wrapper_layers
from timetracer_otel._apps_under_test import is_app_under_test
from timetracer_otel._diagnostics import guarded
from timetracer_otel._recording import (
    HttpCall,
    current_recording,
    exception_info,
    in_outer_call,
    outer_call,
)
from timetracer_otel.cassette.body import BodySink
from timetracer_otel.protocols.http import absolute_url

from . import header_text, tee_request_body

__all__ = ["install", "uninstall"]

_URLOPEN = inspect.signature(HTTPConnectionPool.urlopen)


def _headers(pool: HTTPConnectionPool, headers: Any) -> list[tuple[str, str]]:
    given = pool.headers if headers is None else headers
    return [(header_text(k), header_text(v)) for k, v in given.items()]


def _tee_reads(response: Any, sink: BodySink) -> None:
    """Keep what the response's raw reads return, on this response only."""
    raw_read, handle_chunk, read_chunked = (
        response._raw_read,
        response._handle_chunk,
        response.read_chunked,
    )

    def keep(data: bytes, done: bool) -> None:
        with guarded("urllib3.response_body"):
            sink.feed(data)
            if done:
                sink.finish()

    def _raw_read(amt: int | None = None, **kwargs: Any) -> bytes:
        data = raw_read(amt, **kwargs)
        keep(data, done=amt is None or not data or response.length_remaining == 0)
        return data

    def _handle_chunk(amt: int | None) -> bytes:
        data = handle_chunk(amt)
        keep(data, done=False)
        return data

    def _read_chunked(
        amt: int | None = None, decode_content: bool | None = None
    ) -> Iterator[bytes]:
        yield from read_chunked(amt, decode_content=decode_content)
        keep(b"", done=True)

    response._raw_read, response._handle_chunk, response.read_chunked = (
        _raw_read,
        _handle_chunk,
        _read_chunked,
    )


def _begin(pool: HTTPConnectionPool, arguments: dict[str, Any]) -> HttpCall | None:
    """Start recording this call if its request is being recorded; None otherwise."""
    recording = current_recording()
    if recording is None:
        return None
    with guarded("urllib3.request"):
        url = absolute_url(pool.scheme, pool.host, pool.port, str(arguments["url"]))
        if is_app_under_test(url):
            return None
        sink = BodySink(recording.config.max_body_bytes)
        arguments["body"] = tee_request_body(arguments["body"], sink, "urllib3.request_body")
        headers = _headers(pool, arguments["headers"])
        call = HttpCall("urllib3", str(arguments["method"]).upper(), url, headers, sink)
        recording.add_call(call)
        return call
    return None


def _responded(call: HttpCall, response: BaseHTTPResponse, arguments: dict[str, Any]) -> None:
    with guarded("urllib3.response"):
        call.status = response.status
        call.response_headers = [(str(k), str(v)) for k, v in response.headers.items()]
        sink = call.response_body = BodySink(call.request_body.limit)
        if arguments["preload_content"]:
            call.response_decoded = bool(arguments["decode_content"])
            sink.feed(getattr(response, "_body", None) or b"")
            sink.finish()
        else:
            _tee_reads(response, sink)


def _urlopen(wrapped: Any, instance: HTTPConnectionPool, args: tuple, kwargs: dict) -> Any:
    if in_outer_call():
        return wrapped(*args, **kwargs)
    try:
        bound = _URLOPEN.bind(instance, *args, **kwargs)
    except TypeError:
        return wrapped(*args, **kwargs)  # urllib3 raises it, as live
    bound.apply_defaults()
    arguments = bound.arguments
    call = _begin(instance, arguments)
    if call is None:
        return wrapped(*args, **kwargs)
    try:
        with outer_call():  # the pool's own retries and redirects record nothing of it
            response = wrapped(*bound.args[1:], **bound.kwargs)
    except Exception as exc:
        with guarded("urllib3.error"):
            call.error = exception_info(exc)
        raise
    _responded(call, response, arguments)
    return response


def install() -> None:
    wrapper_layers.install(HTTPConnectionPool, "urlopen", _urlopen)


def uninstall() -> None:
    wrapper_layers.uninstall(HTTPConnectionPool, "urlopen")
