"""A statement's order-free lists: its top-level ``SELECT`` list and ``GROUP BY`` list, the
table constraints of a ``CREATE TABLE``, and the values of its ``IN (...)`` lists.

Some ORMs build these lists from a Python ``set`` (Tortoise ORM selects a model's columns
from ``Model._meta.db_fields``), so their order changes from one process to the next with
string hash randomisation: ``SELECT "id","name" FROM "author"`` is recorded and
``SELECT "name","id" FROM "author"`` replayed. Neither list's order changes which rows come
back, only the order of their columns, so matching compares these lists as sets
(:func:`order_free`) and the answer's columns are put in the live statement's order
(:func:`live_columns`). A ``SELECT`` list with a ``*`` is kept as written: its columns
cannot be told apart by expression.

A ``CREATE TABLE``'s table constraints (``FOREIGN KEY``, ``UNIQUE``, ``CHECK``, ...) come from
a set too: SQLAlchemy's ``Table.constraints``, which alembic's batch mode copies a SQLite table
through, is ordered by the objects' addresses. They are compared as a set; its columns keep
their order.

Statements are scanned at their top level only (outside parentheses and quotes), with their
whitespace already normalised.

An ``IN`` list's values are a set too (``Tag.name.in_(names)`` with ``names`` a ``set``): the
parameters bound in one are compared in sorted order (:func:`in_list_parameters`).
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Any

__all__ = ["in_list_parameters", "order_free", "live_columns"]

_SELECT = re.compile(r"select\s+(?:all\s+|distinct\s+(?!on\b))?", re.IGNORECASE)
_FROM = re.compile(r"\bfrom\b", re.IGNORECASE)
_GROUP_BY = re.compile(r"\bgroup\s+by\b\s*", re.IGNORECASE)
_COMMA = re.compile(",")
_SEMICOLON = re.compile(";")
_CREATE_TABLE = re.compile(
    r"create\s+(?:(?:global\s+|local\s+)?(?:temporary|temp)\s+|unlogged\s+)?table\s+",
    re.IGNORECASE,
)
_TABLE_CONSTRAINT = re.compile(
    r"(?:constraint|primary\s+key|foreign\s+key|unique|check|exclude)\b", re.IGNORECASE
)
_AFTER_GROUP_BY = re.compile(
    r"\b(?:having|window|order\s+by|limit|offset|fetch|for|union|intersect|except)\b|;",
    re.IGNORECASE,
)


# quoted text (to its end if unclosed) and parentheses: what hides a character from the top level
_DEPTH = {"(": 1, ")": -1}
_QUOTED = r"'[^']*(?:'|$)|\"[^\"]*(?:\"|$)"
_HIDING = re.compile(rf"{_QUOTED}|[()]")


def _top_level(statement: str) -> bytearray:
    """For each character: 1 when it is outside every parenthesis and quoted text."""
    mask = bytearray(len(statement))
    depth, start = 0, 0
    for token in _HIDING.finditer(statement):
        if depth == 0:
            mask[start : token.start()] = b"\x01" * (token.start() - start)
        depth += _DEPTH.get(token.group(), 0)
        start = token.end()
    if depth == 0:
        mask[start:] = b"\x01" * (len(statement) - start)
    return mask


def _first(pattern: re.Pattern[str], statement: str, mask: bytearray, start: int) -> int:
    """Where ``pattern`` first matches at the top level from ``start`` (the end if nowhere)."""
    for match in pattern.finditer(statement, start):
        if mask[match.start()]:
            return match.start()
    return len(statement)


def _items(statement: str, mask: bytearray, start: int, end: int) -> list[str]:
    cuts = [m.start() for m in _COMMA.finditer(statement, start, end) if mask[m.start()]]
    bounds = zip([start - 1, *cuts], [*cuts, end], strict=True)
    return [statement[a + 1 : b].strip() for a, b in bounds]


_List = tuple[int, int, list[str]]  # where a list starts and ends in its statement, and its items


def _select_list(statement: str, mask: bytearray) -> _List | None:
    select = _SELECT.match(statement)
    if select is None:
        return None
    end = _first(_FROM, statement, mask, select.end())
    items = _items(statement, mask, select.end(), end)
    return None if any(item.endswith("*") for item in items) else (select.end(), end, items)


def _group_by_list(statement: str, mask: bytearray) -> _List | None:
    for match in _GROUP_BY.finditer(statement):
        if mask[match.start()]:
            end = _first(_AFTER_GROUP_BY, statement, mask, match.end())
            return match.end(), end, _items(statement, mask, match.end(), end)
    return None


# what a list in parentheses is cut at: its commas, outside quotes and nested parentheses
_NESTING = re.compile(rf"{_QUOTED}|[(),]")


def _table_elements(statement: str) -> _List | None:
    """A ``CREATE TABLE``'s columns, in their order, then its table constraints, sorted."""
    head = _CREATE_TABLE.match(statement)
    if head is None:
        return None
    depth, start, cuts = 0, -1, list[int]()
    for token in _NESTING.finditer(statement, head.end()):
        text = token.group()
        if text == "(":
            depth += 1
            start = token.start() if start < 0 else start
        elif text == ")":
            depth -= 1
            if depth == 0:
                bounds = zip([start, *cuts], [*cuts, token.start()], strict=True)
                items = [statement[a + 1 : b].strip() for a, b in bounds]
                columns: list[str] = []
                constraints: list[str] = []
                for item in items:
                    (constraints if _TABLE_CONSTRAINT.match(item) else columns).append(item)
                return start + 1, token.start(), columns + sorted(constraints)
        elif text == "," and depth == 1:
            cuts.append(token.start())
    return None


def _one_statement(statement: str, mask: bytearray) -> bool:
    """Whether ``statement`` is a single statement (a script's results are left as recorded)."""
    body = statement.rstrip("; ")
    return not any(mask[m.start()] for m in _SEMICOLON.finditer(body))


@lru_cache(maxsize=1024)
def order_free(statement: str) -> str:
    """``statement`` with its ``SELECT`` and ``GROUP BY`` lists sorted, and a ``CREATE TABLE``'s
    constraints: the same for any order of them.

    Kept for the last statements seen: an application sends the same few again and again
    (each view of a call, recorded and live, asks), and scanning one costs tens of µs."""
    mask = _top_level(statement)
    if not _one_statement(statement, mask):
        return statement
    table = _table_elements(statement)
    if table is not None:
        start, end, items = table
        return statement[:start] + ",".join(items) + statement[end:]
    lists = [
        found for found in (_select_list(statement, mask), _group_by_list(statement, mask)) if found
    ]
    for start, end, items in reversed(lists):
        tail = " " if end < len(statement) else ""
        statement = statement[:start] + ",".join(sorted(items)) + tail + statement[end:]
    return statement


def _select_of(statement: str) -> _List | None:
    mask = _top_level(statement)
    return _select_list(statement, mask) if _one_statement(statement, mask) else None


def live_columns(recorded: str, live: str, response: dict[str, Any]) -> dict[str, Any]:
    """``response`` (rows and description) with its columns in ``live``'s ``SELECT`` order.

    ``recorded`` is the statement that was answered and ``live`` the one being answered,
    equal but for the order of their lists.
    """
    if recorded == live:  # nearly always: nothing to put in order, nothing to scan
        return response
    recorded_list, live_list = _select_of(recorded), _select_of(live)
    description, rows = response.get("description"), response.get("rows")
    if recorded_list is None or live_list is None or description is None:
        return response
    before, after = recorded_list[2], live_list[2]
    if before == after or sorted(before) != sorted(after) or len(description) != len(before):
        return response
    free = list(range(len(before)))
    order = [free.pop(next(i for i, at in enumerate(free) if before[at] == item)) for item in after]
    reordered = {**response, "description": [description[i] for i in order]}
    tables = response.get("tables")  # PyMySQL's: each column's table
    if isinstance(tables, list) and len(tables) == len(order):
        reordered["tables"] = [tables[i] for i in order]
    if rows is not None:
        reordered["rows"] = [[row[i] for i in order] for row in rows]
    return reordered


# a bound parameter in any DB-API style (a cast after it allowed), or quoted text to skip
_PLACEHOLDER = r"(?:%\(\w+\)s|%s|\?|\$\d+|(?<![:\w]):\w+)(?:::\w+(?:\[\])?)?"
_PARAMETER = re.compile(rf"'[^']*(?:'|$)|\"[^\"]*(?:\"|$)|({_PLACEHOLDER})")
_IN_LIST = re.compile(rf"\bin\s*\(\s*{_PLACEHOLDER}(?:\s*,\s*{_PLACEHOLDER})+\s*\)", re.IGNORECASE)


@lru_cache(maxsize=1024)
def _in_lists(statement: str) -> tuple[tuple[int | str, ...], ...]:
    """Each ``IN`` list of bound parameters, as the parameters' keys: a position for ``%s`` and
    ``?`` (counted over the whole statement) and ``$n``, a name for ``%(name)s`` and ``:name``."""
    keys: list[tuple[int, int | str]] = []  # (where the parameter is, its key)
    position = 0
    for match in _PARAMETER.finditer(statement):
        token = match.group(1)
        if token is None:
            continue
        bare = token.split("::")[0]
        if bare in ("%s", "?"):
            key: int | str = position
            position += 1
        elif bare.startswith("$"):
            key = int(bare[1:]) - 1
        else:
            key = bare[2:-2] if bare.startswith("%(") else bare[1:]  # %(name)s, :name
        keys.append((match.start(), key))
    lists = []
    for found in _IN_LIST.finditer(statement):
        inside = [key for at, key in keys if found.start() <= at < found.end()]
        if len(inside) > 1:
            lists.append(tuple(inside))
    return tuple(lists)


def in_list_parameters(statement: str, parameters: Any, canonical: Any) -> Any:
    """``parameters`` (a list, or a mapping by name) with the values of each ``IN`` list in
    ``canonical`` order: the same for any order of a set bound there. Others as they are."""
    lists = _in_lists(statement)
    if not lists:
        return parameters
    ordered = dict(parameters) if isinstance(parameters, dict) else list(parameters)
    for keys in lists:
        try:
            values = sorted((ordered[key] for key in keys), key=canonical)  # type: ignore[index]
        except (KeyError, IndexError, TypeError):  # another style than the statement says
            return parameters
        for key, value in zip(keys, values, strict=True):
            ordered[key] = value  # type: ignore[index]
    return ordered
