"""Mongo commands as cassette data: the request shape, secret redaction, and the matching view.

A call's request is ``{"database", "command_name", "command"}``; its response is
``{"reply": ...}`` or ``{"failure": ...}``. Secrets (:func:`redact`): document fields
named like a secret, at any depth, in commands and replies.

Matching compares the command as the application asked for it, not what changes per run.

A command's signature is its database, its name, and its fields in canonical order,
less the fields that pymongo or the server make up per run: the session (``lsid``,
``txnNumber``), cluster time gossip (``$clusterTime``, ``readConcern.afterClusterTime``),
routing (``$db``, ``$readPreference``), the stable API declaration, ``recoveryToken``,
and ``maxTimeMS`` (a client-side operation timeout, ``timeoutMS``, recomputes it from the
time left). The ObjectId ``_id`` of each document of an ``insert`` is generated anew on
every run, so only its presence counts; replay then gives the live document the recorded
id. Values nested inside a field keep their order: a sort or a ``$group`` depends on it.

Works on cassette typed values (``timetracer_otel.cassette.values``), so it never imports
pymongo: any cassette loads wherever timetracer does.
"""

from __future__ import annotations

import json
from typing import Any

from timetracer_otel.cassette.calls import CassetteCall
from timetracer_otel.secret_names import SecretNames

from . import typed
from .trace_context import without_trace_context
from .view import CallView

__all__ = [
    "UNRECORDED",
    "VOLATILE_FIELDS",
    "command_request",
    "command_view",
    "recorded_view",
    "redact",
]

# Client housekeeping, not the application's: ending server sessions (random ids) when
# a client closes. Capture leaves it out; replay answers it without a recording.
UNRECORDED = frozenset({"endSessions"})

VOLATILE_FIELDS = frozenset(
    {
        "lsid",
        "txnNumber",
        "$clusterTime",
        "$db",
        "$readPreference",
        "apiVersion",
        "apiStrict",
        "apiDeprecationErrors",
        "recoveryToken",
        "maxTimeMS",
    }
)
_GENERATED_ID = {"$type": "objectid", "value": "<generated>"}


def command_request(database: str, name: str, command: Any) -> dict[str, Any]:
    """The request of command ``name`` (its document, ``command``) sent to ``database``."""
    return {"database": database, "command_name": name, "command": command}


def redact(
    request: dict[str, Any], response: dict[str, Any] | None, names: SecretNames, hide: typed.Hide
) -> None:
    """Hide, in place, the fields named like a secret in a command and its reply (in cassette form)."""
    typed.hide_named_fields(request.get("command"), names, hide)
    typed.hide_named_fields(response, names, hide)


def _is_objectid(value: Any) -> bool:
    return isinstance(value, dict) and value.get("$type") == "objectid"


def _without_generated_ids(documents: Any) -> Any:
    if not isinstance(documents, list):
        return documents
    return [
        {**doc, "_id": _GENERATED_ID}
        if isinstance(doc, dict) and _is_objectid(doc.get("_id"))
        else doc
        for doc in documents
    ]


def _significant(name: str, command: dict[str, Any]) -> dict[str, Any]:
    """The command's fields that matching compares, top-level keys sorted, nested order kept."""
    fields = {key: command[key] for key in sorted(command) if key not in VOLATILE_FIELDS}
    concern = fields.get("readConcern")
    if isinstance(concern, dict) and "afterClusterTime" in concern:
        concern = {k: v for k, v in concern.items() if k != "afterClusterTime"}
        if concern:
            fields["readConcern"] = concern
        else:
            del fields["readConcern"]
    if name == "insert" and "documents" in fields:
        fields["documents"] = _without_generated_ids(fields["documents"])
    return fields


def _canonical(value: Any) -> str:
    return without_trace_context(json.dumps(value, ensure_ascii=False, separators=(",", ":")))


_SET_OPERATORS = frozenset({"$in", "$nin", "$all"})


def _sets_sorted(value: Any) -> Any:
    """``value`` with the operands of ``$in``, ``$nin`` and ``$all`` in canonical order: a set of
    strings passed there is in its process's hash order, and the operator's result is not."""
    if isinstance(value, dict):
        return {
            key: sorted(item, key=_canonical)
            if key in _SET_OPERATORS and isinstance(item, list)
            else _sets_sorted(item)
            for key, item in value.items()
        }
    if isinstance(value, list):
        return [_sets_sorted(item) for item in value]
    return value


def command_view(database: str, name: str, command: dict[str, Any]) -> CallView:
    """The view of a command given as typed values (already redacted like a recording)."""
    fields = _significant(name, command)
    target = command.get(name)
    label = f"{name} {database}.{target}" if isinstance(target, str) else f"{name} {database}"
    shown = {
        "database": database,
        "command": name,
        **{key: _canonical(value) for key, value in fields.items()},
    }
    return CallView(
        protocol="mongo",
        label=label,
        key=("mongo", database, name, _canonical(_sets_sorted(fields))),
        fields=shown,
    )


def recorded_view(call: CassetteCall) -> CallView:
    """The view of a recorded Mongo call."""
    request = call.mongo_request()
    return command_view(request.database, request.command_name, request.command)
