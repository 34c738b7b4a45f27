"""An ASGI app run in this process as a server runs it: imported, then its lifespan once around
the requests sent to it, on one thread with its event loop (:class:`AppThread`), while the
caller sends requests one at a time.

Starlette's ``TestClient`` did this before; it ties the app's Starlette to an httpx that
Starlette supports (Starlette 0.36, still pinned by FastAPI 0.109 projects, fails with
httpx 0.28, and Starlette 1.x deprecates httpx there). Here the requests go through
``httpx.ASGITransport``, which every httpx since 0.18 has.
"""

from __future__ import annotations

import asyncio
import functools
import importlib.util
import re
import threading
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

import httpx

from timetracer_otel.inbound import ASGIApp, Message, Receive, Scope, Send

__all__ = ["AppRunner", "AppThread", "LifespanError"]

_T = TypeVar("_T")
# who the app sees sending the requests, and the host they are sent to, as TestClient named them
_PEER = ("testclient", 50000)
_ORIGIN = "http://testserver"


class LifespanError(Exception):
    """The app's lifespan startup or shutdown failed: the message it sent, or what it raised."""


class AppThread:
    """The thread an app is imported on and then served from, its event loop running, as
    uvicorn imports an app inside its loop on the thread serving it: what the app's modules
    keep per thread as they are imported (Celery's current app) is there for its requests."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self.loop.run_forever, name="timetracer-replay-app", daemon=True
        )
        self._thread.start()

    def call(self, function: Callable[[], _T]) -> _T:
        """``function()``, called on this thread (inside its loop); what it raises is raised here."""

        async def called() -> _T:
            return function()

        return self.run(called())

    def run(self, coroutine: Coroutine[Any, Any, _T]) -> _T:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result()

    def stop(self) -> None:
        """End the tasks left running, then the loop and the thread."""
        if self.loop.is_closed():
            return
        self.run(_cancel_the_rest())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join()
        self.loop.close()


class AppRunner:
    """``with AppRunner(app, thread) as runner: runner.request(...)``: entering runs the
    lifespan's startup on ``thread`` (:class:`LifespanError` when it fails), leaving runs its
    shutdown and stops the thread."""

    def __init__(self, app: ASGIApp, thread: AppThread) -> None:
        self._app = app
        # what the lifespan keeps for every request (scope["state"])
        self._state: dict[str, Any] = {}
        self._thread = thread
        self._lifespan: asyncio.Task[None] | None = None
        self._to_app: asyncio.Queue[Message] | None = None
        self._from_app: asyncio.Queue[Message] | None = None
        self._transport: httpx.ASGITransport | None = None

    def __enter__(self) -> AppRunner:
        try:
            self._thread.run(self._start())
        except BaseException:
            self._thread.stop()
            raise
        return self

    def __exit__(self, *exc_info: Any) -> None:
        try:
            self._thread.run(self._shutdown())
        finally:
            self._thread.stop()

    def request(
        self, method: str, url: str, headers: list[tuple[bytes, bytes]], content: bytes
    ) -> httpx.Response:
        """Send one request to the app (``url``: its path and query) and wait for its whole response."""
        return self._thread.run(self._send(method, url, headers, content))

    # -- on the app's loop ------------------------------------------------------
    async def _send(
        self, method: str, url: str, headers: list[tuple[bytes, bytes]], content: bytes
    ) -> httpx.Response:
        """Through the transport, not a client: only the headers given are sent (a client's
        defaults, ``accept-encoding: gzip`` and its user-agent, would get a request recorded
        without them another response), no cookie an earlier response set, the path as it is
        (a client reads ``//a/b`` as host ``a``), and no client log line: httpx's quotes the
        URL, with a token the key opened in it."""
        assert self._transport is not None, "only inside the with block"
        request = httpx.Request(method, _ORIGIN + url, headers=headers, content=content)
        response = await self._transport.handle_async_request(request)
        await response.aread()
        return response

    async def _start(self) -> None:
        self._transport = httpx.ASGITransport(
            app=self._with_state, raise_app_exceptions=False, client=_PEER
        )
        self._to_app, self._from_app = asyncio.Queue(), asyncio.Queue()
        scope = {
            "type": "lifespan",
            "asgi": {"version": "3.0", "spec_version": "2.0"},
            "state": self._state,
        }
        self._lifespan = asyncio.get_running_loop().create_task(self._run_lifespan(scope))
        await self._to_app.put({"type": "lifespan.startup"})
        await self._answer("lifespan.startup")

    async def _shutdown(self) -> None:
        if self._to_app is None or self._lifespan is None or self._lifespan.done():
            return
        await self._to_app.put({"type": "lifespan.shutdown"})
        await self._answer("lifespan.shutdown")
        await self._lifespan

    async def _run_lifespan(self, scope: Scope) -> None:
        assert self._to_app is not None and self._from_app is not None
        to_app, from_app = self._to_app, self._from_app

        async def receive() -> Message:
            return await to_app.get()

        async def send(message: Message) -> None:
            await from_app.put(message)

        try:
            await self._app(scope, receive, send)
        finally:
            await from_app.put({"type": "lifespan.ended"})  # the app returned or raised

    async def _answer(self, step: str) -> None:
        """Wait for the app's answer to ``step``. When it failed, what the app raised (else
        :class:`LifespanError` with its message); an app that returns without answering has no
        lifespan, as servers take it."""
        assert self._from_app is not None and self._lifespan is not None
        message = await self._from_app.get()
        if message["type"] == f"{step}.complete":
            return
        await asyncio.wait({self._lifespan})
        error = self._lifespan.exception()
        if error is not None:
            raise error
        if message["type"] == f"{step}.failed":
            raise LifespanError(str(message.get("message", "")) or f"{step} failed")

    async def _with_state(self, scope: Scope, receive: Receive, send: Send) -> None:
        """The app, given a copy of what its lifespan keeps in each request's scope, and
        refused the response headers a server refuses (as uvicorn does)."""
        if scope["type"] in ("http", "websocket"):
            scope = {**scope, "state": dict(self._state)}

        async def checked_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                _check_start(message)
            await send(message)

        await self._app(scope, receive, checked_send)


# What uvicorn refuses in a response header, raising in the app's send: its httptools
# protocol where httptools is installed, else its h11 protocol (h11 checks the response).
_BAD_NAME = re.compile(b'[\x00-\x1f\x7f()<>@,;:\\[\\]={} \t\\\\"]')
_BAD_VALUE = re.compile(b"[\x00-\x08\x0a-\x1f\x7f]")


@functools.cache
def _httptools() -> bool:
    return importlib.util.find_spec("httptools") is not None


def _check_start(message: Message) -> None:
    """Raise what uvicorn raises for a response start it cannot send."""
    headers = list(message.get("headers") or [])
    if not _httptools():
        import h11

        h11.Response(status_code=message["status"], headers=headers)
        return
    for name, value in headers:
        if _BAD_NAME.search(name):
            raise RuntimeError("Invalid HTTP header name.")
        if _BAD_VALUE.search(value):
            raise RuntimeError("Invalid HTTP header value.")


async def _cancel_the_rest() -> None:
    """End the tasks the app left running (a background loop its lifespan never stopped), as a
    server's exit does: the loop is closed next, and a pending task would be destroyed with it."""
    rest = [task for task in asyncio.all_tasks() if task is not asyncio.current_task()]
    for task in rest:
        task.cancel()
    await asyncio.gather(*rest, return_exceptions=True)
