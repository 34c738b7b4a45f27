"""What the RabbitMQ replayers (py-amqp, aio-pika) share: the broker's recorded answer to a
method, on the client's channel."""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Any, TypeVar

from timetracer_otel._terminal import printable
from timetracer_otel.cassette.calls import CassetteCall
from timetracer_otel.cassette.reader import CassetteError
from timetracer_otel.protocols.amqp import SIGNATURES, live_view, usual_answer
from timetracer_otel.redaction import Redactor

from .http import recorded_error_class
from .session import ReplaySession, replay_session_for

__all__ = ["framed_answer", "recorded_frames"]

_T = TypeVar("_T")
# what a client library raises framing a value of the wrong type or size
_UNFRAMABLE = (TypeError, ValueError, AttributeError, OverflowError, struct.error)

# Closing a channel or the connection: after a mismatch the client closes its channel, and
# that close, which the recording does not hold, is not the call to report.
_CLOSING = frozenset({"Channel.Close", "Connection.Close"})


def recorded_frames(
    opened_by: ReplaySession,
    library: str,
    request: dict[str, Any],
    error_package: str,
    default_error: type[Exception],
    framed: Callable[[list[dict[str, Any]]], _T],
) -> _T:
    """The methods the broker sent, when recorded, in answer to ``request``, on the channels the
    client uses now, as ``framed`` turns them into what the client reads; raises what the
    recorded call raised (its class when it is a built-in one or of ``error_package``, else
    ``default_error``), :class:`ReplayMismatchError` when nothing answers it, and
    :class:`CassetteError` for an answer no broker could have sent (a damaged or hostile file).
    A close the recording does not hold is answered as a broker answers it.

    The cassette of the request the method is sent for answers it: a connection kept open across
    requests is answered request by request; one used outside every request by the session it
    was opened in, ``opened_by``."""

    def shown() -> str:  # the call as an error names it, its secrets hidden
        return live_view(request, Redactor()).label

    session = replay_session_for(library, shown) or opened_by
    view = live_view(session.scrubbed(request), session.redactor)
    call: CassetteCall | None = None
    if request.get("method") in _CLOSING:
        recorded = session.take(library, view)
        usual = usual_answer(view) if recorded is None else None
        call = recorded.call if recorded is not None else CassetteCall(usual) if usual else None
    if call is None:
        call = session.answer(library, view).call
    if call.error:
        message = call.error.get("message", "")
        raise recorded_error_class(call.error, error_package, default_error)(message)
    return framed_answer(session, call, request, shown, framed)


def framed_answer(
    session: ReplaySession,
    call: CassetteCall,
    request: dict[str, Any],
    shown: Callable[[], str],
    framed: Callable[[list[dict[str, Any]]], _T],
) -> _T:
    """The methods of ``call``'s recorded response, on the channels the client uses now, as
    ``framed`` turns them into what it reads; :class:`CassetteError` naming the file for an
    answer no broker could have sent (a damaged or hostile file)."""
    path = session.path if call.document.get("request") is not None else "(a usual answer)"
    frames = _methods(call.decoded_response(), path, shown)
    recorded = call.decoded_request()
    recorded_channel = recorded.get("channel", 1) if isinstance(recorded, dict) else 1
    live_channel = request.get("channel", recorded_channel)
    moved = [
        {
            **sent,
            "channel": live_channel if sent["channel"] == recorded_channel else sent["channel"],
        }
        for sent in frames
    ]
    try:
        return framed(moved)
    except _UNFRAMABLE as exc:
        raise CassetteError(path, f"its answer to {shown()} cannot be framed: {exc}") from None


def _methods(response: Any, path: str, shown: Callable[[], str]) -> list[dict[str, Any]]:
    """A recorded response's methods, each one a broker sends, with a channel and arguments."""
    frames = response.get("frames") if isinstance(response, dict) else None
    if isinstance(frames, list) and all(
        isinstance(sent, dict)
        and type(sent.get("channel")) is int
        and 0 <= sent["channel"] <= 0xFFFF
        and sent.get("method") in SIGNATURES
        and isinstance(sent.get("args"), list)
        and isinstance(sent.get("content", {}), dict)
        for sent in frames
    ):
        return frames
    raise CassetteError(
        path,
        f"its answer to {shown()} is not methods a broker sends: {printable(repr(frames))[:200]}",
    )
