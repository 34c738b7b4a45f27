"""smtplib replay, under :class:`~timetracer_otel.instrumentation.smtplib.SmtplibInstrumentor`'s
wrappers (so spans still appear).

Connecting (``SMTP._get_socket``, ``SMTP_SSL``'s too) opens nothing: the connection gets a
stand-in socket, or raises what connecting raised when recorded (``ConnectionRefusedError``,
``socket.gaierror``). The stand-in keeps what the client sends (``send``), and each reply
the client reads (``getreply``) is the recorded one for that exchange, matched as
:mod:`timetracer_otel.protocols.smtp` describes. Everything above (``ehlo``, ``login``,
``sendmail``, ``send_message``, ``quit``) is smtplib's own code, running as it did.
``starttls`` is matched and answered like any command, and its TLS handshake is skipped:
the stand-in stays as it is. A recorded failure (the server hanging up) is raised again.
"""

from __future__ import annotations

import smtplib
from collections.abc import Callable
from typing import Any

from timetracer_otel import wrapper_layers
from timetracer_otel.protocols.smtp import Conversation, server_name

from .session import ReplaySession, replay_session_for
from .smtp import recorded_reply

__all__ = ["install", "uninstall"]

# where the errors of connecting and reading come from, besides smtplib and the built-ins
_RAISED_BY = ("socket", "ssl")


class _Replayed:
    """Stands in for the socket of a connection answered from a cassette: nothing reaches the
    network, and what the client sends is kept for matching."""

    def __init__(self, session: ReplaySession, server: str) -> None:
        self.session = session
        self.conversation = Conversation(server)
        # the greeting, answered on connecting: a connection refused when recorded is refused here
        self.greeting: tuple[int, Any] | None = self.reply()

    def reply(self) -> tuple[int, Any]:
        """The recorded reply to the exchange under way; raises what reading it raised when recorded."""
        return recorded_reply(
            self.session, self.conversation, "smtplib", smtplib.SMTPServerDisconnected, _RAISED_BY
        )

    def close(self) -> None:
        """Nothing was opened."""


class _NoHandshake:
    """The TLS context ``starttls`` is given in replay: the stand-in stays as it is."""

    @staticmethod
    def wrap_socket(sock: Any, server_hostname: str | None = None) -> Any:
        return sock


def _connecting(wrapped: Callable[..., Any], client: Any, args: tuple, kwargs: dict) -> Any:
    server = server_name(args[0], args[1])
    session = replay_session_for("smtplib", lambda: f"SMTP {server} (connect)")
    if session is None:
        return wrapped(*args, **kwargs)
    return _Replayed(session, server)


def _send(wrapped: Callable[..., Any], client: Any, args: tuple, kwargs: dict) -> Any:
    replayed = client.sock
    if not isinstance(replayed, _Replayed):
        return wrapped(*args, **kwargs)
    data = args[0] if args else kwargs["s"]
    replayed.conversation.sending(
        data.encode(client.command_encoding) if isinstance(data, str) else bytes(data)
    )
    return None


def _reply(wrapped: Callable[..., Any], client: Any, args: tuple, kwargs: dict) -> Any:
    replayed = client.sock
    if not isinstance(replayed, _Replayed):
        return wrapped(*args, **kwargs)
    try:
        code, message = replayed.greeting or replayed.reply()
        replayed.greeting = None
    except smtplib.SMTPServerDisconnected:
        client.close()  # what smtplib does when the server hangs up
        raise
    return code, message.encode("utf-8") if isinstance(message, str) else message


def _starttls(wrapped: Callable[..., Any], client: Any, args: tuple, kwargs: dict) -> Any:
    if not isinstance(client.sock, _Replayed):
        return wrapped(*args, **kwargs)
    return wrapped(context=_NoHandshake())


_SEAMS = (
    (smtplib.SMTP, "_get_socket", _connecting),
    (smtplib.SMTP_SSL, "_get_socket", _connecting),
    (smtplib.SMTP, "send", _send),
    (smtplib.SMTP, "getreply", _reply),
    (smtplib.SMTP, "starttls", _starttls),
)


def install() -> None:
    wrapper_layers.install_all(_SEAMS, layer="replay")


def uninstall() -> None:
    wrapper_layers.uninstall_all(_SEAMS, layer="replay")
