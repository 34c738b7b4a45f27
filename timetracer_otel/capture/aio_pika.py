"""aio-pika capture (RabbitMQ, through aiormq: aio-pika, FastStream): each method the client
sends, as one call, with the methods the broker sent back on its channel before the next one.

aiormq reads and writes in tasks of its own connection, so the calls are made where the
application's code hands aiormq its frames, in the request's context: ``ChannelFrame.marshall``
(every method a channel or the connection sends; the connection is the caller's). Opening a
connection (``Connection.connect``) is one call whose response is what the broker sent while
aiormq logged in (``Connection.Start``, ``Tune``, ``OpenOk``: the login is never stored); its
reader (from ``asyncio.open_connection``, as aiormq calls it while connecting) is read through,
each method the broker sends added to the response of its channel's last call. Heartbeats are
neither. The shapes are :mod:`timetracer_otel.protocols.amqp`'s.
"""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Callable
from typing import Any
from weakref import WeakKeyDictionary

import aiormq
from aiormq.abc import ChannelFrame

from timetracer_otel import wrapper_layers
from timetracer_otel._aiormq import (
    CONFIRMS,
    Incoming,
    Publishes,
    caller_connection,
    marshalled_requests,
    server,
)
from timetracer_otel._diagnostics import guarded
from timetracer_otel._recording import ProtocolCall, current_recording, exception_info

__all__ = ["install", "uninstall"]

_LIBRARY = "aio_pika"


class _Connection:
    """What is recorded of one connection: its broker, each channel's last call, and its
    publishes awaiting the broker's confirm (which go to the publish they confirm)."""

    def __init__(self, server: str) -> None:
        self.server = server
        self.last: dict[int, ProtocolCall | None] = {}
        self.incoming = Incoming()
        self.publishes = Publishes()

    def begin(self, channel: int, request: dict[str, Any]) -> ProtocolCall | None:
        recording = current_recording()
        call = None
        if recording is not None:
            call = ProtocolCall("amqp", _LIBRARY, request, response={"frames": []})
            recording.add_call(call)
        self.last[channel] = call
        self.publishes.sent(request, call)
        return call

    def received(self, data: bytes) -> None:
        for sent in self.incoming.read(data):
            answered = (
                self.publishes.confirmed(sent)
                if sent["method"] in CONFIRMS
                else [(self.last.get(sent["channel"]), sent)]
            )
            for call, frame in answered:
                if call is not None:
                    call.response["frames"].append(frame)  # type: ignore[index]


_connections: WeakKeyDictionary[Any, _Connection] = WeakKeyDictionary()
_opening: contextvars.ContextVar[_Connection | None] = contextvars.ContextVar(
    "timetracer_aio_pika_opening", default=None
)


class _ReadThrough:
    """aiormq's reader of a connection, read through: what the broker sends is recorded."""

    def __init__(self, reader: asyncio.StreamReader, connection: _Connection) -> None:
        self._reader = reader
        self._connection = connection

    def __getattr__(self, name: str) -> Any:
        return getattr(self._reader, name)

    def _seen(self, data: bytes) -> bytes:
        with guarded("aio_pika.receive"):
            self._connection.received(data)
        return data

    async def readexactly(self, n: int) -> bytes:
        return self._seen(await self._reader.readexactly(n))

    async def read(self, n: int = -1) -> bytes:
        return self._seen(await self._reader.read(n))


async def _connecting(wrapped: Callable[..., Any], client: Any, args: tuple, kwargs: dict) -> Any:
    connection = call = None
    with guarded("aio_pika.connect"):
        connection = _connections[client] = _Connection(server(client))
        call = connection.begin(0, {"server": connection.server, "connect": True})
    token = _opening.set(connection)
    try:
        return await wrapped(*args, **kwargs)
    except Exception as exc:
        if call is not None and not call.response["frames"]:  # type: ignore[index]
            with guarded("aio_pika.connect"):
                call.error = exception_info(exc)
        raise
    finally:
        _opening.reset(token)


async def _open_connection(wrapped: Callable[..., Any], _: Any, args: tuple, kwargs: dict) -> Any:
    connection = _opening.get()
    reader, writer = await wrapped(*args, **kwargs)
    if connection is None:
        return reader, writer
    return _ReadThrough(reader, connection), writer


def _marshalling(wrapped: Callable[..., Any], _: Any, args: tuple, kwargs: dict) -> Any:
    marshalled = wrapped(*args, **kwargs)
    with guarded("aio_pika.send"):
        connection = _connections.get(caller_connection())
        if connection is not None:
            for request in marshalled_requests(connection.server, args, kwargs):
                connection.begin(request["channel"], request)
    return marshalled


_SEAMS = (
    (aiormq.Connection, "connect", _connecting),
    (asyncio, "open_connection", _open_connection),
    (ChannelFrame, "marshall", _marshalling),
)


def install() -> None:
    wrapper_layers.install_all(_SEAMS)


def uninstall() -> None:
    wrapper_layers.uninstall_all(_SEAMS)
