"""What the RabbitMQ replayers (py-amqp, aio-pika) share: the broker's recorded answer to a
method, on the client's channel."""

from __future__ import annotations

from typing import Any

from timetracer_otel.cassette.calls import CassetteCall
from timetracer_otel.protocols.amqp import live_view, usual_answer
from timetracer_otel.redaction import Redactor

from .http import recorded_error_class
from .session import ReplaySession, replay_session_for

__all__ = ["recorded_frames"]

# Closing a channel or the connection: after a mismatch the client closes its channel, and
# that close, which the recording does not hold, is not the call to report.
_CLOSING = frozenset({"Channel.Close", "Connection.Close"})


def recorded_frames(
    opened_by: ReplaySession,
    library: str,
    request: dict[str, Any],
    error_package: str,
    default_error: type[Exception],
) -> list[dict[str, Any]]:
    """The methods the broker sent, when recorded, in answer to ``request``, on the channels the
    client uses now; raises what the recorded call raised (its class when it is a built-in one
    or of ``error_package``, else ``default_error``), and :class:`ReplayMismatchError` when
    nothing answers it. A close the recording does not hold is answered as a broker answers it.

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
    recorded_channel = (call.decoded_request() or {}).get("channel", 1)
    live_channel = request.get("channel", recorded_channel)
    return [
        {
            **sent,
            "channel": live_channel if sent["channel"] == recorded_channel else sent["channel"],
        }
        for sent in (call.decoded_response() or {}).get("frames", ())
    ]
