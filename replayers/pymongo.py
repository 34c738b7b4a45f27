"""pymongo replay below server selection: no MongoDB, no topology, no socket.

While a replay session is current, a client's topology is never opened and server
selection returns a stand-in server (a replica set primary at the client's first
seed address) whose pool hands out connections that never open a socket. pymongo
still builds, publishes (so spans appear) and checks every command as it would live;
only the round trip is replaced: the command pymongo publishes is matched against
the cassette, and the recorded reply is encoded to BSON and returned as the server's
answer. pymongo then decodes it with the application's codec options, raises
``OperationFailure``, ``DuplicateKeyError`` and ``BulkWriteError`` from it, and follows
cursors with ``getMore`` as live. This works for ``MongoClient``, ``AsyncMongoClient``
and Motor, including clients created before replay started.

The stand-in connection answers its own handshake (unpublished ``hello``) and
``endSessions``; a client whose topology never opened has no server sessions to end
and no server cursors to kill, so closing it sends nothing, in replay or after.

In a process started with ``TIMETRACER_MODE=replay`` the same holds outside every
replayed request: a ``MongoClient`` built with ``connect=True`` at import opens no
topology and no monitor, and a command sent outside a request is answered by the
process session or refused with ``ReplayMismatchError`` (``replay_session_for``)
instead of reaching a server.
"""

from __future__ import annotations

import contextlib
import weakref
from collections.abc import AsyncIterator, Iterator
from itertools import count
from typing import Any

import bson
from bson.binary import UuidRepresentation
from bson.codec_options import CodecOptions
from bson.objectid import ObjectId
from pymongo import common, errors
from pymongo.asynchronous import command_runner as async_runner
from pymongo.asynchronous import mongo_client as async_client
from pymongo.asynchronous import pool as async_pool
from pymongo.asynchronous import server as async_server
from pymongo.asynchronous import topology as async_topology
from pymongo.hello import Hello
from pymongo.helpers_shared import _SENSITIVE_COMMANDS
from pymongo.message import _OpMsg
from pymongo.server_description import ServerDescription
from pymongo.synchronous import command_runner as sync_runner
from pymongo.synchronous import mongo_client as sync_client
from pymongo.synchronous import pool as sync_pool
from pymongo.synchronous import server as sync_server
from pymongo.synchronous import topology as sync_topology

from timetracer_otel import wrapper_layers
from timetracer_otel.cassette.values import decode_value, encode_value
from timetracer_otel.libraries import LIBRARIES
from timetracer_otel.protocols.mongo import UNRECORDED, command_view

from .session import (
    ReplayMismatchError,
    ReplaySession,
    current_session,
    replay_session_for,
    round_trip,
)

__all__ = ["install", "uninstall"]

_LIBRARY = "pymongo"
# Every library this module replays (pymongo, and Motor, which runs it): either one named
# live lets the calls through.
_LIBRARIES = tuple(library.name for library in LIBRARIES.values() if library.replay == __name__)
# Replies are encoded the way a server would send what the recording decoded; UUIDs as standard.
_REPLY_CODEC: CodecOptions = CodecOptions(uuid_representation=UuidRepresentation.STANDARD)
# topology -> stand-in server
_SERVERS: weakref.WeakKeyDictionary[Any, Any] = weakref.WeakKeyDictionary()
_connection_ids = count(1)


def _replayed_outside_requests(library: str) -> bool:
    """Whether ``library``'s calls outside every replayed request are answered or refused (``TIMETRACER_MODE=replay``)."""
    try:
        # with no session current: the process session or None
        return replay_session_for(library, str) is not None
    except ReplayMismatchError:
        return True


def _held() -> bool:
    """True when no server may be reached now: a replay session answers pymongo, or, outside
    every request, the process replays (its commands are then answered or refused when sent)."""
    session = current_session()
    if session is not None:
        return not any(session.is_live(library) for library in _LIBRARIES)
    return all(_replayed_outside_requests(library) for library in _LIBRARIES)


def _hello(address: tuple[str, int]) -> dict[str, Any]:
    """What the stand-in server says about itself: a primary that supports sessions and retryable writes."""
    host = f"{address[0]}:{address[1]}"
    return {
        "helloOk": True,
        "isWritablePrimary": True,
        "setName": "timetracer-replay",
        "hosts": [host],
        "me": host,
        "maxBsonObjectSize": common.MAX_BSON_SIZE,
        "maxMessageSizeBytes": common.MAX_MESSAGE_SIZE,
        "maxWriteBatchSize": common.MAX_WRITE_BATCH_SIZE,
        "logicalSessionTimeoutMinutes": 30,
        "minWireVersion": common.MIN_SUPPORTED_WIRE_VERSION,
        "maxWireVersion": common.MAX_SUPPORTED_WIRE_VERSION,
        "ok": 1.0,
    }


# ----------------------------------------------------------------------------- answering
def _client_error(failure: dict[str, Any]) -> Exception:
    """The exception pymongo raised in the client (recorded as ``{"errmsg", "errtype"}``)."""
    cls = getattr(errors, str(failure.get("errtype")), None)
    if not (isinstance(cls, type) and issubclass(cls, errors.PyMongoError)):
        cls = errors.AutoReconnect
    return cls(str(failure.get("errmsg") or "recorded without a reply"))


def _outcome(
    response: dict[str, Any] | None,
) -> tuple[dict[str, Any] | None, Exception | None]:
    """(reply document, exception) for a recorded response."""
    response = response or {}
    if "reply" in response:
        return response["reply"] or {
            "ok": 1.0
        }, None  # {}: pymongo hides the replies of auth commands
    failure = response.get("failure") or {}
    if "ok" in failure:  # the server's error document: pymongo raises from it as it did
        return failure, None
    return None, _client_error(failure)


def _adopt_generated_ids(command: Any, recorded: dict[str, Any]) -> None:
    """Give the inserted documents the ObjectIds they had when recorded.

    The ObjectId object pymongo (or the application) generated is changed in place, so
    every holder of it sees the recorded id: the application's document, ``inserted_id``,
    ``inserted_ids``.
    """
    if next(iter(command), None) != "insert":
        return
    for live, old in zip(
        command.get("documents") or (), recorded.get("documents") or (), strict=False
    ):
        live_id = live.get("_id") if hasattr(live, "get") else None
        old_id = decode_value(old.get("_id")) if isinstance(old, dict) else None
        if isinstance(live_id, ObjectId) and isinstance(old_id, ObjectId) and live_id != old_id:
            live_id._ObjectId__id = old_id.binary  # type: ignore[attr-defined]


class _Replaying:
    """The replay half of a stand-in connection: the session answers instead of a socket."""

    replay_session: ReplaySession | None  # None: made outside every request of a replaying process
    hello_reply: dict[str, Any]
    _reply: dict[str, Any] | None = None
    _error: Exception | None = None

    def prepare(self, dbname: str, command: Any, published: bool) -> None:
        """Find the answer to ``command`` before pymongo sends it; raises ReplayMismatchError."""
        name = next(iter(command))
        self._reply, self._error = {"ok": 1.0}, None
        if not published:  # the connection's own handshake
            self._reply = self.hello_reply
            return
        if name in UNRECORDED:
            return
        shown = {} if name.lower() in _SENSITIVE_COMMANDS else command  # as pymongo publishes it
        session = self.replay_session
        # outside every replayed request of a replaying process: the process session, or the refusal
        if session is None:
            session = replay_session_for(
                _LIBRARY, lambda: command_view(dbname, name, encode_value(shown)).label
            )
        redactor = session.redactor if session is not None else None
        encoded = {
            "command": encode_value(session.scrubbed(shown) if session is not None else shown)
        }
        view = command_view(
            dbname,
            name,
            (redactor.protocol_request("mongo", encoded) if redactor is not None else encoded)[
                "command"
            ],
        )
        if session is None:
            raise ReplayMismatchError(
                view.label,
                _LIBRARY,
                "(none)",
                "a replay connection was used outside its replay session",
            )
        recorded = session.answer(_LIBRARY, view)
        _adopt_generated_ids(command, recorded.call.mongo_request().command)
        self._reply, self._error = _outcome(recorded.call.decoded_response())

    def answer(self) -> _OpMsg:
        if self._error is not None:
            raise self._error
        assert self._reply is not None  # prepare() sets one of the two
        return _OpMsg(0, bson.encode(self._reply, codec_options=_REPLY_CODEC))


class _NoSocket:
    """Where a connection keeps its socket; nothing is ever opened, so nothing to close."""

    @property
    def get_conn(self) -> _NoSocket:
        return self

    def settimeout(self, timeout: float | None) -> None:
        pass

    def close(self) -> None:
        pass


class _AsyncNoSocket(_NoSocket):
    async def close(self) -> None:  # type: ignore[override]
        pass


class _Connection(_Replaying, sync_pool.Connection):
    def send_message(self, message: bytes, max_doc_size: int) -> None:
        """Nothing leaves the process: the answer was found in ``prepare``."""

    def receive_message(self, request_id: int | None) -> _OpMsg:
        return self.answer()


class _AsyncConnection(_Replaying, async_pool.AsyncConnection):
    async def send_message(self, message: bytes, max_doc_size: int) -> None:
        """Nothing leaves the process: the answer was found in ``prepare``."""

    async def receive_message(self, request_id: int | None) -> _OpMsg:
        reply = self.answer()
        await round_trip()
        return reply


def _connection(cls: type, pool: Any, socket: _NoSocket) -> Any:
    conn = cls(socket, pool, pool.address, next(_connection_ids), False)
    conn.replay_session = current_session()
    conn.hello_reply = _hello(pool.address)
    return conn


class _Pool(sync_pool.Pool):
    """Hands out stand-in connections, handshaken, never authenticated (nothing to authenticate to)."""

    @contextlib.contextmanager
    def _replay_checkout(self) -> Iterator[_Connection]:
        conn = _connection(_Connection, self, _NoSocket())
        conn.hello()
        conn.ready = True
        yield conn

    def checkout(self, handler: Any = None) -> Any:
        return self._replay_checkout()

    def checkin(self, conn: Any) -> None:
        pass


class _AsyncPool(async_pool.Pool):
    @contextlib.asynccontextmanager
    async def _replay_checkout(self) -> AsyncIterator[_AsyncConnection]:
        conn = _connection(_AsyncConnection, self, _AsyncNoSocket())
        await conn.hello()
        conn.ready = True
        yield conn

    def checkout(self, handler: Any = None) -> Any:
        return self._replay_checkout()

    async def checkin(self, conn: Any) -> None:
        pass


def _server(topology: Any, is_async: bool) -> Any:
    """The stand-in server of ``topology``, made once."""
    server = _SERVERS.get(topology)
    if server is None:
        address = next(iter(topology._settings.seeds))
        options = topology._settings.pool_options
        description = ServerDescription(address, Hello(_hello(address)))
        # Never opened, so it has no monitor (the stubs ask for one).
        made = (
            async_server.Server(description, _AsyncPool(address, options), None)  # type: ignore[arg-type]
            if is_async
            else sync_server.Server(description, _Pool(address, options), None)  # type: ignore[arg-type]
        )
        server = _SERVERS.setdefault(topology, made)
    return server


# ----------------------------------------------------------------------------- patches
def _published(
    conn: Any,
    cmd: Any,
    dbname: str,
    *args: Any,
    listeners: Any = None,
    orig: Any = None,
    **kwargs: Any,
) -> tuple[str, Any, bool]:
    """(database, the command as published, whether it is published) from ``_run_command``'s arguments."""
    return dbname, orig if orig is not None else cmd, listeners is not None


def _run_command(wrapped: Any, instance: Any, args: tuple, kwargs: dict) -> Any:
    if isinstance(args[0], _Replaying):
        args[0].prepare(*_published(*args, **kwargs))
    return wrapped(*args, **kwargs)


async def _async_run_command(wrapped: Any, instance: Any, args: tuple, kwargs: dict) -> Any:
    if isinstance(args[0], _Replaying):
        args[0].prepare(*_published(*args, **kwargs))
    return await wrapped(*args, **kwargs)


def _select(wrapped: Any, instance: Any, args: tuple, kwargs: dict) -> Any:
    return _server(instance, is_async=False) if _held() else wrapped(*args, **kwargs)


async def _async_select(wrapped: Any, instance: Any, args: tuple, kwargs: dict) -> Any:
    return _server(instance, is_async=True) if _held() else await wrapped(*args, **kwargs)


def _unopened_topology(client: Any) -> Any:
    if client._topology is None:
        raise errors.ConfigurationError(
            "timetracer replay: a mongodb+srv:// client resolves DNS on first use; replay it with a mongodb:// URL"
        )
    return client._topology


def _get_topology(wrapped: Any, instance: Any, args: tuple, kwargs: dict) -> Any:
    """In replay the topology is used but never opened: no monitors, no kill-cursors thread.

    ``MongoClient(connect=True)`` calls this when it is built, so a client made at import in a
    replaying process starts nothing either.
    """
    return _unopened_topology(instance) if _held() else wrapped(*args, **kwargs)


async def _async_get_topology(wrapped: Any, instance: Any, args: tuple, kwargs: dict) -> Any:
    return _unopened_topology(instance) if _held() else await wrapped(*args, **kwargs)


def _if_opened(wrapped: Any, instance: Any, args: tuple, kwargs: dict) -> Any:
    """Ending sessions and killing cursors: nothing to do for a client that never reached a server."""
    return wrapped(*args, **kwargs) if instance._opened else None


async def _async_if_opened(wrapped: Any, instance: Any, args: tuple, kwargs: dict) -> Any:
    return await wrapped(*args, **kwargs) if instance._opened else None


_SYNC = (sync_runner, sync_topology.Topology, sync_client.MongoClient)
_ASYNC = (async_runner, async_topology.Topology, async_client.AsyncMongoClient)


def _patches() -> list[tuple[Any, str, Any]]:
    patches = []
    for (runner, topology, client), is_async in ((_SYNC, False), (_ASYNC, True)):
        patches += [
            (runner, "_run_command", _async_run_command if is_async else _run_command),
            (topology, "select_server", _async_select if is_async else _select),
            (topology, "select_server_by_address", _async_select if is_async else _select),
            (client, "_get_topology", _async_get_topology if is_async else _get_topology),
            (client, "_end_sessions", _async_if_opened if is_async else _if_opened),
            (client, "_process_kill_cursors", _async_if_opened if is_async else _if_opened),
        ]
    return patches


def install() -> None:
    for owner, name, wrapper in _patches():
        wrapper_layers.install(owner, name, wrapper, layer="replay")


def uninstall() -> None:
    for owner, name, _ in _patches():
        wrapper_layers.uninstall(owner, name, layer="replay")
