"""What the SMTP replayers (smtplib, aiosmtplib) share: answering an exchange of a conversation
from the cassette."""

from __future__ import annotations

from typing import Any

from timetracer_otel.protocols.smtp import Conversation, live_view
from timetracer_otel.redaction import Redactor

from .http import recorded_error_class
from .session import ReplaySession, replay_session_for

__all__ = ["recorded_reply"]


def recorded_reply(
    opened_by: ReplaySession,
    conversation: Conversation,
    library: str,
    default_error: type[Exception],
    packages: tuple[str, ...] = (),
) -> tuple[int, Any]:
    """(code, text) of the recorded reply to the exchange ``conversation`` awaits a reply for;
    raises :class:`ReplayMismatchError` when none was recorded, and the recorded error (as its
    class when it is a built-in one or of ``library`` or ``packages``, else ``default_error``)
    when connecting or reading failed.

    The cassette of the request the exchange is made for answers it: a connection kept open
    across requests (a pool) is answered request by request; one used outside every request
    is answered by the session it was opened in, ``opened_by``."""
    request = conversation.awaiting()

    def shown() -> str:  # the exchange as an error names it, its secrets hidden
        return live_view(request, Redactor()).label

    session = replay_session_for(library, shown) or opened_by
    call = session.answer(library, live_view(session.scrubbed(request), session.redactor)).call
    if call.error or call.response is None:
        error = call.error or {"message": "the recording holds no reply for this exchange"}
        message = error.get("message", "")
        cls = next(
            (
                found
                for package in (library, *packages)
                if (found := recorded_error_class(error, package, default_error))
                is not default_error
            ),
            default_error,
        )
        try:
            exception = cls(message)
        except TypeError:  # a class with another constructor (a response exception)
            exception = default_error(message)
        raise exception
    response = call.decoded_response()
    conversation.replied(response["code"])
    return response["code"], response["message"]
