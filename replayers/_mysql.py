"""What the PyMySQL, aiomysql and asyncmy replayers share: a connection's ``query`` answered from the cassette.

A query in a replay session leaves the recorded result on the connection
(:class:`timetracer_otel._mysql.RecordedResult`), where the driver's own cursor code reads it:
rows come as its cursor class makes them (tuples, ``DictCursor``'s dicts, the application's
own). A recorded error is raised as the driver's class with its arguments
(``IntegrityError(1062, "Duplicate entry ...")``). A connection opened in a replay session is
stood in for (:func:`timetracer_otel._mysql.stand_in`): its set-up statements, ``COMMIT``,
``ROLLBACK``, ``BEGIN`` and pings send nothing. An unbuffered query (``SSCursor``) is refused
with :class:`ReplayMismatchError`, since its rows are read after the call.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from timetracer_otel import _mysql
from timetracer_otel._recording import in_outer_call
from timetracer_otel.cassette.calls import CassetteCall
from timetracer_otel.protocols.sql import live_view, mysql_request, recorded_response
from timetracer_otel.wrapper_layers import Seam

from .http import recorded_error_class, with_recorded_attributes
from .session import ReplayMismatchError, refusal, replay_session_for

__all__ = ["LIVE", "answer", "async_seams", "opens_nothing", "recorded_result", "sends_nothing"]

LIVE = object()  # what :func:`answer` returns for a query it leaves to the driver
_OUTSIDE = "a replay connection was used outside its replay session"


def _error(call: CassetteCall, errors: Any) -> Exception:
    error = call.error or {}
    cls = recorded_error_class(error, errors.__name__.partition(".")[0], errors.Error)
    exc = cls(error.get("message", ""))
    return with_recorded_attributes(
        exc, (call.decoded_response() or {}).get("error_attributes") or {}
    )


def recorded_result(connection: Any, answer: dict[str, Any]) -> Any:
    """The result PyMySQL's and aiomysql's cursors read, of a recorded answer."""
    return _mysql.RecordedResult(answer)


def answer(
    driver: _mysql.Driver,
    connection: Any,
    args: tuple,
    kwargs: dict,
    result: Callable[[Any, dict[str, Any]], Any] = recorded_result,
) -> Any:
    """Answer ``connection.query(*args, **kwargs)`` from the session: the affected rows, with the
    recorded result left on the connection (made by ``result`` of the connection and the
    recorded answer); :data:`LIVE` where no session answers (outside every replay, a call
    SQLAlchemy lets go live)."""
    library = driver.library
    sql = args[0] if args else kwargs["sql"]
    request = mysql_request(driver.dialect, _mysql.statement_of(sql, connection))
    session = (
        None if in_outer_call() else replay_session_for(library, lambda: live_view(request).label)
    )
    if session is None:
        if _mysql.replaying(connection):
            raise ReplayMismatchError(live_view(request).label, library, "(none)", _OUTSIDE)
        return LIVE
    view = live_view(session.scrubbed(request), session.redactor)
    if args[1:2] == (True,) or kwargs.get("unbuffered"):
        raise refusal(
            library,
            view.label,
            "unbuffered queries (SSCursor) are not replayed: their rows are read after the call",
        )
    recorded = session.answer(library, view)
    connection._result = None
    if recorded.call.error:
        raise _error(recorded.call, driver.errors)
    response = recorded_response(recorded.call, recorded.view, view, session.path)
    connection._result = result(connection, response)
    connection._affected_rows = connection._result.affected_rows
    return connection._affected_rows


def opens_nothing(library: str, connection: Any) -> bool:
    """Whether ``connection``, being opened, is replay's to stand in for (then it is made one):
    not outside every replay, nor one SQLAlchemy opens live (``in_outer_call``)."""
    if in_outer_call() or replay_session_for(library, lambda: f"connect {library}") is None:
        return False
    _mysql.stand_in(connection)
    return True


async def sends_nothing(wrapped: Callable[..., Any], connection: Any, args: tuple, kw: dict) -> Any:
    """An asyncio driver's method that talks to the server outside queries (``COMMIT``, a ping,
    the server's OK; asyncmy's prepared statements): nothing on a replay connection."""
    return None if _mysql.replaying(connection) else await wrapped(*args, **kw)


def async_seams(
    driver: _mysql.Driver,
    connection_class: type,
    connect: str,
    opened: Callable[[Any], None],
    result: Callable[[Any, dict[str, Any]], Any] = recorded_result,
) -> tuple[Seam, ...]:
    """The replay of an asyncio driver on PyMySQL's protocol (aiomysql, asyncmy): its connection
    class's ``query`` answered (``result`` makes the recorded result the driver's cursors read),
    its method ``connect`` opening nothing (``opened`` gives the connection what a connected one
    has, with no server), and the commands sent outside queries and the server's OK sending and
    reading nothing."""

    async def querying(wrapped: Callable[..., Any], connection: Any, args: tuple, kw: dict) -> Any:
        found = answer(driver, connection, args, kw, result)
        return await wrapped(*args, **kw) if found is LIVE else found

    async def connecting(
        wrapped: Callable[..., Any], connection: Any, args: tuple, kw: dict
    ) -> Any:
        if not opens_nothing(driver.library, connection):
            return await wrapped(*args, **kw)
        opened(connection)
        return None

    return (
        (connection_class, "query", querying),
        (connection_class, connect, connecting),
        (connection_class, "_execute_command", sends_nothing),
        (connection_class, "_read_ok_packet", sends_nothing),
    )
