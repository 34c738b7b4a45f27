"""A live server: the app under test served by uvicorn in a thread of the test process.

A thread starts with an empty context, so the app's calls in the server thread would
belong to no cassette. While installed, every app uvicorn loads in this process runs each
request (and its lifespan) in the innermost active block, the one of the test (or
fixture) that runs when the request arrives, and its listening ports are known as an app
under test's (:mod:`timetracer_otel._apps_under_test`): the test's own HTTP calls to it
go out to the app instead of being recorded or answered, and the network guard lets them.
Calls the app makes while it serves a request, there or behind ``TestClient`` or
``httpx.ASGITransport``, stay dependencies whatever server answers them; the secrets the
test and the app exchange are hidden in the cassette by value (:mod:`.._given_secrets`).
"""

from __future__ import annotations

import contextlib
from typing import Any

import wrapt

from timetracer_otel import _apps_under_test, _given_secrets
from timetracer_otel._diagnostics import guarded
from timetracer_otel.inbound import latin1_headers

from .blocks import running_block

__all__ = ["install"]

_installed = False


class _InRunningBlock:
    """An ASGI app whose requests record to, or replay from, the block running when they arrive."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        # Whatever the app calls while it serves a request is a dependency, block or none.
        serving = _apps_under_test.serving_request() if scope["type"] != "lifespan" else None
        block = running_block()
        try:
            with block.serving() if block is not None else contextlib.nullcontext():
                if serving is not None:
                    send = _giving_secrets(scope, send)
                await self.app(scope, receive, send)
        finally:
            if serving is not None:
                _apps_under_test.end_serving(serving)


def _giving_secrets(scope: dict[str, Any], send: Any) -> Any:
    """``send`` of a request the test sends the live server: the secrets of the request, and of
    the answer as it is sent, are given (the block is active in both)."""
    with guarded("given secrets"):
        query = bytes(scope.get("query_string", b"")).decode("latin-1")
        _given_secrets.give(latin1_headers(scope.get("headers")), query)

    async def answered(message: dict[str, Any]) -> None:
        if message.get("type") == "http.response.start":
            with guarded("given secrets"):
                _given_secrets.give(latin1_headers(message.get("headers")))
        await send(message)

    return answered


def _give_exchanged(request: Any, response: Any = None) -> None:
    """An httpx request the test sends the app in-process, or the app's answer: their secrets are given."""
    with guarded("given secrets"):
        if response is not None:
            _given_secrets.give(response.headers.multi_items())
            return
        # the body when httpx holds it whole already (a stream is the app's to read, not ours)
        body = getattr(request, "_content", None)
        _given_secrets.give(
            request.headers.multi_items(),
            request.url.query.decode("latin-1"),
            body if isinstance(body, bytes) else None,
        )


def _ports(server: Any) -> list[int]:
    ports = []
    for listening in getattr(server, "servers", ()):
        for sock in listening.sockets or ():
            with contextlib.suppress(OSError, TypeError, IndexError):
                ports.append(sock.getsockname()[1])
    return ports


def _load(wrapped: Any, instance: Any, args: tuple, kwargs: dict) -> Any:
    result = wrapped(*args, **kwargs)
    if not isinstance(instance.loaded_app, _InRunningBlock):
        instance.loaded_app = _InRunningBlock(instance.loaded_app)
    return result


async def _startup(wrapped: Any, instance: Any, args: tuple, kwargs: dict) -> Any:
    result = await wrapped(*args, **kwargs)
    instance._timetracer_ports = _ports(instance)
    for port in instance._timetracer_ports:
        _apps_under_test.serve(port)
    return result


def _wrap_test_client(module: Any) -> None:
    wrapt.wrap_function_wrapper(module, "_TestClientTransport.handle_request", _serving_in_process)


def _wrap_asgi_transport(module: Any) -> None:
    wrapt.wrap_function_wrapper(
        module, "ASGITransport.handle_async_request", _serving_in_process_async
    )


def _serving_in_process(wrapped: Any, instance: Any, args: tuple, kwargs: dict) -> Any:
    """``TestClient``'s transport: the app it calls serves a request (its calls are dependencies)."""
    request = args[0] if args else kwargs.get("request")
    _give_exchanged(request)
    token = _apps_under_test.serving_request()
    try:
        response = wrapped(*args, **kwargs)
    finally:
        _apps_under_test.end_serving(token)
    _give_exchanged(request, response)
    return response


async def _serving_in_process_async(wrapped: Any, instance: Any, args: tuple, kwargs: dict) -> Any:
    """``httpx.ASGITransport`` (or httpx2's): as :func:`_serving_in_process`."""
    request = args[0] if args else kwargs.get("request")
    _give_exchanged(request)
    token = _apps_under_test.serving_request()
    try:
        response = await wrapped(*args, **kwargs)
    finally:
        _apps_under_test.end_serving(token)
    _give_exchanged(request, response)
    return response


async def _shutdown(wrapped: Any, instance: Any, args: tuple, kwargs: dict) -> Any:
    for port in getattr(instance, "_timetracer_ports", ()):
        _apps_under_test.stop(port)
    instance._timetracer_ports = []
    return await wrapped(*args, **kwargs)


def install() -> None:
    """Patch uvicorn (once, when it is installed) so that the apps it serves in this process are apps under test."""
    global _installed
    if _installed:
        return
    _installed = True
    try:
        import uvicorn.config
        import uvicorn.server
    except ImportError:
        return
    wrapt.wrap_function_wrapper(uvicorn.config, "Config.load", _load)
    wrapt.wrap_function_wrapper(uvicorn.server, "Server.startup", _startup)
    wrapt.wrap_function_wrapper(uvicorn.server, "Server.shutdown", _shutdown)
    # An app reached in-process serves requests too: what it calls is a dependency even
    # when a uvicorn server of the test process (a fake upstream) answers it. TestClient is
    # wrapped when the suite imports it, not imported here: its import warns on recent
    # Starlette, which a suite running with warnings as errors would fail on.
    wrapt.register_post_import_hook(_wrap_test_client, "starlette.testclient")
    for client in ("httpx", "httpx2"):
        wrapt.register_post_import_hook(_wrap_asgi_transport, client)
