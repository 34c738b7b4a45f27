"""One cassette over a stretch of a pytest run (a test, or one instance of a fixture scope).

A block records or replays. It can be made active several times before it is closed, in
the thread that runs the test: a module fixture's set-up and its teardown, tests apart,
go to one cassette. Whatever runs in a context copied from an active one (the app behind
``TestClient`` or ``httpx.ASGITransport``, threads started with ``asyncio.to_thread``, work
handed to a thread pool: see :mod:`timetracer_otel._pool_context`)
records or replays into it too, and so does an app under test served by uvicorn in a
thread of its own while the block is the innermost active one (:mod:`.live`).
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from opentelemetry import context as otel_context
from opentelemetry import trace

from timetracer_otel import _network_guard, _recording
from timetracer_otel._pool_context import install as carry_context_into_pools
from timetracer_otel._standalone import BlockRecording, block_span
from timetracer_otel._tracing import tracer_provider
from timetracer_otel.cassette.reader import (
    LEADS_OUTSIDE,
    CassetteError,
    leads_outside,
    load_cassette,
)
from timetracer_otel.config import TraceConfig

from .naming import shown
from .workers import (
    WORKER_FIELD,
    as_worker,
    forget_names,
    learn_name,
    learn_names,
    live_name,
    name_in_call,
    names_in_call,
    recorded_by,
)

if TYPE_CHECKING:
    from timetracer_otel.determinism import RecordedDraws
    from timetracer_otel.protocols.view import CallView
    from timetracer_otel.replayers.earlier import EarlierRequests
    from timetracer_otel.replayers.opening import Opened
    from timetracer_otel.replayers.session import RecordedViews

__all__ = [
    "BlockOutcome",
    "CassetteBlock",
    "RECORD",
    "REPLAY",
    "SealedSecretsError",
    "earlier_tests",
    "running_block",
]

RECORD, REPLAY = "record", "replay"


@dataclass
class BlockOutcome:
    """What a closed block did, for the failure message and the session report."""

    path: str
    action: str  # RECORD or REPLAY
    kept: bool = (
        True  # a cassette file was written or read (an empty fixture's is not written, so not read)
    )
    answered: int = 0
    unused: list[str] = field(default_factory=list)  # labels of recorded calls never made
    unmatched: list[str] = field(default_factory=list)  # first lines of the mismatch errors
    refused: list[str] = field(default_factory=list)  # connections the network guard refused
    locked: bool = False  # sealed secrets and no key here: the app got [REDACTED] for them
    # calls its cassette does not hold, answered from an earlier test's: (library, label, that cassette's path)
    from_earlier: list[tuple[str, str, str]] = field(default_factory=list)
    recorded_by: str | None = None  # replayed: the process that recorded it (see .workers)
    # recorded by a test that failed: not kept, so the next run records it again
    failed: bool = False


class SealedSecretsError(CassetteError):
    """A cassette whose sealed secrets this process cannot open (another key's, or damaged): told
    apart from an unusable cassette so that the session report can name the key it needs."""


_REFUSAL_HINT = (
    "Record it with --timetracer-mode=once, or allow the host with timetracer_allowed_hosts."
)


# why a test's or fixture's cassette holds no call, where it has no file
_ABSENT = (
    "no file {} holds it: the recording made no call there, or did not get there (a fixture"
    " of a wider scope set up more times than when recorded, its tests run in another order"
    " or selection): record it again with pytest --timetracer-mode=once"
)


def _has_file(path: Path) -> bool:
    """Whether a cassette's file is there (a link to nothing counts: it is refused as it is read)."""
    return path.exists() or path.is_symlink()


def _loaded(path: Path, config: TraceConfig, root: Path) -> tuple[dict[str, Any], str | None]:
    """The cassette at ``path`` (in the directory ``root``) and the process that recorded it.
    No file (a fixture that made no call when it was recorded): no call, and every call made
    now is unanswered. A link out of ``root`` is never read."""
    if not _has_file(path):
        return {"calls": [], "draws": []}, None
    if leads_outside(path, root):
        raise CassetteError(str(path), LEADS_OUTSIDE)
    document = load_cassette(path, limits=config.read_limits)
    return document, recorded_by(document)


def _opened(document: dict[str, Any], path: Path, config: TraceConfig, name: str | None) -> Opened:
    """``document`` opened with this process's key, as the worker the suite's data names
    ``name`` would have recorded it (see :mod:`.workers`)."""
    from timetracer_otel.replayers.opening import open_for_replay

    try:
        return open_for_replay(as_worker(document, name), str(path), config)
    except CassetteError as exc:  # reading it raised above: here it is its secrets
        raise SealedSecretsError(exc.path, exc.problem) from None


def earlier_tests(
    directory: Path, worker: str | None, replayed: Callable[[], Sequence[str]]
) -> EarlierRequests:
    """Answers, for a call a test's cassette does not hold, from the cassettes of the tests and
    fixtures recorded before it in ``directory``: what the recording process remembered from an
    earlier test (a value fetched once and cached) when the test now runs alone, first on its
    pytest-xdist worker, or after other tests; else from those ``replayed`` before it in this
    process, when it runs after other tests; and the values those drew where the test's
    cassette has none (see :mod:`timetracer_otel.replayers.earlier`)."""
    from timetracer_otel.determinism import decode_draws
    from timetracer_otel.replayers.earlier import EarlierRequests, recorded_in

    config = TraceConfig(mode="replay")

    @functools.lru_cache(maxsize=8)  # the cassette an answer comes from is read again to give it
    def opened(path: str) -> Opened:
        document = _loaded(Path(path), config, directory)[0]
        return _opened(document, Path(path), config, live_name(worker))

    def views(path: str) -> RecordedViews:
        return opened(path).views(path)

    def draws(path: str) -> RecordedDraws:
        return decode_draws(opened(path).answers.get("draws"))

    return EarlierRequests(
        lambda: recorded_in(directory, config, blocks=True), views, replayed, draws=draws
    )


def _renamed(
    document: dict[str, Any], path: Path, config: TraceConfig, worker: str | None, view: CallView
) -> tuple[dict[str, Any], RecordedViews] | None:
    """``document`` read as the worker a call it cannot answer names, when this process's name
    was a guess (see :func:`.workers.name_in_call`), or with the worker's name added to the
    names the call gives with it (a worker replaying a recording that named no worker: see
    :func:`.workers.names_in_call`), when it then answers the call; every cassette opened after
    is read so too."""
    name = name_in_call(view.key, worker)
    names = names_in_call(view.key, worker, document) if name is None else {}
    if name is None and not names:
        return None
    learn_names(names)
    opened = _opened(document, path, config, live_name(worker) if name is None else name)
    views = opened.views(str(path))
    if not any(recorded.key == view.key for _, _, recorded in views):
        forget_names(names)
        return None
    if name is not None:
        learn_name(name)
    return opened.answers, views


class _Replay:
    """A cassette answering calls and draws, with the network closed while it is active."""

    def __init__(
        self,
        path: Path,
        label: str,
        live: tuple[str, ...],
        allowed_hosts: frozenset[str],
        earlier: EarlierRequests | None,
        worker: str | None,
        root: Path,
    ) -> None:
        from timetracer_otel.determinism import (
            DrawReplayer,
            decode_draws,
            real_time_ns,
        )
        from timetracer_otel.determinism import (
            install as install_draw_sources,
        )
        from timetracer_otel.replayers import install_replayers
        from timetracer_otel.replayers.session import ReplaySession

        install_replayers()
        config = TraceConfig(mode="replay")
        document, self.recorded_by = _loaded(path, config, root)
        opened = _opened(document, path, config, live_name(worker))
        self.locked = opened.locked
        self.session = ReplaySession(
            opened.answers,
            str(path),
            config,
            live_libraries=live,
            views=opened.views(str(path)),
            earlier=earlier.answers if earlier is not None else None,
            sealed=opened.secrets,
            renamed=functools.partial(_renamed, document, path, config, worker),
            absent=None if _has_file(path) else _ABSENT.format(shown(path)),
        )
        install_draw_sources(config.draws)
        carry_context_into_pools()
        self.draws = DrawReplayer(
            decode_draws(opened.answers.get("draws")),
            config.draws,
            real_time_ns,
            functools.partial(earlier.stream, str(path)) if earlier is not None else None,
        )
        # a live library needs the network
        self.closure = (
            None if live else _network_guard.Closure(str(path), _REFUSAL_HINT, allowed_hosts)
        )
        # the span the recording ran under, made anew
        self._span = block_span(tracer_provider(config.service_name), label)
        self._tokens: list[tuple[object, ...]] = []  # enter()'s, then the network's closure before

    def activate(self) -> None:
        previous = (
            _network_guard.close_everywhere(self.closure) if self.closure is not None else None
        )
        self._tokens.append((*self.enter(), previous))

    def deactivate(self) -> None:
        *tokens, previous = self._tokens.pop()
        self.exit(tuple(tokens))
        if self.closure is not None:
            _network_guard.close_everywhere(previous)  # type: ignore[arg-type]

    def enter(self) -> tuple[object, ...]:
        """Answer the calls and draws of this context only (another thread's); the network stays
        as it is. A test recording around it (its fixture replays) keeps none of them."""
        from timetracer_otel.determinism import activate as activate_draws
        from timetracer_otel.replayers.session import activate

        span_token = otel_context.attach(trace.set_span_in_context(self._span))
        unrecorded = _recording.activate_none()
        return span_token, unrecorded, activate(self.session), activate_draws(self.draws)

    def exit(self, tokens: tuple[object, ...]) -> None:
        from timetracer_otel.determinism import deactivate as deactivate_draws
        from timetracer_otel.replayers.session import deactivate

        span_token, unrecorded, token, draws_token = tokens
        deactivate_draws(draws_token)  # type: ignore[arg-type]
        deactivate(token)  # type: ignore[arg-type]
        _recording.deactivate(unrecorded)  # type: ignore[arg-type]
        otel_context.detach(span_token)  # type: ignore[arg-type]

    def finish(self) -> None:
        self._span.end()


class CassetteBlock:
    """Records to, or replays from, the cassette at ``path``; see the module docstring."""

    def __init__(
        self,
        path: Path,
        label: str,
        action: str,
        *,
        live: tuple[str, ...] = (),
        keep_empty: bool = True,
        seed: str | None = None,
        clock_from: int | None = None,
        allowed_hosts: frozenset[str] = frozenset(),
        earlier: EarlierRequests | None = None,
        worker: str | None = None,
        root: Path | None = None,
    ) -> None:
        """``root``: the cassette directory (``path``'s own directory when not given)."""
        self.path = path
        self.action = action
        self._recording = (
            BlockRecording(
                path,
                label,
                keep_empty,
                seed,
                {WORKER_FIELD: worker} if worker else None,
                clock_from,
            )
            if action == RECORD
            else None
        )
        self._replay = (
            _Replay(path, label, live, allowed_hosts, earlier, worker, root or path.parent)
            if action == REPLAY
            else None
        )

    @property
    def state(self) -> object:
        """The replay session (replaying) or the recording (recording): what ``with timetracer_replay(...) as x`` gives."""
        return self._replay.session if self._replay is not None else self._recording.recording  # type: ignore[union-attr]

    def activate(self) -> None:
        (self._recording or self._replay).activate()  # type: ignore[union-attr]
        _running.append(self)

    def deactivate(self) -> None:
        _running.remove(self)
        (self._recording or self._replay).deactivate()  # type: ignore[union-attr]

    @contextlib.contextmanager
    def serving(self) -> Iterator[None]:
        """Make this block's cassette record or answer the calls of this context (an app
        under test serving a request in its own thread) until the block ends."""
        part = self._recording or self._replay
        tokens = part.enter()  # type: ignore[union-attr]
        try:
            yield
        finally:
            part.exit(tokens)  # type: ignore[union-attr]

    def close(self, error: BaseException | None = None, failed: bool = False) -> BlockOutcome:
        """Write the recorded cassette, unless the test that recorded it ``failed``: a cassette
        of a failure would answer the next run's calls with what went wrong (a set-up that
        errored records no calls at all); or account for the replayed one."""
        outcome = BlockOutcome(str(self.path), self.action)
        if self._recording is not None:
            outcome.failed = failed
            outcome.kept = self._recording.finish(error, discard=failed)
            return outcome
        assert self._replay is not None
        self._replay.finish()
        outcome.kept = self.path.exists()
        outcome.locked = self._replay.locked
        outcome.recorded_by = self._replay.recorded_by
        session = self._replay.session
        outcome.answered = len(session.answered)
        outcome.unused = [call.view.label for call in session.unused()]
        outcome.unmatched = [str(error).splitlines()[0] for error in session.unmatched]
        outcome.from_earlier = list(session.from_earlier)
        if self._replay.closure is not None:
            outcome.refused = list(self._replay.closure.refused)
        return outcome


# The active blocks, innermost last (activated in pytest's thread).
_running: list[CassetteBlock] = []


def running_block() -> CassetteBlock | None:
    """The innermost active block: the cassette of whatever the test run does now."""
    return _running[-1] if _running else None
