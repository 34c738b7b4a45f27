"""Recorded values on a terminal: every character a terminal acts on is shown escaped.

A cassette holds what clients sent: an ESC or OSC sequence in a path, a header or a body
would retitle, clear or rewrite the reader's terminal if printed as it is, and a bidi
override would make a line read other than it is. So every command, and every log line
quoting a recorded value, prints text through :func:`printable`.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Callable

__all__ = ["cut", "cut_pair", "printable", "printable_json"]

# Control (C0, DEL, C1), format (bidi overrides, zero-width), surrogate (the bytes of a file
# name that is not UTF-8) characters, and the line and paragraph separators.
_ESCAPED_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Zl", "Zp"})
_FILE_NAME_BYTES = range(0xDC80, 0xDD00)  # how Python reads an undecodable byte of a file name


_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escape(char: str) -> str:
    if char in _NAMED:
        return _NAMED[char]
    code = ord(char)
    if code in _FILE_NAME_BYTES:
        return f"\\x{code - 0xDC00:02x}"
    return (
        f"\\x{code:02x}"
        if code < 0x100
        else f"\\u{code:04x}"
        if code < 0x10000
        else f"\\U{code:08x}"
    )


def _json_escape(char: str) -> str:
    data = char.encode("utf-16-be", "surrogatepass")
    return "".join(
        f"\\u{int.from_bytes(data[i : i + 2], 'big'):04x}" for i in range(0, len(data), 2)
    )


def _line(text: str, escape: Callable[[str], str] = _escape) -> str:
    if text.isprintable():  # the usual case, checked at C speed
        return text
    return "".join(
        char
        if char.isprintable() or unicodedata.category(char) not in _ESCAPED_CATEGORIES
        else escape(char)
        for char in text
    )


def printable(text: str, multiline: bool = False) -> str:
    """``text`` with control, format and surrogate characters written as escapes (``\\x1b``,
    ``\\u202e``); with ``multiline``, newlines, tabs and CRLF line ends are kept (a body), else
    escaped too (a cell)."""
    if text.isprintable():
        return text
    if not multiline:
        return _line(text)
    return "\n".join(_body_line(line) for line in text.split("\n"))


def _body_line(line: str) -> str:
    """One line of a body: tabs kept, and the CR of a CRLF (harmless before the newline)."""
    end = "\r" if line.endswith("\r") else ""
    return "\t".join(_line(part) for part in line[: len(line) - len(end)].split("\t")) + end


def printable_json(text: str) -> str:
    """JSON text (as ``json.dumps`` writes it) with the same characters written as JSON escapes
    (``\\u001b``): still the same JSON, and safe on a terminal (a file name that is not UTF-8 too)."""
    return "\n".join(_line(line, _json_escape) for line in text.split("\n"))


def cut(text: str, width: int, start: int = 0) -> str:
    """``width`` characters of ``text`` from ``start``, an ellipsis where some are left out."""
    end = start + width
    return ("…" if start else "") + text[start:end] + ("…" if end < len(text) else "")


def cut_pair(old: str, new: str, width: int) -> tuple[str, str]:
    """Two differing texts, each cut to ``width`` characters around where they first differ: two
    long texts alike in their first characters (an SQL statement that differs in its ``WHERE``
    clause, a long JSON body) would look the same cut at their start."""
    pairs = zip(old, new, strict=False)
    first = next((i for i, (a, b) in enumerate(pairs) if a != b), min(len(old), len(new)))
    start = max(first - width // 3, 0) if max(len(old), len(new)) > width else 0
    return cut(old, width, start), cut(new, width, start)
