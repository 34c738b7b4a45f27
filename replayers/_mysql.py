"""What the PyMySQL and aiomysql replayers share: a connection's ``query`` answered from the cassette.

A query in a replay session leaves the recorded result on the connection
(:class:`timetracer_otel._mysql.RecordedResult`), where the driver's own cursor code reads it:
rows come as its cursor class makes them (tuples, ``DictCursor``'s dicts, the application's
own). A recorded error is raised as PyMySQL's class with its arguments
(``IntegrityError(1062, "Duplicate entry ...")``). A connection opened in a replay session is
stood in for (:func:`timetracer_otel._mysql.stand_in`): its set-up statements, ``COMMIT``,
``ROLLBACK``, ``BEGIN`` and pings send nothing. An unbuffered query (``SSCursor``) is refused
with :class:`ReplayMismatchError`, since its rows are read after the call.
"""

from __future__ import annotations

from typing import Any

import pymysql.err

from timetracer_otel import _mysql
from timetracer_otel._recording import in_outer_call
from timetracer_otel.cassette.calls import CassetteCall
from timetracer_otel.protocols.sql import live_view, mysql_request, recorded_response

from .http import recorded_error_class, with_recorded_attributes
from .session import ReplayMismatchError, refusal, replay_session_for

__all__ = ["LIVE", "answer", "opens_nothing"]

LIVE = object()  # what :func:`answer` returns for a query it leaves to the driver
_OUTSIDE = "a replay connection was used outside its replay session"


def _error(call: CassetteCall) -> Exception:
    error = call.error or {}
    cls = recorded_error_class(error, "pymysql", pymysql.err.Error)
    exc = cls(error.get("message", ""))
    return with_recorded_attributes(
        exc, (call.decoded_response() or {}).get("error_attributes") or {}
    )


def answer(library: str, dialect: str, connection: Any, args: tuple, kwargs: dict) -> Any:
    """Answer ``connection.query(*args, **kwargs)`` from the session: the affected rows, with the
    recorded result left on the connection; :data:`LIVE` where no session answers (outside every
    replay, a call SQLAlchemy lets go live)."""
    sql = args[0] if args else kwargs["sql"]
    request = mysql_request(dialect, _mysql.statement_of(sql, connection.encoding))
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
        raise _error(recorded.call)
    response = recorded_response(recorded.call, recorded.view, view, session.path)
    connection._result = _mysql.RecordedResult(response)
    connection._affected_rows = connection._result.affected_rows
    return connection._affected_rows


def opens_nothing(library: str, connection: Any) -> bool:
    """Whether ``connection``, being opened, is replay's to stand in for (then it is made one):
    not outside every replay, nor one SQLAlchemy opens live (``in_outer_call``)."""
    if in_outer_call() or replay_session_for(library, lambda: f"connect {library}") is None:
        return False
    _mysql.stand_in(connection)
    return True
