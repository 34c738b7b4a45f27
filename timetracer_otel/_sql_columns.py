"""Which column each parameter and string literal of an SQL statement stands for.

A secret SQL value is found by its column's name (a ``password_hash`` column): this module
says, from the statement's text alone, which columns each placeholder and literal meets.
Text alone, because replay must hide a live statement exactly as the recording hid it, and
a live call has only its text. The statement is tokenized by sqlparse's lexer (strings,
quoted names, comments and every placeholder style); then:

* ``INSERT INTO t (a, b) VALUES (x, y), (...)``: the n-th value of each row goes to the n-th column;
  so does each row value of ``INSERT INTO t (a, b) SELECT p0, p1 FROM (VALUES (x, y), ...) AS
  v(p0, p1)`` to the column of the expression that selects it (SQLAlchemy's multi-row insert);
* a comparison or assignment, ``col = x``, ``x <> col``, ``col IN (x, y)``, ``col LIKE x``
  (``UPDATE ... SET``, ``ON CONFLICT ... DO UPDATE SET`` and ``WHERE`` alike): the values on
  one side go to the columns named on the other (``lower(token) = lower(?)`` included).

Placeholders are referred to by position (``?`` and ``%s`` in order, ``$1`` and ``:1`` by
number, from 0) or by name (``%(name)s``, ``:name``).

A result column is named by its label: ``invite_tokens.group_id AS invite_tokens_group_id``,
as SQLAlchemy labels the columns of joined and legacy queries, says which column each label
stands for (:func:`judged_names`).
"""

from __future__ import annotations

from functools import lru_cache
from typing import NamedTuple

from sqlparse import tokens as T
from sqlparse.lexer import Lexer

__all__ = ["Columns", "columns_of", "judged_names"]

Ref = int | str  # a positional parameter's index, or a named parameter's name
_BOUNDARIES = frozenset(
    ("AND", "OR", "NOT", "WHERE", "ON", "SET", "FROM", "VALUES", "RETURNING", "GROUP BY", "ORDER BY", "LIMIT", "OFFSET",
     "HAVING", "WHEN", "THEN", "ELSE", "END", "CASE", "JOIN", "USING", "DO", "UNION", "AS", "BETWEEN", "IS", "SELECT",
     "INSERT", "UPDATE", "DELETE", "INTO", "CONFLICT", "NOTHING", "DISTINCT")
)  # fmt: skip
_COMPARISONS = frozenset(("IN", "LIKE", "ILIKE"))
_CACHED_LENGTH = (
    4096  # longer statements (bulk inserts with inline values) are analysed each time, not kept
)


class Columns(NamedTuple):
    """The columns each parameter and each string literal of a statement meets."""

    parameters: dict[Ref, frozenset[str]]
    # (start, end) of each string literal's content in the text, and the columns it meets
    literals: tuple[tuple[int, int, frozenset[str]], ...]
    # a result column's label -> (the qualifier, or "", and the column it selects): ``t.c AS label``
    labels: dict[str, tuple[str, str]] = {}


class _Token(NamedTuple):
    kind: object
    text: str
    start: int

    @property
    def word(self) -> str:
        return " ".join(self.text.upper().split())

    def opens(self) -> int:
        """+1 for an opening parenthesis, -1 for a closing one, else 0."""
        if self.kind in T.Punctuation:
            return (self.text == "(") - (self.text == ")")
        return 0

    def is_value(self) -> bool:
        return self.kind in T.Name.Placeholder or self.kind in T.Literal.String.Single

    def is_boundary(self) -> bool:
        if self.kind in T.Punctuation:
            return self.text in (",", ";")
        if self.kind in T.Operator.Comparison or self.kind in T.Keyword.DML:
            return True
        return self.kind in T.Keyword and self.word in _BOUNDARIES


def _tokens(statement: str) -> list[_Token]:
    found, offset = [], 0
    for kind, text in Lexer.get_default_instance().get_tokens(statement):
        if kind not in T.Whitespace and kind not in T.Comment and kind not in T.Newline:
            found.append(_Token(kind, text, offset))
        offset += len(text)
    return found


def _column(token: _Token) -> str:
    return token.text.strip('"`[]')


def _identifiers(tokens: list[_Token], start: int, end: int) -> frozenset[str]:
    """Column names in ``tokens[start:end]``: names that are neither a function (before ``(``) nor a qualifier (before ``.``)."""
    names = set()
    for index in range(start, end):
        token = tokens[index]
        following = tokens[index + 1].text if index + 1 < len(tokens) else ""
        named = (
            token.kind in T.Name
            and token.kind not in T.Name.Placeholder
            and token.kind not in T.Name.Builtin
        )
        # ``key``, ``data``: words sqlparse knows
        keyword = token.kind in T.Keyword and not token.is_boundary()
        if (named or keyword or token.kind in T.Literal.String.Symbol) and following not in (
            "(",
            ".",
        ):
            names.add(_column(token))
    return frozenset(names)


def _operand(tokens: list[_Token], operator: int, step: int) -> tuple[int, int]:
    """The span (start, end) of the operand before (``step`` -1) or after (+1) ``tokens[operator]``."""
    depth, index = 0, operator + step
    while 0 <= index < len(tokens):
        token = tokens[index]
        depth += token.opens() * step
        if depth < 0 or (depth == 0 and token.is_boundary()):
            break
        index += step
    return (index + 1, operator) if step < 0 else (operator + 1, index)


def _meets(
    target: dict[int, set[str]], tokens: list[_Token], start: int, end: int, columns: frozenset[str]
) -> None:
    for index in range(start, end):
        if columns and tokens[index].is_value():
            target.setdefault(index, set()).update(columns)


def _comparisons(tokens: list[_Token], target: dict[int, set[str]]) -> None:
    for index, token in enumerate(tokens):
        if token.kind in T.Operator.Comparison or (
            token.kind in T.Keyword and token.word in _COMPARISONS
        ):
            left, right = _operand(tokens, index, -1), _operand(tokens, index, +1)
            _meets(target, tokens, *left, _identifiers(tokens, *right))
            _meets(target, tokens, *right, _identifiers(tokens, *left))


def _closing(tokens: list[_Token], opening: int) -> int:
    """The index of the parenthesis closing ``tokens[opening]`` (or the end)."""
    depth = 0
    for index in range(opening, len(tokens)):
        depth += tokens[index].opens()
        if depth == 0:
            return index
    return len(tokens)


def _items(tokens: list[_Token], opening: int, closing: int) -> list[tuple[int, int]]:
    """The spans of the comma-separated items inside a parenthesis."""
    spans, depth, start = [], 0, opening + 1
    for index in range(opening + 1, closing):
        depth += tokens[index].opens()
        if depth == 0 and tokens[index].text == ",":
            spans.append((start, index))
            start = index + 1
    return [*spans, (start, closing)]


def _inserts(tokens: list[_Token], target: dict[int, set[str]]) -> None:
    """``INSERT INTO t (cols) VALUES (row), (row)``: each row's n-th value meets the n-th column."""
    for index, token in enumerate(tokens):
        if token.word != "INSERT":
            continue
        opening = next(
            (
                i
                for i in range(index + 1, len(tokens))
                if tokens[i].text == "(" or tokens[i].word == "VALUES"
            ),
            len(tokens),
        )
        if opening == len(tokens) or tokens[opening].text != "(":
            continue
        closing = _closing(tokens, opening)
        columns = [
            _identifiers(tokens, start, end) for start, end in _items(tokens, opening, closing)
        ]
        following = tokens[closing + 1].word if closing + 1 < len(tokens) else ""
        if following == "VALUES":
            _rows(tokens, closing + 2, dict(enumerate(columns)), target)
        elif following == "SELECT":
            _selected_values(tokens, closing + 1, columns, target)


def _rows(
    tokens: list[_Token], row: int, columns: dict[int, frozenset[str]], target: dict[int, set[str]]
) -> None:
    """``(row), (row)`` from ``tokens[row]``: each row's n-th value meets ``columns[n]``."""
    while row < len(tokens) and tokens[row].text == "(":
        end = _closing(tokens, row)
        for position, (start, stop) in enumerate(_items(tokens, row, end)):
            _meets(target, tokens, start, stop, columns.get(position, frozenset()))
        row = end + 2 if end + 1 < len(tokens) and tokens[end + 1].text == "," else len(tokens)


def _selected_values(
    tokens: list[_Token], select: int, columns: list[frozenset[str]], target: dict[int, set[str]]
) -> None:
    """``INSERT INTO t (cols) SELECT p0, p1::TYPE FROM (VALUES (row), ...) AS v(p0, p1, n)``, as
    SQLAlchemy sends a multi-row insert that returns rows in order ("insertmanyvalues"): the
    n-th selected expression goes to the n-th column, and the row values it names to it."""
    depth, source = 0, select + 1
    while source < len(tokens) and not (depth == 0 and tokens[source].word == "FROM"):
        depth += tokens[source].opens()
        source += 1
    opening = source + 1
    if opening + 1 >= len(tokens) or tokens[opening].text != "(":
        return
    if tokens[opening + 1].word != "VALUES":
        return
    closing = _closing(tokens, opening)
    alias = next(
        (i for i in range(closing + 1, min(closing + 4, len(tokens))) if tokens[i].text == "("),
        None,
    )
    names = (
        [_identifiers(tokens, *item) for item in _items(tokens, alias, _closing(tokens, alias))]
        if alias is not None
        else []
    )
    positions: dict[int, frozenset[str]] = {}
    for selected, (start, stop) in enumerate(_items(tokens, select, source)):
        if selected >= len(columns):
            break
        used = _identifiers(tokens, start, stop)
        for position, name in enumerate(names) if names else [(selected, used)]:
            if name & used:
                positions[position] = positions.get(position, frozenset()) | columns[selected]
    _rows(tokens, opening + 2, positions, target)


def _is_name(token: _Token) -> bool:
    return (
        token.kind in T.Name and token.kind not in T.Name.Placeholder
    ) or token.kind in T.Literal.String.Symbol


def _labels(tokens: list[_Token]) -> dict[str, tuple[str, str]]:
    """Each label given to a column with ``AS`` (``t.c AS label``, ``c AS label``), with what it selects."""
    labels = {}
    for index in range(1, len(tokens) - 1):
        if tokens[index].kind not in T.Keyword or tokens[index].word != "AS":
            continue
        column, label = tokens[index - 1], tokens[index + 1]
        if not (_is_name(column) and _is_name(label)):
            continue
        qualified = index >= 3 and tokens[index - 2].text == "." and _is_name(tokens[index - 3])
        qualifier = _column(tokens[index - 3]) if qualified else ""
        labels[_column(label)] = (qualifier, _column(column))
    return labels


def judged_names(label: str, labels: dict[str, tuple[str, str]]) -> tuple[str, ...]:
    """The names a result column labelled ``label`` is judged secret by: its own and the column
    it selects, or only that column where the label is the table's name and the column's
    (``invite_tokens_group_id``: a table named like a secret makes no secret of its ids)."""
    qualifier, column = labels.get(label, ("", ""))
    if not column:
        return (label,)
    if qualifier and label.lower() == f"{qualifier}_{column}".lower():
        return (column,)
    return (label, column) if label != column else (label,)


def _reference(text: str, style: str, counter: list[int]) -> Ref | None:
    if text in ("?", "%s"):
        # a "?" in a %s statement is an operator (PostgreSQL's jsonb ?), not a parameter
        if text != style:
            return None
        counter[0] += 1
        return counter[0] - 1
    name = text[2:-2] if text.startswith("%(") else text[1:]
    return int(name) - 1 if name.isdigit() else name


def _analyse(statement: str) -> Columns:
    tokens = _tokens(statement)
    target: dict[int, set[str]] = {}
    _inserts(tokens, target)
    _comparisons(tokens, target)
    style = "%s" if any(t.text == "%s" for t in tokens if t.kind in T.Name.Placeholder) else "?"
    counter = [0]
    parameters: dict[Ref, frozenset[str]] = {}
    literals = []
    for index, token in enumerate(tokens):
        columns = frozenset(target.get(index, ()))
        if token.kind in T.Name.Placeholder:
            ref = _reference(token.text, style, counter)
            if ref is not None:
                parameters[ref] = parameters.get(ref, frozenset()) | columns
        elif token.kind in T.Literal.String.Single:
            literals.append((token.start + 1, token.start + len(token.text) - 1, columns))
    return Columns(
        {ref: names for ref, names in parameters.items() if names}, tuple(literals), _labels(tokens)
    )


_cached = lru_cache(maxsize=1024)(_analyse)


def columns_of(statement: str) -> Columns:
    """The columns each parameter and string literal of ``statement`` meets (see the module's docstring)."""
    return _cached(statement) if len(statement) <= _CACHED_LENGTH else _analyse(statement)
