"""Turns counted together by the worker processes of one server replaying a cassette directory.

A replay served by several worker processes (``gunicorn -w 4``, ``uvicorn --workers 4``)
gives each request to one of them. Counted per process, the second request with a
signature, sent to another worker, would get the first cassette recorded with it again.
So the processes replaying one directory that one parent started (a server's workers) count
their turns in one file of the temporary directory, named after the directory and the
parent, under an advisory lock; beside it, the ids of the processes counting there. A
process that finds no other one of them alive starts every count at zero, as a replay
starts: a replay run after another does not go on from its turns. Replays of the directory
started apart (two CI jobs on one machine) count their own.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path

from timetracer_otel._diagnostics import counters, logger

try:
    import fcntl
except ImportError:  # not on this platform: each process counts its own turns
    fcntl = None  # type: ignore[assignment]

__all__ = ["SharedTurns", "shared_turns"]

_SLOTS = 1 << 16  # counters in the file, by a digest of the signature (8 bytes each, sparse)
_COUNTER = 8


class SharedTurns:
    """The turn counters of the processes replaying one directory."""

    def __init__(self, base: Path) -> None:
        self._pids = base.with_suffix(".pids")
        flags = os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0)
        self._fd = os.open(base.with_suffix(".turns"), flags, 0o600)
        with self._locked():
            others = [pid for pid in self._registered() if pid != os.getpid() and _alive(pid)]
            if not others:  # the first of a new replay
                os.ftruncate(self._fd, 0)
            self._pids.write_text("".join(f"{pid}\n" for pid in [*others, os.getpid()]))

    def take(self, signature: str) -> int | None:
        """How many requests with ``signature`` took a turn before this one, in every process;
        None when the file failed (the caller counts on its own)."""
        slot = int.from_bytes(hashlib.sha256(signature.encode()).digest()[:4], "big") % _SLOTS
        offset = slot * _COUNTER
        try:
            with self._locked():
                kept = os.pread(self._fd, _COUNTER, offset).ljust(_COUNTER, b"\0")
                taken = int.from_bytes(kept, "little")
                os.pwrite(self._fd, (taken + 1).to_bytes(_COUNTER, "little"), offset)
        except OSError:
            counters.add("replay.turns_unshared")
            return None
        return taken

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        fcntl.flock(self._fd, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(self._fd, fcntl.LOCK_UN)

    def _registered(self) -> list[int]:
        try:
            lines = self._pids.read_text().split()
        except FileNotFoundError:
            return []
        return [int(line) for line in lines if line.isdigit()]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's
        return True
    return True


def shared_turns(directory: str) -> SharedTurns | None:
    """The shared counters of ``directory`` (a local directory of cassettes); None where they
    cannot be kept (no advisory locks, an unwritable temporary directory): then this process
    counts its own turns, and says so once."""
    if fcntl is None:
        return None
    where = f"{os.path.realpath(directory)}\0{os.getppid()}"
    name = hashlib.sha256(where.encode()).hexdigest()[:24]
    try:
        return SharedTurns(_private_directory() / f"turns-{name}")
    except OSError as exc:
        counters.add("replay.turns_unshared")
        logger.warning(
            "timetracer: the replay's turns are counted in this process only (%s): several "
            "worker processes replaying %s may answer a request with the same cassette twice",
            exc,
            directory,
        )
        return None


def _private_directory() -> Path:
    """``timetracer-<uid>`` in the temporary directory, this user's alone (mode 0700): the
    temporary directory is everyone's, and a file another user put there under the name the
    counts take (a link to one of ours) must not be written through."""
    path = Path(tempfile.gettempdir()) / f"timetracer-{os.geteuid()}"
    path.mkdir(mode=0o700, exist_ok=True)
    found = os.lstat(path)
    if not stat.S_ISDIR(found.st_mode) or found.st_uid != os.geteuid() or found.st_mode & 0o077:
        raise PermissionError(f"{path} is not a directory of this user's alone")
    return path
