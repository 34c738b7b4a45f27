"""The process session: answers the calls a replaying process makes outside every request.

Startup (lifespan), code run at import, tasks and threads without a request's context:
their calls were recorded into the process cassette (with the clock, UUID and random values
drawn while the app started, handed back until it has started), written beside the request cassettes
(``<dir>/<YYYY-MM-DD>/process__<service>__<id>.json``). When ``TIMETRACER_CASSETTE`` names
a directory holding several (several recording runs, workers), the one whose process
recorded the most of its requests answers. Its calls are answered in recorded order, as a request's are.

A cassette given alone is replayed with the process cassette of the recording it came from,
found in the directory that recording wrote into. A call the process cassette does not
hold, or every call when there is none (a recording older than process cassettes, a
cassette copied away from its directory), gets the usual answer if it
carries no data: a Redis ``PING``, ``SELECT`` or ``AUTH``, a SQL ``connect`` or
``SELECT 1``. Any other raises :class:`ReplayMismatchError`, naming the call.
"""

from __future__ import annotations

import collections
import threading
from typing import Any

from timetracer_otel import _network_guard
from timetracer_otel import _time_zone as time_zone
from timetracer_otel._diagnostics import console
from timetracer_otel._recording import in_request
from timetracer_otel._terminal import printable
from timetracer_otel.cassette.calls import CassetteCall
from timetracer_otel.cassette.document import BLOCK_METHOD, Cassette, recorded_instant
from timetracer_otel.cassette.location import CassetteFile
from timetracer_otel.cassette.reader import (
    CassetteError,
    is_cassette_file,
    load_cassette,
    process_cassette_files,
    recording_directory,
)
from timetracer_otel.cli.index import CassetteIndex
from timetracer_otel.config import ReadLimits, TraceConfig, process_mode
from timetracer_otel.determinism import (
    DrawReplayer,
    decode_draws,
    real_time_ns,
    use_startup_draws,
)
from timetracer_otel.determinism import install as install_draw_sources
from timetracer_otel.protocols import CallView, usual_answer

from .matching import RecordedCall, describe_mismatch
from .opening import open_for_replay
from .selection import warn_unusable
from .session import ReplaySession

__all__ = [
    "ProcessSession",
    "take_up_time_zone",
    "find_process_cassette",
    "of_recording",
    "process_cassettes",
    "process_session",
    "start",
]

NO_CASSETTE = "(no process cassette)"

_lock = threading.Lock()
_session: ProcessSession | None = None
# the app's modules are being imported: timetracer's integration was, auto_setup has not run
_importing = False
_BEFORE_SETUP = (
    "It was made while the app's modules were imported, before auto_setup. Recording keeps such\n"
    "calls in the process cassette from when timetracer's integration is imported: import it\n"
    "before the module making this call (or start the app with opentelemetry-instrument, which\n"
    "records from before the first import) and record again."
)


Found = tuple[CassetteFile, dict[str, Any]]  # a process cassette's file and document


def process_cassettes(location: str, limits: ReadLimits | None = None) -> list[Found]:
    """The usable process cassettes below ``location``, loaded within ``limits``; unusable
    ones are named in a warning and left out."""
    found = []
    for file in process_cassette_files(location):
        try:
            found.append((file, load_cassette(file, scope="process", limits=limits)))
        except CassetteError as error:
            warn_unusable([error])
    return found


def find_process_cassette(location: str | None, limits: ReadLimits | None = None) -> Found | None:
    """The process cassette answering a replay of ``location``, loaded within ``limits``; None when there is none.

    Below a directory or URL prefix, the one whose process recorded the most of the requests
    there (the newest of those). For a cassette given alone, the one of the recording it came
    from (:func:`of_recording`), in the directory that recording wrote into.
    """
    return _find(location, limits)[0]


def _find(location: str | None, limits: ReadLimits | None) -> tuple[Found | None, str]:
    """:func:`find_process_cassette`, and what to say of the others below the directory
    ``location`` ("" when there are none, and for a cassette given alone: its own recording's
    is chosen)."""
    if not location:
        return None, ""
    found = process_cassettes(location, limits)
    if found or not is_cassette_file(location):
        return _busiest(location, found, limits)
    found = process_cassettes(str(recording_directory(location)), limits)
    if not found:
        return None, ""  # the request cassette is not read for nothing: it may be large
    try:
        request = Cassette(load_cassette(location, limits=limits))
    except CassetteError:
        return None, ""  # the request cassette's own error stops the replay where it is loaded
    return of_recording(found, request.service, request.recorded_at, request.process), ""


def _busiest(
    location: str, found: list[Found], limits: ReadLimits | None
) -> tuple[Found | None, str]:
    """Of the process cassettes below ``location``, the one whose process recorded the most
    requests there, the newest of those: a run that only started (``uvicorn --workers 2``, one
    worker idle) wrote the newest. And what to say of the others."""
    if len(found) < 2:
        return _newest(found), ""
    recorded = recorded_requests(location, found, limits)
    most = max((count for count, _ in recorded.values()), default=0)
    chosen = _newest([entry for entry in found if recorded.get(str(entry[0]), (0,))[0] == most])
    which = (
        f"the one whose process recorded the most requests ({most} of {sum(c for c, _ in recorded.values())})"
        if most
        else "the newest"
    )
    return chosen, f"{which}, of {len(found)} process cassettes here"


def recorded_requests(
    location: str, found: list[Found], limits: ReadLimits | None
) -> dict[str, tuple[int, str]]:
    """By the path of its process cassette (one of ``found``), each process that recorded
    requests below ``location``: how many, and when it recorded the first (index rows, see
    :func:`of_recording`)."""
    recorded: dict[str, tuple[int, str]] = {}
    for row in CassetteIndex(location, limits).refresh().entries.values():
        if row["method"] == BLOCK_METHOD:
            continue  # the pytest plugin's: no request was served
        path = recorder_of(found, row)
        if path:
            instant = recorded_instant(row["recorded_at"])
            count, first = recorded.get(path, (0, instant))
            recorded[path] = (count + 1, min(first, instant))
    return recorded


def recorder_of(found: list[Found], row: dict[str, Any]) -> str:
    """The path of the process cassette (one of ``found``) of the process that recorded an index
    row's request ("" when none is)."""
    chosen = of_recording(found, row["service"], row["recorded_at"], row.get("process"))
    return str(chosen[0]) if chosen is not None else ""


def of_recording(
    found: list[Found], service: str | None, recorded_at: Any, process: str | None = None
) -> Found | None:
    """The process cassette of the recording a request of ``service`` recorded at ``recorded_at``
    was made in: the one whose id the request names (``process``: concurrent workers started
    apart), else the last of its service started before it; where none is, the last of its
    service, or of all (a clock set back, a service renamed)."""
    named = next((e for e in found if process and Cassette(e[1]).id == process), None)
    if named is not None:
        return named
    same_service = [e for e in found if Cassette(e[1]).service == service] or found
    instant = recorded_instant(recorded_at)
    started_before = [
        e for e in same_service if recorded_instant(Cassette(e[1]).recorded_at) <= instant
    ]
    return _newest(started_before or same_service)


def _newest(found: list[Found]) -> Found | None:
    return max(
        found,
        key=lambda entry: (recorded_instant(Cassette(entry[1]).recorded_at), str(entry[0])),
        default=None,
    )


class _Recent(collections.deque):
    """The most recent items of an account, and how many were added in all."""

    def __init__(self) -> None:
        super().__init__(maxlen=_KEPT)
        self.added = 0

    def append(self, item: Any) -> None:
        self.added += 1
        super().append(item)


_KEPT = 1000  # of each account of calls outside requests


class ProcessSession(ReplaySession):
    """The process cassette's calls, and the usual answers for calls that carry no data.

    It answers for as long as the process replays (a replay server, for days, with a poller
    started at start-up): its accounts of the calls keep the most recent ones only."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.answered, self.unmatched, self.made, self.from_earlier = (
            _Recent(),
            _Recent(),
            _Recent(),
            _Recent(),
        )

    @property
    def unmatched_in_all(self) -> int:
        """How many calls it could not answer, those no longer kept included."""
        assert isinstance(self.unmatched, _Recent)
        return self.unmatched.added

    @property
    def quiet_reads_wait(self) -> bool:
        """A listener started with the app was still waiting when the recording process ended,
        unless the cassette stopped keeping calls (its later messages are not in it)."""
        return not self.document.get("dropped_calls")

    def _unrecorded_answer(self, library: str, view: CallView) -> RecordedCall | None:
        document = usual_answer(view)
        return (
            None if document is None else RecordedCall(-1, CassetteCall(document), view, used=True)
        )

    def _mismatch(self, library: str, view: CallView) -> str:
        if _importing:
            return f"{describe_mismatch(view, self.index.calls)}\n{_BEFORE_SETUP}"
        live = f"let {library} go live with TIMETRACER_LIVE_PLUGINS={library}."
        if self.path == NO_CASSETTE:
            return (
                "This call was made outside every request and no process cassette answered it: replay with\n"
                "TIMETRACER_CASSETTE naming the directory the app recorded into (TIMETRACER_MODE=record keeps these\n"
                f"calls in a process cassette there), or {live}"
            )
        return (
            f"{describe_mismatch(view, self.index.calls)}\n"
            "This call was made outside every request and the process cassette does not answer it (background\n"
            f"work that went on longer, or took another turn, than while recording): {live}"
        )


def _empty(config: TraceConfig) -> ProcessSession:
    return ProcessSession({"calls": []}, NO_CASSETTE, config)


def start(config: TraceConfig, importing: bool = False, chosen: Found | None = None) -> None:
    """Answer calls outside requests from the process cassette beside ``config.cassette_path``
    (or the ``chosen`` one: ``timetracer replay`` of one of several recordings in a directory).

    Called where the request cassettes are loaded, and as the app's modules are imported
    (``importing``). The first process cassette found stays in use.
    """
    global _session, _importing
    _importing = importing
    if process_mode() == "replay" and not config.live_plugins:
        _network_guard.watch_outside(frozenset(config.allowed_hosts))
    if _session is not None and _session.path != NO_CASSETTE:
        return
    found, others = (chosen, "") if chosen else _find(config.cassette_path, config.read_limits)
    with _lock:
        if found is not None and (_session is None or _session.path == NO_CASSETTE):
            opened = open_for_replay(found[1], str(found[0]), config)
            _session = ProcessSession(
                opened.answers, str(found[0]), config, views=opened.views(str(found[0]))
            )
            cassette = Cassette(opened.answers)
            if process_mode() == "replay":
                _announce(cassette, str(found[0]), others)
                take_up_time_zone(cassette.document.get("time_zone"))
            # the app starts with the values it drew when recorded: its seeded rows match
            draws = decode_draws(cassette.draws)
            if config.draws and draws.streams:
                install_draw_sources(config.draws)  # code run at import after auto_setup draws too
                use_startup_draws(DrawReplayer(draws, config.draws, real_time_ns), in_request)
        elif _session is None:
            _session = _empty(config)


def take_up_time_zone(zone: Any) -> None:
    """In a process started to replay, run in the recording's time ``zone`` (a cassette's), so
    its naive local times come out as recorded (a laptop's recording replayed in CI); say so
    when this machine's was another."""
    if process_mode() != "replay":
        return
    replaced = time_zone.replay_in(zone)
    if replaced is not None:
        console(
            f"timetracer: replaying in the recording's time zone, TZ={zone} "
            f"(this machine's: {replaced or 'unnamed'})"
        )


def _announce(cassette: Cassette, path: str, others: str) -> None:
    """Say which process cassette answers the calls outside requests, as recording says which it
    wrote; and where others lie beside it (``others``: which this one is of them: a directory
    several processes recorded into), that their requests replay after this one's start."""
    note = (
        f"\n  note: {others}: the requests other processes recorded replay after this one's start (a key it "
        "generated, rows it seeded); timetracer replay starts the app once for each"
        if others
        else ""
    )
    console(
        f"timetracer [OK] replaying calls outside requests  id={cassette.id}  calls={len(cassette.calls)}\n"
        f"  cassette: {printable(path)}{note}"
    )


def process_session() -> ProcessSession:
    """The session answering calls outside every request (with usual answers only until :func:`start` found a cassette)."""
    global _session
    with _lock:
        if _session is None:
            _session = _empty(TraceConfig(mode="replay"))
        return _session
