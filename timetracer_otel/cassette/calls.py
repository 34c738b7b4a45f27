"""A recorded outgoing call: laid out by :func:`call_document`, read back through :class:`CassetteCall`.

A call is ``{"kind", "protocol", "library", "span_id", "start_offset_ms", "request",
"response", "error"}`` (``docs/cassette-format.md``). The cassette builder and the
calls replay makes up in memory (a usual answer) lay it out with :func:`call_document`;
replay and the protocol views read it only through :class:`CassetteCall`, so the layout
is known in this module alone. A loaded cassette was checked by :mod:`.validation`, so
the accessors trust its shape. Typed values stay encoded (``{"$type": ...}``) unless a
``decoded_`` accessor is asked.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple

from .values import decode_value

__all__ = [
    "CassetteCall",
    "ErrorInfo",
    "HttpRequest",
    "HttpResponse",
    "MongoRequest",
    "call_document",
    "calls_of",
]

ErrorInfo = dict[str, Any]  # {"type": "module.Class", "message": ...}: what the call raised

_NO_BODY = {"encoding": "empty"}


class HttpRequest(NamedTuple):
    method: str
    url: str
    headers: list[list[str]] | None
    body: dict[str, Any] | None  # in cassette form (cassette.body)


class HttpResponse(NamedTuple):
    status: int
    headers: list[tuple[str, str]]
    body: dict[str, Any]  # in cassette form; ``{"encoding": "empty"}`` for none


class MongoRequest(NamedTuple):
    database: str
    command_name: str
    command: Any  # typed values


def call_document(
    protocol: str,
    request: Any,
    response: Any,
    error: ErrorInfo | None = None,
    *,
    library: str | None = None,
    span_id: int | None = None,
    start_offset_ms: float | None = None,
) -> dict[str, Any]:
    """A call as the cassette keeps it: ``request`` and ``response`` in cassette form (typed
    values encoded, bodies from :mod:`.body`), ``span_id`` of its client span, if any."""
    return {
        "kind": f"{protocol}.client",
        "protocol": protocol,
        "library": library,
        "span_id": f"{span_id:016x}" if span_id else None,
        "start_offset_ms": start_offset_ms,
        "request": request,
        "response": response,
        "error": error,
    }


@dataclass(frozen=True)
class CassetteCall:
    """One element of a cassette's ``calls``."""

    document: dict[str, Any]

    @property
    def protocol(self) -> str:
        return str(self.document.get("protocol", ""))

    @property
    def kind(self) -> str:
        """``<protocol>.client``: what the console line counts."""
        return str(self.document.get("kind", ""))

    @property
    def library(self) -> str | None:
        return self.document.get("library")

    @property
    def span_id(self) -> str | None:
        """The id of the span the call ran under (its client span, where its library makes one)."""
        return self.document.get("span_id")

    @property
    def request(self) -> Any:
        """The request in cassette form (typed values encoded), None for a call made up in memory."""
        return self.document.get("request")

    @property
    def response(self) -> Any:
        """The response in cassette form, None when the call got none (it raised, or was cut short)."""
        return self.document.get("response")

    @property
    def error(self) -> ErrorInfo | None:
        return self.document.get("error")

    def decoded_request(self) -> Any:
        return decode_value(self.request)

    def decoded_response(self) -> Any:
        return decode_value(self.response)

    def http_request(self) -> HttpRequest:
        request = self.request
        return HttpRequest(
            request["method"], request["url"], request.get("headers"), request.get("body")
        )

    def http_response(self) -> HttpResponse | None:
        """The HTTP response, or None when the call recorded an error instead."""
        response = self.response
        if not response:
            return None
        return HttpResponse(
            int(response["status"]),
            [(str(k), str(v)) for k, v in response.get("headers") or ()],
            response.get("body") or _NO_BODY,
        )

    def mongo_request(self) -> MongoRequest:
        request = self.request
        return MongoRequest(request["database"], request["command_name"], request["command"])


def calls_of(document: dict[str, Any]) -> list[CassetteCall]:
    """The recorded calls of a cassette document, in recorded order."""
    return [CassetteCall(call) for call in document.get("calls", ())]
