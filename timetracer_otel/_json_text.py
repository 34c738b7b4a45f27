"""Secret members of JSON text found without parsing it, and hidden where they stand.

JSON kept as text (a body cut at the size limit, a ``text`` column or a Redis string holding a
webhook payload, the ``jsonb`` text asyncpg hands Tortoise ORM) has each member named like a
secret replaced by a JSON string standing for its value; every other byte is kept. So the text
opens byte for byte with the key, and without it still parses, ``"[REDACTED]"`` in the place
of each secret.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator

__all__ = ["with_members_hidden", "member_text"]

_COLON = re.compile(r"\s*:\s*")
_SCALAR = re.compile(r"[^,}\]\s]*")
_HOLDING_NOTHING = re.compile(r"null|true|false|\[\s*\]|\{\s*\}")


def _string_end(text: str, start: int) -> int:
    """The index after the JSON string opening at ``start`` (the text's end if it is cut)."""
    index = start + 1
    while index < len(text):
        if text[index] == "\\":
            index += 2
        elif text[index] == '"':
            return index + 1
        else:
            index += 1
    return len(text)


def _value_end(text: str, start: int) -> int:
    """The index after the JSON value at ``start``: a string, a whole container, or a scalar."""
    if start >= len(text):
        return start
    if text[start] == '"':
        return _string_end(text, start)
    if text[start] not in "{[":
        scalar = _SCALAR.match(text, start)
        return scalar.end() if scalar is not None else start
    depth, index = 0, start
    while index < len(text):
        char = text[index]
        if char == '"':
            index = _string_end(text, index)
            continue
        depth += char in "{["
        depth -= char in "}]"
        index += 1
        if depth == 0:
            break
    return index


def _json_key(quoted: str) -> str:
    try:
        key = json.loads(quoted)
    except ValueError:
        return quoted.strip('"')
    return key if isinstance(key, str) else quoted


def _secret_members(text: str, is_secret: Callable[[str], bool]) -> Iterator[tuple[str, int, int]]:
    """(name, start, end) of each member's value whose name ``is_secret``, at any depth; a
    secret value goes whole, nested containers included, even where the text is cut inside it.
    A value that holds nothing (``null``, ``false``, ``[]``) is left where it stands: hidden,
    it read as a truthy string in a replay without the key (a ``"secrets": []`` list)."""
    index = 0
    while index < len(text):
        if text[index] != '"':
            index += 1
            continue
        end = _string_end(text, index)
        colon = _COLON.match(text, end)
        if colon is not None and is_secret(key := _json_key(text[index:end])):
            end = _value_end(text, colon.end())
            if _HOLDING_NOTHING.fullmatch(text, colon.end(), end) is None:
                yield key, colon.end(), end
        index = end


def with_members_hidden(
    text: str, is_secret: Callable[[str], bool], hide: Callable[[str, str], str]
) -> str:
    """``text`` with each secret member's raw value replaced by ``"<hide(name, raw value)>"``."""
    out: list[str] = []
    done = 0
    for key, start, end in _secret_members(text, is_secret):
        out.append(f'{text[done:start]}"{hide(key, text[start:end])}"')
        done = end
    out.append(text[done:])
    return "".join(out)


def member_text(raw: str) -> str:
    """A member's raw value as it is searched for elsewhere: a string's content, else the raw text."""
    try:
        value = json.loads(raw)
    except ValueError:
        return raw
    return value if isinstance(value, str) else raw
