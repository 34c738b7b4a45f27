"""aiosmtplib replay, under :class:`~timetracer_otel.instrumentation.aiosmtplib.AiosmtplibInstrumentor`'s
wrappers (so spans still appear).

Connecting (``SMTP._create_connection``) opens nothing: aiosmtplib's own protocol gets a
stand-in transport that answers each write, one exchange, with the recorded reply in the
server's wire form, matched as :mod:`timetracer_otel.protocols.smtp` describes. Everything
above it (``ehlo``, ``login``, ``sendmail``, ``send_message``, ``aiosmtplib.send``) is
aiosmtplib's own code, parsing the replies as it does a server's. ``STARTTLS``
(``SMTPProtocol.start_tls``) is matched and answered like any command, and its TLS
handshake skipped; with ``use_tls`` the connection reports a TLS context, as after a
handshake. A recorded failure is raised again at the call that met it.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Callable
from typing import Any

import aiosmtplib.errors
import aiosmtplib.protocol
import aiosmtplib.smtp

from timetracer_otel import wrapper_layers
from timetracer_otel.protocols.smtp import (
    Conversation,
    aiosmtplib_address,
    reply_wire,
    server_name,
)

from .session import ReplaySession, replay_session_for
from .smtp import recorded_reply

__all__ = ["install", "uninstall"]

_READY = 220  # the greeting that lets a client go on, and STARTTLS's go-ahead


class _ReplayedTransport(asyncio.Transport):
    """Stands in for the network under aiosmtplib's protocol: what the client writes is one
    exchange, answered with the recorded reply as the server sent it."""

    def __init__(
        self, session: ReplaySession, server: str, protocol: Any, tls: ssl.SSLContext | None
    ) -> None:
        super().__init__()
        self._tls = tls
        self.session = session
        self.conversation = Conversation(server)
        self._protocol = protocol
        self._closing = False

    def answer(self) -> None:
        """The recorded reply to what was written since the last one, handed to the protocol
        as data from the server."""
        code, message = recorded_reply(
            self.session, self.conversation, "aiosmtplib", aiosmtplib.errors.SMTPServerDisconnected
        )
        asyncio.get_running_loop().call_soon(
            self._protocol.data_received, reply_wire(code, message)
        )

    def secured(self, context: ssl.SSLContext) -> None:
        """As after a TLS handshake: the connection reports its context."""
        self._tls = context

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self._tls if name == "sslcontext" else default

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.conversation.sending(data)
        self.answer()

    def is_closing(self) -> bool:
        return self._closing

    def close(self) -> None:
        if not self._closing:
            self._closing = True
            asyncio.get_running_loop().call_soon(self._protocol.connection_lost, None)

    def abort(self) -> None:
        self.close()


async def _connecting(wrapped: Callable[..., Any], client: Any, args: tuple, kwargs: dict) -> Any:
    server = server_name(*aiosmtplib_address(client))
    session = replay_session_for("aiosmtplib", lambda: f"SMTP {server} (connect)")
    if session is None:
        return await wrapped(*args, **kwargs)
    protocol = aiosmtplib.protocol.SMTPProtocol(loop=client.loop)
    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT) if client.use_tls else None
    transport = _ReplayedTransport(session, server, protocol, tls)
    transport.answer()  # the greeting: a connection refused at record time raises here
    protocol.connection_made(transport)
    client.protocol, client.transport = protocol, transport
    timeout = args[0] if args else kwargs.get("timeout")
    greeting = await protocol.read_response(timeout=timeout)
    if greeting.code != _READY:
        raise aiosmtplib.errors.SMTPConnectResponseError(greeting.code, greeting.message)
    return greeting


async def _start_tls(wrapped: Callable[..., Any], protocol: Any, args: tuple, kwargs: dict) -> Any:
    transport = protocol.transport
    if not isinstance(transport, _ReplayedTransport):
        return await wrapped(*args, **kwargs)
    context = args[0] if args else kwargs["tls_context"]
    response = await protocol.execute_command(b"STARTTLS", timeout=kwargs.get("timeout"))
    if response.code != _READY:
        raise aiosmtplib.errors.SMTPResponseException(response.code, response.message)
    transport.secured(context)
    return response


_SEAMS = (
    (aiosmtplib.smtp.SMTP, "_create_connection", _connecting),
    (aiosmtplib.protocol.SMTPProtocol, "start_tls", _start_tls),
)


def install() -> None:
    wrapper_layers.install_all(_SEAMS, layer="replay")


def uninstall() -> None:
    wrapper_layers.uninstall_all(_SEAMS, layer="replay")
