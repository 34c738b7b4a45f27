"""Parsing JSON that may be hostile, within :class:`~timetracer_otel.config.ReadLimits`.

The two parsers differ where a hostile file pushes them: orjson refuses nesting beyond
1024 levels and reads integers beyond 64 bits as floats, the standard parser runs out of
recursion near 1000 levels and refuses integers of more than 4300 digits. So one limit of
each kind applies whichever parser reads the text: what orjson read is measured as a tree
(no copy of the text: a cassette of many small values would cost several times its size);
before the standard parser runs, a scan of the bytes with their strings emptied measures the
nesting and the longest number.
"""

from __future__ import annotations

import json
import re
from array import array
from collections.abc import Sequence
from itertools import accumulate
from typing import Any

import orjson

from timetracer_otel.config import ReadLimits

__all__ = ["JSONProblem", "loads", "nesting", "describe_path"]

_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_NOT_BRACKET = bytes(set(range(256)) - set(b"[]{}"))
_STEPS = bytes.maketrans(b"[{]}", b"\x01\x01\xff\xff")  # as signed bytes: +1 opens, -1 closes
# every digit a 0: runs are found with ``in``
_DIGITS = bytes.maketrans(b"0123456789", b"0000000000")
_LAST_TOKEN = re.compile(r'[^\s,:\[\]{}"]*')
_KEY_CHARS = 40


class JSONProblem(ValueError):
    """Text that is not JSON, or JSON beyond the limits; the message (``is truncated: ...``,
    ``holds a number of ... digits at ...``) says which, and where, of the text named before it."""


class _LongNumber:
    """What a number beyond the digit limit is read as, so that the field holding it can be named."""

    def __init__(self, digits: int) -> None:
        self.digits = digits


def _nesting(skeleton: bytes) -> int:
    """How deeply the brackets of ``skeleton`` (JSON text without its strings) nest."""
    brackets = skeleton.translate(None, _NOT_BRACKET)
    if not brackets:
        return 0
    return max(accumulate(array("b", brackets.translate(_STEPS))))


def nesting(text: bytes | bytearray) -> int:
    """How deeply the JSON ``text`` nests (its strings left out)."""
    return _nesting(_STRING.sub(b"", text))


def describe_path(parts: Sequence[str | int]) -> str:
    """``calls[0].request.status`` from its keys and indices (long keys cut)."""
    text = ""
    for part in parts:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            key = part if len(part) <= _KEY_CHARS else part[: _KEY_CHARS - 1] + "…"
            text += f".{key}" if text else key
    return text or "the top level"


def _long_number(document: Any) -> tuple[str, int] | None:
    """Where the first number beyond the limit is, and its digits (iterative: any depth); None if none is."""
    stack: list[tuple[Any, tuple[str | int, ...]]] = [(document, ())]
    while stack:
        node, path = stack.pop()
        if isinstance(node, _LongNumber):
            return describe_path(path), node.digits
        if isinstance(node, dict):
            stack.extend((value, (*path, key)) for key, value in reversed(list(node.items())))
        elif isinstance(node, list):
            stack.extend(
                (value, (*path, index)) for index, value in reversed(list(enumerate(node)))
            )
    return None


def _syntax_problem(exc: json.JSONDecodeError, text: str) -> str:
    where = f"line {exc.lineno} column {exc.colno}: {exc.msg.removesuffix(' starting at')}"
    # A document that starts as JSON and stops in its last token (a cut ``tru``, ``12``, or nothing
    # at all) was cut short; a strict JSON string holds no raw newline, so an unterminated one also
    # runs to the end of the text.
    started = text.lstrip()[:1] in ("{", "[")
    if started and (
        _LAST_TOKEN.fullmatch(text[exc.pos :].rstrip()) or exc.msg.startswith("Unterminated string")
    ):
        return f"is truncated: the JSON ends early ({where})"
    return f"is not valid JSON at {where}"


def _standard(raw: bytes | bytearray, limits: ReadLimits) -> Any:
    """The standard library's reading (NaN, integers beyond 64 bits, its messages); long numbers become markers."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        if raw[:2] == b"\x1f\x8b":
            raise JSONProblem("is gzip-compressed: name it *.json.gz to read it") from None
        raise JSONProblem("is not UTF-8 text (a binary file?)") from None
    if not text.strip():
        raise JSONProblem("is empty")

    def integer(digits: str) -> Any:
        count = len(digits.lstrip("-"))
        return _LongNumber(count) if count > limits.max_digits else int(digits)

    def real(digits: str) -> Any:
        count = sum(ch.isdigit() for ch in digits)
        return _LongNumber(count) if count > limits.max_digits else float(digits)

    try:
        return json.loads(text, parse_int=integer, parse_float=real)
    except json.JSONDecodeError as exc:
        raise JSONProblem(_syntax_problem(exc, text)) from None
    except RecursionError:
        raise JSONProblem("is nested too deeply to be read") from None
    except ValueError as exc:  # an integer beyond this interpreter's own digit limit
        raise JSONProblem(f"holds a number this Python cannot read ({exc})") from None


def _runs(text: bytes | bytearray, limits: ReadLimits) -> tuple[bool, bool]:
    """Whether ``text`` holds a number orjson would read as a float (beyond 64 bits), and one beyond the limit."""
    digits = text.translate(_DIGITS)
    beyond_64_bits = b"00000000000000000000" in digits or b"-0000000000000000000" in digits
    return beyond_64_bits, beyond_64_bits and b"0" * (limits.max_digits + 1) in digits


def _deeper_than(document: Any, limit: int) -> bool:
    """Whether the containers of a parsed ``document`` nest more than ``limit`` levels (iterative)."""
    stack = [(document, 1)]
    while stack:
        node, level = stack.pop()
        if level > limit:
            return True
        for value in node.values() if type(node) is dict else node:
            if type(value) is dict or type(value) is list:
                stack.append((value, level + 1))
    return False


def _too_deep(depth: int, limits: ReadLimits) -> JSONProblem:
    return JSONProblem(
        f"is nested {depth} levels deep; TIMETRACER_READ_MAX_DEPTH allows {limits.max_depth}"
    )


def _skeleton(raw: bytes | bytearray, limits: ReadLimits) -> bytes:
    """``raw`` without its strings (where digits and brackets mean nothing), its nesting within ``limits``."""
    skeleton = _STRING.sub(b"", raw)
    depth = _nesting(skeleton)
    if depth > limits.max_depth:
        raise _too_deep(depth, limits)
    return skeleton


def loads(raw: bytes | bytearray, limits: ReadLimits) -> Any:
    """The JSON value in ``raw``; :class:`JSONProblem` when it is no JSON or goes beyond ``limits``."""
    long_integer, long_number = _runs(raw, limits)
    if long_integer:  # or only digits in strings: look closer
        long_integer, long_number = _runs(_skeleton(raw, limits), limits)
    if long_integer:
        document = _standard(raw, limits)
    else:
        try:
            document = orjson.loads(raw)
        except orjson.JSONDecodeError:
            # NaN, nesting beyond orjson's, or no JSON: the standard parser says where
            _skeleton(raw, limits)
            document = _standard(raw, limits)
        else:
            containers = raw.count(b"[") + raw.count(b"{")
            if containers > limits.max_depth and _deeper_than(document, limits.max_depth):
                raise _too_deep(nesting(raw), limits)
            return document
    found = _long_number(document) if long_number else None
    if found is not None:
        where, digits = found
        raise JSONProblem(
            f"holds a number of {digits} digits at {where}; TIMETRACER_READ_MAX_DIGITS allows {limits.max_digits}"
        )
    return document
