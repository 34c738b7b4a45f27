"""Replay mode for the ASGI middleware: each incoming request runs with its cassette.

``TIMETRACER_CASSETTE`` names one cassette (every request replays it) or a directory:
then :class:`~.selection.CassetteLibrary` chooses each request's cassette. The library is
built when the middleware is, so a missing or broken cassette stops the app at start.
"""

from __future__ import annotations

import functools
import threading
import weakref
from collections.abc import Callable
from typing import Any

import anyio

from timetracer_otel import _gc_hold, _network_guard
from timetracer_otel._diagnostics import console, guarded, logger, report_failure
from timetracer_otel._recording import exception_info
from timetracer_otel._terminal import printable
from timetracer_otel.cassette.body import BodySink, header_value
from timetracer_otel.cassette.document import Cassette
from timetracer_otel.cassette.reader import CassetteError
from timetracer_otel.config import TraceConfig
from timetracer_otel.determinism import NO_RECORDED_DRAWS, DrawReplayer, own_task, real_time_ns
from timetracer_otel.determinism import activate as activate_draws
from timetracer_otel.determinism import deactivate as deactivate_draws
from timetracer_otel.inbound import ASGIApp, Message, Receive, Scope, Send, latin1_headers
from timetracer_otel.redaction import Redactor
from timetracer_otel.sealing import REDACTED, is_sealed
from timetracer_otel.secret_values import ValueScrubber, shaped_secrets

from . import process
from .report import ReplayReport, ResponseComparison, compare_response, remember
from .selection import PIN_HEADER, CassetteLibrary, Choice, LiveRequest, Prepared
from .session import ReplaySession, activate, call_entry, deactivate

__all__ = ["ReplayLayer", "library_for"]


_REFUSAL_HINT = (
    "Let it through with TIMETRACER_ALLOWED_HOSTS=host:port, or name the client libraries that go "
    "live in TIMETRACER_LIVE_PLUGINS."
)

_libraries: dict[int, CassetteLibrary] = {}  # id(config) -> its cassettes, while the config lives
_libraries_lock = threading.Lock()


def library_for(
    config: TraceConfig, only: Callable[[dict[str, Any]], bool] | None = None
) -> CassetteLibrary:
    """The cassettes ``config.cassette_path`` names, indexed once per config object, and the
    process cassette beside them answering calls outside requests from now on.

    ``auto_setup`` (and the distro) build the library at start, so unusable cassettes stop
    the app there; the middleware built later for the same config, and ``timetracer
    replay`` sending the recorded requests, use the same library (and its turn counters).
    ``only``: the cassettes to keep, by their index rows (see :class:`CassetteLibrary`).
    """
    with _libraries_lock:
        library = _libraries.get(id(config))
        if library is None:
            library = _libraries[id(config)] = CassetteLibrary(config.cassette_path, config, only)
            weakref.finalize(config, _libraries.pop, id(config), None)
    process.start(config)  # once per process: a later call keeps the process cassette found first
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


async def _unreplayable(send: Send, error: CassetteError) -> None:
    """The answer to a request whose cassette cannot be replayed (a damaged or hostile file): a
    500 that says so, and the same line in the log; never another cassette's answer."""
    text = str(error)  # "timetracer: cannot use cassette <path>: ..."
    logger.error("%s", printable(text))
    body = text.encode("utf-8", "replace")
    headers = [
        (b"content-type", b"text/plain; charset=utf-8"),
        (b"content-length", b"%d" % len(body)),
    ]
    await send({"type": "http.response.start", "status": 500, "headers": headers})
    await send({"type": "http.response.body", "body": body})


_PIN = PIN_HEADER.encode("ascii")


def _pin(scope: Scope) -> tuple[str | None, Scope]:
    """The cassette the request names by its pin header, and the request without that header:
    the app sees the request as it was recorded."""
    headers = scope.get("headers") or ()
    named = [value for name, value in headers if name.lower() == _PIN]
    if not named:
        return None, scope
    kept = [(name, value) for name, value in headers if name.lower() != _PIN]
    return named[0].decode("latin-1").strip(), {**scope, "headers": kept}


class ReplayLayer:
    """Run each HTTP request with the replay session of its cassette; report afterwards."""

    def __init__(self, app: ASGIApp, config: TraceConfig, library: CassetteLibrary) -> None:
        self.app = app
        self.config = config
        self.library = library
        self._allowed_hosts = frozenset(config.allowed_hosts)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        method, path = scope.get("method", "GET"), scope.get("path", "")
        pin, scope = _pin(scope)
        body: bytes | None = None
        if pin is None and self.library.needs_body(method, path):
            body, buffered = await _read_body(receive)
            receive = _replaying(buffered, receive)
        # the route takes part in the choice only for a path no cassette has
        routed = pin is None and self.library.needs_route(method, path)
        live = LiveRequest.from_scope(scope, body, routed=routed)
        try:
            choice = (
                self.library.pinned(pin)
                if pin is not None
                else self.library.select(live, self.config)
            )
        except CassetteError as exc:
            await _unreplayable(send, exc)
            return
        prepared = choice.prepared
        if prepared is not None:
            scope = prepared.as_recorded(scope)
        process.take_up_time_zone(choice.document.get("time_zone"))
        session = ReplaySession(
            choice.document,
            choice.path or "(no cassette recorded for this request)",
            self.config,
            views=choice.views,
            inbound=lambda: {"headers": [list(h) for h in live.headers], "query": live.query},
            earlier=self.library.earlier.answers,
            sealed=prepared.opened.secrets if prepared is not None else frozenset(),
        )
        response = _Response(self.config.max_body_bytes)

        async def send_tee(message: Message) -> None:
            try:
                _gc_hold.collect_if_overdue()
                response.see(message)
            except Exception as exc:  # the app's response goes on, whatever the report makes of it
                report_failure("replay.response", exc)
            await send(message)

        error: dict[str, str] | None = None
        draws = (
            DrawReplayer(
                prepared.draws if prepared else NO_RECORDED_DRAWS,
                self.config.draws,
                real_time_ns,
                functools.partial(self.library.earlier.stream, choice.path)
                if choice.path
                else None,
            )
            if self.config.draws
            else None
        )
        # a live library needs the network; every other connection is one the cassette cannot answer
        closure = (
            None
            if session.live_libraries
            else _network_guard.Closure(f"{method} {path}", _REFUSAL_HINT, self._allowed_hosts)
        )
        token, draws_token = activate(session), activate_draws(draws)
        own_task(draws)
        closed = _network_guard.close_in_context(closure) if closure is not None else None
        _gc_hold.hold()
        try:
            await self.app(scope, receive, send_tee)
        except BaseException as exc:
            error = exception_info(exc)
            raise
        finally:
            _gc_hold.release()
            if closed is not None:
                _network_guard.reopen_context(closed)
            deactivate_draws(draws_token)
            deactivate(token)
            if error is None:
                await _late_calls_made(session, choice.document)
            with guarded("replay.report"):
                report = _report(session, choice, live, response, error)
                report.refused = list(closure.refused) if closure is not None else []
                # draws made beyond the recorded ones
                if draws is not None:
                    report.extra_draws, report.earlier_draws = (
                        dict(draws.extra),
                        dict(draws.from_earlier),
                    )
                remember(report)
                console(report.console_text())


# How long a replayed request's report waits for the calls its recording made after the
# response (a task the request left running: a post-call hook, an audit log), beyond how long
# after it they came when recorded; at most _LATE_MOST_SECONDS in all.
_LATE_MARGIN_SECONDS = 0.5
_LATE_MOST_SECONDS = 5.0
_LATE_POLL_SECONDS = 0.01


async def _late_calls_made(session: ReplaySession, document: dict[str, Any]) -> None:
    """Wait until the calls the recording made after the response are made again, or until
    they are overdue: reported before, they read as unused (never checked, or a false
    difference) though the app was about to make them."""
    duration = document.get("duration_ms")
    if not isinstance(duration, (int, float)):
        return

    def late() -> list[Any]:
        return [
            recorded
            for recorded in session.unused()
            if _offset_ms(recorded.call.document) > duration
        ]

    waiting = late()
    if not waiting:
        return
    after = max(_offset_ms(recorded.call.document) for recorded in waiting) - duration
    seconds = min(after / 1000 + _LATE_MARGIN_SECONDS, _LATE_MOST_SECONDS)
    deadline = real_time_ns() + int(seconds * 1e9)
    while waiting and real_time_ns() < deadline:
        await anyio.sleep(_LATE_POLL_SECONDS)
        waiting = late()


def _offset_ms(call: dict[str, Any]) -> float:
    offset = call.get("start_offset_ms")
    return offset if isinstance(offset, (int, float)) else 0.0


class _Response:
    """The response the replayed app sends, as ASGI has it: decoded only if it differs from the recorded one."""

    __slots__ = ("status", "raw_headers", "body")

    def __init__(self, limit: int) -> None:
        self.status: int | None = None
        self.raw_headers: list[tuple[bytes, bytes]] = []
        self.body = BodySink(limit)

    def see(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self.status = int(message["status"])
            self.raw_headers.extend(message.get("headers", ()))
        elif message["type"] == "http.response.body":
            self.body.feed(message.get("body", b""))

    def headers(self) -> list[tuple[str, str]]:
        return latin1_headers(self.raw_headers)


def _replaying(buffered: list[Message], receive: Receive) -> Receive:
    """A receive callable that gives the buffered messages first, then the real ones."""
    pending = list(buffered)

    async def replay_receive() -> Message:
        return pending.pop(0) if pending else await receive()

    return replay_receive


def _report(
    session: ReplaySession,
    choice: Choice,
    live: LiveRequest,
    response: _Response,
    error: dict[str, str] | None,
) -> ReplayReport:
    method, path = live.method, live.path
    replayed_status = response.status if response.status is not None else (500 if error else None)
    unused = session.unused()
    report = ReplayReport(
        cassette=choice.path,
        method=method,
        # as the cassette shows it: a token in it was sealed there (opened with the key here)
        path=session.values.text(path) if session.sealed else path,
        cassette_id=choice.document.get("id"),
        recorded_status=choice.prepared.response.status if choice.prepared else None,
        status=replayed_status,
        answered=[call.view.label for _, call in session.answered],
        unmatched=[str(e).splitlines()[0] for e in session.unmatched],
        unused=[call.view.label for call in unused],
        calls=[*session.made, *(call_entry(None, None, c.index) for c in unused)],
        error=_shown_error(error, session),
        notes=choice.notes,
        sealed=choice.prepared is not None and choice.prepared.opened.locked,
        from_earlier=[
            f"{library} {label} (answered by {_file_name(path)}, recorded before)"
            for library, label, path in session.from_earlier
        ],
    )
    if choice.prepared is not None:
        comparison = _compared(choice, choice.prepared, session, replayed_status, response, live)
        report.differences, report.unverified = comparison.differences, comparison.unverified
        # an error the replay raised is on the report's error line; one it no longer raises is
        # a difference (by type only: its message may quote a secret the key opened)
        recorded_error, replayed_error = (
            _error_type(choice.document.get("error")),
            _error_type(error),
        )
        if recorded_error is not None and recorded_error != replayed_error:
            replayed = f"the app raised {replayed_error}" if replayed_error else "none"
            report.differences.insert(
                0, f"error: recorded the app raised {recorded_error}, replayed {replayed}"
            )
        other = (
            _other_secret_headers(session.redactor, live.headers, choice.document)
            if report.differences
            else []
        )
        if other and not report.notes:
            one = len(other) == 1
            report.notes = [
                f"the request's {', '.join(other)} {'differs' if one else 'differ'} from the"
                f" recorded request's: what the app read from {'it' if one else 'them'} may differ"
                " (a session signed with the time it was made reads as expired or not yet valid"
                " when the requests come in another order than recorded)"
            ]
    else:
        report.differences = ["no cassette was recorded for this request"]
    return report


def _other_secret_headers(
    redactor: Redactor | None, live_headers: list[tuple[str, str]], document: dict[str, Any]
) -> list[str]:
    """The secret headers (``cookie``, ``authorization``) the request carried with other values
    than its recording, where the cassette holds them readable (opened with the key)."""
    if redactor is None:
        return []
    secret = redactor.names.header

    def by_name(headers: Any) -> dict[str, list[str]]:
        found: dict[str, list[str]] = {}
        for name, value in headers or ():
            if secret(name):
                found.setdefault(name.lower(), []).append(value)
        return found

    live, recorded = by_name(live_headers), by_name(document["request"]["headers"])
    if any(
        value == REDACTED or is_sealed(value) for values in recorded.values() for value in values
    ):
        return []  # not opened: compared by the fingerprint, when several cassettes could answer
    return sorted(
        name for name in live.keys() | recorded.keys() if live.get(name) != recorded.get(name)
    )


def _file_name(path: str) -> str:
    return path.rsplit("/", 1)[-1]


def _error_type(error: Any) -> str | None:
    return str(error.get("type")) if isinstance(error, dict) and error.get("type") else None


def _shown_error(error: dict[str, str] | None, session: ReplaySession) -> dict[str, str] | None:
    """The app's exception as reports show it: its message redacted as a recording's is (values
    under a secret name, the cassette's and the request's secret values, bearer tokens, JWTs)."""
    if error is None or session.redactor is None:
        return error
    message = session.redactor.free_text(error["message"])
    return {
        **error,
        "message": ValueScrubber(session.values.values, shapes=shaped_secrets).text(message),
    }


def _compared(
    choice: Choice,
    prepared: Prepared,
    session: ReplaySession,
    status: int | None,
    response: _Response,
    live: LiveRequest,
) -> ResponseComparison:
    """The replayed response against the recorded one. With the key that sealed the cassette the real
    values are compared, so secrets are verified too; what differs is always shown redacted. A
    request that asked for another encoding than the recorded one (``Accept-Encoding``: a
    cassette recorded for a client without gzip answering one with it) may get another
    ``Content-Encoding``; its body is compared decoded."""
    body = response.body
    if prepared.response.same(status, response.raw_headers, body.data, body.size):
        return ResponseComparison([], [])
    config = session.config
    headers = response.headers()
    asked = header_value(live.headers, "accept-encoding")
    recorded_asked = header_value(Cassette(choice.document).request.headers, "accept-encoding")
    negotiated = ("content-encoding",) if asked != recorded_asked else ()

    def compare(recorded: dict[str, Any], redactor: Redactor | None) -> ResponseComparison:
        return compare_response(
            Cassette(recorded).response,
            status,
            headers,
            body.data,
            body.size,
            redactor,
            config.replay_ignore_fields,
            config.max_body_bytes,
            negotiated,
        )

    if choice.shown is None:
        return compare(choice.document, session.redactor)
    real = compare(choice.document, None)
    if not real.differences:
        return real
    shown = compare(choice.shown, session.redactor)
    # the app got the opened secrets, and may answer them under a name that is no secret's
    hidden = ValueScrubber(session.values.values, shapes=shaped_secrets).text
    return ResponseComparison(
        [hidden(line) for line in shown.differences]
        or ["body: a sealed secret differs (its values are not shown)"],
        [],
    )
