"""A small MongoDB wire-protocol server on 127.0.0.1, for the tests: the real pymongo talks to it.

It speaks OP_MSG (all pymongo 4.20 sends) and answers, from an in-memory store, the
commands the tests use: hello, ping, endSessions, insert (with duplicate ``_id`` write
errors), find, getMore, killCursors, update ($set, $inc, upsert), delete, count and
aggregate ($match, $group with $sum, $sort, $limit; an unknown stage fails as on a real
server). It presents itself as the primary of a one-member replica set and gossips
``$clusterTime``, so pymongo sends sessions, transaction numbers and cluster times as it
would to a real deployment. Filters support equality and $gt/$gte/$lt/$lte/$ne/$in.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import itertools
import socket
import socketserver
import struct
import threading
from collections.abc import Iterator
from typing import Any

import bson
from bson.codec_options import CodecOptions
from bson.int64 import Int64
from bson.objectid import ObjectId
from bson.timestamp import Timestamp

_OP_MSG = 2013
_MORE_TO_COME = 1 << 1
_CODEC: CodecOptions = CodecOptions()
_HEADER = struct.Struct("<iiii")  # messageLength, requestID, responseTo, opCode


class CommandError(Exception):
    def __init__(self, code: int, code_name: str, message: str) -> None:
        super().__init__(message)
        self.reply = {"ok": 0.0, "errmsg": message, "code": code, "codeName": code_name}


# ----------------------------------------------------------------------------- queries
def _compare(value: Any, condition: Any) -> bool:
    if not (
        isinstance(condition, dict) and condition and all(k.startswith("$") for k in condition)
    ):
        return value == condition
    tests = {
        "$gt": lambda x: value is not None and value > x,
        "$gte": lambda x: value is not None and value >= x,
        "$lt": lambda x: value is not None and value < x,
        "$lte": lambda x: value is not None and value <= x,
        "$ne": lambda x: value != x,
        "$in": lambda x: value in x,
    }
    for operator, operand in condition.items():
        if operator not in tests:
            raise CommandError(2, "BadValue", f"unknown operator: {operator}")
        if not tests[operator](operand):
            return False
    return True


def matches(doc: dict[str, Any], query: dict[str, Any]) -> bool:
    return all(_compare(doc.get(field), condition) for field, condition in query.items())


def _sorted(docs: list[dict[str, Any]], spec: dict[str, int]) -> list[dict[str, Any]]:
    for field, direction in reversed(list(spec.items())):
        docs = sorted(
            docs, key=lambda d: (d.get(field) is not None, d.get(field)), reverse=direction < 0
        )
    return docs


def _value(doc: dict[str, Any], expression: Any) -> Any:
    return (
        doc.get(expression[1:])
        if isinstance(expression, str) and expression.startswith("$")
        else expression
    )


def _group(docs: list[dict[str, Any]], spec: dict[str, Any]) -> list[dict[str, Any]]:
    groups: dict[Any, dict[str, Any]] = {}
    for doc in docs:
        key = _value(doc, spec["_id"])
        group = groups.setdefault(key, {"_id": key, **{name: 0 for name in spec if name != "_id"}})
        for name, accumulator in spec.items():
            if name != "_id":
                group[name] += _value(doc, accumulator["$sum"]) or 0
    return list(groups.values())


def _aggregate(docs: list[dict[str, Any]], pipeline: list[dict[str, Any]]) -> list[dict[str, Any]]:
    for stage in pipeline:
        ((name, spec),) = stage.items()
        if name == "$match":
            docs = [d for d in docs if matches(d, spec)]
        elif name == "$group":
            docs = _group(docs, spec)
        elif name == "$sort":
            docs = _sorted(docs, spec)
        elif name == "$limit":
            docs = docs[:spec]
        else:
            raise CommandError(
                40324, "Location40324", f"Unrecognized pipeline stage name: '{name}'"
            )
    return docs


def _updated(doc: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    if not any(key.startswith("$") for key in update):
        return {"_id": doc.get("_id"), **update}
    doc = dict(doc)
    for operator, changes in update.items():
        for field, value in changes.items():
            if operator == "$set":
                doc[field] = value
            elif operator == "$inc":
                doc[field] = doc.get(field, 0) + value
            else:
                raise CommandError(9, "FailedToParse", f"Unknown modifier: {operator}")
    return doc


# ----------------------------------------------------------------------------- the server
class MongoWireServer:
    """The store, the cursors and the command handlers; ``start()`` serves them on a free port."""

    def __init__(self) -> None:
        self.collections: dict[str, list[dict[str, Any]]] = {}
        self.cursors: dict[int, tuple[str, list[dict[str, Any]]]] = {}
        self.commands: list[str] = []  # names of the commands received, in order
        self.lock = threading.Lock()
        self._cursor_ids = itertools.count(7_000_000_001)
        self._tcp: socketserver.ThreadingTCPServer | None = None
        self._open: set[socket.socket] = set()
        self.port = 0

    @property
    def url(self) -> str:
        return f"mongodb://127.0.0.1:{self.port}/?serverSelectionTimeoutMS=5000"

    # -- commands ----------------------------------------------------------------
    def hello(self, db: str, cmd: dict[str, Any]) -> dict[str, Any]:
        me = f"127.0.0.1:{self.port}"
        # legacy or hello
        writable = "ismaster" if "ismaster" in (k.lower() for k in cmd) else "isWritablePrimary"
        return {
            "helloOk": True, writable: True, "setName": "rs0", "setVersion": 1, "hosts": [me], "primary": me, "me": me,
            "electionId": ObjectId("7fffffff0000000000000001"), "maxBsonObjectSize": 16 * 1024 * 1024,
            "maxMessageSizeBytes": 48_000_000, "maxWriteBatchSize": 100_000, "localTime": dt.datetime.now(dt.timezone.utc),
            "logicalSessionTimeoutMinutes": 30, "minWireVersion": 0, "maxWireVersion": 21,
        }  # fmt: skip

    def insert(self, db: str, cmd: dict[str, Any]) -> dict[str, Any]:
        ns = f"{db}.{cmd['insert']}"
        docs, errors = self.collections.setdefault(ns, []), []
        before = len(docs)
        for index, doc in enumerate(cmd["documents"]):
            if all(d.get("_id") != doc.get("_id") for d in docs):
                docs.append(doc)
                continue
            message = f"E11000 duplicate key error collection: {ns} index: _id_ dup key: {{ _id: {doc['_id']!r} }}"
            errors.append({"index": index, "code": 11000, "errmsg": message})
            if cmd.get("ordered", True):
                break
        return {"n": len(docs) - before, **({"writeErrors": errors} if errors else {})}

    def update(self, db: str, cmd: dict[str, Any]) -> dict[str, Any]:
        docs = self.collections.setdefault(f"{db}.{cmd['update']}", [])
        reply: dict[str, Any] = {"n": 0, "nModified": 0}
        for index, statement in enumerate(cmd["updates"]):
            hits = [i for i, d in enumerate(docs) if matches(d, statement["q"])][
                : None if statement.get("multi") else 1
            ]
            for i in hits:
                docs[i] = _updated(docs[i], statement["u"])
            reply["n"] += len(hits)
            reply["nModified"] += len(hits)
            if not hits and statement.get("upsert"):
                new = _updated({**statement["q"], "_id": ObjectId()}, statement["u"])
                docs.append(new)
                reply["n"] += 1
                reply.setdefault("upserted", []).append({"index": index, "_id": new["_id"]})
        return reply

    def findAndModify(self, db: str, cmd: dict[str, Any]) -> dict[str, Any]:
        ns = f"{db}.{cmd['findAndModify']}"
        docs = self.collections.setdefault(ns, [])
        query = cmd.get("query") or {}
        hit = next((i for i, d in enumerate(docs) if matches(d, query)), None)
        if hit is not None:
            before, docs[hit] = docs[hit], _updated(docs[hit], cmd["update"])
            return {
                "lastErrorObject": {"n": 1, "updatedExisting": True},
                "value": docs[hit] if cmd.get("new") else before,
            }
        if not cmd.get("upsert"):
            return {"lastErrorObject": {"n": 0, "updatedExisting": False}, "value": None}
        new = _updated(dict(query), cmd["update"])
        new["_id"] = new.get("_id") or ObjectId()
        if any(d.get("_id") == new["_id"] for d in docs):
            raise CommandError(
                11000,
                "DuplicateKey",
                f"E11000 duplicate key error collection: {ns} index: _id_ dup key: {{ _id: {new['_id']!r} }}",
            )
        docs.append(new)
        upserted = {"n": 1, "updatedExisting": False, "upserted": new["_id"]}
        return {"lastErrorObject": upserted, "value": new if cmd.get("new") else None}

    def delete(self, db: str, cmd: dict[str, Any]) -> dict[str, Any]:
        docs = self.collections.setdefault(f"{db}.{cmd['delete']}", [])
        removed = 0
        for statement in cmd["deletes"]:
            hits = [d for d in docs if matches(d, statement["q"])][
                : 1 if statement.get("limit") else None
            ]
            docs[:] = [d for d in docs if all(d is not h for h in hits)]
            removed += len(hits)
        return {"n": removed}

    def count(self, db: str, cmd: dict[str, Any]) -> dict[str, Any]:
        return {
            "n": sum(
                matches(d, cmd.get("query") or {})
                for d in self.collections.get(f"{db}.{cmd['count']}", [])
            )
        }

    def find(self, db: str, cmd: dict[str, Any]) -> dict[str, Any]:
        ns = f"{db}.{cmd['find']}"
        docs = [d for d in self.collections.get(ns, []) if matches(d, cmd.get("filter") or {})]
        docs = _sorted(docs, cmd.get("sort") or {})[cmd.get("skip", 0) :]
        limit = abs(cmd.get("limit", 0))
        docs = docs[:limit] if limit else docs
        return self._first_batch(
            ns,
            docs,
            cmd.get("batchSize"),
            single=bool(cmd.get("singleBatch")) or cmd.get("limit", 0) < 0,
        )

    def aggregate(self, db: str, cmd: dict[str, Any]) -> dict[str, Any]:
        ns = f"{db}.{cmd['aggregate']}"
        docs = _aggregate(list(self.collections.get(ns, [])), cmd["pipeline"])
        return self._first_batch(ns, docs, (cmd.get("cursor") or {}).get("batchSize"), single=False)

    def getMore(self, db: str, cmd: dict[str, Any]) -> dict[str, Any]:
        ns, remaining = self.cursors.pop(int(cmd["getMore"]))
        size = cmd.get("batchSize") or len(remaining)
        batch, rest = remaining[:size], remaining[size:]
        cursor_id = self._keep(ns, rest)
        return {"cursor": {"nextBatch": batch, "id": Int64(cursor_id), "ns": ns}}

    def killCursors(self, db: str, cmd: dict[str, Any]) -> dict[str, Any]:
        killed = [c for c in cmd["cursors"] if self.cursors.pop(int(c), None) is not None]
        return {
            "cursorsKilled": killed,
            "cursorsNotFound": [],
            "cursorsAlive": [],
            "cursorsUnknown": [],
        }

    def ping(self, db: str, cmd: dict[str, Any]) -> dict[str, Any]:
        return {}

    def _handler(self, name: str) -> Any:
        handlers = {
            "hello": self.hello,
            "isMaster": self.hello,
            "ismaster": self.hello,
            "ping": self.ping,
            "endSessions": self.ping,
        }
        commands = (
            "insert",
            "update",
            "findAndModify",
            "delete",
            "count",
            "find",
            "aggregate",
            "getMore",
            "killCursors",
        )
        return handlers.get(name) or (getattr(self, name) if name in commands else None)

    def _keep(self, ns: str, remaining: list[dict[str, Any]]) -> int:
        if not remaining:
            return 0
        cursor_id = next(self._cursor_ids)
        self.cursors[cursor_id] = (ns, remaining)
        return cursor_id

    def _first_batch(
        self, ns: str, docs: list[dict[str, Any]], batch_size: int | None, single: bool
    ) -> dict[str, Any]:
        size = 101 if batch_size is None else batch_size or len(docs)
        cursor_id = 0 if single else self._keep(ns, docs[size:])
        return {"cursor": {"firstBatch": docs[:size], "id": Int64(cursor_id), "ns": ns}}

    def handle(self, cmd: dict[str, Any]) -> dict[str, Any]:
        name = next(iter(cmd))
        handler = self._handler(name)
        with self.lock:
            self.commands.append(name)
            now = Timestamp(int(dt.datetime.now(dt.timezone.utc).timestamp()), len(self.commands))
            try:
                if handler is None:
                    raise CommandError(59, "CommandNotFound", f"no such command: '{name}'")
                reply = {**handler(cmd["$db"], cmd), "ok": 1.0}
            except CommandError as exc:
                reply = dict(exc.reply)
        reply["$clusterTime"] = {
            "clusterTime": now,
            "signature": {"hash": b"\0" * 20, "keyId": Int64(0)},
        }
        reply["operationTime"] = now
        return reply

    # -- wire ----------------------------------------------------------------------
    def _serve_connection(self, sock: socket.socket) -> None:
        stream = sock.makefile("rb")
        while True:
            header = stream.read(_HEADER.size)
            if len(header) < _HEADER.size:
                return
            length, request_id, _, opcode = _HEADER.unpack(header)
            body = stream.read(length - _HEADER.size)
            if opcode != _OP_MSG:
                raise ValueError(
                    f"unsupported opcode {opcode}: this test server speaks OP_MSG only"
                )
            flags, cmd = _parse_op_msg(body)
            reply = self.handle(cmd)
            if not flags & _MORE_TO_COME:
                payload = struct.pack("<IB", 0, 0) + bson.encode(reply)
                sock.sendall(
                    _HEADER.pack(_HEADER.size + len(payload), 0, request_id, _OP_MSG) + payload
                )

    def start(self) -> MongoWireServer:
        server = self

        class Handler(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                server._open.add(self.request)
                try:
                    server._serve_connection(self.request)
                except OSError:
                    pass  # the client or stop() closed the connection
                finally:
                    server._open.discard(self.request)

        tcp = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler)
        tcp.daemon_threads = True
        self._tcp, self.port = tcp, tcp.server_address[1]
        threading.Thread(target=tcp.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        """Nothing listens on the port afterwards, and no connection stays open. Idempotent."""
        tcp, self._tcp = self._tcp, None
        if tcp is None:
            return
        tcp.shutdown()
        tcp.server_close()
        for sock in list(self._open):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)


def _parse_op_msg(body: bytes) -> tuple[int, dict[str, Any]]:
    """(flags, command) of an OP_MSG body: section 0 is the command, each section 1 a document list in it."""
    (flags,) = struct.unpack_from("<I", body)
    position, command, sequences = 4, None, {}
    while position < len(body):
        kind = body[position]
        position += 1
        (size,) = struct.unpack_from("<i", body, position)
        if kind == 0:
            command = bson.decode(body[position : position + size], _CODEC)
        else:
            end = body.index(b"\0", position + 4)
            name = body[position + 4 : end].decode()
            sequences[name] = bson.decode_all(body[end + 1 : position + size], _CODEC)
        position += size
    assert command is not None, "OP_MSG without a body section"
    return flags, {**command, **sequences}


@contextlib.contextmanager
def running_mongo() -> Iterator[MongoWireServer]:
    server = MongoWireServer().start()
    try:
        yield server
    finally:
        server.stop()
