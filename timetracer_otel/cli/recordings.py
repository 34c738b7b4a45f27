"""A directory several processes recorded into, replayed one recording process at a time.

Each process started to record wrote a process cassette of its own: what the app called and
drew as it started (a signing key generated at import, an admin row seeded with ``uuid4()``).
A request replays as recorded only after its own process's start, and a process starts
once: so ``timetracer replay DIR`` replays the requests of each recording process in a
process of their own (``timetracer replay DIR --recording PROCESS_CASSETTE``), where the app
is imported and started again from that process cassette. A request's recording process is
the one :func:`~timetracer_otel.replayers.process.of_recording` finds for it, as for a
cassette replayed alone.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from timetracer_otel.cassette.reader import CassetteError
from timetracer_otel.config import ReadLimits
from timetracer_otel.replayers import ReplayReport
from timetracer_otel.replayers.process import (
    Found,
    process_cassettes,
    recorded_requests,
    recorder_of,
)

__all__ = ["Recording", "recordings_in", "replay_apart", "replay_each", "requests_of"]


@dataclass(frozen=True)
class Recording:
    """One recording process: its process cassette, and how many requests it recorded."""

    path: str
    requests: int


def recordings_in(location: str, limits: ReadLimits) -> list[Recording]:
    """The processes whose requests are recorded below the local directory ``location``, in the
    order they recorded; empty where there is one process cassette, or none. One where one
    process recorded every request, and another only started."""
    if not Path(location).is_dir():
        return []
    found = process_cassettes(location, limits)
    if len(found) < 2:
        return []
    recorded = recorded_requests(location, found, limits)
    return [
        Recording(path, recorded[path][0])
        for path in sorted(recorded, key=lambda path: recorded[path][1])
    ]


def requests_of(
    location: str, recording: str, limits: ReadLimits
) -> tuple[Found, Callable[[dict[str, Any]], bool]]:
    """The process cassette at ``recording``, below ``location``, and which index rows are of
    the requests its process recorded."""
    found = process_cassettes(location, limits)
    chosen = next((entry for entry in found if str(entry[0]) == recording), None)
    if chosen is None:
        raise CassetteError(recording, f"is not a usable process cassette below {location}")
    return chosen, lambda row: recorder_of(found, row) == recording


def replay_each(
    location: str, recordings: list[Recording], options: list[str]
) -> tuple[list[ReplayReport], int]:
    """The reports of each recording's requests, replayed with ``options`` in a process of its
    own, in turn; and the highest exit status of those processes."""
    return replay_apart([[location, *options, "--recording", r.path] for r in recordings])


def replay_apart(runs: list[list[str]]) -> tuple[list[ReplayReport], int]:
    """The reports of ``timetracer replay`` given each of ``runs`` (its arguments) in a process
    of its own, in turn; and the highest exit status of those processes (what the app printed,
    and why one stopped, went to standard error)."""
    reports: list[ReplayReport] = []
    worst = 0
    for arguments in runs:
        done = subprocess.run(
            [sys.executable, "-m", "timetracer_otel.cli", "replay", *arguments, "--json"],
            stdout=subprocess.PIPE,
            text=True,
            check=False,
        )
        worst = max(worst, done.returncode)
        if done.returncode > 1:  # it could not replay (the app failed to start): named above
            continue
        reports.extend(ReplayReport.from_dict(data) for data in json.loads(done.stdout))
    return reports, worst
