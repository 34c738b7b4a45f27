"""The Replay button: ``timetracer replay --json`` in a child process.

A child process imports the app fresh (so an edited app is replayed as it is now),
keeps replay mode and the app's imports out of the dashboard, and cannot take the
dashboard down with it.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import anyio

__all__ = ["ReplayTarget", "ReplayOutcome", "run_replay"]

_TIMEOUT_SECONDS = 120


@dataclass(frozen=True)
class ReplayTarget:
    """The app the dashboard replays through, fixed when it starts (never taken from a request)."""

    app: str  # module:attribute
    app_dir: Optional[str] = None
    factory: bool = False
    headers: tuple[str, ...] = ()  # NAME=VALUE, for requests whose own cannot be unsealed (timetracer replay --header)
    cookies: tuple[str, ...] = ()  # NAME=VALUE (timetracer replay --cookie)

    def command(self, cassette: Path) -> list[str]:
        command = [sys.executable, "-m", "timetracer_otel.cli", "replay", str(cassette), "--app", self.app, "--json"]
        if self.app_dir:
            command += ["--app-dir", self.app_dir]
        if self.factory:
            command.append("--factory")
        command += [arg for header in self.headers for arg in ("--header", header)]
        command += [arg for cookie in self.cookies for arg in ("--cookie", cookie)]
        return command


@dataclass(frozen=True)
class ReplayOutcome:
    report: Optional[dict[str, Any]]  # ReplayReport.to_dict(), or None when the replay could not run
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
        return ReplayOutcome(None, stderr or f"timetracer replay exited with status {done.returncode}")
    return ReplayOutcome(report, stderr)
