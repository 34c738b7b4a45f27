"""One clock for a fixture that every pytest-xdist worker sets up itself.

Each worker of a run sets up the session and module fixtures its tests use, and records
their cassettes; one file per scope instance is kept, the last worker's. Its random values
are seeded by the run (the same on every worker); its clock reads would be each worker's own,
so rows a fixture stamped with ``now()`` (an ORM's Python-side default) would differ between
workers, and a test recorded on one worker would send stamps the kept cassette does not
replay. So the clock of a fixture being recorded by a worker starts at the instant the first
worker of the run set it up, and each caller's reads step on from there (see
:class:`~timetracer_otel.determinism.DrawRecorder`). The controller makes a directory for
the run where the first instant of each fixture cassette is kept, and removes it at the end.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import tempfile
from pathlib import Path

from timetracer_otel.determinism import real_time_ns

__all__ = ["WORKERINPUT_KEY", "first_instant", "new_directory", "remove_directory"]

WORKERINPUT_KEY = "timetracer_fixture_clocks"  # in each worker's workerinput: the run's directory


def new_directory() -> str:
    """A directory for one run's instants, private to this user."""
    return tempfile.mkdtemp(prefix="timetracer-fixture-clocks-")


def remove_directory(directory: str) -> None:
    shutil.rmtree(directory, ignore_errors=True)


def first_instant(directory: Path, cassette: Path) -> int:
    """The instant the first worker asking for ``cassette`` asked, now if this one is first.
    Written whole before it can be seen (a hard link to a complete file), so a worker reading
    it never sees half of it."""
    kept = directory / hashlib.sha256(str(cassette).encode()).hexdigest()[:32]
    with contextlib.suppress(FileNotFoundError):
        return int(kept.read_text())
    mine = directory / f"{kept.name}.{os.getpid()}"
    mine.write_text(str(real_time_ns()))
    try:
        os.link(mine, kept)
    except FileExistsError:  # another worker was first
        pass
    finally:
        mine.unlink()
    return int(kept.read_text())
