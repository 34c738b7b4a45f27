"""The replay session: one cassette answering the outgoing calls of one request.

The session lives in a contextvar, so concurrent requests replaying different
cassettes never see each other's answers. Replayers for each client library ask the
current session for an answer; a call it cannot answer raises
:class:`ReplayMismatchError` at the call site. Nothing goes to the network unless the
library was named live.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import contextvars
import functools
import os
import threading
import weakref
from collections.abc import Callable, Iterable, Iterator, MutableSequence, Sequence
from typing import Any

import orjson

from timetracer_otel._apps_under_test import is_app_under_test
from timetracer_otel._own_io import is_own_io
from timetracer_otel._recording import in_request
from timetracer_otel._request_scope import request_scoped
from timetracer_otel._terminal import printable
from timetracer_otel.cassette.calls import CassetteCall, calls_of
from timetracer_otel.cassette.document import Cassette
from timetracer_otel.cassette.reader import CassetteError
from timetracer_otel.config import TraceConfig, process_mode
from timetracer_otel.determinism import state as draw_state
from timetracer_otel.protocols import CallView, recorded_view, usual_answer
from timetracer_otel.protocols.http import live_view as live_http_view
from timetracer_otel.redaction import Redactor, redactor_for
from timetracer_otel.secret_values import ValueScrubber, credentials_in

from ._opened_secrets import hidden_opened
from .matching import (
    CallIndex,
    RecordedCall,
    call_differences,
    closest_call,
    describe_mismatch,
)

__all__ = [
    "ReplaySession",
    "ReplayMismatchError",
    "round_trip",
    "call_entry",
    "credentials_of",
    "current_session",
    "replay_session_for",
    "refusal",
    "activate",
    "deactivate",
]

_current: contextvars.ContextVar[ReplaySession | None] = request_scoped(
    contextvars.ContextVar("timetracer_replay_session", default=None)
)
# When the reply came in, when recorded, to the call the running task awaits: set as the
# session answers it, read by round_trip.
_reply_came: contextvars.ContextVar[int | None] = contextvars.ContextVar(
    "timetracer_reply_came", default=None
)
# How many turns of the event loop a call waits at most for those whose replies came first
_MAX_TURNS = 100
# Turns in a row with no other task ready before a reply that came after another's is given
_QUIET_TURNS = 3


def _checked_view(call: CassetteCall, index: int, path: str) -> CallView | None:
    """The view of a recorded call; a call too malformed to match is a :class:`CassetteError`."""
    try:
        return recorded_view(call)
    except (AttributeError, KeyError, TypeError, ValueError) as exc:
        raise CassetteError(
            path, f"calls[{index}] cannot be replayed ({type(exc).__name__}: {exc})"
        ) from None


async def round_trip() -> None:
    """What a replayed async call awaits in place of the server's reply. The event loop runs the
    other ready tasks, as it did while the recorded call waited on its socket: a task the
    request started (an audit write, a log sink) then draws its values and makes its calls in the
    order it did when recorded, instead of after the request's own. Calls of the request awaited
    side by side return in the order their replies came in when recorded, not the order they
    were made: tasks resume as they did (``asyncio.as_completed`` gives them in that order)."""
    came, session = _reply_came.get(), _current.get()
    if came is None or session is None:
        await asyncio.sleep(0)
        return
    _reply_came.set(None)
    await session.in_recorded_order(came)


async def _settled() -> None:
    """Return once the event loop has run what was ready: a reply that came after another's,
    when recorded, came once the loop had run what that one set going (its task went on and
    called a DataLoader's ``load``, whose batch was sent before this reply came); answered at
    the next turn, the second task's loads joined the first batch, a query no recording holds.
    Settled: for :data:`_QUIET_TURNS` turns in a row, every other task waits on something (a
    callback the loop runs next, a DataLoader's dispatch, makes its task a turn later)."""
    quiet = 0
    with _waiting_here() as current:
        for _ in range(_MAX_TURNS):
            await asyncio.sleep(0)
            quiet = 0 if _others_ready(current) else quiet + 1
            if quiet >= _QUIET_TURNS:
                return


# the tasks waiting in in_recorded_order or _settled: none is work the others wait for
_waiting: weakref.WeakSet[asyncio.Task[Any]] = weakref.WeakSet()


@contextlib.contextmanager
def _waiting_here() -> Iterator[asyncio.Task[Any] | None]:
    """The current task, noted as waiting here for the block."""
    task = asyncio.current_task()
    if task is None:  # outside a task: no other task waits on it
        yield None
        return
    _waiting.add(task)
    try:
        yield task
    finally:
        _waiting.discard(task)


def _others_ready(current: asyncio.Task[Any] | None) -> bool:
    """Whether a task other than ``current`` (and those waiting here) is ready to run."""
    return any(
        task is not current
        and task not in _waiting
        and not task.done()
        and getattr(task, "_fut_waiter", True) is None  # awaiting no future: scheduled to run
        for task in asyncio.all_tasks()
    )


class ReplayMismatchError(Exception):
    """An outgoing call in replay that the cassette cannot answer.

    ``call`` is the call as made, ``cassette`` the file, ``candidates`` the closest
    recorded calls with what differs.
    """

    def __init__(self, call: str, library: str, cassette: str, candidates: str) -> None:
        # a live value may be a secret the key opened in another cassette (a fixture's draw)
        self.call = call = hidden_opened(call)
        self.library = library
        self.cassette = cassette
        self.candidates = candidates = hidden_opened(candidates)
        # written as escapes: a pickled job or a binary key would write raw control bytes into the log
        super().__init__(
            f"timetracer replay: no recorded call matches {printable(call)} ({library})\n"
            f"cassette: {printable(cassette)}\n{printable(candidates, multiline=True)}"
        )


def call_entry(
    library: str | None,
    replayed: str | None,
    recorded: int | None = None,
    closest: int | None = None,
    differences: Sequence[str] = (),
    earlier: str | None = None,
) -> dict[str, Any]:
    """One entry of the report's call-by-call comparison (:attr:`ReplayReport.calls`).
    ``earlier``: the cassette of an earlier request that answered it (see :mod:`.earlier`)."""
    entry = {
        "library": library,
        "replayed": replayed,
        "recorded": recorded,
        "closest": closest,
        "differences": list(differences),
    }
    if earlier is not None:
        entry["earlier"] = earlier
    return entry


# (the path of the cassette replayed, a call it cannot answer) -> (another cassette's path, its call answering it)
# (and the secrets its request came with: its credentials), the most fitting first
# (``any_port``: the same call to a loopback service on any port: see EarlierRequests.answers)
EarlierAnswer = Callable[..., "Iterable[tuple[str, RecordedCall, frozenset[str]]]"]


def current_session() -> ReplaySession | None:
    """The replay session of the request this code runs for, or None."""
    return _current.get()


def _live_in_environment(library: str) -> bool:
    return library in {
        name.strip() for name in os.environ.get("TIMETRACER_LIVE_PLUGINS", "").split(",")
    }


def replay_session_for(
    library: str, describe: Callable[[], str], url: str | None = None
) -> ReplaySession | None:
    """The session that must answer a call of ``library``, or None when the call may go out.

    In a process started with ``TIMETRACER_MODE=replay``, a call outside every request
    (lifespan, import time, a thread or task without a request's context) is answered by
    the process session (:mod:`.process`), and a call in a request that is not replayed
    (an excluded path) is refused with :class:`ReplayMismatchError` rather than sent,
    unless ``library`` is live. ``describe()`` names the call for that error. An HTTP call
    to ``url`` served by an app under test of this process (a live server thread) goes
    out: the app behind it replays its own calls.
    """
    if is_own_io() or (url is not None and is_app_under_test(url)):
        return None
    session = _current.get()
    if session is None and process_mode() == "replay" and not _live_in_environment(library):
        if in_request():
            raise ReplayMismatchError(
                describe(),
                library,
                "(none: this call belongs to no replayed request)",
                "This process replays (TIMETRACER_MODE=replay), so it is not sent. The request it was made for\n"
                f"is not replayed (an excluded path?): let {library} go live with TIMETRACER_LIVE_PLUGINS={library}.",
            )
        from .process import process_session  # it builds on this module

        session = process_session()
    return None if session is None or session.is_live(library) else session


def refusal(library: str, what: str, why: str) -> ReplayMismatchError:
    """The error for ``what`` (a call of ``library``) replay never answers, saying ``why``; noted in
    the session that answers ``library``, so its report fails even if the application catches it."""
    session = replay_session_for(library, lambda: what)
    error = ReplayMismatchError(what, library, session.path if session else "(none)", why)
    if session is not None:
        session.refuse(error)
    return error


def goes_live(library: str) -> bool:
    """True when the replay in force lets ``library``'s calls go to the real service (hybrid mode)."""
    session = _current.get()
    if session is not None:
        return session.is_live(library)
    return process_mode() == "replay" and _live_in_environment(library)


def activate(session: ReplaySession) -> contextvars.Token:
    return _current.set(session)


def deactivate(token: contextvars.Token) -> None:
    _current.reset(token)


RecordedViews = list[tuple[int, CassetteCall, CallView]]
# a call the cassette cannot answer -> the cassette read anew so that it can (its document and
# views: the same calls, another pytest-xdist worker's names in them), or None
Renamed = Callable[[CallView], "tuple[dict[str, Any], RecordedViews] | None"]


def recorded_views(
    document: dict[str, Any], path: str, answers: dict[str, Any] | None = None
) -> RecordedViews:
    """(index, call, view) for each replayable call of a cassette; they do not change, so a
    caller replaying one cassette many times computes them once. ``answers``: the same
    document with its sealed secrets opened, whose calls answer (views are of ``document``)."""
    calls = calls_of(answers or document)
    views = [
        (index, calls[index], _checked_view(call, index, path))
        for index, call in enumerate(calls_of(document))
    ]
    return [(index, call, view) for index, call, view in views if view is not None]


def credentials_of(redactor: Redactor, request: dict[str, Any]) -> frozenset[str]:
    """The secrets a recorded or live inbound request came with (``request`` is left as it is)."""
    return redactor.secret_values(_copied({"request": request}))


def _copied(document: dict[str, Any]) -> dict[str, Any]:
    """A copy of a cassette document, for redaction to find its secrets in: the session keeps the
    original (which the selection caches). orjson's round trip (a NaN, which no secret is, comes
    back null), or a walk where orjson refuses (an integer beyond 64 bits, nesting beyond 254)."""
    try:
        return orjson.loads(orjson.dumps(document))
    except orjson.JSONEncodeError:
        pass
    holder: list[Any] = [document]
    pending: list[tuple[Any, Any]] = [(holder, 0)]
    while pending:
        parent, key = pending.pop()
        item = parent[key]
        if isinstance(item, dict):
            parent[key] = item = dict(item)
            pending.extend((item, name) for name in item)
        elif isinstance(item, list):
            parent[key] = item = list(item)
            pending.extend((item, index) for index in range(len(item)))
    return holder[0]


def _picked_by_os(port: int) -> bool:
    """Whether ``port`` is in the range operating systems pick listening ports from when asked
    for any (from 32768 on Linux, 49152 elsewhere)."""
    return port >= 32768


class ReplaySession:
    """Answers outgoing calls from one cassette document and keeps account of them.

    ``views`` are the cassette's :func:`recorded_views`, when the caller has them already.
    """

    def __init__(
        self,
        document: dict[str, Any],
        path: str,
        config: TraceConfig | None = None,
        live_libraries: Iterable[str] = (),
        views: RecordedViews | None = None,
        inbound: Callable[[], dict[str, Any]] | None = None,
        earlier: EarlierAnswer | None = None,
        sealed: frozenset[str] = frozenset(),
        renamed: Renamed | None = None,
        absent: str | None = None,
    ) -> None:
        """``absent``: why ``document`` holds no call, where no file holds it; said in each mismatch."""
        config = config if config is not None else TraceConfig(mode="replay")
        self.document = document
        self.path = path
        self.config = config
        self.live_libraries = frozenset((*config.live_plugins, *live_libraries))
        self.redactor = redactor_for(config)
        self._inbound = inbound
        self._earlier = earlier
        self._renamed = renamed
        self.sealed = sealed  # the values the key opened in ``document`` (see opening.Opened)
        self._absent = absent
        views = recorded_views(document, path) if views is None else views
        self.index = CallIndex([RecordedCall(index, call, view) for index, call, view in views])
        self.answered: MutableSequence[tuple[str, RecordedCall]] = []  # (library, recorded call)
        self.unmatched: MutableSequence[ReplayMismatchError] = []
        # Every call the app made, in order, beside the recorded call that answered it (or the closest one
        # and how it differs): the report's call-by-call comparison.
        self.made: MutableSequence[dict[str, Any]] = []
        # (library, label, path of the cassette) of each call an earlier request's cassette answered
        self.from_earlier: MutableSequence[tuple[str, str, str]] = []
        self._lock = threading.Lock()
        # when the replies came in to the calls being awaited now (see round_trip)
        self._awaited: list[int] = []
        # a loopback service's port in this replay -> its port when recorded (_moved_service_call)
        self._moved_ports: dict[int, int] = {}

    @functools.cached_property
    def values(self) -> ValueScrubber:
        """The recording hid its secrets wherever they appeared (see secret_values); a live call is
        hidden the same way before it is matched. The values: the cassette's (opened, with the key:
        those found by name and every one that was sealed) and those of the request the app
        received (``inbound()``, which may carry supplied credentials).
        Found when the first call is made: a request that makes none does not need them."""
        if self.redactor is None:
            return ValueScrubber(())
        inbound = credentials_of(self.redactor, self._inbound()) if self._inbound else frozenset()
        try:
            recorded = self.redactor.secret_values(_copied(self.document))
        except (
            AttributeError,
            KeyError,
            TypeError,
            ValueError,
        ) as exc:  # a damaged or hostile file
            raise CassetteError(
                self.path, f"its calls cannot be read ({type(exc).__name__}: {exc})"
            ) from None
        # the JWTs and private keys a live call carries too: the recording hid every one (secret_values.kept_credentials)
        return ValueScrubber(
            recorded | inbound | self.sealed,
            shapes=functools.partial(credentials_in, names=self.redactor.names),
        )

    @property
    def quiet_reads_wait(self) -> bool:
        """Whether a blocking read of messages (Redis pub/sub) that finds none left waits, as
        the recording's did when its process ended: not in a request, which got what it
        waited for (see :class:`replayers.process.ProcessSession`)."""
        return False

    def is_live(self, library: str) -> bool:
        """True when calls made with ``library`` must go to the real service."""
        return library in self.live_libraries

    def take_due(self, library: str, view: CallView) -> RecordedCall | None:
        """:meth:`take`, only once every call of its protocol recorded before it has been made:
        what a broker sent a waiting client after the request's publish is not read before it."""
        with self._lock:
            if not self.index.due(view):
                return None
        return self.take(library, view)

    def take(self, library: str, view: CallView) -> RecordedCall | None:
        """The recorded call answering ``view``, or None without counting a mismatch: for a read
        that may find nothing (a pub/sub message), where finding nothing is an answer too."""
        with self._lock:
            recorded = self.index.take(view) or self._moved_service_call(view)
            if recorded is None:
                _reply_came.set(None)
                return None
            self.answered.append((library, recorded))
            self.made.append(call_entry(library, view.label, recorded.index))
        # what the task draws next is what it drew after this call when recorded
        draw_state.called(draw_state.current(), recorded.index)
        span_id = recorded.call.span_id
        _reply_came.set(self._reply_times.get(span_id) if span_id else None)
        return recorded

    def _moved_service_call(self, view: CallView) -> RecordedCall | None:
        """The recorded call answering ``view``, a call to a loopback service that listens on
        another port than when recorded (a test's stub server on a port the OS picked), marked
        used: from the recorded port this port is tied to (:meth:`_tied_port`). A port the
        recording called itself is not moved: a call to it that matches nothing is a mismatch.
        Called with the lock held."""
        if view.loopback is None or view.loopback[0] in self.index.ports:
            return None
        candidates = self.index.moved(view)
        recorded_port = self._tied_port(view.loopback[0], [c.loopback_port for c in candidates])
        found = next((c for c in candidates if c.loopback_port == recorded_port), None)
        if found is not None:
            found.used = True
        return found

    def _tied_port(self, port: int, offered: list[int | None]) -> int | None:
        """The recorded port ``port`` stands for, among ``offered`` (those of the recorded calls
        a call to it matches, in order): the one it was tied to, else the first no other port
        is tied to (one the OS would pick first, when ``port`` is one: a stub on a fixed port
        is not taken for it), which it is tied to from now on. One port to one: two stub
        servers are never taken for each other. Called with the lock held."""
        tied = self._moved_ports.get(port)
        if tied is not None:
            return tied if tied in offered else None
        taken = set(self._moved_ports.values())
        free = [p for p in dict.fromkeys(offered) if p is not None and p not in taken]
        chosen = next((p for p in free if _picked_by_os(p) == _picked_by_os(port)), None)
        if chosen is None and free:
            chosen = free[0]
        if chosen is not None:
            self._moved_ports[port] = chosen
        return chosen

    @functools.cached_property
    def _reply_times(self) -> dict[str, int]:
        return Cassette(self.document).client_span_ends()

    async def in_recorded_order(self, came: int) -> None:
        """Return once no other call of the request being awaited had its reply before ``came``
        when recorded (:func:`round_trip`), at most after :data:`_MAX_TURNS` turns of the loop;
        one that waited for another's, once the loop has run what that one set going."""
        awaited = self._awaited  # kept sorted: a fan-out of many calls checks the first only
        with self._lock:
            bisect.insort(awaited, came)
            after_another = awaited[0] < came
        try:
            with _waiting_here():
                for _ in range(_MAX_TURNS):
                    await asyncio.sleep(0)
                    if came <= awaited[0]:
                        break
                    after_another = True
        finally:
            with self._lock:
                del awaited[bisect.bisect_left(awaited, came)]
        if after_another:
            await _settled()

    def answer(self, library: str, view: CallView) -> RecordedCall:
        """The recorded call answering ``view``; raises :class:`ReplayMismatchError` if none does."""
        recorded = self.take(library, view)
        if recorded is None and self._reopened(view):
            recorded = self.take(library, view)
        if recorded is not None:
            return recorded
        with self._lock:
            unrecorded = self._unrecorded_answer(library, view) or self._repeated_answer(
                library, view
            )
            if unrecorded is not None:
                _reply_came.set(None)
                return unrecorded
            error = ReplayMismatchError(
                view.label, library, self.path, self._mismatch(library, view)
            )
            closest = closest_call(view, self.index.calls)
            self.unmatched.append(error)
            if closest is None:
                self.made.append(call_entry(library, error.call))
            else:
                self.made.append(
                    call_entry(
                        library,
                        error.call,
                        closest=closest.index,
                        differences=[
                            hidden_opened(difference)
                            for difference in call_differences(view, closest)
                        ],
                    )
                )
        raise error

    def refuse(self, error: ReplayMismatchError) -> None:
        """Note a call refused before it could be matched (a connection replay never opens)."""
        with self._lock:
            self.unmatched.append(error)
            self.made.append(call_entry(error.library, error.call, differences=[error.candidates]))

    def _reopened(self, view: CallView) -> bool:
        """Whether the cassette, read anew as ``renamed`` reads it for ``view``, now holds it;
        it then answers every call from here on, the calls used so far kept used."""
        if self._renamed is None:
            return False
        with self._lock:
            reopened = self._renamed(view)
            if reopened is None:
                return False
            self.document, views = reopened
            used = {call.index for call in self.index.calls if call.used}
            self.index = CallIndex(
                [RecordedCall(index, call, v, index in used) for index, call, v in views]
            )
            for derived in ("values", "_reply_times"):  # found from the document when needed
                self.__dict__.pop(derived, None)
            return True

    def _unrecorded_answer(self, library: str, view: CallView) -> RecordedCall | None:
        """An answer for a call the cassette does not hold: the one the recording process had
        from an earlier request (:mod:`.earlier`), noted for the report; not for a call the cassette
        has with every answer used up (made more often than recorded). Called with the lock held."""
        if self._earlier is None or self.index.holds(view):
            return None
        found = next(self._earlier_offered(view), None) or self._moved_earlier_answer(view)
        if found is None:
            return None
        path, recorded = found
        self.answered.append((library, recorded))
        self.from_earlier.append((library, view.label, path))
        self.made.append(call_entry(library, view.label, earlier=f"{path}#{recorded.index}"))
        return recorded

    def _moved_earlier_answer(self, view: CallView) -> tuple[str, RecordedCall] | None:
        """An earlier request's answer for a call to a loopback service on another port than
        recorded (a test run alone calls the suite's stub server, whose polls the first test's
        cassette holds), from the recorded port this port is tied to (:meth:`_tied_port`).
        Called with the lock held."""
        if view.loopback is None or view.loopback[0] in self.index.ports:
            return None
        offered = list(self._earlier_offered(view, any_port=True))
        recorded_port = self._tied_port(
            view.loopback[0], [recorded.loopback_port for _, recorded in offered]
        )
        return next((o for o in offered if o[1].loopback_port == recorded_port), None)

    def _earlier_offered(
        self, view: CallView, any_port: bool = False
    ) -> Iterator[tuple[str, RecordedCall]]:
        """(path, call) of the earlier requests' calls answering ``view`` (on any port, with
        ``any_port``), the most fitting first, but those carrying another request's credentials."""
        assert self._earlier is not None
        for path, recorded, credentials in self._earlier(self.path, view, any_port=any_port):
            if not self._carries_others_credentials(recorded, credentials):
                yield path, recorded

    def _carries_others_credentials(
        self, recorded: RecordedCall, credentials: frozenset[str]
    ) -> bool:
        """Whether another request's call carries a secret that request came with
        (``credentials``) and this one does not have: a token-blacklist lookup made with another
        user's token answered "no row" for this user's. The service's own secrets (an API key
        from its settings) came with no request, and are not compared; without the key nothing
        was opened, and nothing is told apart."""
        others = credentials - self.values.values
        document = recorded.call.document
        return bool(others) and ValueScrubber(others).value(document, document=True) != document

    def _repeated_answer(self, library: str, view: CallView) -> RecordedCall | None:
        """A call that carries no data (a SQL ``connect``, a liveness ``SELECT 1``, a Redis
        ``PING``) made more often than recorded gets its last recorded answer again: a pool
        holds its connections otherwise when a test runs alone than after the tests it
        followed when recorded. Called with the lock held."""
        if not self.index.holds(view) or usual_answer(view) is None:
            return None
        last = next(c for c in reversed(self.index.calls) if c.view.key == view.key)
        self.answered.append((library, last))
        self.made.append(call_entry(library, view.label, last.index))
        return last

    def _mismatch(self, library: str, view: CallView) -> str:
        """What the error for an unanswered call says after naming it."""
        described = describe_mismatch(view, self.index.calls)
        return described if self._absent is None else f"{described}: {self._absent}"

    def answer_http(
        self, library: str, method: str, url: str, body: bytes, headers: list[tuple[str, str]]
    ) -> CassetteCall:
        """The recorded HTTP call answering this request."""
        view = live_http_view(
            method, url, body, headers, self.redactor, self.config.max_body_bytes, self.values
        )
        return self.answer(library, view).call

    def scrubbed(self, request: Any) -> Any:
        """A live call (in cassette or plain form) with the recording's secret values hidden as replay's views show them."""
        return self.values.value(request)

    def unused(self) -> list[RecordedCall]:
        with self._lock:
            return self.index.unused()
