"""pymongo capture from OpenTelemetry's command-monitoring hooks: sync, asyncio and Motor.

``PymongoInstrumentor`` registers one pymongo ``CommandListener`` and gives each event,
with the client span it made for the command, to its request, response and failed
hooks. timetracer puts its own hooks in front of the ones the tracer has (the
application's, if it passed any), so the capture needs no wrapper of its own:
``AsyncMongoClient`` and Motor (pymongo in a thread, with the request's context)
publish the same events. The instrumentor's span is never current while its hooks
run, so the call is attached to it explicitly.

A call's request is ``{"database", "command_name", "command"}``; its response is
``{"reply": ...}`` when the command got an answer (an ``ok: 0`` reply that pymongo
was told to accept included) or ``{"failure": ...}`` when pymongo reported it failed:
the server's error document, or pymongo's ``{"errmsg", "errtype"}`` for an error raised
in the client. Both are snapshots taken in the hook, since the application may change
the documents afterwards; their secret fields are hidden (sealed with the key) by the
cassette writer, off the request path.

Only commands of clients created after the instrumentor is enabled are seen:
pymongo hands its global listeners to a client when it is constructed. A command that a
client made earlier sends while recording is not recorded: the first one is named in a
warning (the usual layout makes the client in a module imported before
``auto_setup`` runs, and its cassettes would otherwise hold no call, silently).
"""

from __future__ import annotations

import copy
import weakref
from collections.abc import Callable
from typing import Any

from opentelemetry import trace
from opentelemetry.instrumentation.pymongo import PymongoInstrumentor
from pymongo import errors, monitoring
from pymongo.asynchronous import command_runner as async_runner
from pymongo.synchronous import command_runner as sync_runner

from timetracer_otel import wrapper_layers
from timetracer_otel._diagnostics import counters, guarded, logger
from timetracer_otel._recording import ProtocolCall, current_recording
from timetracer_otel.protocols.mongo import UNRECORDED, command_request

__all__ = ["install", "uninstall"]

# span -> call between a command's start and its outcome
_pending: weakref.WeakKeyDictionary[Any, ProtocolCall] = weakref.WeakKeyDictionary()


def _started(span: Any, event: monitoring.CommandStartedEvent) -> None:
    recording = current_recording()
    if recording is None or event.command_name in UNRECORDED:
        return
    with guarded("pymongo.request"):
        command = copy.deepcopy(event.command)
        request = command_request(event.database_name, event.command_name, command)
        call = ProtocolCall("mongo", "pymongo", request)
        with trace.use_span(span, end_on_exit=False):
            recording.add_call(call)
        _pending[span] = call


def _succeeded(span: Any, event: monitoring.CommandSucceededEvent) -> None:
    call = _pending.pop(span, None)
    if call is None:
        return
    with guarded("pymongo.response"):
        call.response = {"reply": copy.deepcopy(event.reply)}


def _error_type(failure: Any) -> str:
    """The exception class named in the cassette: pymongo's own for a client-side error."""
    if "ok" in failure:  # the server answered with an error document
        return "pymongo.errors.OperationFailure"
    name = str(failure.get("errtype", "PyMongoError"))
    return f"pymongo.errors.{name}" if hasattr(errors, name) else name


def _failed(span: Any, event: monitoring.CommandFailedEvent) -> None:
    call = _pending.pop(span, None)
    if call is None:
        return
    with guarded("pymongo.error"):
        failure = copy.deepcopy(event.failure)
        call.response = {"failure": failure}
        call.error = {"type": _error_type(failure), "message": str(failure.get("errmsg", ""))}


class _Hook:
    """timetracer's hook, then the one the tracer had."""

    def __init__(
        self, ours: Callable[[Any, Any], None], theirs: Callable[[Any, Any], None]
    ) -> None:
        self.ours = ours
        self.theirs = theirs

    def __call__(self, span: Any, event: Any) -> None:
        self.ours(span, event)
        self.theirs(span, event)


_HOOKS: dict[str, Callable[[Any, Any], None]] = {
    "start_hook": _started,
    "success_hook": _succeeded,
    "failed_hook": _failed,
}


def _chain(tracer: Any) -> None:
    if tracer is None:
        return
    for attribute, hook in _HOOKS.items():
        current = getattr(tracer, attribute)
        if not isinstance(current, _Hook):
            setattr(tracer, attribute, _Hook(hook, current))


def _instrument(wrapped: Any, instance: Any, args: tuple, kwargs: dict) -> Any:
    """The instrumentor makes its command tracer here, on the first ``instrument()``."""
    result = wrapped(*args, **kwargs)
    _chain(instance._commandtracer_instance)
    return result


_UNSEEN_WARNING = (
    "timetracer: a MongoClient created before timetracer's pymongo plugin was enabled sent %s "
    "while recording; its commands are not recorded. Enable the plugin before the "
    "client is made (timetracer_otel.plugins.enable_pymongo() before the module that creates it "
    "is imported), or run the app under opentelemetry-instrument"
)
_warned = False


def _note_unseen(args: tuple, kwargs: dict) -> None:
    """Warn (once) when a command made while recording (a request, or the process) reaches no listener of the instrumentor's."""
    global _warned
    if current_recording() is None:
        return
    with guarded("pymongo.unseen"):
        # _run_command(conn, cmd, dbname, ..., client=...): the client's listeners, not the
        # call's (a connection's handshake is published to none)
        listeners = getattr(kwargs.get("client"), "_event_listeners", None)
        tracer = PymongoInstrumentor()._commandtracer_instance
        if listeners is None or tracer in listeners.event_listeners():
            return
        counters.add("unrecorded.pymongo")
        if not _warned:
            _warned = True
            name = kwargs.get("command_name") or next(iter(args[1]), "a command")
            logger.warning(_UNSEEN_WARNING, f"{name!r} to {args[2]!r}")


def _run_command(wrapped: Any, instance: Any, args: tuple, kwargs: dict) -> Any:
    _note_unseen(args, kwargs)
    return wrapped(*args, **kwargs)


async def _async_run_command(wrapped: Any, instance: Any, args: tuple, kwargs: dict) -> Any:
    _note_unseen(args, kwargs)
    return await wrapped(*args, **kwargs)


_RUNNERS = ((sync_runner, _run_command), (async_runner, _async_run_command))


def install() -> None:
    wrapper_layers.install(PymongoInstrumentor, "_instrument", _instrument)
    # instrumented before timetracer was enabled
    _chain(PymongoInstrumentor()._commandtracer_instance)
    for runner, wrapper in _RUNNERS:
        wrapper_layers.install(runner, "_run_command", wrapper)


def uninstall() -> None:
    for runner, _ in _RUNNERS:
        wrapper_layers.uninstall(runner, "_run_command")
    wrapper_layers.uninstall(PymongoInstrumentor, "_instrument")
    tracer = PymongoInstrumentor()._commandtracer_instance
    for attribute in _HOOKS:
        current = getattr(tracer, attribute, None)
        if isinstance(current, _Hook):
            setattr(tracer, attribute, current.theirs)
