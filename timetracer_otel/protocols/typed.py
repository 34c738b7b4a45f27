"""Reading and hiding parts of a call held as cassette typed values (``{"$type": ...}``).

Each protocol's redaction works on its call in cassette form; these are the helpers they
share: a name given as a typed value, the items of a list or encoded tuple, and hiding
values in place.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Callable
from typing import Any

from timetracer_otel._json_text import with_members_hidden
from timetracer_otel.secret_names import SecretNames

__all__ = [
    "Hide",
    "TYPE",
    "RawJson",
    "text",
    "items",
    "names_a_secret_member",
    "hide_at",
    "hide_named_fields",
    "with_secret_members_hidden",
]

Hide = Callable[[Any], Any]  # a typed value -> what stands in its place
TYPE = "$type"
_JSON_MEMBER = re.compile(r'"((?:[^"\\]|\\.){1,128})"\s*:')


def text(value: Any) -> str | None:
    """A name given as a typed value: a string, or bytes (encoded) as UTF-8; else None."""
    if isinstance(value, str):
        return value
    if isinstance(value, dict) and value.get(TYPE) == "bytes":
        try:
            return base64.b64decode(value["base64"]).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError, TypeError, KeyError):  # a hostile file's shape
            return None
    return None


def items(value: Any) -> list[Any] | None:
    """The items of a list or an encoded tuple (which can be changed in place), else None."""
    if isinstance(value, list):
        return value
    if isinstance(value, dict) and value.get(TYPE) == "tuple":
        found = value.get("items")
        return found if isinstance(found, list) else None
    return None


def hide_at(values: list[Any], positions: list[int], hide: Hide) -> None:
    for index in positions:
        if 0 <= index < len(values):
            values[index] = hide(values[index])


def hide_named_fields(value: Any, names: SecretNames, hide: Hide) -> None:
    """Hide, in place, every member with a secret name in a document of typed values, at any
    depth, and in JSON text it holds as a string (an audit row's ``extra``)."""
    pending = [value]
    while pending:
        item = pending.pop()
        if isinstance(item, list):
            for index, child in enumerate(item):
                if isinstance(child, str):
                    item[index] = with_secret_members_hidden(child, names, hide)
                else:
                    pending.append(child)
        elif isinstance(item, dict) and item.get(TYPE) == "dict":
            for pair in item["items"]:
                if names.field(text(pair[0]) or ""):
                    pair[1] = hide(pair[1])
                else:
                    pending.append(pair[1])
        elif isinstance(item, dict) and TYPE in item:
            pending.extend(v for v in item.values() if isinstance(v, (list, dict)))
        elif isinstance(item, dict):
            for name, child in item.items():
                if names.field(name):
                    item[name] = hide(child)
                elif isinstance(child, str):
                    item[name] = with_secret_members_hidden(child, names, hide)
                else:
                    pending.append(child)


class RawJson(str):
    """The raw text of a member's value inside JSON text, given to :data:`Hide`: what stands in
    its place is put between quotes, and opened gives the raw text back, quotes and all."""


def names_a_secret_member(shown: str, names: SecretNames) -> bool:
    """Whether ``shown`` looks like JSON text (an object or an array) naming a member like a
    secret; the names are found in C first: the member-by-member walk is Python's, for the few
    that need it."""
    return shown.startswith(("{", "[")) and any(
        names.field(found.group(1)) for found in _JSON_MEMBER.finditer(shown)
    )


def with_secret_members_hidden(value: Any, names: SecretNames, hide: Hide) -> Any:
    """``value`` as it is stored: when it is JSON text (an object or an array) with members named
    like a secret at any depth (a webhook payload or an API response kept in a text column, whose
    ``client_secret`` no column name announces), that text with each such member's value hidden in
    place and every other byte kept, so it still parses where the secret cannot be opened. JSON
    text kept as bytes is hidden whole: a sealed value inside its base64 could not be opened."""
    shown = text(value)
    if shown is None or not names_a_secret_member(shown, names):
        return value
    if not isinstance(value, str):
        return hide(value)
    return with_members_hidden(shown, names.field, lambda _name, raw: hide(RawJson(raw)))
