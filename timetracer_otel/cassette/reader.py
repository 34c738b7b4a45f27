"""Reading cassettes: one clear :class:`CassetteError` for anything that is not a usable cassette.

Every reader goes through :func:`load_cassette` and :func:`cassette_files`, so each accepts
local files and ``s3://`` URLs (see :mod:`.location`), plain ``.json`` and gzip-compressed
``.json.gz`` alike. Request cassettes and process cassettes (the calls a process made
outside its requests) share the format but not the readers: listing a directory gives
one kind or the other, and loading a file checks it is the kind asked for.
"""

from __future__ import annotations

import gzip
import json
import os
import re
import zlib
from pathlib import Path
from typing import Any, Optional, Union

import orjson

from . import FORMAT_NAME, FORMAT_VERSION
from .location import CassetteFile, is_cassette_name, is_url, list_files, read_bytes
from .naming import is_process_cassette_name

__all__ = ["CassetteError", "load_cassette", "cassette_files", "process_cassette_files", "SCOPES"]

SCOPES = ("request", "process")  # what a cassette records; a document without "scope" records a request

# Integers orjson reads as floats: beyond 64 bits unsigned, or below -2**63 (nanosecond times fit).
_LONG_INTEGER = re.compile(rb"\d{20}|-\d{19}")
_LAST_TOKEN = re.compile(r'[^\s,:\[\]{}"]*')


class CassetteError(Exception):
    """A cassette file that cannot be used: missing, unreadable, not JSON, or not a cassette."""

    def __init__(self, path: Union[str, os.PathLike], problem: str) -> None:
        self.path = str(path)
        self.problem = problem
        super().__init__(f"timetracer: cannot use cassette {self.path}: {problem}")


def _require(condition: bool, path: CassetteFile, problem: str) -> None:
    if not condition:
        raise CassetteError(path, problem)


def _check_http_message(message: Any, path: CassetteFile, where: str, keys: tuple[str, ...]) -> None:
    _require(isinstance(message, dict), path, f"{where} is not an object")
    missing = [key for key in keys if key not in message]
    _require(not missing, path, f"{where} lacks {', '.join(missing)}")


def _check_scope(doc: dict[str, Any], path: CassetteFile, scope: str) -> None:
    found = doc.get("scope", "request")
    _require(found in SCOPES, path, f"'scope' is {found!r}, expected 'process' or none")
    if found == "process":
        _require(scope == "process", path, "is a process cassette (the calls made outside requests), not a request's")
    _require(found == scope, path, "is a request's cassette, not a process cassette")


def validate_document(doc: Any, path: CassetteFile, scope: str = "request") -> dict[str, Any]:
    """Check the parts replay relies on, and that the document records ``scope``; return the document."""
    _require(isinstance(doc, dict), path, "the top level is not a JSON object")
    _require(doc.get("format") == FORMAT_NAME, path, f"'format' is {doc.get('format')!r}, expected {FORMAT_NAME!r}")
    version = doc.get("version")
    _require(
        version == FORMAT_VERSION,
        path,
        f"format version {version!r} is not supported (this timetracer reads version {FORMAT_VERSION})",
    )
    _check_scope(doc, path, scope)
    if scope == "request":
        _check_http_message(doc.get("request"), path, "'request'", ("method", "path", "headers", "body"))
        _check_http_message(doc.get("response"), path, "'response'", ("status", "headers", "body"))
    calls = doc.get("calls")
    _require(isinstance(calls, list), path, "'calls' is not a list")
    for index, call in enumerate(calls):
        _require(isinstance(call, dict) and "protocol" in call, path, f"calls[{index}] has no 'protocol'")
        if call["protocol"] == "http":
            _check_http_message(call.get("request"), path, f"calls[{index}].request", ("method", "url", "body"))
    return doc


def _json_problem(exc: json.JSONDecodeError, text: str) -> str:
    where = f"line {exc.lineno} column {exc.colno}: {exc.msg.removesuffix(' starting at')}"
    # The parser stopped in the file's last token (a cut ``tru``, ``12``, or nothing at all); a strict
    # JSON string holds no raw newline, so an unterminated one also runs to the end of the file.
    if _LAST_TOKEN.fullmatch(text[exc.pos :].rstrip()) or exc.msg.startswith("Unterminated string"):
        return f"is truncated: the JSON ends early ({where})"
    return f"is not valid JSON at {where}"


def _read(file: CassetteFile) -> bytes:
    """The file's bytes; a ``*.gz`` file's decompressed (the name says the format, as when writing)."""
    try:
        raw = read_bytes(file)
    except FileNotFoundError:
        raise CassetteError(file, "no such file") from None
    except IsADirectoryError:
        raise CassetteError(file, "is a directory, not a cassette file") from None
    except OSError as exc:
        raise CassetteError(file, f"cannot be read ({exc.strerror or exc})") from None
    if not str(file).endswith(".gz"):
        return raw
    try:
        return gzip.decompress(raw)
    except EOFError:
        raise CassetteError(file, "is a truncated gzip file") from None
    except (OSError, zlib.error) as exc:
        raise CassetteError(file, f"is not a valid gzip file ({exc})") from None


def load_cassette(path: Union[str, os.PathLike], scope: str = "request") -> dict[str, Any]:
    """The cassette document at ``path`` (a file or a URL), checked; :class:`CassetteError` if it is unusable
    or records another ``scope`` than asked for."""
    file: CassetteFile = str(path) if is_url(path) else Path(path)
    raw = _read(file)
    try:
        # orjson is several times faster, but reads an integer beyond 64 bits as a float: such text, and
        # anything orjson refuses, gets the standard parser (and its messages).
        doc = _parsed(file, raw) if _LONG_INTEGER.search(raw) else orjson.loads(raw)
    except orjson.JSONDecodeError:
        doc = _parsed(file, raw)
    try:
        return validate_document(doc, file, scope)
    except CassetteError:
        raise
    except Exception as exc:  # noqa: BLE001 - any shape error becomes the one clear error
        raise CassetteError(file, f"has an unexpected shape ({type(exc).__name__}: {exc})") from None


def _parsed(file: CassetteFile, raw: bytes) -> Any:
    """The standard library's reading of ``raw`` (integers beyond 64 bits, NaN, deep nesting), or why it is no JSON."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise CassetteError(file, "is not UTF-8 text (a binary or compressed file?)") from None
    if not text.strip():
        raise CassetteError(file, "is empty")
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise CassetteError(file, _json_problem(exc, text)) from None
    except RecursionError:
        raise CassetteError(file, "is nested too deeply to be read") from None


def _below(path: Union[str, os.PathLike]) -> Optional[list[CassetteFile]]:
    """Every cassette file below a directory or URL prefix (both kinds); None when ``path`` is a file."""
    if is_url(path):
        try:
            found = list_files(str(path))
        except OSError as exc:
            raise CassetteError(path, f"cannot be listed ({exc})") from None
        return None if found == [path] else found
    root = Path(path)
    if root.is_dir():
        return sorted((p for p in root.rglob("*.json*") if is_cassette_name(p.name)), key=lambda p: p.parts)  # as Path order, faster
    if not root.exists():
        raise CassetteError(root, "no such file or directory")
    return None


def _name(file: CassetteFile) -> str:
    return file.name if isinstance(file, Path) else file.rsplit("/", 1)[-1]


def cassette_files(path: Union[str, os.PathLike]) -> list[CassetteFile]:
    """``path`` itself if it is a file; every request cassette (``*.json``, ``*.json.gz``) below it if it is a directory.

    A URL gives URLs: the object itself, or the request cassettes below the prefix.
    """
    found = _below(path)
    if found is None:
        return [str(path)] if is_url(path) else [Path(path)]
    return [file for file in found if not is_process_cassette_name(_name(file))]


def process_cassette_files(path: Union[str, os.PathLike]) -> list[CassetteFile]:
    """The process cassettes below a directory or URL prefix; none for a file (a cassette given alone)."""
    found = _below(path)
    return [] if found is None else [file for file in found if is_process_cassette_name(_name(file))]
