"""Writing cassette files atomically: a reader sees a whole cassette or none.

A root may be a local directory or an ``s3://`` URL (see :mod:`.location`): there a
single PUT is atomic, and "do not overwrite" is a conditional PUT (``If-None-Match: *``).
"""

from __future__ import annotations

import errno
import gzip
import itertools
import os
import threading
from collections.abc import Callable

from . import location
from .location import CassetteFile

__all__ = ["encode", "write_new", "replace"]

_TEMP_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
# Linux: a file without a name until it is linked whole; one system call fewer than a named
# temporary file, and nothing to remove after a crash.
_HAS_UNNAMED = hasattr(os, "O_TMPFILE")
_UNNAMED_FLAGS = os.O_WRONLY | getattr(os, "O_TMPFILE", 0) | getattr(os, "O_CLOEXEC", 0)
_UNSUPPORTED = frozenset((errno.EOPNOTSUPP, errno.EISDIR, errno.EINVAL))


def encode(data: bytes, name: str) -> bytes:
    """The bytes stored in a file called ``name``: gzip for ``*.gz`` (no timestamp, so equal cassettes give equal files)."""
    return gzip.compress(data, mtime=0) if name.endswith(".gz") else data


_temp_names = itertools.count()


def _write_temp(directory: str, data: bytes, durable: bool) -> str:
    """A new file in ``directory`` (made if missing) holding ``data``, fsync'ed when ``durable``.

    One ``open``, ``write`` and ``close`` in the common case: no ``mkstemp`` and no
    ``mkdir`` for every cassette.
    """
    while True:
        tmp = os.path.join(directory, f".tmp-{os.getpid()}-{next(_temp_names)}.part")
        try:
            fd = os.open(tmp, _TEMP_FLAGS, 0o600)
        except FileNotFoundError:
            os.makedirs(directory, exist_ok=True)
            continue
        except FileExistsError:  # left by an earlier process with the same pid
            continue
        except OSError as exc:  # name the directory the user chose, not our temporary file
            raise type(exc)(exc.errno, exc.strerror, directory) from None
        break
    try:
        try:
            _fill(fd, data, durable)
        finally:
            os.close(fd)
    except BaseException:
        os.unlink(tmp)
        raise
    return tmp


def _fill(fd: int, data: bytes, durable: bool) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]
    if durable:
        os.fsync(fd)


class _Unnamed:
    """Unnamed files (``O_TMPFILE``), named by ``linkat`` through ``/proc/self/fd``; where the
    platform or a file system has none, :func:`write_new` writes a named temporary file."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._descriptors: tuple[int, int] | None = None  # (pid, its /proc/self/fd open)
        self._refused: set[str] = set()  # directories on a file system without them

    def _descriptors_dir(self) -> int | None:
        """This process's ``/proc/self/fd`` (opened again in a forked child, where the parent's, inherited,
        would name the parent's files), or None without /proc."""
        known = self._descriptors
        if known is not None and known[0] == os.getpid():
            return known[1]
        with self._lock:
            try:
                opened = os.open("/proc/self/fd", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            except OSError:
                return None
            self._descriptors = (os.getpid(), opened)
            return opened

    def write(self, directory: str, data: bytes, durable: bool) -> int | None:
        """An open file in ``directory`` (made if missing) holding ``data``, not yet named; None
        where that cannot be (then nothing was made)."""
        if not _HAS_UNNAMED or directory in self._refused or self._descriptors_dir() is None:
            return None
        try:
            fd = os.open(directory, _UNNAMED_FLAGS, 0o600)
        except FileNotFoundError:
            os.makedirs(directory, exist_ok=True)
            return self.write(directory, data, durable)
        except OSError as exc:
            if exc.errno in _UNSUPPORTED:
                self._refused.add(directory)
            return None  # the named temporary file says what is wrong, naming the directory
        try:
            _fill(fd, data, durable)
        except BaseException:
            os.close(fd)
            raise
        return fd

    def name(self, fd: int, path: str) -> None:
        """Give the unnamed file ``fd`` the name ``path`` (``FileExistsError`` when it is taken)."""
        descriptors = self._descriptors_dir()
        assert descriptors is not None, "write() found /proc/self/fd"
        os.link(str(fd), path, src_dir_fd=descriptors, follow_symlinks=True)


_unnamed = _Unnamed()


def _first_free(relpath: str, create: Callable[[str], None]) -> str:
    """The first of ``relpath``, ``<stem>-2<suffix>``, ``-3``... that ``create`` makes without ``FileExistsError``."""
    folder, _, name = relpath.rpartition("/")
    stem, dot, suffix = name.partition(".")
    for attempt in range(1, 1000):
        candidate = name if attempt == 1 else f"{stem}-{attempt}{dot}{suffix}"
        candidate = f"{folder}/{candidate}" if folder else candidate
        try:
            create(candidate)
        except FileExistsError:
            continue
        return candidate
    raise FileExistsError(f"no free cassette name for {relpath}")


def write_new(
    root: str | os.PathLike, relpath: str, data: bytes, durable: bool = False
) -> CassetteFile:
    """Write ``data`` at ``root/relpath`` without overwriting; returns the file (a path or URL) used.

    A local file is returned as its path (a string). If the name is taken (another process recorded the same id), ``-2``, ``-3``, ...
    is added before the suffix. A reader sees the whole file or none, also after a
    ``kill -9``; ``durable`` adds an fsync, for a power cut too.
    """
    if location.is_url(root):
        return location.join(
            root,
            _first_free(
                relpath,
                lambda rel: location.write(str(location.join(root, rel)), data, exclusive=True),
            ),
        )
    directory = os.path.dirname(os.path.join(root, relpath))
    fd = _unnamed.write(directory, data, durable)
    if fd is not None:
        try:
            return os.path.join(
                root, _first_free(relpath, lambda rel: _unnamed.name(fd, os.path.join(root, rel)))
            )
        finally:
            os.close(fd)
    tmp = _write_temp(directory, data, durable)
    try:
        return os.path.join(
            root, _first_free(relpath, lambda rel: os.link(tmp, os.path.join(root, rel)))
        )
    finally:
        os.unlink(tmp)


def replace(path: str | os.PathLike, data: bytes, durable: bool = False) -> None:
    """Atomically replace the file at ``path`` (a path or URL) with ``data``."""
    if location.is_url(path):
        location.write(str(path), data)
        return
    tmp = _write_temp(os.path.dirname(os.fspath(path)) or ".", data, durable)
    try:
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise
