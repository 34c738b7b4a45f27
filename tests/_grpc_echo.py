"""The gRPC tests' service: tests/protos/echo.proto compiled at test time, and served on loopback.

The ``_pb2`` modules are generated with the installed grpcio-tools into a directory of
their own rather than committed: generated code checks the protobuf runtime it runs on,
so code generated here always matches the installed runtime. ``generated()`` compiles
once per process and puts the directory on ``sys.path``; a fresh app process gets it
through ``PYTHONPATH``.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import socket
import sys
import tempfile
import threading
from collections.abc import Iterator
from concurrent import futures
from functools import cache
from pathlib import Path
from typing import Any

import grpc
from grpc_tools import protoc

PROTOS = Path(__file__).parent / "protos"


@cache
def generated() -> Path:
    """The directory holding ``echo_pb2`` and ``echo_pb2_grpc``, importable from now on."""
    out = Path(tempfile.mkdtemp(prefix="tt-grpc-gen-"))
    status = protoc.main(
        [
            "grpc_tools.protoc",
            f"-I{PROTOS}",
            f"--python_out={out}",
            f"--grpc_python_out={out}",
            str(PROTOS / "echo.proto"),
        ]
    )
    assert status == 0, f"protoc failed ({status})"
    sys.path.insert(0, str(out))
    return out


def pythonpath() -> str:
    """``PYTHONPATH`` for a fresh process that imports ``echo_pb2``: ours with the generated directory first."""
    return os.pathsep.join([str(generated()), *filter(None, [os.environ.get("PYTHONPATH")])])


def _servicer() -> Any:
    generated()
    import echo_pb2
    import echo_pb2_grpc

    def reply(request: Any, index: int) -> Any:
        return echo_pb2.EchoReply(
            text=f"{request.text}!",
            index=index,
            digest=hashlib.sha256(request.text.encode()).digest()[:8],
            session_token=f"srv-token-{request.text}",
        )

    def end(request: Any, context: Any) -> None:
        """End the call with the status the request asks for (a deadline: wait for the client's to pass)."""
        if request.fail_with == echo_pb2.DEADLINE_EXCEEDED:
            over = threading.Event()
            context.add_callback(over.set)
            over.wait()
            return
        if request.fail_with != echo_pb2.OK:
            context.set_trailing_metadata((("why", "no such text"), ("retry-token", "srv-s3cret")))
            context.abort(grpc.StatusCode(_code(request.fail_with)), f"no echo for {request.text}")

    def _code(number: int) -> tuple[int, str]:
        return next(code.value for code in grpc.StatusCode if code.value[0] == number)

    def tenant(context: Any) -> str:
        return dict(context.invocation_metadata()).get("x-tenant", "")

    class Echo(echo_pb2_grpc.EchoServicer):
        def Say(self, request: Any, context: Any) -> Any:
            context.send_initial_metadata((("served-by", "echo"),))
            end(request, context)
            context.set_trailing_metadata(
                (("tenant", tenant(context)), ("checksum-bin", b"\x00\xff"))
            )
            return reply(request, request.count)

        def Count(self, request: Any, context: Any) -> Iterator[Any]:
            for index in range(request.count):
                yield reply(request, index)
            end(request, context)

        def Join(self, requests: Iterator[Any], context: Any) -> Any:
            texts = [request.text for request in requests]
            return echo_pb2.EchoReply(text="+".join(texts), index=len(texts))

        def Chat(self, requests: Iterator[Any], context: Any) -> Iterator[Any]:
            count = 0
            for count, request in enumerate(requests, 1):
                yield reply(request, count - 1)
            context.set_trailing_metadata((("chatted", str(count)),))

    return Echo()


@contextlib.contextmanager
def running_echo_server() -> Iterator[str]:
    """An Echo server on 127.0.0.1 for the block, its ``host:port``; afterwards nothing serves there."""
    import echo_pb2_grpc

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=32))
    echo_pb2_grpc.add_EchoServicer_to_server(_servicer(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield f"127.0.0.1:{port}"
    finally:
        server.stop(None).wait()


@contextlib.contextmanager
def listening_on(target: str) -> Iterator[socket.socket]:
    """A plain listening socket on ``target`` (a stopped server's address; port 0: any free port).

    gRPC's C core opens its sockets where Python's audit hooks do not see them: that a replaying
    process made no gRPC connection shows as no connection waiting here once it has exited."""
    host, port = target.rsplit(":", 1)
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, int(port)))
        sock.listen(16)
        sock.setblocking(False)
        yield sock


def no_connection_waiting(sock: socket.socket) -> bool:
    try:
        connection, _ = sock.accept()
    except BlockingIOError:
        return True
    connection.close()
    return False
