"""The draws of one request: kept in order while it is recorded, handed back while it is replayed.

Draws are kept per (kind, caller): the app's ``uuid4()`` in its models and SQLAlchemy's
pool reading the clock are separate streams, so a library that reads the clock once
more in replay (a new connection) does not shift the values the app gets. The request's
draw state lives in a contextvar: tasks of one request (``asyncio.gather``) and threads
started with its context (``run_in_threadpool``) share it, other requests never see it.

Each draw is also tied to the call its task made last (:func:`called`). Replay answers a
call at once, so tasks of a request that awaited calls side by side resume in the order
they made them, not the order their replies came in when recorded: handed out in order
alone, the values would go to the wrong tasks. A draw takes the next value recorded after
the same call, and the next in order only where there is none.

A request's draws made in an asyncio task other than the one serving it (a task it started,
or a rate limiter's started on first use) are kept apart, per the task's coroutine
(:func:`own_task`): a task that an earlier request started when recording, and this one
starts when replayed alone, does not take the values the request's own code drew.
"""

from __future__ import annotations

import asyncio
import collections
import contextvars
import hashlib
import random
import threading
from collections.abc import Callable, Iterable, Sequence
from typing import Any, NamedTuple

from timetracer_otel._diagnostics import counters
from timetracer_otel._request_scope import request_scoped
from timetracer_otel.cassette.values import decode_value, encode_value

__all__ = [
    "DrawRecorder",
    "DrawReplayer",
    "encode_draws",
    "decode_draws",
    "RecordedDraws",
    "RecordedStream",
    "NO_RECORDED_DRAWS",
    "current",
    "activate",
    "called",
    "own_task",
    "deactivate",
    "use_startup_draws",
    "startup_draws",
    "end_startup",
]

# A request that draws more than this keeps the first ones; the rest are real in replay too.
MAX_DRAWS_PER_REQUEST = 100_000
MAX_CHOSEN = 4096  # characters of codes drawn with ``secrets.choice`` kept per request
_CLOCK_STEP_NS = (
    1_000_000  # a reproducible clock (DrawRecorder's clock_from) moves on by a millisecond a read
)
_clock_lock = threading.Lock()

Real = Callable[[], Any]
Fits = Callable[[Any], bool]
Seeded = Callable[[random.Random], Any]
_NONE: Any = object()  # no recorded value was handed out (a recorded value may be None)

# The call the running task (or thread) made last: (the draws of its request, the call's number
# there). Its own for each task, as each task copies its context: see called().
_last_call: contextvars.ContextVar[tuple[object, int] | None] = contextvars.ContextVar(
    "timetracer_last_call", default=None
)


def called(draws: Draws | None, number: int) -> None:
    """The running task made call ``number`` of the request whose draws are ``draws``: the
    recording's order of the call (record) or its index in the cassette (replay). The draws
    the task makes next are tied to it."""
    if draws is not None:
        _last_call.set((draws, number))


def _after(draws: Draws) -> int | None:
    """The number of the call the running task made last for ``draws``' request, or None."""
    last = _last_call.get()
    return last[1] if last is not None and last[0] is draws else None


def _running_task() -> asyncio.Task[Any] | None:
    try:
        return asyncio.current_task()
    except RuntimeError:  # a thread without an event loop (a threadpool's)
        return None


def own_task(draws: Draws | None) -> None:
    """The running task serves the request of ``draws``: draws made in other asyncio tasks are
    kept apart, per coroutine (see the module's docstring). Threads draw as the request does."""
    if draws is not None:
        draws.owner = _running_task()


_TASK = "@"  # between a caller and the coroutine of the task that drew apart from the request


def _of_task(draws: Draws, caller: str) -> str:
    """``caller``, followed by the task's coroutine where another task than the request's drew."""
    owner = draws.owner
    if owner is None:
        return caller
    task = _running_task()
    if task is None or task is owner:
        return caller
    return f"{caller}{_TASK}{getattr(task.get_coro(), '__qualname__', 'task')}"


class DrawRecorder:
    """Record mode: each value the app draws, with its kind and caller, in the order drawn.

    With a ``seed``, random values and ``uuid4()`` come from a generator seeded with it, its
    kind and its caller, instead of the system's: two processes recording the same code with
    the same seed draw the same values (pytest-xdist workers setting up one fixture). With a
    ``clock_from`` instant (ns) as well, so does the clock: each caller's reads step on by a
    millisecond from it, so a deadline computed from it still lies ahead. Else the clock is real.
    """

    def __init__(
        self, sources: Iterable[str], seed: str | None = None, clock_from: int | None = None
    ) -> None:
        self.sources = frozenset(sources)
        self.owner: asyncio.Task[Any] | None = None  # the task serving the request (own_task)
        # (source, kind, caller, value, the recording's number of the call its task made last)
        self.draws: list[tuple[str, str, str, Any, int | None]] = []
        self._seed = seed
        self._generators: dict[tuple[str, str], random.Random] = {}
        self._clock_from = clock_from
        self._clock_reads: dict[str, int] = {}  # per stream
        # the characters ``secrets.choice`` picked, in order: codes built of them (see sources._choice)
        self.chosen: list[str] = []

    def chose(self, character: str) -> None:
        if len(self.chosen) < MAX_CHOSEN:
            self.chosen.append(character)  # atomic, as draws'

    def draw(
        self,
        source: str,
        kind: str,
        caller: str,
        real: Real,
        fits: Fits | None = None,
        seeded: Seeded | None = None,
    ) -> Any:
        value = real() if self._seed is None else self._reproducible(kind, caller, real, seeded)
        if len(self.draws) < MAX_DRAWS_PER_REQUEST:
            # list.append is atomic: threads of the request may draw
            self.draws.append((source, kind, _of_task(self, caller), value, _after(self)))
        else:
            counters.add("dropped.draws")
        return value

    def _reproducible(self, kind: str, caller: str, real: Real, seeded: Seeded | None) -> Any:
        """The value the seed (and ``clock_from``) give this draw; real where they give none.
        Streams are named by the caller's module, not its function: a seed gives the values it
        gave before draws named their function, which replaying runs make again."""
        stream = self._stream(_module(caller))
        if seeded is not None:
            return seeded(self._generator(kind, stream))
        if kind != "time" or self._clock_from is None:
            return real()
        with _clock_lock:
            reads = self._clock_reads.get(stream, 0)
            self._clock_reads[stream] = reads + 1
        return self._clock_from + reads * _CLOCK_STEP_NS

    def _stream(self, caller: str) -> str:
        """What names the generator and the clock of a draw from ``caller``."""
        return caller

    def _generator(self, kind: str, stream: str) -> random.Random:
        generator = self._generators.get((kind, stream))
        if generator is None:
            digest = hashlib.sha256(f"{self._seed}\0{kind}\0{stream}".encode()).digest()
            generator = self._generators[(kind, stream)] = random.Random(digest)
        return generator


def _module(caller: str) -> str:
    """The module of a caller (``app.models:create``: see ``callers.attribute``)."""
    return caller.partition(":")[0]


def encode_draws(
    draws: Iterable[tuple[str, str, str, Any, int | None]], calls: Sequence[int] = ()
) -> list[dict[str, Any]]:
    """Draws as the cassette stores them (what :class:`DrawReplayer` reads): ``DrawRecorder.draws``,
    encoded where the cassette is built. ``calls``: the recording's number of each of the
    cassette's calls, in the cassette's order; a draw made after one of them says which."""
    index = {number: position for position, number in enumerate(calls)}
    encoded = []
    for source, kind, caller, value, after in draws:
        caller, _, task = caller.partition(_TASK)
        module, _, function = caller.partition(":")
        draw = {"source": source, "kind": kind, "caller": module, "value": encode_value(value)}
        if function:
            draw["site"] = function
        if task:
            draw["task"] = task
        if after in index:
            draw["after"] = index[after]
        encoded.append(draw)
    return encoded


# one (kind, caller)'s values, in the order drawn, and the index of the call each was drawn after
RecordedStream = tuple[tuple[Any, ...], tuple[int | None, ...]]


class RecordedDraws(NamedTuple):
    """A cassette's draws as replay hands them out: the values per (kind, caller), in the order
    drawn, the index of the call each was drawn after (None: before any of its task), the
    last value of each of the clocks (:data:`_CLOCKS`) drawn, and the sources drawn from.
    Decoded once per cassette (:func:`decode_draws`)."""

    streams: dict[tuple[str, str], tuple[Any, ...]]
    afters: dict[tuple[str, str], tuple[int | None, ...]] = {}
    last: dict[str, int] = {}
    sources: frozenset[str] = frozenset()


NO_RECORDED_DRAWS = RecordedDraws({})


class _Stream:
    """One (kind, caller)'s recorded values in one replayed request, and those handed out: a draw
    gets the first left that was drawn after the same call, else the first left."""

    __slots__ = ("values", "earlier", "_afters", "_handed", "_first_left", "_by_after")

    def __init__(
        self, values: tuple[Any, ...], afters: tuple[int | None, ...], earlier: bool = False
    ) -> None:
        self.values = values
        self.earlier = earlier  # the values of an earlier request (see DrawReplayer's earlier)
        self._afters = afters
        self._handed = bytearray(len(values))
        self._first_left = 0
        self._by_after: dict[int | None, collections.deque[int]] | None = None

    def next_index(self, after: int | None) -> int | None:
        """The index of the value the next draw after call ``after`` gets, or None."""
        handed = self._handed
        if self._by_after is None:
            self._by_after = collections.defaultdict(collections.deque)
            for index, drawn_after in enumerate(self._afters):
                self._by_after[drawn_after].append(index)
        same = self._by_after.get(after)
        while same and handed[same[0]]:
            same.popleft()
        if same:
            return same[0]
        while self._first_left < len(handed) and handed[self._first_left]:
            self._first_left += 1
        return self._first_left if self._first_left < len(handed) else None

    def hand(self, index: int) -> Any:
        self._handed[index] = 1
        return self.values[index]


class DrawReplayer:
    """Replay mode: each draw gets the next value recorded for its kind and caller, after the
    same call of its task (see the module's docstring).

    A draw with nothing left to give (the replayed code draws more, or differently) is an
    *extra* draw, counted per source: the clock (and the performance counter) then continues
    from the last value handed out plus the real time elapsed since, UUIDs and random values
    are real.

    ``earlier(key)`` gives, for a (kind, caller) the recording does not hold at all, the values
    an earlier request of the same recording drew from it (``replayers.earlier``): work the
    recording process did once, in that request, and does again in this one.
    """

    def __init__(
        self,
        recorded: RecordedDraws,
        sources: Iterable[str],
        real_clock_ns: Callable[[], int],
        earlier: Callable[[tuple[str, str]], RecordedStream | None] | None = None,
    ) -> None:
        # and the sources the recording drew from, whichever the replaying process names: a
        # recording that drew log times (``logs``, off by default) replays them
        self.sources = frozenset(sources) | recorded.sources
        self.owner: asyncio.Task[Any] | None = None  # the task serving the request (own_task)
        self.extra: dict[str, int] = {}  # source -> draws beyond the recorded ones
        # caller -> those of them not of a clock (a clock goes on by design): who drew them
        self.extra_callers: dict[str, int] = {}
        self.from_earlier: dict[str, int] = {}  # source -> values an earlier request drew
        self._recorded = recorded
        self._earlier = earlier
        self._asked: set[tuple[str, str]] = set()  # the keys ``earlier`` was asked for
        self._streams: dict[tuple[str, str], _Stream] = {}  # made as first drawn from
        self._aliases: dict[tuple[str, str], tuple[str, str]] = {}  # see _recorded_as
        self._lock = threading.Lock()
        # per clock: (the value last handed out, the real reading then; None: not read yet). The
        # wall clock's real reading is taken now: real_clock_ns reads that one, not the counters.
        self._anchors: dict[str, tuple[int | None, int | None]] = {
            kind: (recorded.last.get(kind), real_clock_ns() if kind == "time" else None)
            for kind in _CLOCKS
        }

    def draw(
        self,
        source: str,
        kind: str,
        caller: str,
        real: Real,
        fits: Fits | None = None,
        seeded: Seeded | None = None,
    ) -> Any:
        value: Any = _NONE
        after = _after(self)
        key = (kind, _of_task(self, caller))
        if self._earlier is not None and key not in self._asked:
            self._ask_earlier(key)
        with self._lock:
            stream = self._stream(key)
            index = stream.next_index(after) if stream is not None else None
            if (
                stream is not None
                and index is not None
                and (fits is None or fits(stream.values[index]))
            ):
                value = stream.hand(index)
                if stream.earlier:
                    self.from_earlier[source] = self.from_earlier.get(source, 0) + 1
            else:
                self.extra[source] = self.extra.get(source, 0) + 1
                if kind not in _CLOCKS and (
                    caller in self.extra_callers or len(self.extra_callers) < _CALLERS_KEPT
                ):
                    self.extra_callers[caller] = self.extra_callers.get(caller, 0) + 1
            anchor = self._anchors.get(kind)
        if anchor is None and value is not _NONE:
            return value
        # outside the lock: a real source may draw again through the hooks (bcrypt before 4.1
        # made its salt of os.urandom in Python), and would wait on this thread for ever
        now = real()
        if value is not _NONE:
            self._anchors[kind] = (value, now)
            return value
        if anchor is None:
            return now
        recorded, real_then = anchor
        if recorded is None:
            return now
        if real_then is None:  # the first read: the clock goes on from here
            self._anchors[kind] = (recorded, now)
            return recorded
        return recorded + max(now - real_then, 0)

    def _ask_earlier(self, key: tuple[str, str]) -> None:
        """Take ``key``'s stream from an earlier request when this recording has none; outside
        the lock, as it may read cassettes."""
        with self._lock:
            if key in self._asked:
                return
            self._asked.add(key)
            if self._stream(key) is not None:
                return
        assert self._earlier is not None
        found = self._earlier(key)
        if found is not None:
            with self._lock:
                self._streams.setdefault(key, _Stream(*found, earlier=True))

    def _stream(self, key: tuple[str, str]) -> _Stream | None:
        """The stream a draw of ``key`` takes from (recorded under another name: see
        _recorded_as), made as it is first drawn from; None when nothing was recorded for it."""
        stream = self._streams.get(key)
        if stream is not None:
            return stream
        recorded = self._recorded.streams
        found = key
        if found not in recorded and recorded:
            found = self._recorded_as(found)
            if found not in recorded:  # recorded before draws named their function: per module
                found = self._recorded_as((found[0], _module(found[1])))
        if found not in recorded:
            return None
        stream = self._streams.get(found)
        if stream is None:
            values = recorded[found]
            afters = self._recorded.afters.get(found) or (None,) * len(values)
            stream = self._streams[found] = _Stream(values, afters)
        self._streams[key] = stream
        return stream

    def _recorded_as(self, key: tuple[str, str]) -> tuple[str, str]:
        """The recorded stream of a caller imported under another name: the app recorded as
        ``app.models:create`` and replayed from its directory (``--app-dir app``) as
        ``models:create``. Only when exactly one recorded caller of the kind is the same module
        and function; else ``key`` itself."""
        found = self._aliases.get(key)
        if found is None:
            kind, caller = key
            same = [
                recorded
                for recorded in self._recorded.streams
                if recorded[0] == kind
                and (recorded[1].endswith("." + caller) or caller.endswith("." + recorded[1]))
            ]
            found = self._aliases[key] = same[0] if len(same) == 1 else key
        return found


# The kinds whose extra draws continue from the last value: the wall clock, and the counters
# (performance counter, monotonic clock) the app times itself with.
_CLOCKS = ("time", "perf_counter", "monotonic")
_CALLERS_KEPT = 100  # of the extra draws' callers
_MAX_CLOCK_NS = 2**63 - 1  # the clock in nanoseconds, as a signed 64-bit integer holds it (to 2262)


def _usable(kind: str, value: Any) -> bool:
    """Whether a clock or ``random()`` value is one the app could have got: a clock past 2262
    overflows the dates made of it, a ``random()`` of 7.5 what is computed from it."""
    if kind in _CLOCKS:
        return type(value) is int and 0 <= value <= _MAX_CLOCK_NS
    if kind == "random":
        return type(value) is float and 0.0 <= value < 1.0
    return True


def decode_draws(draws: Any) -> RecordedDraws:
    """A cassette's stored draws (what :func:`encode_draws` wrote) as replay hands them out.
    Malformed entries are left out (a draw they would have answered is then an extra draw, and
    the report says so)."""
    streams: dict[tuple[str, str], list[Any]] = {}
    afters: dict[tuple[str, str], list[int | None]] = {}
    last: dict[str, int] = {}  # the continuing kinds' last values
    sources: set[str] = set()
    for entry in draws if isinstance(draws, list) else ():
        if not isinstance(entry, dict):
            continue
        kind, caller, site = entry.get("kind"), entry.get("caller"), entry.get("site")
        if not isinstance(kind, str) or not isinstance(caller, str):
            continue
        if isinstance(site, str) and site:  # a cassette before sites keeps a stream per module
            caller = f"{caller}:{site}"
        task = entry.get("task")
        if isinstance(task, str) and task:
            caller = f"{caller}{_TASK}{task}"
        try:
            value = decode_value(entry.get("value"))
        except (TypeError, ValueError, KeyError, AttributeError):
            continue
        if not _usable(kind, value):
            continue
        streams.setdefault((kind, caller), []).append(value)
        after = entry.get("after")
        afters.setdefault((kind, caller), []).append(
            after if isinstance(after, int) and not isinstance(after, bool) else None
        )
        if kind in _CLOCKS:
            last[kind] = value
        if isinstance(entry.get("source"), str):
            sources.add(entry["source"])
    return RecordedDraws(
        {key: tuple(values) for key, values in streams.items()},
        {key: tuple(numbers) for key, numbers in afters.items()},
        last,
        frozenset(sources),
    )


Draws = DrawRecorder | DrawReplayer
_active: contextvars.ContextVar[Draws | None] = request_scoped(
    contextvars.ContextVar("timetracer_draws", default=None)
)
# draws whose values are all real: code run bare (see sources._bare), even while the process starts
NO_DRAWS: Draws = DrawRecorder(())
_startup: Draws | None = None  # the process's draws while it starts (see use_startup_draws)
_serving_request: Callable[[], bool] = bool


def _current_while_starting() -> Draws | None:
    draws = _active.get()
    if draws is None and not _serving_request():
        return _startup
    return draws


# The draws of the request this code runs for (None: real values). Read as ``state.current``
# on every intercepted clock read, so it is the context variable's own getter except while
# the process starts, when code outside every request gets the start-up draws.
current: Callable[[], Draws | None] = _active.get


def use_startup_draws(draws: Draws | None, serving_request: Callable[[], bool]) -> None:
    """Record (or replay) the draws made outside requests from now until :func:`end_startup`:
    an app seeding its database at start (an admin user with a ``uuid4()`` id and a hashed
    password, ``created_at=now()``) sends the recorded values, and its calls match.
    ``serving_request`` tells code serving a request (its draws are the request's) apart."""
    global _startup, _serving_request, current
    _startup, _serving_request = draws, serving_request
    current = _active.get if draws is None else _current_while_starting


def startup_draws() -> Draws | None:
    """The draws of the process while it starts (see :func:`use_startup_draws`), None once
    started to record (a replay's go on: see :func:`end_startup`)."""
    return _startup


def end_startup() -> None:
    """The app has started: later draws outside requests (background work) are real when
    recording. When replaying they go on from the start-up's replayed values (the clock from
    the last one handed out, plus the real time elapsed since): a thread that reads the clock
    from before the app started to after (a start-up watchdog's deadline) saw the recorded
    time and then the real one, a jump of the time between recording and replay."""
    global _startup, current
    if not isinstance(_startup, DrawReplayer):
        _startup, current = None, _active.get


def activate(draws: Draws | None) -> contextvars.Token:
    return _active.set(draws)


def deactivate(token: contextvars.Token) -> None:
    _active.reset(token)
