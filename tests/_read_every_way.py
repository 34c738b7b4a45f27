"""Every cassette reader, run on each file named, in this one process; prints what each did as JSON lines.

    python _read_every_way.py CORPUS VALID APPS_DIR OUT FILE...

For each FILE: ``show`` (plain, ``--payloads``, ``--json``), ``diff`` against VALID, ``export``
and replay's start (``CassetteLibrary``); for each directly in CORPUS also ``import`` (the file
as OTLP JSON, into OUT) and ``replay`` through the replay app; for the directory CORPUS (every
file below it): ``list``, ``search``, ``replay`` and replay's start. The commands run as click
runs them (``CliRunner``), so that hundreds of files cost seconds.
test_hardening_fuzz.py starts this under a memory limit and checks each line.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from typing import Any

from click.testing import CliRunner

from timetracer_otel.cassette.reader import CassetteError
from timetracer_otel.cli._commands import cli
from timetracer_otel.replayers.selection import CassetteLibrary


def _library(location: str) -> dict[str, Any]:
    """Replay's start on ``location``: the files it would replay, or its one error."""
    try:
        library = CassetteLibrary(location)
    except CassetteError as exc:
        return {"exit": 2, "stdout": "", "stderr": str(exc), "exception": None}
    return {
        "exit": 0,
        "stdout": "\n".join(library.in_recording_order()),
        "stderr": "\n".join(map(str, library.unusable)),
        "exception": None,
    }


def _command(runner: CliRunner, args: list[str]) -> Callable[[], dict[str, Any]]:
    def run() -> dict[str, Any]:
        result = runner.invoke(cli, args, catch_exceptions=True)
        unexpected = result.exception if not isinstance(result.exception, SystemExit) else None
        return {
            "exit": result.exit_code,
            "stdout": result.stdout,
            "stderr": result.stderr,
            "exception": repr(unexpected) if unexpected else None,
        }

    return run


def main() -> None:
    corpus, valid, apps, out, *files = sys.argv[1:]
    runner = CliRunner()
    replay = ["--app", "replay_app:create_app", "--factory", "--app-dir", apps]
    readers: list[tuple[str, str, Callable[[], dict[str, Any]]]] = [
        (corpus, "list", _command(runner, ["list", "--dir", corpus])),
        (corpus, "list --json", _command(runner, ["list", "--dir", corpus, "--json"])),
        (corpus, "search", _command(runner, ["search", "lookup", "--dir", corpus])),
        (
            corpus,
            "search --json",
            _command(runner, ["search", "lookup", "--dir", corpus, "--json"]),
        ),
        (corpus, "replay", _command(runner, ["replay", corpus, *replay, "--json"])),
        (corpus, "replay start", lambda: _library(corpus)),
    ]
    for file in files:
        readers += [
            (file, "show", _command(runner, ["show", file])),
            (file, "show --payloads", _command(runner, ["show", file, "--payloads"])),
            (file, "show --json", _command(runner, ["show", file, "--json"])),
            (file, "diff", _command(runner, ["diff", file, valid])),
            (file, "export", _command(runner, ["export", "--otlp-json", file])),
            (file, "replay start", lambda file=file: _library(file)),  # type: ignore[misc]
        ]
        # the hostile files; the many with one wrong-typed field are replayed above
        if os.path.dirname(file) == corpus:
            readers += [
                (file, "import", _command(runner, ["import", file, "--dir", out])),
                (file, "replay", _command(runner, ["replay", file, *replay])),
            ]
    for location, reader, run in readers:
        sys.stdout.write(json.dumps({"file": location, "reader": reader, **run()}) + "\n")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
