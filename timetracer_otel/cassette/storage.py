"""Writing cassette files atomically: a reader sees a whole cassette or none.

A root may be a local directory or an ``s3://`` URL (see :mod:`.location`): there a
single PUT is atomic, and "do not overwrite" is a conditional PUT (``If-None-Match: *``).
"""

from __future__ import annotations

import gzip
import os
import tempfile
from pathlib import Path
from typing import Callable, Union

from . import location
from .location import CassetteFile

__all__ = ["encode", "write_new", "replace"]


def encode(data: bytes, name: str) -> bytes:
    """The bytes stored in a file called ``name``: gzip for ``*.gz`` (no timestamp, so equal cassettes give equal files)."""
    return gzip.compress(data, mtime=0) if name.endswith(".gz") else data


def _write_temp(directory: Path, data: bytes) -> str:
    directory.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
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


def write_new(root: Union[str, os.PathLike], relpath: str, data: bytes) -> CassetteFile:
    """Write ``data`` at ``root/relpath`` without overwriting; returns the file (a path or URL) used.

    If the name is taken (another process recorded the same id), ``-2``, ``-3``, ...
    is added before the suffix.
    """
    if location.is_url(root):
        return location.join(root, _first_free(relpath, lambda rel: location.write(str(location.join(root, rel)), data, exclusive=True)))
    tmp = _write_temp(Path(root, relpath).parent, data)
    try:
        return location.join(root, _first_free(relpath, lambda rel: os.link(tmp, location.join(root, rel))))
    finally:
        os.unlink(tmp)


def replace(path: Union[str, os.PathLike], data: bytes) -> None:
    """Atomically replace the file at ``path`` (a path or URL) with ``data``."""
    if location.is_url(path):
        location.write(str(path), data)
        return
    target = Path(path)
    tmp = _write_temp(target.parent, data)
    try:
        os.replace(tmp, target)
    except BaseException:
        os.unlink(tmp)
        raise
