"""Matching SQL calls: the dialect, the operation, the statement with its whitespace
normalised, and the parameters as typed values (``1`` and ``1.0`` differ, so do
``b"x"`` and ``"x"``). A ``connect`` call is matched by its dialect alone: the URL is
not part of it, so a replay may point the engine anywhere (a closed port, a deleted file).

This module must not import SQLAlchemy: cassettes load wherever timetracer does.
"""

from __future__ import annotations

import json
from typing import Any

from timetracer_otel.cassette.values import encode_value
from timetracer_otel.redaction import Redactor
from timetracer_otel.replayers.matching import CallView

__all__ = ["recorded_view", "live_view", "usual_answer"]

_LABEL_CHARS = 200


def _canonical(encoded: Any) -> str:
    return json.dumps(encoded, sort_keys=True, ensure_ascii=False, separators=(",", ":"))


def _readable(encoded: Any) -> Any:
    """Encoded parameters as shown in a mismatch: tuples as plain lists, other typed values as encoded."""
    if isinstance(encoded, list):
        return [_readable(item) for item in encoded]
    if isinstance(encoded, dict):
        if encoded.get("$type") == "tuple":
            return _readable(encoded["items"])
        return encoded if "$type" in encoded else {k: _readable(v) for k, v in encoded.items()}
    return encoded


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
    statement = " ".join(str(request.get("statement", "")).split())
    parameters = request.get("parameters")
    label = f"{operation} {statement}"
    if len(label) > _LABEL_CHARS:
        label = label[: _LABEL_CHARS - 3] + "..."
    return CallView(
        "sql",
        label,
        ("sql", dialect, operation, statement, _canonical(parameters)),
        {
            "operation": operation,
            "dialect": dialect,
            "statement": statement,
            "parameters": _readable(parameters),
        },
    )


def recorded_view(call: dict[str, Any]) -> CallView:
    """The view of a recorded ``sql`` call document."""
    return _view(call.get("request") or {})


def live_view(request: dict[str, Any], redactor: Redactor | None = None) -> CallView:
    """The view of a call being made: ``request`` holds plain Python values, as the capture records them;
    hidden by ``redactor`` as the recording's was (secret parameters)."""
    encoded = encode_value(request)
    return _view(redactor.protocol_request("sql", encoded) if redactor is not None else encoded)


def usual_answer(view: CallView) -> dict[str, Any] | None:
    """The call document for a call that carries no data, or None.

    A ``connect`` is answered without the recorded dialect state: the dialect keeps what
    it has until a request's recorded ``connect`` brings that state. ``SELECT 1`` (a
    liveness check) answers one row holding 1. The dialect's connect-time probes
    (``select version()``, ``show standard_conforming_strings``, ...) never reach a
    replay connection, so they need no answer.
    """
    if view.fields["operation"] == "connect":
        return {
            "protocol": "sql",
            "request": None,
            "response": {"dialect_state": {}},
            "error": None,
        }
    if (
        view.fields["operation"] == "execute"
        and view.fields["statement"].lower().rstrip("; ") == "select 1"
    ):
        description = [["?column?", None, None, None, None, None, None]]
        return {
            "protocol": "sql",
            "request": None,
            "response": {"description": description, "rowcount": 1, "rows": [[1]]},
            "error": None,
        }
    return None
