"""httpx replay at the transport seam, under OpenTelemetry's wrapper (so spans still appear).

Covers every ``httpx.Client``/``AsyncClient`` using the default transport, including
clients created before replay started: the patch is on the transport class.
:class:`TransportReplay` serves httpx2 too (``replayers/httpx2.py``), which has httpx's
transport API in a module of its own; the library is imported when replay is installed.
"""

from __future__ import annotations

import importlib
from typing import Any

from timetracer_otel import wrapper_layers
from timetracer_otel._test_mocks import mocked_by_test

from .http import error_kind, http_answer, recorded_exception_class
from .session import ReplaySession, replay_session_for, round_trip

__all__ = ["TransportReplay", "install", "uninstall"]

# a recorded transport error's kind -> the library's class for it
_ERROR_CLASSES = {
    "connect": "ConnectError",
    "connect_timeout": "ConnectTimeout",
    "read_timeout": "ReadTimeout",
    "other": "TransportError",
}


def _headers(request: Any) -> list[tuple[str, str]]:
    return [(k.decode("latin-1"), v.decode("latin-1")) for k, v in request.headers.raw]


class TransportReplay:
    """Answers the calls sent through the default transports of ``library`` (``httpx``, ``httpx2``)."""

    def __init__(self, library: str) -> None:
        self._library = library
        self._module: Any = None

    def _respond(self, session: ReplaySession, request: Any, body: bytes) -> Any:
        module = self._module
        call = session.answer_http(
            self._library, request.method, str(request.url), body, _headers(request)
        )
        answer = http_answer(call)
        if answer is None:
            error = call.error or {
                "type": f"{self._library}.TransportError",
                "message": "recorded without a response",
            }
            cls = recorded_exception_class(error, self._library, module.RequestError) or getattr(
                module, _ERROR_CLASSES[error_kind(error)]
            )
            raise cls(error.get("message", ""), request=request)
        return module.Response(
            answer.status,
            headers=answer.headers,
            stream=module.ByteStream(answer.wire_body()),
            request=request,
            extensions={"http_version": b"HTTP/1.1"},
        )

    def _session(self, request: Any) -> ReplaySession | None:
        if mocked_by_test(self._library):  # the test's mock answers, as when recorded
            return None
        return replay_session_for(
            self._library, lambda: f"{request.method} {request.url}", str(request.url)
        )

    def _handle_request(self, wrapped: Any, instance: Any, args: tuple, kwargs: dict) -> Any:
        request = args[0] if args else kwargs["request"]
        session = self._session(request)
        if session is None:
            return wrapped(*args, **kwargs)
        return self._respond(session, request, request.read())

    async def _handle_async_request(
        self, wrapped: Any, instance: Any, args: tuple, kwargs: dict
    ) -> Any:
        request = args[0] if args else kwargs["request"]
        session = self._session(request)
        if session is None:
            return await wrapped(*args, **kwargs)
        response = self._respond(session, request, await request.aread())
        await round_trip()
        return response

    def install(self) -> None:
        module = self._module = importlib.import_module(self._library)
        wrapper_layers.install(
            module.HTTPTransport, "handle_request", self._handle_request, layer="replay"
        )
        wrapper_layers.install(
            module.AsyncHTTPTransport,
            "handle_async_request",
            self._handle_async_request,
            layer="replay",
        )

    def uninstall(self) -> None:
        module = self._module
        if module is None:  # never installed
            return
        wrapper_layers.uninstall(module.HTTPTransport, "handle_request", layer="replay")
        wrapper_layers.uninstall(module.AsyncHTTPTransport, "handle_async_request", layer="replay")


_httpx = TransportReplay("httpx")
install, uninstall = _httpx.install, _httpx.uninstall
