"""smtplib capture: each exchange of a conversation with an SMTP server, as one call.

The wrappers sit under :class:`~timetracer_otel.instrumentation.smtplib.SmtplibInstrumentor`'s
on the three points every byte of a conversation passes: ``_get_socket`` (connecting; also
``SMTP_SSL``'s), ``send`` and ``getreply``; the reply makes the call (see
:mod:`timetracer_otel.capture._smtp`), under the exchange's span.
"""

from __future__ import annotations

import smtplib
import time
from collections.abc import Callable
from typing import Any

from timetracer_otel import wrapper_layers
from timetracer_otel._diagnostics import guarded
from timetracer_otel.protocols.smtp import server_name

from ._smtp import Connections

__all__ = ["install", "uninstall"]

_connections = Connections("smtplib")


def _connecting(wrapped: Callable[..., Any], client: Any, args: tuple, kwargs: dict) -> Any:
    started = time.time_ns()
    server = server_name(args[0], args[1])
    try:
        sock = wrapped(*args, **kwargs)
    except Exception as exc:
        with guarded("smtplib.connect"):
            _connections.refused(client, server, started, exc)
        raise
    with guarded("smtplib.connect"):
        _connections.opened(client, server, started)
    return sock


def _send(wrapped: Callable[..., Any], client: Any, args: tuple, kwargs: dict) -> Any:
    with guarded("smtplib.send"):
        data = args[0] if args else kwargs["s"]
        _connections.sending(
            client, data.encode(client.command_encoding) if isinstance(data, str) else data
        )
    return wrapped(*args, **kwargs)


def _reply(wrapped: Callable[..., Any], client: Any, args: tuple, kwargs: dict) -> Any:
    if not _connections.knows(client):
        return wrapped(*args, **kwargs)
    call = None
    with guarded("smtplib.reply"):
        call = _connections.reading(client)
    try:
        code, message = wrapped(*args, **kwargs)
    except Exception as exc:
        _connections.failed(call, exc)
        raise
    with guarded("smtplib.reply"):
        _connections.replied(client, call, code, message)
    return code, message


_SEAMS = (
    (smtplib.SMTP, "_get_socket", _connecting),
    (smtplib.SMTP_SSL, "_get_socket", _connecting),
    (smtplib.SMTP, "send", _send),
    (smtplib.SMTP, "getreply", _reply),
)


def install() -> None:
    wrapper_layers.install_all(_SEAMS)


def uninstall() -> None:
    wrapper_layers.uninstall_all(_SEAMS)
