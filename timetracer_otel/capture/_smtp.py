"""What the SMTP captures (smtplib, aiosmtplib) share: each open connection's conversation,
turned into one call per exchange while a request is being recorded.

Only what is sent while a request is recorded is kept; the reply makes the call, shaped by
:mod:`timetracer_otel.protocols.smtp`. ``AUTH`` credentials are sealed by the cassette
writer, off the request path.
"""

from __future__ import annotations

import time
from typing import Any
from weakref import WeakKeyDictionary

from timetracer_otel._recording import ProtocolCall, current_recording, exception_info
from timetracer_otel.protocols.smtp import Conversation, reply_response

__all__ = ["Connections"]


class _Connection:
    """A connection's conversation, and when its current exchange began."""

    __slots__ = ("conversation", "started")

    def __init__(self, server: str, started: int | None) -> None:
        self.conversation = Conversation(server)
        self.started = started


class Connections:
    """The conversations of open connections of one client library, keyed by the client's
    object for the connection."""

    def __init__(self, library: str) -> None:
        self._library = library
        self._open: WeakKeyDictionary[Any, _Connection] = WeakKeyDictionary()

    def opened(self, key: Any, server: str, started: int) -> None:
        """A connection to ``server`` whose greeting is read next (as a reply)."""
        self._open[key] = _Connection(server, started)

    def greeted(self, key: Any, server: str, started: int, code: int, message: Any) -> None:
        """A connection to ``server`` whose greeting the client read already."""
        self.opened(key, server, started)
        self.replied(key, self.reading(key), code, message)

    def refused(self, key: Any, server: str, started: int, exc: BaseException) -> None:
        """A connection to ``server`` that failed to open: a call with the error."""
        self.opened(key, server, started)
        self.failed(self.reading(key), exc)

    def sending(self, key: Any, data: bytes | str) -> None:
        connection = self._open.get(key)
        if connection is None or current_recording() is None:
            return
        if connection.started is None:
            connection.started = time.time_ns()
        connection.conversation.sending(data)

    def knows(self, key: Any) -> bool:
        return key in self._open

    def reading(self, key: Any) -> ProtocolCall | None:
        """The call of the exchange whose reply is read now, or None when no request is recorded."""
        connection = self._open[key]
        request = connection.conversation.awaiting()
        recording = current_recording()
        if recording is None:
            return None
        call = ProtocolCall("smtp", self._library, request)
        call.started_ns = connection.started or call.started_ns
        recording.add_call(call)
        return call

    def replied(self, key: Any, call: ProtocolCall | None, code: int, message: Any) -> None:
        if call is not None:
            call.response = reply_response(code, message)
        connection = self._open.get(key)
        if connection is not None:
            connection.conversation.replied(code)
            connection.started = None

    @staticmethod
    def failed(call: ProtocolCall | None, exc: BaseException) -> None:
        if call is not None:
            call.error = exception_info(exc)
