"""The cassette index: one summary line per cassette, cached outside the cassette directory.

Listing 50,000 cassettes, or starting to replay them, must not mean parsing 50,000 JSON
files. The index keeps each cassette's summary keyed by its path relative to the
directory, with the file's mtime and size; a scan stats every file and re-reads (and
checks, as replay would) only those that are new or changed, and drops those that are
gone. Files are found with :func:`walk` or :func:`cassette_files` and read with
:func:`load_cassette`, so whatever locations those accept, the index accepts: ``.json``
and ``.json.gz`` files, and ``s3://`` prefixes. Remote objects are not stat'ed and no
index is saved for them: they are re-read on every scan.

The index of a directory is saved in the user's cache (``$XDG_CACHE_HOME/timetracer/index``,
else ``~/.cache/timetracer/index``), named by a digest of the directory's real path: the
cassette directory stays as recorded (nothing for ``git status`` to show, works read-only),
and an index cannot arrive with cassettes from elsewhere and vouch for them. Index files
unused for :data:`_UNUSED_DAYS` days are removed when another is saved.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import time
from pathlib import Path
from typing import Any

import orjson

from timetracer_otel import __version__
from timetracer_otel.cassette.document import Cassette
from timetracer_otel.cassette.location import CassetteFile, is_url
from timetracer_otel.cassette.naming import is_process_cassette_name
from timetracer_otel.cassette.reader import (
    LEADS_OUTSIDE,
    CassetteError,
    cassette_files,
    directory_entries,
    leads_outside,
    load_cassette,
    walk,
)
from timetracer_otel.cassette.storage import replace
from timetracer_otel.config import ReadLimits
from timetracer_otel.protocols.http import content_digest, content_holes
from timetracer_otel.replayers.session import recorded_views
from timetracer_otel.sealing import redacted

__all__ = ["FIELDS", "LISTED", "CassetteIndex", "index_home", "listing", "summarise"]

# 3: kept in the user's cache, read limits, every field checked; 4: query and body digested
# redacted; 5: whether they hide a value
_INDEX_VERSION = 5
_LEGACY_NAME = ".timetracer-index"  # where versions before 3 kept it: in the cassette directory
_UNUSED_DAYS = 30
_DAY_SECONDS = 86_400
LISTED = (
    "key",
    "id",
    "recorded_at",
    "service",
    "method",
    "path",
    "route",
    "query",
    "status",
    "duration_ms",
    "calls",
    "error",
)
# the last three choose a request's cassette in replay
FIELDS = (
    *LISTED,
    "content_digest",
    "content_holes",
    "fingerprint",
    "process",  # which process cassette replay starts the app from
)

_Stamp = tuple[int, int]  # a file's (mtime in ns, size)


def listing(entry: dict[str, Any]) -> dict[str, Any]:
    """The fields of an index entry that listings show."""
    return {name: entry[name] for name in LISTED}


def summarise(key: str, doc: dict[str, Any]) -> dict[str, Any]:
    """The listing fields of one cassette document, and what replay chooses it by (query and
    body digest, whether they hide a value, fingerprint)."""
    cassette = Cassette(doc)
    request, error = cassette.request, cassette.error
    # digested as replay digests a live request: redacted, so a sealed secret (unique per cassette) reads [REDACTED]
    shown = redacted(doc["request"])
    content = (shown.get("query", ""), shown["body"], shown["headers"])
    return {
        "key": key,
        "id": cassette.id,
        "recorded_at": doc.get("recorded_at"),
        "service": cassette.service,
        "method": request.method,
        "path": request.path,
        "route": request.route,
        "query": request.query,
        "status": cassette.response.status,
        "duration_ms": cassette.duration_ms,
        "calls": len(cassette.calls),
        "error": error.get("type") if isinstance(error, dict) else None,
        "content_digest": content_digest(*content),
        "content_holes": content_holes(*content),
        "fingerprint": request.fingerprint,
        "process": cassette.process,
    }


def index_home() -> Path:
    """Where indexes are saved: ``$XDG_CACHE_HOME/timetracer/index``, or ``~/.cache/timetracer/index``."""
    base = os.environ.get("XDG_CACHE_HOME", "").strip() or os.path.join(
        os.path.expanduser("~"), ".cache"
    )
    return Path(base, "timetracer", "index")


def _encoded(index: dict[str, Any]) -> bytes:
    """The index as JSON: orjson's, unless a file name is not UTF-8 (its bytes kept as ``\\udcff`` escapes)."""
    try:
        return orjson.dumps(index)
    except TypeError:
        return json.dumps(index, separators=(",", ":")).encode("ascii")


def _decoded(data: bytes) -> Any:
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:  # escapes of file names that are not UTF-8
        return json.loads(data)


def _stamp(path: str | os.PathLike) -> _Stamp | None:
    try:
        stat = os.stat(path)
    except (OSError, ValueError):
        return None
    return stat.st_mtime_ns, stat.st_size


def _usable(record: Any) -> bool:
    """A saved record as this version writes it: [mtime, size, summary values or the problem]."""
    return (
        isinstance(record, list)
        and len(record) == 3
        and (
            isinstance(record[2], str)
            or (isinstance(record[2], list) and len(record[2]) == len(FIELDS))
        )
    )


def _prune(home: Path) -> None:
    """Remove index files no scan has used for :data:`_UNUSED_DAYS` days (their directories are likely gone)."""
    oldest = time.time() - _UNUSED_DAYS * _DAY_SECONDS
    with contextlib.suppress(OSError):
        for entry in os.scandir(home):
            if entry.stat().st_mtime < oldest:
                with contextlib.suppress(OSError):
                    os.unlink(entry.path)


class _Tables:
    """What scans found, by key: each local file's record (as saved), each file, and the usable and
    unusable ones. A rescan works on a copy, so a reader of the last one never sees it change."""

    def __init__(self, previous: _Tables | None = None) -> None:
        self.records: dict[str, list] = dict(previous.records) if previous else {}
        # a local file as a str (Paths are slow to make)
        self.paths: dict[str, CassetteFile] = dict(previous.paths) if previous else {}
        self.entries: dict[str, dict[str, Any]] = dict(previous.entries) if previous else {}
        # key -> why it is not a usable cassette
        self.problems: dict[str, str] = dict(previous.problems) if previous else {}
        # key -> (record, its entry)
        self.rows: dict[str, tuple[list, dict[str, Any]]] = dict(previous.rows) if previous else {}

    def put(self, key: str, path: CassetteFile, record: list, local: bool) -> None:
        if local:
            self.records[key] = record
        self.paths[key] = path
        if isinstance(record[2], str):
            self.problems[key] = record[2]
            self.entries.pop(key, None)
            return
        self.problems.pop(key, None)
        row = self.rows.get(key)
        # an entry is made once per record: 50,000 dicts take time
        if row is None or row[0] is not record:
            row = self.rows[key] = (record, dict(zip(FIELDS, record[2], strict=False)))
        self.entries[key] = row[1]

    def drop(self, keys: list[str]) -> None:
        for key in keys:
            for table in (self.records, self.paths, self.entries, self.problems, self.rows):
                table.pop(key, None)


class CassetteIndex:
    """The cassettes at ``location`` (a directory, one file, or an ``s3://`` prefix), each addressed by a key.

    A key is the cassette's path relative to the directory (or prefix), with ``/``
    separators. Only keys that a scan found can be resolved, so a key never reaches a
    file outside. ``limits`` bound reading each cassette (default: the environment's).
    """

    def __init__(self, location: str | os.PathLike, limits: ReadLimits | None = None) -> None:
        self.source = location  # as given, for cassette_files
        self.limits = limits if limits is not None else ReadLimits.from_env()
        self.location: Path | None = None if is_url(location) else Path(location)  # None for a URL
        self.root: Path | str = str(location).rstrip("/") if self.location is None else (
            self.location if self.location.is_dir() else self.location.parent
        )  # fmt: skip
        self._tables = _Tables()
        self._real_root: str | None = None
        self._saved: dict[str, list] = {}  # the records last loaded or saved...
        self._saved_stamp: _Stamp | None = (
            None  # ...and the index file's stamp then: unchanged, it is not read again
        )
        self._scanned_at = 0.0  # when the last full scan began (time.monotonic())
        self._directories: dict[
            str, tuple[int, int]
        ] = {}  # directory -> (its mtime, the time it was read), in ns

    @property
    def entries(self) -> dict[str, dict[str, Any]]:
        """The summary of each usable cassette found, by key."""
        return self._tables.entries

    @property
    def problems(self) -> dict[str, str]:
        """Why each unusable file found is not a usable cassette, by key."""
        return self._tables.problems

    def _local_dir(self) -> bool:
        return self.location is not None and self.location.is_dir()

    @property
    def index_file(self) -> Path | None:
        """The file this directory's index is saved in; None for a single file or a URL."""
        if not self._local_dir():
            return None
        digest = hashlib.sha256(os.fsencode(os.path.realpath(self.root))).hexdigest()[:32]
        return index_home() / digest

    def _limits_key(self) -> list[int]:
        return [self.limits.max_bytes, self.limits.max_depth, self.limits.max_digits]

    def _load_saved(self, index_file: Path | None) -> dict[str, list]:
        if index_file is None:
            return {}
        stamp = _stamp(index_file)
        if stamp is None or stamp == self._saved_stamp:
            return self._saved if stamp is not None else {}
        try:
            saved = _decoded(index_file.read_bytes())
        except (OSError, ValueError):
            return {}
        if time.time() - stamp[0] / 1e9 > _DAY_SECONDS:
            with contextlib.suppress(OSError):
                os.utime(index_file)  # in use: not pruned
            stamp = _stamp(index_file)
        header = (
            (saved.get("version"), saved.get("fields"), saved.get("limits"), saved.get("by"))
            if isinstance(saved, dict)
            else None
        )
        # another release may read what this one found unusable: its index is read anew
        files = (
            saved.get("files")
            if header == (_INDEX_VERSION, list(FIELDS), self._limits_key(), __version__)
            else None
        )
        if not isinstance(files, dict):
            return {}
        self._saved, self._saved_stamp = (
            {key: record for key, record in files.items() if _usable(record)},
            stamp,
        )
        return self._saved

    def _save(self, index_file: Path | None, files: dict[str, list]) -> None:
        if index_file is None:
            return
        data = _encoded(
            {
                "version": _INDEX_VERSION,
                "fields": list(FIELDS),
                "limits": self._limits_key(),
                "by": __version__,
                "files": files,
            }
        )
        try:
            index_file.parent.mkdir(parents=True, exist_ok=True)
            _prune(index_file.parent)
            replace(index_file, data)
        except OSError:
            return  # an unwritable cache: listing still works, it just re-reads changed files each time
        self._saved, self._saved_stamp = files, _stamp(index_file)
        with contextlib.suppress(OSError):
            # an older version's index, in the cassette directory
            os.unlink(os.path.join(self.root, _LEGACY_NAME))

    def _files(self) -> list[tuple[str, CassetteFile]]:
        """(key, file) of every request cassette at the location, in key order; the directories' mtimes noted."""
        if self._local_dir():
            found: dict[str, int] = {}
            read_at = time.time_ns()
            files = walk(str(self.root), found)
            self._directories = {directory: (mtime, read_at) for directory, mtime in found.items()}
            return [
                ("/".join(parts), path)
                for parts, path in files
                if not is_process_cassette_name(parts[-1])
            ]
        return [(self._key(path), path) for path in cassette_files(self.source)]

    def _key(self, path: CassetteFile) -> str:
        """The key of a file found below a URL prefix, or of a file given alone: its path below the root."""
        text = str(path)
        prefix = f"{self.root}/"
        return text[len(prefix) :] if text.startswith(prefix) else text.rsplit("/", 1)[-1]

    def _prefix(self, directory: str) -> str:
        """What the keys of the files below ``directory`` start with."""
        relative = os.path.relpath(directory, self.root)
        return "" if relative == "." else relative.replace(os.sep, "/") + "/"

    def _changed_directories(self) -> list[str]:
        """The directories modified since they were read, shallowest first. One modified within a
        second before it was read counts as changed too: an mtime is coarse, so a file added
        just after the reading could leave it the same."""
        changed = []
        for directory, (mtime, read_at) in self._directories.items():
            stamp = _stamp(directory)
            if stamp is None or stamp[0] != mtime or mtime > read_at - 1_000_000_000:
                changed.append(directory)
        return sorted(changed, key=lambda directory: directory.count(os.sep))

    def refresh(self, recent: float = 0.0) -> CassetteIndex:
        """Scan the location: read new and changed cassettes, forget removed ones, save the index.

        ``recent`` (seconds): within that long of the last full scan, read again only the
        directories that changed since they were read. Cassettes added, removed or renamed are
        seen at once (their directory changes); a file rewritten in place, at the next full scan.
        """
        index_file = self.index_file
        if recent and self._directories and time.monotonic() - self._scanned_at < recent:
            changed = self._changed_directories()
            if not changed:
                return self
            saved = self._tables.records
            tables = _Tables(self._tables)
            for directory in changed:
                self._rescan(directory, tables, saved)
        else:
            self._scanned_at = time.monotonic()
            saved = self._load_saved(index_file)
            tables = _Tables()
            tables.rows = self._tables.rows  # entries of unchanged records are kept
            for key, path in self._files():
                self._put(tables, key, path, saved)
            tables.rows = {key: tables.rows[key] for key in tables.entries}
        if tables.records != saved:
            self._save(index_file, tables.records)
        self._tables = tables
        return self

    def _put(self, tables: _Tables, key: str, path: CassetteFile, saved: dict[str, list]) -> None:
        """The file's record in ``tables``: the saved one while the file has the same mtime and size, else read now."""
        local = self.location is not None
        stamp = _stamp(path) if local else None
        record = saved.get(key)
        if stamp is None or record is None or (record[0], record[1]) != stamp:
            record = [
                *(stamp or (None, None)),
                self._read(key, path) if self._inside(path) else LEADS_OUTSIDE,
            ]
        tables.put(key, path, record, local)

    def _rescan(self, directory: str, tables: _Tables, saved: dict[str, list]) -> None:
        """Read ``directory`` again: its files (the ``saved`` record of each unchanged one kept), and
        the directories new below it; forget what went away."""
        if directory not in self._directories:
            return  # forgotten with a directory above it
        prefix = self._prefix(directory)
        known = {other for other in self._directories if os.path.dirname(other) == directory}
        tables.drop(
            [
                key
                for key in tables.paths
                if key.startswith(prefix) and "/" not in key[len(prefix) :]
            ]
        )
        try:
            mtime = os.stat(directory).st_mtime_ns
            read_at = time.time_ns()
            files, subdirectories = directory_entries(directory)
        except OSError:  # gone: so is everything below it
            self._forget(directory, tables)
            return
        self._directories[directory] = (mtime, read_at)
        for name, path in files:
            if not is_process_cassette_name(name):
                self._put(tables, prefix + name, path, saved)
        present = {path for _, path in subdirectories}
        for gone in known - present:
            self._forget(gone, tables)
        for name, path in subdirectories:
            if path not in known:
                found: dict[str, int] = {}
                for parts, file in walk(path, found):
                    if not is_process_cassette_name(parts[-1]):
                        self._put(tables, prefix + name + "/" + "/".join(parts), file, saved)
                self._directories.update(
                    {below: (mtime, read_at) for below, mtime in found.items()}
                )

    def _forget(self, directory: str, tables: _Tables) -> None:
        prefix = self._prefix(directory)
        tables.drop([key for key in tables.paths if key.startswith(prefix)])
        for below in [
            other
            for other in self._directories
            if other == directory or other.startswith(directory + os.sep)
        ]:
            del self._directories[below]

    def _read(self, key: str, path: CassetteFile) -> list | str:
        """The summary values of a cassette, or the reason it cannot be used (replay included: every call is readable)."""
        try:
            doc = load_cassette(path, limits=self.limits)
            recorded_views(doc, str(path))
            summary = summarise(key, doc)
        except CassetteError as exc:
            return exc.problem
        return [summary[name] for name in FIELDS]

    def _file(self, key: str) -> CassetteFile:
        path = self._tables.paths[key]
        return Path(path) if self.location is not None else path

    def files(self) -> dict[str, CassetteFile]:
        """The file of each usable cassette found by the last scan, by key."""
        return {key: self._file(key) for key in self.entries}

    def unusable(self) -> list[CassetteError]:
        """Every unusable file of the last scan, in key order, as the error reading it raised."""
        return [CassetteError(self._file(key), self.problems[key]) for key in sorted(self.problems)]

    def _inside(self, path: CassetteFile) -> bool:
        """False for a link that leads out of the directory: its target is never read."""
        if self._real_root is None:
            if not self._local_dir():  # one file, or a URL: everything found is what was asked for
                return True
            self._real_root = os.path.realpath(self.root)  # once: a scan asks for every new file
        return not leads_outside(path, self._real_root)

    def path_of(self, key: str) -> CassetteFile | None:
        """The file of a key found by the last scan, or None (unknown keys never become paths)."""
        if key not in self.entries:
            return None
        path = self._file(key)
        return path if self._inside(path) else None

    def size_of(self, key: str) -> int | None:
        """The size in bytes of a local cassette file found by the last scan (None for a URL's)."""
        record = self._tables.records.get(key)
        return record[1] if record is not None else None

    def problem_of(self, key: str) -> str | None:
        """Why the file of a key found by the last scan is not a usable cassette; None if it is, or is unknown."""
        return self.problems.get(key)

    def find(self, reference: str) -> list[str]:
        """The keys that ``reference`` names: a key, a cassette id, or the start of a key or file name."""
        if reference in self.entries:
            return [reference]
        return [
            key
            for key, entry in self.entries.items()
            if entry["id"] == reference or _named(key, reference)
        ]

    def find_unusable(self, reference: str) -> list[CassetteError]:
        """Why each unusable file that ``reference`` names (as :meth:`find` would, by the id its
        name carries) could not be read: asked for by id, it is no cassette the scan kept."""
        return [
            CassetteError(self._file(key), problem)
            for key, problem in sorted(self.problems.items())
            if _named(key, reference) or Path(key).name.split(".")[0].endswith(f"__{reference}")
        ]


def _named(key: str, reference: str) -> bool:
    """``reference`` is ``key`` or the start of it or of its file name."""
    return key.startswith(reference) or key.rsplit("/", 1)[-1].startswith(reference)
