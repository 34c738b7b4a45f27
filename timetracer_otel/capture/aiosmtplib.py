"""aiosmtplib capture: each exchange of a conversation with an SMTP server, as one call.

The wrappers sit under :class:`~timetracer_otel.instrumentation.aiosmtplib.AiosmtplibInstrumentor`'s:
``SMTP._create_connection`` (connecting, TLS and the greeting: the first call),
``SMTPProtocol.write`` and ``SMTPProtocol.read_response``, which every later exchange
passes; the reply makes the call (see :mod:`timetracer_otel.capture._smtp`).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import aiosmtplib.protocol
import aiosmtplib.smtp

from timetracer_otel import wrapper_layers
from timetracer_otel._diagnostics import guarded
from timetracer_otel.protocols.smtp import aiosmtplib_address, server_name

from ._smtp import Connections

__all__ = ["install", "uninstall"]

_connections = Connections("aiosmtplib")


async def _connecting(wrapped: Callable[..., Any], client: Any, args: tuple, kwargs: dict) -> Any:
    started = time.time_ns()
    server = server_name(*aiosmtplib_address(client))
    try:
        greeting = await wrapped(*args, **kwargs)
    except Exception as exc:
        with guarded("aiosmtplib.connect"):
            _connections.refused(client, server, started, exc)
        raise
    with guarded("aiosmtplib.connect"):
        _connections.greeted(client.protocol, server, started, greeting.code, greeting.message)
    return greeting


def _write(wrapped: Callable[..., Any], protocol: Any, args: tuple, kwargs: dict) -> Any:
    with guarded("aiosmtplib.write"):
        _connections.sending(protocol, args[0] if args else kwargs["data"])
    return wrapped(*args, **kwargs)


async def _read(wrapped: Callable[..., Any], protocol: Any, args: tuple, kwargs: dict) -> Any:
    if not _connections.knows(protocol):  # the greeting: read while connecting
        return await wrapped(*args, **kwargs)
    call = None
    with guarded("aiosmtplib.reply"):
        call = _connections.reading(protocol)
    try:
        response = await wrapped(*args, **kwargs)
    except Exception as exc:
        _connections.failed(call, exc)
        raise
    with guarded("aiosmtplib.reply"):
        _connections.replied(protocol, call, response.code, response.message)
    return response


_SEAMS = (
    (aiosmtplib.smtp.SMTP, "_create_connection", _connecting),
    (aiosmtplib.protocol.SMTPProtocol, "write", _write),
    (aiosmtplib.protocol.SMTPProtocol, "read_response", _read),
)


def install() -> None:
    wrapper_layers.install_all(_SEAMS)


def uninstall() -> None:
    wrapper_layers.uninstall_all(_SEAMS)
