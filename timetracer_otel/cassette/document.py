"""A cassette document: laid out by the functions here, read back through :class:`Cassette`.

A request's cassette is ``{"format", "version", "id", "trace_id", "recorded_at",
"service", "duration_ms", "request", "response", "error", "calls", "draws", "spans"}``;
the process cassette (calls made outside every request) is ``{"format", "version",
"scope": "process", "id", "recorded_at", "service", "calls", "dropped_calls", "draws",
"time_zone"}``
(``docs/cassette-format.md``). The cassette builder lays documents out with
:func:`request_document` and :func:`process_document`; what acts on a loaded cassette
(replay, the writer's console line and file name, ``timetracer replay``, the index)
reads it through :class:`Cassette`, and its calls through :class:`.calls.CassetteCall`,
so the layout is known here and in :mod:`.calls` alone. Redaction, search and display
walk the document as data. A loaded cassette was checked by :mod:`.validation`, so the
accessors trust its shape.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, NamedTuple

from . import FORMAT_NAME, FORMAT_VERSION
from .calls import CassetteCall, ErrorInfo, calls_of

__all__ = [
    "BLOCK_METHOD",
    "Cassette",
    "InboundRequest",
    "InboundResponse",
    "SERVER_PARTS",
    "process_document",
    "recorded_instant",
    "request_document",
]

Headers = list[list[str]]  # [[name, value], ...] as received or sent
Body = dict[str, Any]  # a body in cassette form (cassette.body)


# the method of a code block's cassette (a pytest test or fixture scope): it has no request
BLOCK_METHOD = "PYTEST"
SERVER_PARTS = ("client", "scheme", "root_path")  # request fields the server, not the client, set


class InboundRequest(NamedTuple):
    """The request the application received."""

    method: str
    path: str
    route: str | None  # the route template, None when no route matched
    query: str
    headers: Headers
    body: Body | None
    fingerprint: str | None  # keyed digest of its secrets (sealing), when a key was at hand
    # what the server set in the scope: "client" [host, port], "scheme" (not http), "root_path"
    server_parts: dict[str, Any]


class InboundResponse(NamedTuple):
    """The response the application sent."""

    status: int
    headers: Headers
    body: Body | None


def request_document(
    *,
    cassette_id: str,
    trace_id: str,
    recorded_at: str,
    service: str | None,
    duration_ms: float,
    request: InboundRequest,
    response: InboundResponse,
    error: ErrorInfo | None,
    calls: list[dict[str, Any]],
    draws: list[Any],
    spans: list[dict[str, Any]],
    process: str | None = None,
    time_zone: str | None = None,
) -> dict[str, Any]:
    """A request's cassette, calls laid out by :func:`.calls.call_document`; ``process``: the id
    of the process cassette of the process that served it, where that process keeps one."""
    inbound: dict[str, Any] = {
        "method": request.method,
        "path": request.path,
        "route": request.route,
        "query": request.query,
        "headers": request.headers,
        "body": request.body,
    }
    if request.fingerprint is not None:
        inbound["fingerprint"] = request.fingerprint
    inbound.update(request.server_parts)
    document = {
        "format": FORMAT_NAME,
        "version": FORMAT_VERSION,
        "id": cassette_id,
        "trace_id": trace_id,
        "recorded_at": recorded_at,
        "service": service,
        "duration_ms": duration_ms,
        "request": inbound,
        "response": {"status": response.status, "headers": response.headers, "body": response.body},
        "error": error,
        "calls": calls,
        "draws": draws,
        "spans": spans,
    }
    if process is not None:
        document["process"] = process
    if time_zone is not None:
        document["time_zone"] = time_zone
    return document


def process_document(
    *,
    cassette_id: str,
    recorded_at: str,
    service: str | None,
    calls: list[dict[str, Any]],
    dropped_calls: int,
    draws: list[Any],
    time_zone: str | None = None,
) -> dict[str, Any]:
    """The process cassette: the calls made outside every request, the draws made while the app
    started, and the time zone it ran in."""
    document = {
        "format": FORMAT_NAME,
        "version": FORMAT_VERSION,
        "scope": "process",
        "id": cassette_id,
        "recorded_at": recorded_at,
        "service": service,
        "calls": calls,
        "dropped_calls": dropped_calls,
        "draws": draws,
    }
    if time_zone is not None:
        document["time_zone"] = time_zone
    return document


def recorded_instant(recorded_at: Any) -> str:
    """A ``recorded_at`` value as text that sorts in time order, UTC, to the microsecond ("" when
    absent or unreadable: it sorts first). Cassettes written in other offsets compare rightly."""
    try:
        when = datetime.fromisoformat(str(recorded_at).replace("Z", "+00:00"))
    except ValueError:
        return ""
    return (
        (when if when.tzinfo else when.replace(tzinfo=timezone.utc))
        .astimezone(timezone.utc)
        .isoformat(timespec="microseconds")
    )


@dataclass(frozen=True)
class Cassette:
    """A cassette document, read."""

    document: dict[str, Any]

    @property
    def id(self) -> str | None:
        return self.document.get("id")

    @property
    def is_process(self) -> bool:
        """The process cassette, which has no request."""
        return self.document.get("scope") == "process"

    @property
    def recorded_at(self) -> datetime:
        return datetime.fromisoformat(str(self.document["recorded_at"]).replace("Z", "+00:00"))

    @property
    def service(self) -> str | None:
        return self.document.get("service")

    @property
    def process(self) -> str | None:
        """A request's: the id of the process cassette of the process that served it, if named."""
        process = self.document.get("process")
        return process if isinstance(process, str) else None

    @property
    def duration_ms(self) -> float | None:
        return self.document.get("duration_ms")

    @property
    def request(self) -> InboundRequest:
        request = self.document["request"]
        return InboundRequest(
            request["method"],
            request["path"],
            request.get("route"),
            request.get("query") or "",
            request.get("headers") or [],
            request.get("body"),
            request.get("fingerprint"),
            {key: request[key] for key in SERVER_PARTS if key in request},
        )

    @property
    def response(self) -> InboundResponse:
        response = self.document["response"]
        return InboundResponse(
            int(response["status"]), response.get("headers") or [], response.get("body")
        )

    @property
    def error(self) -> ErrorInfo | None:
        return self.document.get("error")

    @property
    def calls(self) -> list[CassetteCall]:
        return calls_of(self.document)

    @property
    def draws(self) -> list[Any]:
        return list(self.document.get("draws") or ())

    def client_span_ends(self) -> dict[str, int]:
        """When each client span ended (nanoseconds since the epoch), by span id: when its
        call's reply came in."""
        return {
            span["span_id"]: span["end_time_unix_nano"]
            for span in self.document.get("spans") or ()
            if span.get("kind") == "CLIENT" and isinstance(span.get("end_time_unix_nano"), int)
        }
