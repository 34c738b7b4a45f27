"""Answers from an earlier request of the same recording, for what the recording process remembered.

A library that makes a call once per process and keeps the answer (rq reads the Redis
server's version at its first enqueue; a client caches a discovery document, a token, a
settings row) makes it in the first request it serves, and only that request's cassette
holds it. Replayed alone, or after other requests than when recorded, a later request
makes the call again and its own cassette cannot answer. The recording process had that
answer from an earlier request, so replay gives it: the call with the same signature in the
most recent cassette of the same service recorded before this one (beside it in the
directory replayed, or in the directory its recording wrote into when it is replayed alone).
The report names each such call and the cassette it came from. A call that no earlier
request made still fails where it is made. The same holds for values the app draws (the
clock, UUIDs): a stream of draws the cassette does not hold (a rate limiter's task started by
the first request, in a function of its own) gets the values the most recent earlier
request drew from it, and the report counts them. The pytest plugin does the same for a test's
cassette, from the cassettes of the tests and fixtures recorded before it, else from those
replayed before it in this process, else from the first recorded after it: a test run in
another order than recorded (shuffled by pytest-randomly) meets the state the tests that ran
before it left (a model an earlier test added to the metadata that every test's fixture
creates), which the tests recorded after those met too.

Searched only when a cassette cannot answer a call: then the cassettes of its service (the
most recent :data:`SEARCHED`) are read once to index their calls by signature.
"""

from __future__ import annotations

import bisect
import os
import threading
from collections.abc import Callable, Hashable, Iterable, Iterator, Sequence
from typing import NamedTuple

from timetracer_otel._diagnostics import logger
from timetracer_otel._terminal import printable
from timetracer_otel.cassette.document import BLOCK_METHOD, recorded_instant
from timetracer_otel.cassette.location import CassetteFile, is_url
from timetracer_otel.cassette.reader import CassetteError
from timetracer_otel.cli.index import CassetteIndex
from timetracer_otel.config import TraceConfig
from timetracer_otel.determinism import RecordedDraws, RecordedStream
from timetracer_otel.protocols import CallView

from .matching import RecordedCall
from .session import RecordedViews

__all__ = ["EarlierRequests", "Recorded", "SEARCHED", "recorded_in"]

SEARCHED = 5000  # the most recent cassettes of a service whose calls answer later requests
_CANDIDATES = 16  # the calls of other cassettes tried for one call, the most fitting first


class Recorded(NamedTuple):
    """A request cassette, as the search orders and groups them."""

    instant: str  # cassette.document.recorded_instant(recorded_at)
    service: str | None
    path: str


class _Found(NamedTuple):
    instant: str
    path: str
    position: int  # the call's index in its cassette


class EarlierRequests:
    """The calls of a directory's cassettes by signature, for answering a later request's.

    ``cassettes()`` lists the request cassettes to search (asked when first needed), and
    ``views(path)`` gives a cassette's calls as replay matches them. ``credentials(path)``
    gives the secrets its request came with (a server's requests have some), ``draws(path)``
    the values its request drew. ``replayed()``,
    given for the pytest plugin's tests, lists the cassettes this process replayed so far,
    in order.
    """

    def __init__(
        self,
        cassettes: Callable[[], Iterable[Recorded]],
        views: Callable[[str], RecordedViews],
        replayed: Callable[[], Sequence[str]] | None = None,
        credentials: Callable[[str], frozenset[str]] | None = None,
        draws: Callable[[str], RecordedDraws] | None = None,
    ) -> None:
        self._cassettes = cassettes
        self._views = views
        self._replayed = replayed
        self._credentials = credentials
        self._draws = draws
        self._lock = threading.Lock()
        self._by_path: dict[str, Recorded] | None = None
        # per service: its cassettes by the signature of each call they hold (and, for a call
        # to a loopback service, by that signature on any port) and by each draw stream
        self._by_service: dict[str | None, dict[Hashable, list[_Found]]] = {}

    def answers(
        self, path: str, view: CallView, any_port: bool = False
    ) -> Iterator[tuple[str, RecordedCall, frozenset[str]]]:
        """(the answering cassette's path, its call, the secrets its request came with) for
        ``view`` made while replaying ``path``, the most fitting first (at most
        :data:`_CANDIDATES`): the same call in the cassettes of its service recorded before it,
        the most recent first; for a test, then in those replayed before it in this process,
        the last first, then in those recorded after it, the first first. With ``any_port``,
        ``view`` being a call to a loopback service, the same call to that host on any port."""
        if any_port and view.loopback is None:
            return
        key = _any_port(view.loopback[1]) if any_port and view.loopback else view.key
        for found in dict.fromkeys(self._candidates(path, key)[:_CANDIDATES]):
            for index, call, recorded in self._views(found.path):
                if index == found.position:
                    credentials = (
                        self._credentials(found.path) if self._credentials else frozenset()
                    )
                    yield found.path, RecordedCall(index, call, recorded, used=True), credentials

    def stream(self, path: str, key: tuple[str, str]) -> RecordedStream | None:
        """The values (and the calls they were drawn after) of draw stream ``key`` (kind,
        caller) in the most fitting cassette that holds it, chosen as :meth:`answers` chooses:
        a value the recording process drew once, in an earlier request (a rate limiter's task
        started on first use), which a request replayed without that one draws again. None
        when no earlier request drew it."""
        if self._draws is None:
            return None
        candidates = self._candidates(path, _draw_stream(key))
        if not candidates:
            return None
        recorded = self._draws(candidates[0].path)
        values = recorded.streams[key]
        return values, recorded.afters.get(key) or (None,) * len(values)

    def _candidates(self, path: str, key: Hashable) -> list[_Found]:
        """The cassettes of ``path``'s service holding ``key`` (see ``_by_service``), the most
        fitting first: those recorded before it, the most recent first, then for a test those
        of :meth:`_in_other_tests`."""
        with self._lock:
            if self._by_path is None:
                self._by_path = {entry.path: entry for entry in self._listed()}
            me = self._by_path.get(path)
            if me is None:
                return []
            found = self._indexed(me.service).get(key, [])
            # recorded strictly before it: its own calls (same instant) are not among them
            before = bisect.bisect_left(found, me.instant, key=lambda entry: entry.instant)
            return found[:before][::-1] + self._in_other_tests(found, before, path)

    def _in_other_tests(self, calls: list[_Found], after: int, path: str) -> list[_Found]:
        """Of ``calls`` (``after`` the first recorded after ``path``'s), those of the cassettes
        replayed before ``path``, the last first, then those recorded after it; none for a
        request's cassette, which only an earlier request answers."""
        if self._replayed is None:
            return []
        turns = {replayed: turn for turn, replayed in enumerate(self._replayed())}
        ran = [found for found in calls if found.path != path and found.path in turns]
        ran.sort(key=lambda found: (turns[found.path], found.position), reverse=True)
        return ran + [found for found in calls[after:] if found.path != path]

    def _listed(self) -> Iterable[Recorded]:
        """The cassettes to search; none when they cannot be listed (the directory a cassette
        was recorded into is gone): the call then fails as one no cassette holds."""
        try:
            return self._cassettes()
        except CassetteError as error:
            logger.warning("%s; no earlier request answers", printable(str(error)))
            return ()

    def _indexed(self, service: str | None) -> dict[Hashable, list[_Found]]:
        """``service``'s most recent :data:`SEARCHED` cassettes by what they hold (see
        ``_by_service``), each list in recording order: each cassette read once, for its calls
        and its draws alike. Called with the lock held."""
        index = self._by_service.get(service)
        if index is not None:
            return index
        assert self._by_path is not None
        recorded = sorted(e for e in self._by_path.values() if e.service == service)[-SEARCHED:]
        index = self._by_service[service] = {}
        for entry in recorded:
            try:
                views = self._views(entry.path)
                streams = self._draws(entry.path).streams if self._draws is not None else {}
            except CassetteError as error:
                logger.warning("%s; not searched for earlier answers", printable(str(error)))
                continue
            for position, _, view in views:
                found = _Found(entry.instant, entry.path, position)
                index.setdefault(view.key, []).append(found)
                if view.loopback is not None:
                    index.setdefault(_any_port(view.loopback[1]), []).append(found)
            for key in streams:
                index.setdefault(_draw_stream(key), []).append(_Found(entry.instant, entry.path, 0))
        return index


def _any_port(portless: Hashable) -> Hashable:
    """The index's key of the calls to a loopback service with ``portless`` as their signature
    without the port (see :class:`~timetracer_otel.protocols.view.CallView`)."""
    return ("any port", portless)


def _draw_stream(key: tuple[str, str]) -> Hashable:
    """The index's key of the cassettes holding draws of stream ``key`` (kind, caller)."""
    return ("draws", key)


def recorded_in(
    directory: CassetteFile, config: TraceConfig, *, blocks: bool = False, own: str | None = None
) -> list[Recorded]:
    """The request cassettes in ``directory`` or, with ``blocks``, those of the pytest plugin's
    tests and fixtures (its index, read again only when an earlier answer is first needed);
    ``own``, a cassette given alone, among them under the name it was given."""
    index = CassetteIndex(directory, config.read_limits).refresh()
    same = _same_file(own) if own is not None else None
    return [
        Recorded(
            recorded_instant(row["recorded_at"]),
            row["service"],
            own if own is not None and _same_file(file) == same else str(file),
        )
        for key, file in index.files().items()
        if ((row := index.entries[key])["method"] == BLOCK_METHOD) == blocks
    ]


def _same_file(file: CassetteFile) -> str:
    return str(file) if is_url(file) else os.path.realpath(file)
