"""The cassette index: one summary line per cassette, cached beside the cassettes.

Listing 50,000 cassettes, or starting to replay them, must not mean parsing 50,000 JSON
files. The index keeps each cassette's summary keyed by its path relative to the
directory, with the file's mtime and size; a scan stats every file and re-reads (and
checks, as replay would) only those that are new or changed, and drops those that are
gone. Files are found with :func:`cassette_files` and read with :func:`load_cassette`, so
whatever locations those accept, the index accepts: ``.json`` and ``.json.gz`` files, and
``s3://`` prefixes. Remote objects are not stat'ed and no index is
saved beside them: they are re-read on every scan.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Optional, Union

from timetracer_otel.cassette.location import CassetteFile, is_url
from timetracer_otel.cassette.reader import CassetteError, cassette_files, load_cassette
from timetracer_otel.cassette.storage import replace
from timetracer_otel.replayers.matching import body_digest
from timetracer_otel.replayers.session import recorded_views

__all__ = ["INDEX_NAME", "FIELDS", "LISTED", "CassetteIndex", "listing", "summarise"]

INDEX_NAME = ".timetracer-index"  # no .json suffix: it is not a cassette, and a dot file is skipped by scans
_INDEX_VERSION = 2  # 2: a cassette whose calls cannot be replayed is a problem; body digest and fingerprint
_OUTSIDE = "is a link to a file outside the cassette directory"
LISTED = ("key", "id", "recorded_at", "service", "method", "path", "route", "query", "status", "duration_ms", "calls", "error")
FIELDS = (*LISTED, "body_digest", "fingerprint")  # the last two choose a request's cassette in replay


def listing(entry: dict[str, Any]) -> dict[str, Any]:
    """The fields of an index entry that listings show."""
    return {name: entry[name] for name in LISTED}


def summarise(key: str, doc: dict[str, Any]) -> dict[str, Any]:
    """The listing fields of one cassette document, and what replay chooses it by (request body digest, fingerprint)."""
    request, response, error = doc["request"], doc["response"], doc.get("error")
    return {
        "key": key,
        "id": doc.get("id"),
        "recorded_at": doc.get("recorded_at"),
        "service": doc.get("service"),
        "method": request["method"],
        "path": request["path"],
        "route": request.get("route"),
        "query": request.get("query", ""),
        "status": response["status"],
        "duration_ms": doc.get("duration_ms"),
        "calls": len(doc["calls"]),
        "error": error.get("type") if isinstance(error, dict) else None,
        "body_digest": body_digest(request["body"], request["headers"]),
        "fingerprint": request.get("fingerprint"),
    }


def _fingerprint(path: CassetteFile) -> Optional[list[int]]:
    if isinstance(path, str):  # a URL
        return None
    try:
        stat = os.stat(path)
    except (OSError, TypeError, ValueError):
        return None
    return [stat.st_mtime_ns, stat.st_size]


class CassetteIndex:
    """The cassettes at ``location`` (a directory, one file, or an ``s3://`` prefix), each addressed by a key.

    A key is the cassette's path relative to the directory (or prefix), with ``/``
    separators. Only keys that a scan found can be resolved, so a key never reaches a
    file outside.
    """

    def __init__(self, location: Union[str, os.PathLike]) -> None:
        self.source = location  # as given, for cassette_files
        self.location: Optional[Path] = None if is_url(location) else Path(location)  # None for a URL
        self.root: Union[Path, str] = str(location).rstrip("/") if self.location is None else (
            self.location if self.location.is_dir() else self.location.parent
        )  # fmt: skip
        self.entries: dict[str, dict[str, Any]] = {}
        self.problems: dict[str, str] = {}  # key -> why the file is not a usable cassette
        self._paths: dict[str, CassetteFile] = {}
        self._real_root: Optional[str] = None

    def _local_dir(self) -> bool:
        return self.location is not None and self.location.is_dir()

    @property
    def _index_file(self) -> Optional[Path]:
        return Path(self.root, INDEX_NAME) if self._local_dir() else None

    def _load_cache(self) -> dict[str, list]:
        index_file = self._index_file
        if index_file is None:
            return {}
        try:
            cached = json.loads(index_file.read_bytes())
        except (OSError, ValueError):
            return {}
        if not isinstance(cached, dict) or cached.get("version") != _INDEX_VERSION or cached.get("fields") != list(FIELDS):
            return {}
        files = cached.get("files")
        return files if isinstance(files, dict) else {}

    def _save_cache(self, files: dict[str, list]) -> None:
        index_file = self._index_file
        if index_file is None:
            return
        data = json.dumps({"version": _INDEX_VERSION, "fields": list(FIELDS), "files": files}, separators=(",", ":"))
        try:
            replace(index_file, data.encode("utf-8"))
        except OSError:
            pass  # a read-only directory: listing still works, it just re-reads changed files each time

    def _key(self, path: CassetteFile) -> str:
        text = str(path)
        prefix = f"{self.root}{os.sep if self.location is not None else '/'}"
        if text.startswith(prefix):
            return text[len(prefix) :].replace(os.sep, "/")
        return path.name if isinstance(path, Path) else text.rsplit("/", 1)[-1]

    def refresh(self) -> "CassetteIndex":
        """Scan the location: read new and changed cassettes, forget removed ones, save the index."""
        cache = self._load_cache()
        files: dict[str, list] = {}
        entries: dict[str, dict[str, Any]] = {}
        problems: dict[str, str] = {}
        paths: dict[str, CassetteFile] = {}
        changed = False
        for path in cassette_files(self.source):
            key = self._key(path)
            fingerprint = _fingerprint(path)
            cached = cache.get(key)
            if fingerprint is not None and cached is not None and cached[:2] == fingerprint:
                record = cached
            else:
                record = [*(fingerprint or [None, None]), self._read(key, path) if self._inside(path) else _OUTSIDE]
                changed = True
            if fingerprint is not None:
                files[key] = record
            paths[key] = path
            if isinstance(record[2], list):
                entries[key] = dict(zip(FIELDS, record[2]))
            else:
                problems[key] = record[2]
        if changed or files.keys() != cache.keys():
            self._save_cache(files)
        self.entries, self.problems, self._paths = entries, problems, paths
        return self

    @staticmethod
    def _read(key: str, path: CassetteFile) -> Union[list, str]:
        """The summary values of a cassette, or the reason it cannot be used (replay included: every call is readable)."""
        try:
            doc = load_cassette(path)
            recorded_views(doc, str(path))
            summary = summarise(key, doc)
        except CassetteError as exc:
            return exc.problem
        return [summary[name] for name in FIELDS]

    def files(self) -> dict[str, CassetteFile]:
        """The file of each usable cassette found by the last scan, by key."""
        return {key: self._paths[key] for key in self.entries}

    def first_problem(self) -> Optional[CassetteError]:
        """The first unusable file of the last scan (by key), as the error reading it raised; None if all are usable."""
        if not self.problems:
            return None
        key = min(self.problems)
        return CassetteError(self._paths[key], self.problems[key])

    def _inside(self, path: CassetteFile) -> bool:
        """False for a link that leads out of the directory: its target is never read."""
        if self._real_root is None:
            if not self._local_dir():  # one file, or a URL: everything found is what was asked for
                return True
            self._real_root = os.path.realpath(self.root)  # once: a scan asks for every new file
        return os.path.realpath(path).startswith(self._real_root + os.sep)

    def path_of(self, key: str) -> Optional[CassetteFile]:
        """The file of a key found by the last scan, or None (unknown keys never become paths)."""
        path = self._paths.get(key) if key in self.entries else None
        return path if path is not None and self._inside(path) else None

    def find(self, reference: str) -> list[str]:
        """The keys that ``reference`` names: a key, a cassette id, or the start of a key or file name."""
        if reference in self.entries:
            return [reference]
        return [
            key
            for key, entry in self.entries.items()
            if entry["id"] == reference or key.startswith(reference) or key.rsplit("/", 1)[-1].startswith(reference)
        ]
