"""smtplib capture: each exchange of a conversation with an SMTP server, as one call.

The wrappers sit under :class:`~timetracer_otel.instrumentation.smtplib.SmtplibInstrumentor`'s
on the three points every byte of a conversation passes: ``_get_socket`` (connecting; also
``SMTP_SSL``'s), ``send`` and ``getreply``. What is sent is kept until the reply comes;
the reply makes the call, shaped by :mod:`timetracer_otel.protocols.smtp`, under the
exchange's span. Only what is sent while a request is being recorded is kept. ``AUTH``
credentials are sealed by the cassette writer, off the request path.
"""

from __future__ import annotations

import smtplib
import time
from collections.abc import Callable
from typing import Any
from weakref import WeakKeyDictionary

from timetracer_otel import wrapper_layers
from timetracer_otel._diagnostics import guarded
from timetracer_otel._recording import ProtocolCall, current_recording, exception_info
from timetracer_otel.protocols.smtp import Conversation, reply_response, server_name

__all__ = ["install", "uninstall"]


class _Connection:
    """A connection's conversation, and when its current exchange began."""

    __slots__ = ("conversation", "started")

    def __init__(self, server: str, started: int) -> None:
        self.conversation = Conversation(server)
        self.started: int | None = started


_connections: WeakKeyDictionary[smtplib.SMTP, _Connection] = WeakKeyDictionary()


def _connecting(wrapped: Callable[..., Any], client: Any, args: tuple, kwargs: dict) -> Any:
    started = time.time_ns()
    sock = wrapped(*args, **kwargs)
    with guarded("smtplib.connect"):
        _connections[client] = _Connection(server_name(args[0], args[1]), started)
    return sock


def _send(wrapped: Callable[..., Any], client: Any, args: tuple, kwargs: dict) -> Any:
    connection = _connections.get(client)
    if connection is not None and current_recording() is not None:
        with guarded("smtplib.send"):
            if connection.started is None:
                connection.started = time.time_ns()
            data = args[0] if args else kwargs["s"]
            connection.conversation.sending(
                data.encode(client.command_encoding) if isinstance(data, str) else bytes(data)
            )
    return wrapped(*args, **kwargs)


def _reply(wrapped: Callable[..., Any], client: Any, args: tuple, kwargs: dict) -> Any:
    connection = _connections.get(client)
    recording = current_recording()
    if connection is None:
        return wrapped(*args, **kwargs)
    call = None
    with guarded("smtplib.reply"):
        request = connection.conversation.awaiting()
        if recording is not None:
            call = ProtocolCall("smtp", "smtplib", request)
            call.started_ns = connection.started or call.started_ns
            recording.add_call(call)
    try:
        code, message = wrapped(*args, **kwargs)
    except Exception as exc:
        if call is not None:
            call.error = exception_info(exc)
        raise
    with guarded("smtplib.reply"):
        if call is not None:
            call.response = reply_response(code, message)
        connection.conversation.replied(code)
        connection.started = None
    return code, message


_SEAMS = (
    (smtplib.SMTP, "_get_socket", _connecting),
    (smtplib.SMTP_SSL, "_get_socket", _connecting),
    (smtplib.SMTP, "send", _send),
    (smtplib.SMTP, "getreply", _reply),
)


def install() -> None:
    for owner, name, wrapper in _SEAMS:
        wrapper_layers.install(owner, name, wrapper)


def uninstall() -> None:
    for owner, name, _ in _SEAMS:
        wrapper_layers.uninstall(owner, name)
