"""The temporary directories pytest gives a test, as the recording got them.

``tmp_path`` (and ``tmp_path_factory.mktemp``, ``tmpdir``) is a new numbered directory in
each run: ``/tmp/pytest-of-me/pytest-12/test_upload0`` recorded, ``pytest-13/...`` replayed.
A test that sends its path to a service (a file to import, a SQLite URL, a storage
location) or stores it in a row makes calls its cassette does not hold, and compares the
answers with a path that is no longer its own. So each directory made for a test's or a
fixture's cassette is one of its draws: replayed, the recorded directory is made anew,
empty, and handed out instead of a new one. Only where that is safe: in a pytest root of
this machine's temporary directory (``pytest-of-<user>/pytest-N[/popen-gwK]/name``, a
directory pytest itself removes in time), this user's, or another user's that no user of
this machine has (recorded on a laptop, replayed in CI), every step owned by this user,
and taken by no other process of the run (two pytest-xdist workers replaying one fixture's
instance); else the new directory, as without timetracer. The replaying run holds pytest's
lock on the recorded run's directory until it ends, so that no pytest session cleaning up
old runs removes a directory in use. A ``--basetemp`` given to both runs already gives the
same paths.
"""

from __future__ import annotations

import atexit
import contextlib
import hashlib
import os
import re
import stat
from pathlib import Path
from typing import Any

from _pytest.pathlib import create_cleanup_lock, register_cleanup_lock_removal, rm_rf
from _pytest.tmpdir import TempPathFactory

from timetracer_otel.determinism import state

from .blocks import running_block

__all__ = ["install", "uninstall"]

_SOURCE, _KIND, _CALLER = "pytest", "tmp_path", "_pytest.tmpdir:mktemp"
_USER_ROOT = "pytest-of-"  # pytest's root of one user's runs, in the temporary directory
_RUN_DIRECTORY = re.compile(r"pytest-[0-9]{1,9}")
# a pytest-xdist worker's (popen-gw0; popen-master when read as recorded without workers)
_WORKER_DIRECTORY = re.compile(r"popen-[A-Za-z0-9_]{1,32}")

_real_mktemp = TempPathFactory.mktemp
_claims: str | None = None  # the run's directory shared by its pytest-xdist workers, if any
_taken: set[str] = set()  # the recorded directories this process made anew, each once
# the earlier runs' directories whose lock this run holds: the lock this process took, if it did
_held_runs: dict[str, Path | None] = {}


def install(claims: str | None) -> None:
    """Hand recorded directories to the blocks' draws; ``claims``: the directory where a
    pytest-xdist worker claims one before the run's other workers can."""
    global _claims
    _claims = claims
    TempPathFactory.mktemp = _mktemp  # type: ignore[method-assign]


def uninstall() -> None:
    TempPathFactory.mktemp = _real_mktemp  # type: ignore[method-assign]
    _taken.clear()
    for lock in _held_runs.values():
        if lock is not None:
            lock.unlink(missing_ok=True)
    _held_runs.clear()


def _mktemp(self: TempPathFactory, basename: str, numbered: bool = True) -> Path:
    draws = state.current() if running_block() is not None else None
    if draws is None:
        return _real_mktemp(self, basename, numbered)
    made: list[Path] = []

    def new() -> str:
        made.append(_real_mktemp(self, basename, numbered))
        return str(made[0])

    value = draws.draw(
        _SOURCE, _KIND, _CALLER, new, lambda recorded: _named(recorded, basename, numbered)
    )
    if made:  # recording, or nothing recorded for it
        return made[0]
    return _made_anew(Path(value), self.getbasetemp()) or _real_mktemp(self, basename, numbered)


def _named(recorded: Any, basename: str, numbered: bool) -> bool:
    """Whether ``recorded`` is a directory ``mktemp(basename, numbered)`` could have made."""
    if not isinstance(recorded, str):
        return False
    name = Path(recorded).name
    return (
        bool(re.fullmatch(re.escape(basename) + "[0-9]+", name)) if numbered else name == basename
    )


def _made_anew(recorded: Path, basetemp: Path) -> Path | None:
    """``recorded`` made anew and empty, when it is in a pytest root of ``basetemp``'s
    temporary directory, this user's or one no user of this machine has (see the module's
    docstring); None where it cannot be."""
    own = next((parent for parent in basetemp.parents if parent.name.startswith(_USER_ROOT)), None)
    if own is None or not recorded.is_absolute():
        return None
    with contextlib.suppress(ValueError, OSError):
        parts = recorded.relative_to(own.parent).parts
        if not (
            len(parts) in (3, 4)
            and parts[0].startswith(_USER_ROOT)
            and _RUN_DIRECTORY.fullmatch(parts[1])
            and all(_WORKER_DIRECTORY.fullmatch(part) for part in parts[2:-1])
            and _an_earlier_run(parts[:2], own, basetemp)
            and _owned_directory(own.parent, parts[:-1])
            and _held(own.parent / parts[0] / parts[1])
            and _claim(recorded)
        ):
            return None
        try:
            status = os.lstat(recorded)
        except FileNotFoundError:
            pass
        else:
            if not stat.S_ISDIR(status.st_mode):  # a link, a file, a FIFO: never opened
                return None
            rm_rf(recorded)
        recorded.mkdir(mode=0o700)
        return recorded
    return None


def _an_earlier_run(run: tuple[str, ...], own: Path, basetemp: Path) -> bool:
    """Whether ``run`` (``pytest-of-<user>``, ``pytest-N``) is a run before this one in this
    user's root (pytest numbers runs up; this run's own directories are never made anew), or
    a run in a root no user of this machine has."""
    if run[0] != own.name:
        return _nobodys(run[0].removeprefix(_USER_ROOT))
    this_run = basetemp.relative_to(own).parts[0]
    return _RUN_DIRECTORY.fullmatch(this_run) is not None and int(run[1][7:]) < int(this_run[7:])


def _nobodys(user: str) -> bool:
    """Whether no user of this machine is called ``user``: a recording made by another user
    elsewhere (a laptop's, replayed in CI) takes no one's pytest root here."""
    try:
        import pwd
    except ImportError:  # Windows: no such check, no such root taken
        return False
    try:
        pwd.getpwnam(user)
    except KeyError:
        return bool(user) and "/" not in user
    return False


def _owned_directory(root: Path, parts: tuple[str, ...]) -> bool:
    """``root`` joined with ``parts`` is a directory (made if missing), each step a real
    directory of this user's."""
    directory = root
    for part in parts:
        directory = directory / part
        with contextlib.suppress(FileExistsError):
            directory.mkdir(mode=0o700)
        status = os.lstat(directory)
        if not stat.S_ISDIR(status.st_mode):
            return False
        if hasattr(os, "getuid") and status.st_uid != os.getuid():
            return False
    return True


def _held(run: Path) -> bool:
    """Whether this run holds pytest's lock on ``run`` (an earlier run's directory), taken
    here when no run holds it: pytest's clean-up of old runs, which any session of this user
    does as it starts and ends, then leaves the directories made anew in it alone (it removed
    one while its test was using it), and another run replaying there makes new ones. The
    run's pytest-xdist workers share the lock: the first to want it takes it."""
    key = str(run)
    if key in _held_runs:
        return True
    if not _first_of_the_run("run", key):  # a worker of this run took it, or is taking it
        _held_runs[key] = None
        return True
    try:
        lock = create_cleanup_lock(run)
    except OSError:  # a run going on there
        return False
    register_cleanup_lock_removal(lock, atexit.register)  # at exit, if the session does not end
    _held_runs[key] = lock
    return True


def _claim(recorded: Path) -> bool:
    """Whether this process may make ``recorded`` anew: neither it nor another process of the
    run made it already."""
    key = str(recorded)
    if key in _taken:  # handed out already in this run: in use
        return False
    if not _first_of_the_run("tmp", key):
        return False
    _taken.add(key)
    return True


def _first_of_the_run(kind: str, key: str) -> bool:
    """Whether this process is the first of the run's pytest-xdist workers to ask for ``key``
    (of ``kind``); always, without workers."""
    if _claims is None:
        return True
    try:
        (Path(_claims) / f"{kind}-{hashlib.sha256(key.encode()).hexdigest()[:32]}").mkdir()
    except FileExistsError:
        return False
    return True
