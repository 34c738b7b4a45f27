"""SQL calls as cassette data: the request shape, secret redaction, and the matching view.

A call's request is ``{"operation", "dialect", "statement", "parameters"}`` for a
cursor execution (the statement and parameters exactly as the DBAPI received them) and
``{"operation": "connect", "dialect", "engine"}`` for a connection checked out.

A driver used without SQLAlchemy speaks the same protocol under its own dialect
(``postgresql+asyncpg``), its operations named by its own methods (``fetch``,
``fetchrow``, ``fetchval``, ``execute``, ``executemany``, ``fetchmany``, ``prepare``,
``cursor``: its rows as the application fetched them, as a streamed result): its
statements are SQL with positional parameters, its answers rows with a description,
so matching and redaction are the same.

Matching compares the dialect, the operation, the statement with its whitespace
normalised, and the parameters as typed values (``1`` and ``1.0`` differ, so do
``b"x"`` and ``"x"``). The savepoint names asyncpg makes up (``__asyncpg_savepoint_31c__``,
numbered by a counter of the connection that its prepared statements advance too) are
compared without their number: a replay connection starts counting afresh. The top-level
``SELECT`` and ``GROUP BY`` lists are compared in any order (an ORM may build them from a set,
in another order each process), the answer's columns then put in the live order by the
replayer (:mod:`timetracer_otel._sql_lists`). A ``connect`` call is matched by its dialect alone: the URL is
not part of it, so a replay may point the engine anywhere (a closed port, a deleted file).

Secrets (:func:`redact`): parameters named like a secret (``%(password)s``, ``:password``),
and parameters and string literals that meet a secret column in the statement (``INSERT``
column lists, ``SET col = ?``, ``WHERE col = ?``, ``col IN (...)``, see
:mod:`timetracer_otel._sql_columns`); result columns by their name.

This module must not import SQLAlchemy: cassettes load wherever timetracer does (the
engines and dialects it reads are SQLAlchemy's).
"""

from __future__ import annotations

import json
import re
from collections.abc import Collection, Iterable
from typing import TYPE_CHECKING, Any, NamedTuple

from timetracer_otel._sql_columns import Ref, columns_of, judged_names
from timetracer_otel._sql_lists import in_list_parameters, live_columns, order_free
from timetracer_otel.cassette.calls import CassetteCall, call_document
from timetracer_otel.cassette.errors import CassetteError
from timetracer_otel.cassette.values import ValueDecodeError, encode_value
from timetracer_otel.secret_names import PAIR_LABELS, PAIR_VALUES, SecretNames

from . import typed
from .trace_context import without_trace_context
from .view import CallView

if TYPE_CHECKING:
    from timetracer_otel.redaction import Redactor

__all__ = [
    "PLAIN",
    "dialect_id",
    "snapshot",
    "connect_request",
    "statement_request",
    "driver_request",
    "error_attributes",
    "redact",
    "recorded_view",
    "live_view",
    "usual_answer",
    "recorded_response",
    "ASYNCPG",
    "ASYNCPG_METHODS",
    "asyncpg_methods",
    "asyncpg_arguments",
    "asyncpg_request",
    "PSYCOPG",
    "psycopg_request",
    "PSYCOPG2",
    "psycopg2_request",
    "SQLITE3",
    "AIOSQLITE",
    "PYMYSQL",
    "AIOMYSQL",
    "ASYNCMY",
    "mysql_request",
    "sqlite_request",
]

PLAIN = (type(None), bool, int, float, str)
_MISSING = object()
_WRAPPED = ("adapted", "obj")  # psycopg2 adapters, psycopg's Json/Jsonb

_LABEL_CHARS = 200


def dialect_id(dialect: Any) -> str:
    """``postgresql+psycopg``, ``sqlite+pysqlite``: what a statement's answer depends on besides its text."""
    return f"{dialect.name}+{dialect.driver}"


def connect_request(engine: Any) -> dict[str, Any]:
    return {
        "operation": "connect",
        "dialect": dialect_id(engine.dialect),
        "engine": engine.url.render_as_string(hide_password=True),
    }


def snapshot(value: Any) -> Any:
    """A copy of a parameter or row value as the cassette keeps it.

    Containers are copied (the application may change a JSON value after the statement)
    with plain ``str`` keys; a driver's own tuple type holding nothing mutable (asyncpg's
    ``Point``) is kept whole, so it keeps its type. The drivers' parameter wrappers (psycopg2
    ``Binary``, psycopg ``Json``), whose ``repr`` holds a memory address, are replaced by
    what they wrap.
    """
    if isinstance(value, dict):
        return {(str(k) if isinstance(k, str) else k): snapshot(v) for k, v in value.items()}
    if isinstance(value, list):
        return [snapshot(item) for item in value]
    if isinstance(value, tuple):
        items = tuple(snapshot(item) for item in value)
        unchanged = type(value) is not tuple and all(
            a is b for a, b in zip(items, value, strict=True)
        )
        return value if unchanged else items
    # mutable, or a view of a buffer the driver may reuse
    if isinstance(value, (bytearray, memoryview)):
        return type(value)(bytes(value))
    if type(value) not in PLAIN:
        for attribute in _WRAPPED:
            wrapped = getattr(value, attribute, _MISSING)
            if wrapped is not _MISSING:
                return snapshot(wrapped)
    return value


def driver_request(dialect: str, operation: str, statement: Any, parameters: Any) -> dict[str, Any]:
    """A statement's request on ``dialect`` (``name+driver``): what capture records and replay matches."""
    return {
        "operation": operation,
        "dialect": dialect,
        "statement": statement,
        "parameters": snapshot(parameters),
    }


def statement_request(
    dialect: Any, operation: str, statement: Any, parameters: Any
) -> dict[str, Any]:
    return driver_request(dialect_id(dialect), operation, statement, parameters)


def error_attributes(exc: BaseException) -> dict[str, Any]:
    """The plain public attributes of a driver's error (SQLSTATE, detail, constraint, ...), for replay to set again.

    psycopg2 keeps ``pgcode``/``pgerror`` where only pickling sees them, hence ``__reduce__``.
    The error's ``args`` too where they are more than its message: PyMySQL's
    ``(1146, "Table ... doesn't exist")``, whose number SQLAlchemy reads (``has_table``,
    ``create_all``, telling a lost connection).
    """
    state = exc.__reduce__()[2:3]
    found = {**(state[0] if state and isinstance(state[0], dict) else {}), **vars(exc)}
    attributes = {
        k: v
        for k, v in found.items()
        if isinstance(k, str) and not k.startswith("_") and type(v) in PLAIN
    }
    args = exc.args
    if args != (str(exc),) and len(args) <= _MOST_ARGS and all(type(a) in PLAIN for a in args):
        attributes["args"] = list(args)
    return attributes


_MOST_ARGS = 8  # of an error's args kept


# --------------------------------------------------------------------------- secrets
def _members_hidden(value: Any, names: SecretNames, hide: typed.Hide) -> Any:
    """``value`` with the members named like a secret hidden, at any depth: in place in a JSON
    value the driver parsed (a ``json``/``jsonb`` column, a dict parameter), where they stand in
    JSON text (see :func:`typed.with_secret_members_hidden`)."""
    if isinstance(value, list) or (
        isinstance(value, dict) and value.get(typed.TYPE, "dict") == "dict"
    ):
        typed.hide_named_fields(value, names, hide)
        return value
    return typed.with_secret_members_hidden(value, names, hide)


def _sql_parameters(
    parameters: Any,
    secret: set[Ref],
    names: SecretNames,
    hide: typed.Hide,
    by_column: Collection[Ref] = (),
) -> None:
    """Hide, in place, the parameters named like a secret or meeting a secret column (``secret``),
    and the secret members of JSON ones; those ``by_column`` are judged by their column alone."""
    if isinstance(parameters, dict) and typed.TYPE not in parameters:
        for name, value in parameters.items():
            parameters[name] = (
                hide(value)
                if name in secret or (names.field(name) and name not in by_column)
                else _members_hidden(value, names, hide)
            )
        return
    _hide_values(typed.items(parameters), secret, names, hide)


def _named_after_their_tables(parameters: dict[Ref, frozenset[str]], statement: str) -> set[Ref]:
    """The parameters named ``<table>_<column>`` after the qualified column they meet (``WHERE
    api_key.id = %(api_key_id)s``, as SQLAlchemy names them): judged by the column alone, as a
    result column's label is (a table named like a secret makes no secret of its ids)."""
    qualified = {
        ref: f"{ref[: -len(column) - 1]}.{column}".lower()
        for ref, met in parameters.items()
        if isinstance(ref, str)
        for column in met
        if ref.lower().endswith(f"_{column.lower()}")
    }
    if not qualified:
        return set()
    written = {
        f"{table}.{column}".lower()
        for table, column in _QUALIFIED_COLUMN.findall(statement.replace('"', "").replace("`", ""))
    }
    return {ref for ref, column in qualified.items() if column in written}


_QUALIFIED_COLUMN = re.compile(r"(\w+)(?=\.(\w+))")  # schema.table.column: both pairs


def _hide_values(
    values: list[Any] | None, secret: Collection[Any], names: SecretNames, hide: typed.Hide
) -> None:
    """Hide, in place, the values at the ``secret`` positions, and the secret members of JSON ones."""
    if values is None:
        return
    for index, value in enumerate(values):
        values[index] = hide(value) if index in secret else _members_hidden(value, names, hide)


_BACKSLASH_ESCAPE = re.compile(r"\\(.)", re.DOTALL)
_MYSQL_ESCAPES = {"0": "\0", "n": "\n", "r": "\r", "t": "\t", "Z": "\x1a", "b": "\b"}


def _literal_texts(content: str) -> set[str]:
    """What a string literal's content may stand for: with standard SQL's doubled quotes undone,
    and also with MySQL's backslash escapes undone where it has some (PyMySQL, aiomysql and
    asyncmy inline JSON text as ``{\\"api_key\\": ...}``)."""
    plain = content.replace("''", "'")
    if "\\" not in plain:
        return {plain}
    return {plain, _BACKSLASH_ESCAPE.sub(lambda m: _MYSQL_ESCAPES.get(m[1], m[1]), plain)}


def _note_secret_members(
    statement: str, literals: Iterable[tuple[int, int]], names: SecretNames, hide: typed.Hide
) -> None:
    """Hand ``hide`` each value a member named like a secret has in JSON text a string literal
    holds (a config the app wrote with its ``api_key``, inlined by a MySQL driver): noted so, it
    is hidden wherever it stands, in this statement and its span too."""
    for start, end in literals:
        if statement[start : start + 1] in ("{", "["):
            for text in _literal_texts(statement[start:end]):
                typed.with_secret_members_hidden(text, names, hide)


def _statement(statement: str, literals: list[tuple[int, int]], hide: typed.Hide) -> str:
    """``statement`` with the content of each secret string literal hidden in place."""
    for start, end in reversed(literals):
        statement = statement[:start] + str(hide(statement[start:end])) + statement[end:]
    return statement


class _Pairs(NamedTuple):
    """Where a row or a parameter set holds a name-value pair: the places meeting a
    :data:`PAIR_LABELS` column, and those meeting a ``value`` column."""

    labels: list[Any]
    values: list[Any]

    @classmethod
    def of(cls, met: Iterable[tuple[Any, Iterable[str]]]) -> _Pairs | None:
        labels, values = [], []
        for place, columns in met:
            lowered = {str(column).lower() for column in columns}
            if lowered & _LABELS:
                labels.append(place)
            if lowered & _VALUES:
                values.append(place)
        return cls(labels, values) if labels and values else None

    def secret(self, values: list[Any] | dict[str, Any], names: SecretNames) -> list[Any]:
        """The places of ``values`` (a row, a parameter list or dict) to hide: its ``value`` where
        its name or key is a secret's (a settings table's ``EMAIL_PASSWORD`` row)."""

        def at(place: Any) -> Any:
            if isinstance(values, dict):
                return values.get(place)
            return values[place] if isinstance(place, int) and 0 <= place < len(values) else None

        named = [isinstance(label, str) and names.field(label) for label in map(at, self.labels)]
        if len(self.labels) == len(self.values) > 1:  # the rows of a multi-row insert: pair by pair
            return [place for place, secret in zip(self.values, named, strict=True) if secret]
        return self.values if any(named) else []


_LABELS = frozenset(PAIR_LABELS)
_VALUES = frozenset(PAIR_VALUES)


def redact(
    request: dict[str, Any], response: dict[str, Any] | None, names: SecretNames, hide: typed.Hide
) -> None:
    """Hide a call's secret parameters, literals and result columns in place (in cassette form)."""
    statement = request.get("statement")
    pairs = None
    labels: dict[str, tuple[str, str]] = {}
    if isinstance(statement, str):
        columns = columns_of(statement)
        labels = columns.labels
        secret = {ref for ref, met in columns.parameters.items() if any(map(names.field, met))}
        literals: list[tuple[int, int]] = []  # of secret columns: hidden whole
        others: list[tuple[int, int]] = []
        for start, end, met in columns.literals:
            (literals if any(map(names.field, met)) else others).append((start, end))
        _note_secret_members(statement, others, names, hide)
        if literals:
            request["statement"] = _statement(statement, literals, hide)
        pairs = _Pairs.of(columns.parameters.items())
        by_column = _named_after_their_tables(columns.parameters, statement) - secret
    else:
        secret, by_column = set(), set()
    parameters = request.get("parameters")
    many = request.get("operation") in ("executemany", "fetchmany")
    for each in (typed.items(parameters) or ()) if many else (parameters,):
        paired = _paired(each, pairs, names)
        _sql_parameters(each, secret.union(paired) if paired else secret, names, hide, by_column)
    description = (response or {}).get("description")
    if not isinstance(description, list):
        return
    judged = [
        judged_names(str(c[0]), labels) if isinstance(c, list) and c else () for c in description
    ]
    secret_columns = [i for i, those in enumerate(judged) if any(map(names.field, those))]
    row_pairs = _Pairs.of(enumerate(judged))
    for row in (response or {}).get("rows") or ():
        paired = _paired(row, row_pairs, names)
        _hide_values(typed.items(row), [*secret_columns, *paired], names, hide)


def _paired(parameters: Any, pairs: _Pairs | None, names: SecretNames) -> list[Any]:
    """The places of the ``value`` of a name-value pair ``parameters`` (a parameter set, or a
    row) holds whose name is a secret's."""
    if pairs is None:
        return []
    if isinstance(parameters, dict) and typed.TYPE not in parameters:
        return pairs.secret(parameters, names)
    values = typed.items(parameters)
    return pairs.secret(values, names) if values is not None else []


def _canonical(encoded: Any) -> str:
    return without_trace_context(
        json.dumps(encoded, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    )


def _readable(encoded: Any) -> Any:
    """Encoded parameters as shown in a mismatch: tuples as plain lists, other typed values as encoded."""
    if isinstance(encoded, list):
        return [_readable(item) for item in encoded]
    if isinstance(encoded, dict):
        if encoded.get("$type") == "tuple":
            return _readable(encoded["items"])
        return encoded if "$type" in encoded else {k: _readable(v) for k, v in encoded.items()}
    return encoded


_GENERATED_NAMES = re.compile(r"__asyncpg_savepoint_[0-9a-f]+__")
_RETURNING = re.compile(r"\breturning\b", re.IGNORECASE)


_BATCHED_NAME = re.compile(r"(.+)__(\d+)")


def _batched_rows(statement: str, parameters: Any) -> list[dict[str, Any]] | None:
    """The rows of an INSERT whose rows SQLAlchemy sent in one VALUES list, each row's
    parameters named ``<name>__<row>`` ("insertmanyvalues": psycopg2's executemany); None for
    any other call."""
    if (
        not isinstance(parameters, dict)
        or "$type" in parameters
        or not statement.lstrip()[:6].lower() == "insert"
    ):
        return None
    rows: dict[str, dict[str, Any]] = {}
    for name, value in parameters.items():
        match = _BATCHED_NAME.fullmatch(name)
        if match is None:
            return None
        rows.setdefault(match.group(2), {})[match.group(1)] = value
    found = list(rows.values())
    return found if len(found) > 1 and all(row.keys() == found[0].keys() for row in found) else None


def _objects_in_key_order(value: Any) -> Any:
    """Parameters with each one holding a JSON object's text written with its keys sorted: an
    app may write an object's keys in a set's order (Phoenix's span attributes), another in
    every process (the hash seed), and the database reads the same object. Arrays keep
    their order; any other value is as it is."""
    if isinstance(value, str):
        if value[:1] != "{" or value[-1:] != "}":
            return value
        try:
            parsed = json.loads(value)
        except (ValueError, RecursionError):
            return value
        return json.dumps(parsed, sort_keys=True) if isinstance(parsed, dict) else value
    if isinstance(value, list):
        return [_objects_in_key_order(item) for item in value]
    if isinstance(value, dict):
        if value.get("$type") == "tuple" and isinstance(value.get("items"), list):
            return {**value, "items": _objects_in_key_order(value["items"])}
        if "$type" not in value:
            return {key: _objects_in_key_order(item) for key, item in value.items()}
    return value


def _canonical_parameters(operation: Any, statement: str, parameters: Any) -> str:
    """The parameters as matching compares them. The rows an INSERT that returns nothing sends
    row by row (an ``executemany``, or one VALUES list SQLAlchemy batched them into) are a
    multiset: an ORM sends the rows of an association table in the order of its objects'
    identities (SQLAlchemy's many-to-many), another order in every process. The values bound
    in an ``IN (...)`` list are a set (see ``_sql_lists``), and a JSON object's text an
    object (:func:`_objects_in_key_order`)."""
    parameters = _objects_in_key_order(parameters)
    returns_rows = _RETURNING.search(statement) is not None
    if operation == "executemany":
        if isinstance(parameters, list) and not returns_rows:
            return _canonical(sorted(parameters, key=_canonical))
        return _canonical(parameters)
    batched = None if returns_rows else _batched_rows(statement, parameters)
    if batched is not None:
        return _canonical(sorted(batched, key=_canonical))
    if isinstance(parameters, dict) and parameters.get("$type") == "tuple":
        items = parameters.get("items")
        if isinstance(items, list):
            ordered = in_list_parameters(statement, items, _canonical)
            return _canonical({**parameters, "items": ordered})
    if isinstance(parameters, list | dict):
        return _canonical(in_list_parameters(statement, parameters, _canonical))
    return _canonical(parameters)


def _view(request: dict[str, Any]) -> CallView:
    """The view of a request in cassette form (typed values encoded)."""
    operation, dialect = request.get("operation"), request.get("dialect")
    if operation == "connect":
        return CallView(
            "sql",
            f"connect {dialect}",
            ("sql", dialect, "connect"),
            {"operation": operation, "dialect": dialect},
        )
    statement = without_trace_context(" ".join(str(request.get("statement", "")).split()))
    parameters = request.get("parameters")
    label = f"{operation} {statement}"
    if len(label) > _LABEL_CHARS:
        label = label[: _LABEL_CHARS - 3] + "..."
    signature = _GENERATED_NAMES.sub("__asyncpg_savepoint__", order_free(statement))
    return CallView(
        "sql",
        label,
        (
            "sql",
            dialect,
            operation,
            signature,
            _canonical_parameters(operation, statement, parameters),
        ),
        {
            "operation": operation,
            "dialect": dialect,
            "statement": statement,
            "parameters": _readable(parameters),
        },
    )


def recorded_view(call: CassetteCall) -> CallView:
    """The view of a recorded ``sql`` call."""
    return _view(call.request or {})


def live_view(request: dict[str, Any], redactor: Redactor | None = None) -> CallView:
    """The view of a call being made: ``request`` holds plain Python values, as the capture records them;
    hidden by ``redactor`` as the recording's was (secret parameters)."""
    encoded = encode_value(request)
    return _view(redactor.protocol_request("sql", encoded) if redactor is not None else encoded)


def recorded_response(
    recorded: CassetteCall, answered: CallView, live: CallView, path: str
) -> dict[str, Any]:
    """The decoded response of ``recorded`` (whose view is ``answered``) for the ``live`` call
    it answers: its columns in the live statement's ``SELECT`` order.

    :class:`CassetteError` naming the file ``path`` for an answer no driver gives (a damaged or
    hostile cassette): a value that does not decode, rows that are no list of rows, ...
    """
    try:
        response = recorded.decoded_response() or {}
    except ValueDecodeError as exc:
        raise CassetteError(path, f"the answer to {answered.label} cannot be read: {exc}") from None
    problem = _unusable(response)
    if problem is not None:
        raise CassetteError(path, f"the answer to {answered.label} is no driver's: {problem}")
    if "statement" not in answered.fields or "statement" not in live.fields:
        return response
    return live_columns(answered.fields["statement"], live.fields["statement"], response)


def _unusable(response: Any, nested: bool = False) -> str | None:
    """What makes a decoded statement answer one no driver gives, or None."""
    if not isinstance(response, dict):
        return f"{type(response).__name__} instead of an object"
    description, rows = response.get("description"), response.get("rows")
    if description is not None and not (
        isinstance(description, list)
        and all(isinstance(column, (list, tuple)) and column for column in description)
    ):
        return "its description is no list of columns"
    if rows is not None and not (
        isinstance(rows, list) and all(isinstance(row, (list, tuple)) for row in rows)
    ):
        return "its rows are no list of rows"
    if type(response.get("rowcount", -1)) is not int:
        return "its rowcount is no integer"
    results = response.get("results")
    if results is not None and not nested:
        if not isinstance(results, list):
            return "its results are no list"
        return next(filter(None, (_unusable(result, nested=True) for result in results)), None)
    return None


def usual_answer(view: CallView) -> dict[str, Any] | None:
    """The call document for a call that carries no data, or None.

    A ``connect`` is answered without the recorded dialect state: the dialect keeps what
    it has until a request's recorded ``connect`` brings that state. ``SELECT 1`` (a
    liveness check, also asyncpg's ``fetchval("SELECT 1")``) answers one row holding 1. The dialect's connect-time probes
    (``select version()``, ``show standard_conforming_strings``, ...) never reach a
    replay connection, so they need no answer.
    """
    if view.fields["operation"] == "connect":
        return call_document("sql", None, {"dialect_state": {}})
    if (
        view.fields["operation"] in _LIVENESS_OPERATIONS
        and view.fields["statement"].lower().rstrip("; ") == "select 1"
    ):
        description = [["?column?", None, None, None, None, None, None]]
        return call_document(
            "sql",
            None,
            {"description": description, "rowcount": 1, "rows": [[1]], "status": "SELECT 1"},
        )
    return None


# A liveness check is run with a DBAPI ``execute``, or with asyncpg's own methods.
_LIVENESS_OPERATIONS = frozenset(("execute", "fetch", "fetchrow", "fetchval"))


# --------------------------------------------------------------------------- asyncpg's calls
ASYNCPG = "postgresql+asyncpg"
# Each recorded method of asyncpg's Connection and PreparedStatement, and how its parameters are
# passed: the positional arguments after the query ("args"), one iterable of argument sequences
# ("many"), or none (prepare).
ASYNCPG_METHODS: dict[str, str | None] = {
    "fetch": "args",
    "fetchrow": "args",
    "fetchval": "args",
    "execute": "args",
    "executemany": "many",
    "fetchmany": "many",
    "prepare": None,
    "cursor": "args",
}
# The coroutine methods of those a Connection has (``cursor`` returns a cursor factory), and a PreparedStatement.
_ASYNCPG_CONNECTION_METHODS = (
    "fetch",
    "fetchrow",
    "fetchval",
    "execute",
    "executemany",
    "fetchmany",
    "prepare",
)
_ASYNCPG_STATEMENT_METHODS = ("fetch", "fetchrow", "fetchval", "executemany", "fetchmany")


def asyncpg_methods(connection: type, statement: type) -> list[tuple[type, str]]:
    """(class, name) of each of those methods the installed asyncpg has: ``fetchmany`` came
    in 0.30, and an application pinned to an older one records and replays all the rest."""
    return [
        (owner, name)
        for owner, names in (
            (connection, _ASYNCPG_CONNECTION_METHODS),
            (statement, _ASYNCPG_STATEMENT_METHODS),
        )
        for name in names
        if hasattr(owner, name)
    ]


def asyncpg_arguments(method: str, args: tuple, kwargs: dict, prepared: bool) -> tuple[tuple, dict]:
    """The call's arguments with a "many" method's iterable made a list, so it can be both recorded and sent."""
    if ASYNCPG_METHODS[method] != "many":
        return args, kwargs
    position = 0 if prepared else 1
    if len(args) > position:
        return (*args[:position], list(args[position]), *args[position + 1 :]), kwargs
    if "args" in kwargs:
        return args, {**kwargs, "args": list(kwargs["args"])}
    return args, kwargs


def asyncpg_request(
    method: str, args: tuple, kwargs: dict, statement: str | None = None
) -> dict[str, Any]:
    """The request of ``Connection.<method>(query, ...)``, or, given the prepared ``statement``'s
    query, of ``PreparedStatement.<method>(...)``: both match a call of the same method and text."""
    if statement is None:
        if args:
            statement, args = args[0], args[1:]
        else:
            statement = kwargs.get("query", kwargs.get("command"))
    shape = ASYNCPG_METHODS[method]
    parameters: Any = None
    if shape == "args":
        parameters = tuple(args)
    elif shape == "many":
        parameters = [tuple(each) for each in (args[0] if args else kwargs.get("args", ()))]
    return driver_request(ASYNCPG, method, statement, parameters)


# --------------------------------------------------------------------------- psycopg's calls
PSYCOPG = "postgresql+psycopg"


def psycopg_statement(query: Any) -> Any:
    """A psycopg query as text: ``sql.SQL``/``Composed`` rendered without a connection, bytes decoded."""
    if isinstance(query, (bytes, bytearray, memoryview)):
        return bytes(query).decode()
    as_string = getattr(query, "as_string", None)
    return as_string(None) if callable(as_string) else query


def _parameter_sets(operation: str, parameters: Any) -> Any:
    """A cursor's parameters as the request keeps them: a sequence as a tuple (a list and a tuple
    send the same), ``executemany``'s sets as a list of them (the caller made it one, so the
    sets can be both recorded and sent)."""
    if operation == "executemany":
        return [each if isinstance(each, dict) else tuple(each) for each in parameters]
    if parameters is not None and not isinstance(parameters, dict):
        return tuple(parameters)
    return parameters


def psycopg_request(operation: str, query: Any, parameters: Any) -> dict[str, Any]:
    """The request of a psycopg cursor's ``execute(query, params)`` or ``executemany(query, params_seq)``."""
    return driver_request(
        PSYCOPG, operation, psycopg_statement(query), _parameter_sets(operation, parameters)
    )


PSYCOPG2 = "postgresql+psycopg2"


def psycopg2_request(operation: str, statement: Any, parameters: Any) -> dict[str, Any]:
    """The request of a psycopg2 cursor's ``execute(query, vars)``, ``executemany(query,
    vars_list)`` or ``callproc(procname, parameters)``; ``statement``: the query as text
    (``timetracer_otel._psycopg2.statement``), the procedure's name for ``callproc``."""
    return driver_request(PSYCOPG2, operation, statement, _parameter_sets(operation, parameters))


SQLITE3 = "sqlite+pysqlite"
AIOSQLITE = "sqlite+aiosqlite"


def sqlite_request(
    dialect: str, operation: str, sql: str, parameters: Any = None
) -> dict[str, Any]:
    """The request of a statement on sqlite3 (:data:`SQLITE3`) or aiosqlite (:data:`AIOSQLITE`):
    ``execute``, ``executemany``, ``executescript`` (no parameters), or aiosqlite's
    ``execute_insert`` and ``execute_fetchall``. aiosqlite sends ``[]`` for no parameters."""
    return driver_request(dialect, operation, sql, _parameter_sets(operation, parameters))


PYMYSQL = "mysql+pymysql"
AIOMYSQL = "mysql+aiomysql"
ASYNCMY = "mysql+asyncmy"


def mysql_request(dialect: str, statement: str) -> dict[str, Any]:
    """The request of a statement PyMySQL (:data:`PYMYSQL`), aiomysql (:data:`AIOMYSQL`) or asyncmy
    (:data:`ASYNCMY`) sends:
    the text their connection's ``query`` is given, its parameters already quoted into it."""
    return driver_request(dialect, "execute", statement, None)
