"""The Replay button: ``timetracer replay --json`` in a child process.

A child process imports the app fresh (so an edited app is replayed as it is now),
keeps replay mode and the app's imports out of the dashboard, and cannot take the
dashboard down with it.
"""

from __future__ import annotations

import json
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio

__all__ = ["ReplayTarget", "ReplayOutcome", "run_replay", "CallPair", "call_pairs", "response_rows"]

_TIMEOUT_SECONDS = 120


@dataclass(frozen=True)
class ReplayTarget:
    """The app the dashboard replays through, fixed when it starts (never taken from a request)."""

    app: str  # module:attribute
    app_dir: str | None = None
    factory: bool = False
    headers: tuple[
        str, ...
    ] = ()  # NAME=VALUE, for requests whose own cannot be unsealed (timetracer replay --header)
    cookies: tuple[str, ...] = ()  # NAME=VALUE (timetracer replay --cookie)
    credentials: str | None = None  # MODULE:FUNCTION (timetracer replay --credentials)

    def command(self, cassette: Path) -> list[str]:
        command = [
            sys.executable,
            "-m",
            "timetracer_otel.cli",
            "replay",
            "--app",
            self.app,
            "--json",
        ]
        if self.app_dir:
            command += ["--app-dir", self.app_dir]
        if self.factory:
            command.append("--factory")
        command += [arg for header in self.headers for arg in ("--header", header)]
        command += [arg for cookie in self.cookies for arg in ("--cookie", cookie)]
        if self.credentials:
            command += ["--credentials", self.credentials]
        # after "--": a file named like an option ("--credentials=x.json") is still the cassette
        return [*command, "--", str(cassette)]


@dataclass(frozen=True)
class ReplayOutcome:
    report: dict[str, Any] | None  # ReplayReport.to_dict(), or None when the replay could not run
    problem: str  # what the command printed on stderr


async def run_replay(target: ReplayTarget, cassette: Path) -> ReplayOutcome:
    """Replay ``cassette`` through ``target`` and return its report, or why there is none."""
    try:
        with anyio.fail_after(_TIMEOUT_SECONDS):
            done = await anyio.run_process(target.command(cassette), check=False)
    except TimeoutError:
        return ReplayOutcome(None, f"the replay did not finish within {_TIMEOUT_SECONDS} s")
    stderr = done.stderr.decode("utf-8", errors="replace").strip()
    try:
        (report,) = json.loads(done.stdout)
    except ValueError:
        return ReplayOutcome(
            None, stderr or f"timetracer replay exited with status {done.returncode}"
        )
    return ReplayOutcome(report, stderr)


@dataclass(frozen=True)
class CallPair:
    """One row of the call-by-call comparison: the recorded call and the call the replay made in its place."""

    index: int | None  # the recorded call's index (the closest one for a call nothing answered)
    recorded: str  # its label, or "" when the replay made a call the recording has nothing like
    replayed: (
        str  # the replayed call's label, or "" when the replay did not make this recorded call
    )
    state: str  # "same", "changed" (no recorded call matched it), "not made" (left unused),
    # "earlier request" (answered from the cassette of an earlier request of the recording)
    differences: tuple[str, ...]


def call_pairs(report: dict[str, Any], labels: list[str]) -> list[CallPair]:
    """The report's calls beside the recorded calls (``labels``: each recorded call's label, by index)."""
    entries = list(report.get("calls") or ())
    # A recorded call left unused is shown once, beside the replayed call it is closest to, if any.
    paired = {
        entry.get("closest")
        for entry in entries
        if entry.get("replayed") is not None and entry.get("recorded") is None
    }
    pairs = []
    for entry in entries:
        if entry.get("replayed") is None and entry.get("recorded") in paired:
            continue
        recorded, closest = entry.get("recorded"), entry.get("closest")
        index = recorded if recorded is not None else closest
        label = labels[index] if isinstance(index, int) and 0 <= index < len(labels) else ""
        if entry.get("replayed") is None:
            state = "not made"
        elif entry.get("earlier"):
            state, label = "earlier request", str(entry["earlier"]).rsplit("/", 1)[-1]
        else:
            state = "same" if recorded is not None else "changed"
        replayed = " ".join(
            str(part) for part in (entry.get("library"), entry.get("replayed")) if part
        )
        pairs.append(CallPair(index, label, replayed, state, tuple(entry.get("differences") or ())))
    return pairs


_COMPARED = re.compile(r"^(.+?): recorded (.*), replayed (.*)$")


def response_rows(differences: list[str]) -> list[tuple[str, str, str]]:
    """The report's response differences as (where, recorded, replayed); a line of another shape
    (a text body's unified diff) as (line, "", "")."""
    rows: list[tuple[str, str, str]] = []
    for line in differences:
        found = _COMPARED.match(line)
        rows.append((found[1], found[2], found[3]) if found else (line, "", ""))
    return rows
