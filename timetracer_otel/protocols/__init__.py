"""What a call of each protocol looks like in a cassette, shared by capture and replay.

One module per protocol (``http``, ``sql``, ``redis``, ``mongo``), named as the
protocol :mod:`timetracer_otel.libraries` declares, holds that protocol's request
shape, the redaction of its secrets and its matching view: capture builds a call with
it, the cassette writer hides its secrets with it, and replay builds the same view of
a live call and of its recorded twin with it, so the two sides agree without importing
each other. These modules never import a client library: any cassette loads wherever
timetracer does.

A protocol module defines ``recorded_view(call)`` (``call``: a
:class:`~timetracer_otel.cassette.calls.CassetteCall`); it may define
``redact(request, response, names, hide)`` (secrets found by name in typed values; HTTP
messages are redacted by :class:`~timetracer_otel.redaction.Redactor` itself) and
``usual_answer(view)`` (the answer to a call that carries no data, for a process
replaying without its recording).
"""

from __future__ import annotations

import functools
import importlib
from types import ModuleType
from typing import Any

from timetracer_otel.cassette.calls import CassetteCall
from timetracer_otel.libraries import LIBRARIES
from timetracer_otel.secret_names import SecretNames

from .typed import Hide
from .view import CallView

__all__ = [
    "PROTOCOLS",
    "CallView",
    "protocol_module",
    "recorded_view",
    "usual_answer",
    "redact_call",
    "redact_request",
]

PROTOCOLS = frozenset(library.protocol for library in LIBRARIES.values())


def protocol_module(protocol: str) -> ModuleType | None:
    """The shared module of ``protocol``, or None for a protocol no library speaks."""
    if protocol not in PROTOCOLS:
        return None
    return _imported(protocol)


@functools.cache  # one entry per protocol: only known ones get here
def _imported(protocol: str) -> ModuleType:
    """Imported on first use (a cassette of one protocol needs no other): the import machinery once."""
    return importlib.import_module(f"{__name__}.{protocol}")


def _hook(protocol: str, name: str) -> Any:
    return getattr(protocol_module(protocol), name, None)


def recorded_view(call: CassetteCall) -> CallView | None:
    """The view of a recorded call, or None for a protocol this version does not replay."""
    view = _hook(call.protocol, "recorded_view")
    return None if view is None else view(call)


def usual_answer(view: CallView) -> dict[str, Any] | None:
    """The call document a server's usual answer gives for ``view``, when it carries no data."""
    answer = _hook(view.protocol, "usual_answer")
    return None if answer is None else answer(view)


def redact_call(call: dict[str, Any], names: SecretNames, hide: Hide) -> None:
    """Hide the secrets of a recorded SQL, Redis or Mongo call document in place."""
    redact = _hook(call.get("protocol", ""), "redact")
    if redact is not None and isinstance(call.get("request"), dict):
        redact(call["request"], call.get("response"), names, hide)


def redact_request(
    protocol: str, request: dict[str, Any], names: SecretNames, hide: Hide
) -> dict[str, Any]:
    """A live call's request in cassette form, hidden the way :func:`redact_call` hides a recorded one (in place)."""
    _hook(protocol, "redact")(request, None, names, hide)
    return request
