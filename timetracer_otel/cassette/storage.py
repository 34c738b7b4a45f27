"""Writing cassette files atomically: a reader sees a whole cassette or none.

A root may be a local directory or an ``s3://`` URL (see :mod:`.location`): there a
single PUT is atomic, and "do not overwrite" is a conditional PUT (``If-None-Match: *``).
"""

from __future__ import annotations

import gzip
import itertools
import os
from collections.abc import Callable

from . import location
from .location import CassetteFile

__all__ = ["encode", "write_new", "replace"]

_TEMP_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)


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
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            if durable:
                os.fsync(fd)
        finally:
            os.close(fd)
    except BaseException:
        os.unlink(tmp)
        raise
    return tmp


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
    tmp = _write_temp(os.path.dirname(os.path.join(root, relpath)), data, durable)
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
