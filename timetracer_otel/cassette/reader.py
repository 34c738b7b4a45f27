"""Reading cassettes: one clear :class:`CassetteError` for anything that is not a usable cassette.

Every reader goes through :func:`load_cassette` and :func:`cassette_files`, so each accepts
local files and ``s3://`` URLs (see :mod:`.location`), plain ``.json`` and gzip-compressed
``.json.gz`` alike. Request cassettes and process cassettes (the calls a process made
outside its requests) share the format but not the readers: listing a directory gives
one kind or the other, and loading a file checks it is the kind asked for.

A cassette is untrusted input (it travels: buckets, CI artifacts, laptops). Reading one
costs at most what :class:`~timetracer_otel.config.ReadLimits` allows (its size, what it
expands to, its nesting and its numbers), and every field readers use is checked
(:mod:`.validation`), so anything wrong is one :class:`CassetteError` naming the file,
the field and the problem.
"""

from __future__ import annotations

import os
import re
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from timetracer_otel.config import ReadLimits

from .errors import CassetteError
from .location import CassetteFile, TooLarge, is_cassette_name, is_url, list_files, read_bytes
from .naming import is_process_cassette_name
from .safe_json import JSONProblem, loads
from .validation import SCOPES, validate_document

__all__ = [
    "CassetteError", "LEADS_OUTSIDE", "leads_outside", "load_cassette", "validate_document", "cassette_files", "process_cassette_files", "scope_of", "is_cassette_file", "recording_directory", "walk", "directory_entries", "SCOPES",
]  # fmt: skip

_DAY_DIRECTORY = re.compile(r"\d{4}-\d{2}-\d{2}")  # a recording's <dir>/<YYYY-MM-DD>/
_GZIP = 31  # zlib's wbits for one gzip member


def _gunzip(data: bytes, file: CassetteFile, limits: ReadLimits) -> bytearray:
    """The decompressed bytes of every gzip member of ``data``, streamed: a small file that expands
    beyond ``limits.max_bytes`` stops there, without the memory or time to expand it all."""
    out = bytearray()
    try:
        while data:
            member = zlib.decompressobj(_GZIP)
            while data and not member.eof:
                out += member.decompress(data, limits.max_bytes + 1 - len(out))
                if len(out) > limits.max_bytes:
                    raise CassetteError(
                        file,
                        f"expands beyond TIMETRACER_READ_MAX_BYTES ({limits.max_bytes} bytes) when decompressed",
                    )
                data = member.unconsumed_tail
            if not member.eof:
                raise CassetteError(file, "is a truncated gzip file")
            data = member.unused_data
    except zlib.error as exc:
        raise CassetteError(file, f"is not a valid gzip file ({exc})") from None
    return out


def _read(file: CassetteFile, limits: ReadLimits) -> bytes | bytearray:
    """The file's bytes; a ``*.gz`` file's decompressed (the name says the format, as when writing)."""
    try:
        raw = read_bytes(file, limits.max_bytes)
    except TooLarge as exc:
        raise CassetteError(
            file, f"is {exc.size} bytes; TIMETRACER_READ_MAX_BYTES allows {limits.max_bytes}"
        ) from None
    except FileNotFoundError:
        raise CassetteError(file, "no such file") from None
    except IsADirectoryError:
        raise CassetteError(file, "is a directory, not a cassette file") from None
    except OSError as exc:
        raise CassetteError(file, f"cannot be read ({exc.strerror or exc})") from None
    return _gunzip(raw, file, limits) if str(file).endswith(".gz") else raw


def load_cassette(
    path: str | os.PathLike, scope: str = "request", limits: ReadLimits | None = None
) -> dict[str, Any]:
    """The cassette document at ``path`` (a file or a URL), checked; :class:`CassetteError` if it is
    unusable, records another ``scope`` than asked for, or goes beyond ``limits`` (default: the environment's)."""
    file: CassetteFile = str(path) if is_url(path) else Path(path)
    limits = limits if limits is not None else ReadLimits.from_env()
    raw = _read(file, limits)
    try:
        doc = loads(raw, limits)
    except JSONProblem as exc:
        raise CassetteError(file, str(exc)) from None
    return validate_document(doc, file, scope, limits.max_bytes)


LEADS_OUTSIDE = "is a link to a file outside the cassette directory"


def leads_outside(path: str | os.PathLike, root: str | os.PathLike) -> bool:
    """Whether the local file ``path``, in the directory ``root``, is reached through a link
    that leads out of it: such a file is never read (a cassette travels, and a link in it
    could point at any file of the reader's)."""
    return not os.path.realpath(path).startswith(os.path.realpath(root) + os.sep)


def _below(path: str | os.PathLike) -> Sequence[CassetteFile] | None:
    """Every cassette file below a directory or URL prefix (both kinds); None when ``path`` is a file."""
    if is_url(path):
        try:
            found = list_files(str(path))
        except OSError as exc:
            raise CassetteError(path, f"cannot be listed ({exc})") from None
        return None if found == [path] else found
    root = Path(path)
    if root.is_dir():
        return [Path(path) for _, path in walk(str(root))]
    if not root.exists():
        raise CassetteError(root, "no such file or directory")
    return None


def directory_entries(directory: str) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """(name, path) of the files named like a cassette, and of the subdirectories, directly in ``directory``.

    Dot entries (``.git``) and links to directories are left out; ``OSError`` when it cannot be listed.
    """
    files, subdirectories = [], []
    with os.scandir(directory) as entries:
        for entry in entries:
            if entry.name.startswith("."):
                continue
            if entry.is_dir(follow_symlinks=False):
                subdirectories.append((entry.name, entry.path))
            elif is_cassette_name(entry.name):
                files.append((entry.name, entry.path))
    return files, subdirectories


def walk(top: str, directories: dict[str, int] | None = None) -> list[tuple[tuple[str, ...], str]]:
    """(path parts below ``top``, full path) of every file below directory ``top`` named like a
    cassette (both kinds), in order (see :func:`directory_entries`). ``directories``, when given,
    receives each directory's mtime (in ns), read before its entries: a file added, removed or
    renamed since changes it."""
    found: list[tuple[tuple[str, ...], str]] = []
    pending: list[tuple[str, tuple[str, ...]]] = [(top, ())]
    while pending:
        directory, parts = pending.pop()
        try:
            mtime = os.stat(directory).st_mtime_ns
            files, subdirectories = directory_entries(directory)
        except OSError:
            continue  # unreadable, or gone since it was listed
        if directories is not None:
            directories[directory] = mtime
        found.extend(((*parts, name), path) for name, path in files)
        pending.extend((path, (*parts, name)) for name, path in subdirectories)
    return sorted(found)


def _name(file: CassetteFile) -> str:
    return file.name if isinstance(file, Path) else file.rsplit("/", 1)[-1]


def cassette_files(path: str | os.PathLike) -> list[CassetteFile]:
    """``path`` itself if it is a file; every request cassette (``*.json``, ``*.json.gz``) below it if it is a directory.

    A URL gives URLs: the object itself, or the request cassettes below the prefix.
    """
    found = _below(path)
    if found is None:
        return [str(path)] if is_url(path) else [Path(path)]
    return [file for file in found if not is_process_cassette_name(_name(file))]


def scope_of(file: CassetteFile) -> str:
    """``"process"`` for a process cassette's file (by its name), else ``"request"``: what to load it as."""
    return "process" if is_process_cassette_name(_name(file)) else "request"


def is_cassette_file(path: str | os.PathLike) -> bool:
    """``path`` names one cassette (a file, or an object under a URL), not a directory or prefix."""
    return _below(path) is None


def recording_directory(cassette: str | os.PathLike) -> CassetteFile:
    """The directory (or URL prefix) a recording wrote ``cassette`` into: above its day directory
    (``<dir>/<YYYY-MM-DD>/<name>.json``), else the cassette's own."""
    if is_url(cassette):
        parent = str(cassette).rsplit("/", 1)[0]
        above, _, day = parent.rpartition("/")
        return above if _DAY_DIRECTORY.fullmatch(day) else parent
    local = Path(cassette).parent
    return local.parent if _DAY_DIRECTORY.fullmatch(local.name) else local


def process_cassette_files(path: str | os.PathLike) -> list[CassetteFile]:
    """The process cassettes below a directory or URL prefix; none for a file (a cassette given alone)."""
    found = _below(path)
    return (
        [] if found is None else [file for file in found if is_process_cassette_name(_name(file))]
    )
