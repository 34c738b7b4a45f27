"""Reading cassettes: one clear :class:`CassetteError` for anything that is not a usable cassette."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any, Union

from . import FORMAT_NAME, FORMAT_VERSION

__all__ = ["CassetteError", "load_cassette", "cassette_files"]

_LAST_TOKEN = re.compile(r'[^\s,:\[\]{}"]*')


class CassetteError(Exception):
    """A cassette file that cannot be used: missing, unreadable, not JSON, or not a cassette."""

    def __init__(self, path: Union[str, os.PathLike], problem: str) -> None:
        self.path = str(path)
        self.problem = problem
        super().__init__(f"timetracer: cannot use cassette {self.path}: {problem}")


def _require(condition: bool, path: Path, problem: str) -> None:
    if not condition:
        raise CassetteError(path, problem)


def _check_http_message(message: Any, path: Path, where: str, keys: tuple[str, ...]) -> None:
    _require(isinstance(message, dict), path, f"{where} is not an object")
    missing = [key for key in keys if key not in message]
    _require(not missing, path, f"{where} lacks {', '.join(missing)}")


def validate_document(doc: Any, path: Path) -> dict[str, Any]:
    """Check the parts replay relies on; return the document."""
    _require(isinstance(doc, dict), path, "the top level is not a JSON object")
    _require(doc.get("format") == FORMAT_NAME, path, f"'format' is {doc.get('format')!r}, expected {FORMAT_NAME!r}")
    version = doc.get("version")
    _require(
        version == FORMAT_VERSION,
        path,
        f"format version {version!r} is not supported (this timetracer reads version {FORMAT_VERSION})",
    )
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


def load_cassette(path: Union[str, os.PathLike]) -> dict[str, Any]:
    """The cassette document at ``path``, checked; :class:`CassetteError` if it is unusable."""
    file = Path(path)
    try:
        raw = file.read_bytes()
    except FileNotFoundError:
        raise CassetteError(file, "no such file") from None
    except IsADirectoryError:
        raise CassetteError(file, "is a directory, not a cassette file") from None
    except OSError as exc:
        raise CassetteError(file, f"cannot be read ({exc.strerror or exc})") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise CassetteError(file, "is not UTF-8 text (a binary or compressed file?)") from None
    if not text.strip():
        raise CassetteError(file, "is empty")
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise CassetteError(file, _json_problem(exc, text)) from None
    try:
        return validate_document(doc, file)
    except CassetteError:
        raise
    except Exception as exc:  # noqa: BLE001 - any shape error becomes the one clear error
        raise CassetteError(file, f"has an unexpected shape ({type(exc).__name__}: {exc})") from None


def cassette_files(path: Union[str, os.PathLike]) -> list[Path]:
    """``path`` itself if it is a file; every ``*.json`` cassette below it if it is a directory."""
    root = Path(path)
    if root.is_dir():
        return sorted(p for p in root.rglob("*.json") if not p.name.startswith("."))
    if not root.exists():
        raise CassetteError(root, "no such file or directory")
    return [root]
