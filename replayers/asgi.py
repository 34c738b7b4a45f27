"""Replay mode for the ASGI middleware: each incoming request runs with its cassette.

``TIMETRACER_CASSETTE`` names one cassette (every request replays it) or a directory:
then each request replays the cassette recorded for the same method and route (the
exact path preferred) and, where several differ by body, the same body. Cassettes are
loaded when the middleware is built, so a missing or broken one stops the app at start.
"""

from __future__ import annotations

import threading
import weakref
from itertools import count
from typing import Any, Optional

from timetracer_otel._diagnostics import guarded, logger
from timetracer_otel._recording import exception_info
from timetracer_otel.capture.asgi import ASGIApp, Message, Receive, Scope, Send, route_template
from timetracer_otel.cassette.body import BodySink
from timetracer_otel.cassette.reader import CassetteError, cassette_files, load_cassette
from timetracer_otel.config import TraceConfig
from timetracer_otel.determinism import DrawReplayer, real_time_ns
from timetracer_otel.determinism import activate as activate_draws
from timetracer_otel.determinism import deactivate as deactivate_draws
from timetracer_otel.redaction import redactor_for

from .matching import http_view, live_http_view
from .report import ReplayReport, compare_response, remember
from .session import RecordedViews, ReplaySession, activate, deactivate, recorded_views

__all__ = ["CassetteLibrary", "ReplayLayer", "library_for"]


class CassetteLibrary:
    """The cassettes a replaying app answers from, and the choice of one per request."""

    def __init__(self, location: Optional[str]) -> None:
        if not location:
            raise CassetteError("(unset)", "replay mode needs TIMETRACER_CASSETTE (or TraceConfig(cassette_path=...))")
        self.location = location
        self.entries: list[tuple[str, dict[str, Any]]] = [(str(p), load_cassette(p)) for p in cassette_files(location)]
        # Computed once (a call too malformed to match fails now, not mid-request); each request's session reuses them.
        self.views: dict[str, RecordedViews] = {path: recorded_views(document, path) for path, document in self.entries}
        if not self.entries:
            raise CassetteError(location, "the directory holds no cassettes")
        self._turn = count()

    def select(
        self, method: str, path: str, route: Optional[str], body: Optional[bytes], headers: list[tuple[str, str]], config: TraceConfig
    ) -> Optional[tuple[str, dict]]:
        """The cassette for this request: same method, then the exact path, else the same route; then the body.

        The body is compared as recorded: canonical by content type, redacted and cut per ``config``.
        """
        if len(self.entries) == 1:
            return self.entries[0]
        same_method = [e for e in self.entries if e[1]["request"]["method"] == method]
        candidates = [e for e in same_method if e[1]["request"]["path"] == path] or [
            e for e in same_method if route is not None and e[1]["request"].get("route") == route
        ]
        if body is not None and len(candidates) > 1:
            redactor = redactor_for(config)
            wanted = live_http_view(method, "http://request/", body, headers, redactor, config.max_body_bytes).key
            candidates = [
                e
                for e in candidates
                if http_view(method, "http://request/", e[1]["request"]["body"], e[1]["request"]["headers"]).key == wanted
            ] or candidates
        if not candidates:
            return None
        return candidates[next(self._turn) % len(candidates)]

    @property
    def needs_body(self) -> bool:
        return len(self.entries) > 1


_libraries: dict[int, CassetteLibrary] = {}  # id(config) -> its cassettes, while the config lives
_libraries_lock = threading.Lock()


def library_for(config: TraceConfig) -> CassetteLibrary:
    """The cassettes ``config.cassette_path`` names, loaded once per config object.

    ``auto_setup`` (and the distro) load them at start, so unusable cassettes stop the
    app there; the middleware built later for the same config uses the same library.
    """
    with _libraries_lock:
        library = _libraries.get(id(config))
        if library is None:
            library = _libraries[id(config)] = CassetteLibrary(config.cassette_path)
            weakref.finalize(config, _libraries.pop, id(config), None)
        return library


async def _read_body(receive: Receive) -> tuple[bytes, list[Message]]:
    messages: list[Message] = []
    chunks: list[bytes] = []
    while True:
        message = await receive()
        messages.append(message)
        if message["type"] != "http.request":
            break
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            break
    return b"".join(chunks), messages


class ReplayLayer:
    """Run each HTTP request with the replay session of its cassette; report afterwards."""

    def __init__(self, app: ASGIApp, config: TraceConfig, library: CassetteLibrary) -> None:
        self.app = app
        self.config = config
        self.library = library

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        method, path = scope.get("method", "GET"), scope.get("path", "")
        body: Optional[bytes] = None
        if self.library.needs_body:
            body, buffered = await _read_body(receive)
            receive = _replaying(buffered, receive)
        headers_in = [(bytes(k).decode("latin-1"), bytes(v).decode("latin-1")) for k, v in scope.get("headers", ())]
        chosen = self.library.select(method, path, route_template(scope, scope), body, headers_in, self.config)
        cassette_path, document = chosen if chosen else (None, {"calls": [], "response": {}, "id": None})
        session = ReplaySession(
            document,
            cassette_path or "(no cassette recorded for this request)",
            self.config,
            views=self.library.views.get(cassette_path) if cassette_path else [],
        )
        status: list[int] = []
        headers: list[tuple[str, str]] = []
        response_body = BodySink(self.config.max_body_bytes)

        async def send_tee(message: Message) -> None:
            with guarded("replay.response"):
                if message["type"] == "http.response.start":
                    status.append(int(message["status"]))
                    headers.extend((bytes(k).decode("latin-1"), bytes(v).decode("latin-1")) for k, v in message.get("headers", ()))
                elif message["type"] == "http.response.body":
                    response_body.feed(message.get("body", b""))
            await send(message)

        error: Optional[dict[str, str]] = None
        draws = DrawReplayer(document.get("draws"), self.config.draws, real_time_ns) if self.config.draws else None
        token, draws_token = activate(session), activate_draws(draws)
        try:
            await self.app(scope, receive, send_tee)
        except BaseException as exc:
            error = exception_info(exc)
            raise
        finally:
            deactivate_draws(draws_token)
            deactivate(token)
            with guarded("replay.report"):
                report = _report(session, cassette_path, method, path, status, headers, response_body, error)
                report.extra_draws = dict(draws.extra) if draws is not None else {}
                remember(report)
                logger.info(report.console_text())


def _replaying(buffered: list[Message], receive: Receive) -> Receive:
    """A receive callable that gives the buffered messages first, then the real ones."""
    pending = list(buffered)

    async def replay_receive() -> Message:
        return pending.pop(0) if pending else await receive()

    return replay_receive


def _report(
    session: ReplaySession,
    cassette_path: Optional[str],
    method: str,
    path: str,
    status: list[int],
    headers: list[tuple[str, str]],
    body: BodySink,
    error: Optional[dict[str, str]],
) -> ReplayReport:
    document = session.document
    replayed_status = status[0] if status else (500 if error else None)
    report = ReplayReport(
        cassette=cassette_path,
        method=method,
        path=path,
        cassette_id=document.get("id"),
        recorded_status=document.get("response", {}).get("status"),
        status=replayed_status,
        answered=[call.view.label for _, call in session.answered],
        unmatched=[str(e).splitlines()[0] for e in session.unmatched],
        unused=[call.view.label for call in session.unused()],
        error=error,
    )
    if cassette_path is not None:
        report.differences = compare_response(
            document["response"],
            replayed_status,
            headers,
            body.data,
            body.size,
            session.redactor,
            session.config.replay_ignore_fields,
            session.config.max_body_bytes,
        )
    else:
        report.differences = ["no cassette was recorded for this request"]
    return report
