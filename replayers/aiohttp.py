"""aiohttp replay at ``ClientSession._request``, under OpenTelemetry's wrapper.

The call is prepared as aiohttp prepares it (the session's base URL, default headers,
JSON serialiser, and a real ``ClientRequest`` whose payload writes the body bytes into
memory instead of a socket), answered from the cassette, and the answer becomes a
genuine ``ClientResponse`` over a ``StreamReader`` that holds the body: ``read()``,
``json()``, ``content.iter_chunked()``, ``async with`` and ``release()`` behave as live.
The session's trace callbacks fire as for a live call, so OpenTelemetry still makes
the client span. The patch is on the class: sessions created before replay started
are covered too.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import functools
import http.client
import inspect
import re
from http.cookies import CookieError, SimpleCookie
from types import SimpleNamespace
from typing import Any

import aiohttp
from aiohttp import payload
from aiohttp.base_protocol import BaseProtocol
from aiohttp.client_reqrep import ClientRequest
from aiohttp.streams import StreamReader
from aiohttp.tracing import Trace
from multidict import CIMultiDict, CIMultiDictProxy, istr

from timetracer_otel import wrapper_layers
from timetracer_otel.cassette.calls import CassetteCall

from .http import HttpAnswer, error_kind, http_answer, recorded_exception_class
from .session import ReplaySession, replay_session_for, round_trip

__all__ = ["install", "uninstall"]

_BY_KIND: dict[str, type[BaseException]] = {
    "connect": aiohttp.ClientConnectorError,
    "connect_timeout": getattr(
        aiohttp, "ConnectionTimeoutError", asyncio.TimeoutError
    ),  # aiohttp >= 3.10
    "read_timeout": getattr(aiohttp, "SocketTimeoutError", asyncio.TimeoutError),
    "other": aiohttp.ClientConnectionError,
}
# "Cannot connect to host h:p ssl:default [the OSError's strerror]", as ClientConnectorError words it
_CONNECTOR_MESSAGE = re.compile(r"Cannot connect to host .*? \[(?P<strerror>.*)\]", re.DOTALL)


class _Written:
    """Collects what a payload writes; stands in for the connection's stream writer."""

    def __init__(self) -> None:
        self.chunks: list[bytes] = []

    async def write(self, chunk: bytes) -> None:
        self.chunks.append(bytes(chunk))


class _Delivered(BaseProtocol):
    """The protocol under a replayed body: all of it is buffered already, so flow control has nothing to do."""

    def pause_reading(self) -> None:
        pass

    def resume_reading(self, resume_parser: bool = True) -> None:
        pass


@functools.cache
def _keywords(cls: type[Any]) -> tuple[tuple[str, bool], ...]:
    """(name, required) of the keyword parameters of ``cls.__init__`` after ``method, url``."""
    parameters = list(inspect.signature(cls.__init__).parameters.values())[3:]
    return tuple(
        (p.name, p.default is p.empty)
        for p in parameters
        if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
    )


def _construct(cls: type, method: str, url: Any, **known: Any) -> Any:
    """``cls(method, url, ...)`` with only the keywords this aiohttp's ``cls`` takes (None for unknown required ones).

    The constructors of ``ClientRequest`` and ``ClientResponse`` change between aiohttp versions.
    """
    kwargs = {
        name: known.get(name) for name, required in _keywords(cls) if name in known or required
    }
    return cls(method, url, **kwargs)


def _json_payload(client: aiohttp.ClientSession, value: Any) -> payload.Payload:
    serialise_bytes = getattr(client, "_json_serialize_bytes", None)  # aiohttp >= 3.14
    if serialise_bytes is not None:
        return payload.JsonBytesPayload(value, dumps=serialise_bytes)
    return payload.JsonPayload(value, dumps=client._json_serialize)


def _client_request(
    client: aiohttp.ClientSession,
    method: str,
    url: Any,
    headers: CIMultiDict,
    options: dict[str, Any],
) -> ClientRequest:
    """The ``ClientRequest`` aiohttp would send: final URL, headers with the body's, the body payload."""
    data, json_value = options.get("data"), options.get("json")
    if data is not None and json_value is not None:
        raise ValueError("data and json parameters can not be used at the same time")
    if json_value is not None:
        data = _json_payload(client, json_value)
    skip = {istr(name) for name in options.get("skip_auto_headers") or ()} | set(
        client._skip_auto_headers or ()
    )
    return _construct(
        client._request_class,
        method,
        url,
        params=options.get("params"),
        headers=headers,
        skip_auto_headers=skip or None,
        data=data,
        version=client._version,
        compress=options.get("compress"),
        chunked=options.get("chunked"),
        loop=client._loop,
        response_class=client._response_class,
        session=client,
        traces=[],
    )


async def _body_bytes(body: Any) -> bytes:
    """The bytes aiohttp would send for ``body``: its payload's own ``write``, into memory."""
    if not isinstance(body, payload.Payload):
        return bytes(body)
    written = _Written()
    await body.write(written)  # type: ignore[arg-type]  # payloads call only the writer's write()
    close = getattr(body, "close", None)  # aiohttp >= 3.12 closes a payload once it is sent
    if close is not None:
        await close()
    return b"".join(written.chunks)


def _cookies(headers: list[tuple[str, str]]) -> SimpleCookie:
    cookies: SimpleCookie = SimpleCookie()
    for name, value in headers:
        if name.lower() == "set-cookie":
            with contextlib.suppress(CookieError):
                cookies.load(value)
    return cookies


def _response(
    client: aiohttp.ClientSession,
    request: ClientRequest,
    answer: HttpAnswer,
    traces: list[Trace],
    sent: int,
    options: dict[str, Any],
) -> aiohttp.ClientResponse:
    """A ``ClientResponse`` in the state ``ClientResponse.start`` leaves a live one, with the whole body buffered."""
    response = _construct(
        request.response_class,
        request.method,
        request.url,
        writer=None,
        continue100=None,
        timer=None,
        request_info=request.request_info,
        traces=traces,
        loop=client._loop,
        session=client,
        stream_writer=SimpleNamespace(output_size=sent),
    )
    decompress = options.get("auto_decompress")
    decompress = client._auto_decompress if decompress is None else decompress
    limit = options.get("read_bufsize") or client._read_bufsize
    content = StreamReader(_Delivered(client._loop), limit, loop=client._loop)
    content.feed_data(answer.body if decompress else answer.wire_body())
    content.feed_eof()
    response._closed = False
    response.version = request.version
    response.status = answer.status
    response.reason = http.client.responses.get(answer.status, "")
    response._headers = CIMultiDictProxy(CIMultiDict(answer.headers))
    response._raw_headers = tuple(
        (k.encode("latin-1"), v.encode("latin-1")) for k, v in answer.headers
    )
    response.content = content
    content.on_eof(response._response_eof)
    response.cookies = _cookies(answer.headers)
    client.cookie_jar.update_cookies(response.cookies, response.url)
    return response


def _exception(cls: type[BaseException], message: str, request: ClientRequest) -> BaseException:
    """``cls`` from the recorded message. A connector error also needs the connection key and an
    OSError; the cassette keeps only the message, so the OSError is taken as connection refused."""
    if issubclass(cls, aiohttp.ClientConnectorError):
        found = _CONNECTOR_MESSAGE.fullmatch(message)
        os_error = OSError(errno.ECONNREFUSED, found.group("strerror") if found else message)
        return cls(request.connection_key, os_error)
    return cls(message)


def _recorded_error(call: CassetteCall, request: ClientRequest) -> BaseException:
    """The recorded transport error: the same class if it is aiohttp's, else aiohttp's for its kind."""
    error = call.error or {
        "type": "aiohttp.ClientConnectionError",
        "message": "recorded without a response",
    }
    by_kind = _BY_KIND[error_kind(error)]
    message = error.get("message", "")
    try:
        return _exception(
            recorded_exception_class(error, "aiohttp", BaseException) or by_kind, message, request
        )
    except TypeError:  # an aiohttp class built from other arguments
        return _exception(by_kind, message, request)


async def _raise_for_status(response: aiohttp.ClientResponse, check: Any) -> None:
    if callable(check):
        await check(response)
    elif check:
        response.raise_for_status()


async def _replay(
    replay: ReplaySession,
    client: aiohttp.ClientSession,
    method: str,
    str_or_url: Any,
    **options: Any,
) -> aiohttp.ClientResponse:
    """What ``ClientSession._request`` does, with the cassette in place of the connection."""
    if client.closed:
        raise RuntimeError("Session is closed")
    method = method.upper()
    headers = client._prepare_headers(options.get("headers"))
    url = client._build_url(str_or_url)
    traced_url = url.update_query(options.get("params") or {})
    traces: list[Trace] = []
    for config in client._trace_configs:
        trace = Trace(
            client,
            config,
            config.trace_config_ctx(trace_request_ctx=options.get("trace_request_ctx")),
        )
        await trace.send_request_start(method, traced_url, headers)
        traces.append(trace)
    try:
        request = _client_request(client, method, url, headers, options)
        body = await _body_bytes(request.body)
        call = replay.answer_http(
            "aiohttp", method, str(traced_url), body, list(request.headers.items())
        )
        await round_trip()
        answer = http_answer(call)
        if answer is None:
            raise _recorded_error(call, request)
        response = _response(client, request, answer, traces, len(body), options)
        check = options.get("raise_for_status")
        await _raise_for_status(response, client._raise_for_status if check is None else check)
        for trace in traces:
            await trace.send_request_end(method, traced_url, headers, response)
        return response
    except BaseException as exc:
        for trace in traces:
            await trace.send_request_exception(method, traced_url, headers, exc)
        raise


async def _request(wrapped: Any, instance: aiohttp.ClientSession, args: tuple, kwargs: dict) -> Any:
    method = args[0] if args else kwargs.get("method")
    url = args[1] if len(args) > 1 else kwargs.get("str_or_url")
    session = replay_session_for("aiohttp", lambda: f"{method} {url}", str(url))
    if session is None:
        return await wrapped(*args, **kwargs)
    return await _replay(session, instance, *args, **kwargs)


def install() -> None:
    wrapper_layers.install(aiohttp.ClientSession, "_request", _request, layer="replay")


def uninstall() -> None:
    wrapper_layers.uninstall(aiohttp.ClientSession, "_request", layer="replay")
