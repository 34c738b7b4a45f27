"""redis-py replay, sync and asyncio, under OpenTelemetry's wrappers (so spans still appear).

Commands (``Redis.execute_command``), pipelines and transactions (``Pipeline.execute``)
and the commands a pipeline runs at once while watching keys
(``Pipeline.immediate_execute_command``) are answered from the cassette with the
recorded values, and recorded Redis errors are raised as the same exception class.
On a pub/sub connection, commands (``PubSub.execute_command``) are matched and sent
nowhere, and reads (``PubSub.parse_response``) hand back the recorded messages in order;
once they are used up, a read with a timeout finds nothing when it is over, and a
blocking read (``listen()``) raises :class:`ReplayMismatchError`, since it would wait for
ever. These methods are replaced whole, so no connection is taken from the pool and
clients created before replay are covered. As a safety net, a connection that something
else tries to open during replay (MONITOR, cluster clients) raises
:class:`ReplayMismatchError` instead of reaching the network.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import redis.asyncio.client
import redis.asyncio.connection
import redis.client
import redis.connection
import redis.exceptions

from timetracer_otel import wrapper_layers
from timetracer_otel.cassette.calls import CassetteCall
from timetracer_otel.protocols.redis import (
    UNWATCH_COMMANDS,
    command_name,
    command_request,
    live_view,
    pipeline_request,
    pubsub_read_request,
    pubsub_request,
    raise_on_error,
    sends,
)
from timetracer_otel.redaction import Redactor

from .http import recorded_error_class
from .session import ReplaySession, refusal, replay_session_for, round_trip

__all__ = ["install", "uninstall"]


def _session(request: Callable[[], dict[str, Any]]) -> ReplaySession | None:
    """The session answering this call, or None to let it through; ``request()``, its passwords hidden, names it in errors."""
    return replay_session_for("redis", lambda: live_view(request(), Redactor()).label)


def _exception(error: dict[str, Any]) -> Exception:
    """The recorded exception, as its own class when that is a redis-py or built-in one."""
    message = error.get("message", "")
    cls = recorded_error_class(error, "redis", redis.exceptions.RedisError)
    try:
        return cls(message)
    except Exception:  # noqa: BLE001 - a class with another constructor (cluster redirections)
        return redis.exceptions.RedisError(message)


def _response(call: CassetteCall) -> dict[str, Any]:
    """A recorded call's response; raises the recorded error instead if it failed."""
    if call.error or call.response is None:  # no reply: the call was cut short
        raise _exception(call.error or {"message": "the recording holds no reply for this call"})
    return call.decoded_response()


def _recorded(session: ReplaySession, request: dict[str, Any]) -> dict[str, Any]:
    """The recorded response of ``request``; raises the recorded error instead if it failed."""
    return _response(
        session.answer("redis", live_view(session.scrubbed(request), session.redactor)).call
    )


def _command_reply(session: ReplaySession, client: Any, args: tuple) -> Any:
    return _recorded(session, command_request(client, args))["reply"]


def _immediate_reply(session: ReplaySession, pipe: Any, args: tuple) -> Any:
    """A command run at once by a pipeline; keeps the pipeline's WATCH state as redis-py would."""
    reply = _command_reply(session, pipe, args)
    name = command_name(args[0])
    if name == "WATCH":
        pipe.watching = True
    elif name in UNWATCH_COMMANDS:
        pipe.watching = False
    return reply


def _pipeline_replies(session: ReplaySession, pipe: Any, args: tuple, kwargs: dict) -> list[Any]:
    response = _recorded(session, pipeline_request(pipe, raise_on_error(args, kwargs)))
    replies = response["replies"]
    for error in response.get("errors", ()):
        replies[error["index"]] = _exception(error)
    return replies


def _pubsub_sent(session: ReplaySession, pubsub: Any, args: tuple) -> None:
    """A pub/sub command: matched, sent nowhere (its answers come as messages, read apart)."""
    _recorded(session, pubsub_request(pubsub, args))


def _read_arguments(args: tuple, kwargs: dict) -> tuple[bool, float | None]:
    """``block`` and ``timeout`` of ``PubSub.parse_response(block=True, timeout=0)``."""
    block = args[0] if args else kwargs.get("block", True)
    timeout = args[1] if len(args) > 1 else kwargs.get("timeout", 0)
    return bool(block), timeout


def _next_message(
    session: ReplaySession, pubsub: Any, block: bool, may_wait: bool = False
) -> tuple[bool, Any]:
    """(found, the next recorded message read from ``pubsub``). A blocking read that finds none
    raises :class:`ReplayMismatchError` instead of waiting for ever, unless the caller
    ``may_wait`` (an asyncio task: cancelling it ends the wait) and the session's recording
    ended with that read waiting (:attr:`ReplaySession.quiet_reads_wait`)."""
    view = live_view(pubsub_read_request(pubsub), session.redactor)
    waits = may_wait and session.quiet_reads_wait
    recorded = session.answer("redis", view) if block and not waits else session.take("redis", view)
    if recorded is None:
        return False, None
    return True, _response(recorded.call)["reply"]


def _sync_read(wrapped: Callable[..., Any], pubsub: Any, args: tuple, kwargs: dict) -> Any:
    session = _session(lambda: pubsub_read_request(pubsub))
    if session is None:
        return wrapped(*args, **kwargs)
    block, timeout = _read_arguments(args, kwargs)
    found, message = _next_message(session, pubsub, block)
    if not found and timeout:
        time.sleep(timeout)  # nothing came within the timeout, as when it was recorded
    return message


async def _async_read(wrapped: Callable[..., Any], pubsub: Any, args: tuple, kwargs: dict) -> Any:
    session = _session(lambda: pubsub_read_request(pubsub))
    if session is None:
        return await wrapped(*args, **kwargs)
    block, timeout = _read_arguments(args, kwargs)
    found, message = _next_message(session, pubsub, block, may_wait=True)
    if not found and block:  # a listener started with the app: it waits until it is stopped
        await asyncio.get_running_loop().create_future()
    if not found and timeout:
        await asyncio.sleep(timeout)  # nothing came within the timeout, as when it was recorded
    return message


def _sync(answer: Callable[[ReplaySession, Any, tuple], Any]) -> Callable[..., Any]:
    def replay(wrapped: Callable[..., Any], instance: Any, args: tuple, kwargs: dict) -> Any:
        session = _session(lambda: command_request(instance, args)) if args else None
        if session is None:
            return wrapped(*args, **kwargs)
        return answer(session, instance, args)

    return replay


def _async(answer: Callable[[ReplaySession, Any, tuple], Any]) -> Callable[..., Any]:
    async def replay(wrapped: Callable[..., Any], instance: Any, args: tuple, kwargs: dict) -> Any:
        session = _session(lambda: command_request(instance, args)) if args else None
        if session is None:
            return await wrapped(*args, **kwargs)
        reply = answer(session, instance, args)
        await round_trip()
        return reply

    return replay


def _pipeline_session(pipe: Any, args: tuple, kwargs: dict) -> ReplaySession | None:
    if not sends(pipe):
        return None
    return _session(lambda: pipeline_request(pipe, raise_on_error(args, kwargs)))


def _execute(wrapped: Callable[..., Any], pipe: Any, args: tuple, kwargs: dict) -> Any:
    session = _pipeline_session(pipe, args, kwargs)
    if session is None:
        return wrapped(*args, **kwargs)
    if pipe.scripts:
        pipe.load_scripts()
    try:
        return _pipeline_replies(session, pipe, args, kwargs)
    finally:
        pipe.reset()  # what execute() does last: forget the commands and the WATCH state


async def _async_execute(wrapped: Callable[..., Any], pipe: Any, args: tuple, kwargs: dict) -> Any:
    session = _pipeline_session(pipe, args, kwargs)
    if session is None:
        return await wrapped(*args, **kwargs)
    if pipe.scripts:
        await pipe.load_scripts()
    try:
        replies = _pipeline_replies(session, pipe, args, kwargs)
    finally:
        await pipe.reset()
    await round_trip()
    return replies


def _refuse(connection: Any) -> None:
    """Raise instead of letting a connection open during replay."""
    where = (
        f"{connection.host}:{connection.port}"
        if hasattr(connection, "host")
        else getattr(connection, "path", "?")
    )
    call = f"a connection to the redis server at {where}"
    if replay_session_for("redis", lambda: call) is not None:
        raise refusal(
            "redis",
            call,
            "only commands, pipelines, transactions and pub/sub replay; MONITOR and cluster clients would connect",
        )


def _connect(wrapped: Callable[..., Any], connection: Any, args: tuple, kwargs: dict) -> Any:
    _refuse(connection)
    return wrapped(*args, **kwargs)


async def _async_connect(
    wrapped: Callable[..., Any], connection: Any, args: tuple, kwargs: dict
) -> Any:
    _refuse(connection)
    return await wrapped(*args, **kwargs)


# Where every connection opens: ``connect_check_health`` where redis-py has it (``connect``
# and lazy reconnects both go through it), else ``connect``.
_OPEN = (
    "connect_check_health"
    if hasattr(redis.connection.AbstractConnection, "connect_check_health")
    else "connect"
)

_SEAMS = (
    (redis.client.Redis, "execute_command", _sync(_command_reply)),
    (redis.client.Pipeline, "immediate_execute_command", _sync(_immediate_reply)),
    (redis.client.Pipeline, "execute", _execute),
    (redis.client.PubSub, "execute_command", _sync(_pubsub_sent)),
    (redis.client.PubSub, "parse_response", _sync_read),
    (redis.connection.AbstractConnection, _OPEN, _connect),
    (redis.asyncio.client.Redis, "execute_command", _async(_command_reply)),
    (redis.asyncio.client.Pipeline, "immediate_execute_command", _async(_immediate_reply)),
    (redis.asyncio.client.Pipeline, "execute", _async_execute),
    (redis.asyncio.client.PubSub, "execute_command", _async(_pubsub_sent)),
    (redis.asyncio.client.PubSub, "parse_response", _async_read),
    (redis.asyncio.connection.AbstractConnection, _OPEN, _async_connect),
)


def install() -> None:
    wrapper_layers.install_all(_SEAMS, layer="replay")


def uninstall() -> None:
    wrapper_layers.uninstall_all(_SEAMS, layer="replay")
