"""Writing cassette files atomically: a reader sees a whole cassette or none."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

__all__ = ["write_new", "replace"]


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


def write_new(root: Path, relpath: str, data: bytes) -> Path:
    """Write ``data`` at ``root/relpath`` without overwriting; returns the path used.

    If the name is taken (another process recorded the same id), ``-2``, ``-3``, ...
    is added before the suffix.
    """
    target = root / relpath
    tmp = _write_temp(target.parent, data)
    stem, dot, suffix = target.name.partition(".")
    try:
        for attempt in range(1, 1000):
            candidate = target if attempt == 1 else target.with_name(f"{stem}-{attempt}{dot}{suffix}")
            try:
                os.link(tmp, candidate)
            except FileExistsError:
                continue
            return candidate
        raise FileExistsError(f"no free cassette name for {target}")
    finally:
        os.unlink(tmp)


def replace(path: Path, data: bytes) -> None:
    """Atomically replace the file at ``path`` with ``data``."""
    tmp = _write_temp(path.parent, data)
    try:
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise
