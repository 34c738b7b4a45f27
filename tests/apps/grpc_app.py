"""The application the gRPC tests record and replay: a Starlette app calling the Echo service.

Each route answers with what the gRPC client gave it (messages as JSON with their type,
metadata, status codes and details of errors), so equal responses mean the application
got equal answers. The channel is created with the app, before any request.

``create_app(target, config)``; ``from_environment()`` reads the target from
``GRPC_APP_TARGET`` (a fresh replay process). ``echo_pb2`` must be importable (see
tests/_grpc_echo.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import echo_pb2
import echo_pb2_grpc
import grpc
import grpc.aio
from google.protobuf import json_format
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from timetracer_otel.config import TraceConfig
from timetracer_otel.integrations.starlette import auto_setup

METADATA = (("authorization", "Bearer client-s3cret"), ("x-tenant", "acme"))


def shown(value: Any) -> Any:
    """A client result as JSON: messages with their type, metadata as pairs, errors with their status."""
    if isinstance(value, grpc.RpcError):
        return {
            "error": value.code().name,
            "details": value.details(),
            "trailing": shown(value.trailing_metadata()),
        }
    if isinstance(value, grpc.aio.Metadata):
        return shown(list(value))
    if hasattr(value, "DESCRIPTOR"):
        return {"type": value.DESCRIPTOR.full_name, **json_format.MessageToDict(value)}
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, (list, tuple)):
        return [shown(item) for item in value]
    return value


def _request(text: str, **fields: Any) -> Any:
    return echo_pb2.EchoRequest(text=text, api_token="client-token-1", tags={"k": "v"}, **fields)


def _outcome(step: Callable[[], Any]) -> Any:
    try:
        return shown(step())
    except grpc.RpcError as exc:
        return shown(exc)


def scenario(stub: Any) -> dict[str, Any]:
    """Every call shape, each way to call it, and calls ending with an error status."""

    def with_call() -> Any:
        reply, call = stub.Say.with_call(_request("with-call", count=2), metadata=METADATA)
        trailing = [(entry.key, entry.value) for entry in call.trailing_metadata()]
        return [reply, call.code().name, call.initial_metadata(), trailing]

    def chat() -> Any:
        # (a server-streaming call comes back from OpenTelemetry's interceptor as a plain generator)
        call = stub.Chat(iter([_request("x"), _request("y"), _request("z")]), metadata=METADATA)
        return [*call, call.code().name, call.trailing_metadata()]

    def first_only() -> Any:
        for reply in stub.Count(_request("first", count=3)):
            return reply  # the rest of the stream is never read
        return None

    return {
        "first_only": _outcome(first_only),
        "call": _outcome(lambda: stub.Say(_request("plain", count=1), metadata=METADATA)),
        "with_call": _outcome(with_call),
        "future": _outcome(lambda: stub.Say.future(_request("future")).result()),
        "unary_stream": _outcome(lambda: list(stub.Count(_request("count", count=3)))),
        "stream_unary": _outcome(lambda: stub.Join(iter([_request("a"), _request("b")]))),
        "stream_stream": _outcome(chat),
        "not_found": _outcome(
            lambda: stub.Say(_request("missing", fail_with=echo_pb2.NOT_FOUND), metadata=METADATA)
        ),
        "stream_fails": _outcome(
            lambda: list(stub.Count(_request("half", count=2, fail_with=echo_pb2.NOT_FOUND)))
        ),
        "deadline": _outcome(
            lambda: stub.Say(_request("slow", fail_with=echo_pb2.DEADLINE_EXCEEDED), timeout=0.3)
        ),
    }


async def _aio_outcome(step: Callable[[], Awaitable[Any]]) -> Any:
    try:
        return shown(await step())
    except grpc.RpcError as exc:
        return shown(exc)


async def _requests(*texts: str) -> AsyncIterator[Any]:
    for text in texts:
        yield _request(text)


async def aio_scenario(stub: Any) -> dict[str, Any]:
    """The same with a grpc.aio channel: awaited calls, async iterators, and a call written to."""

    async def call_object() -> Any:
        call = stub.Say(_request("aio-call", count=2), metadata=METADATA)
        reply = await call
        return [reply, (await call.code()).name, await call.trailing_metadata()]

    async def chat() -> Any:
        call = stub.Chat(metadata=METADATA)
        for text in ("p", "q"):
            await call.write(_request(text))
        await call.done_writing()
        replies = [reply async for reply in call]
        return [*replies, (await call.code()).name, await call.trailing_metadata()]

    async def counted(**fields: Any) -> Any:
        return [reply async for reply in stub.Count(_request("aio-count", **fields))]

    return {
        "await": await _aio_outcome(lambda: stub.Say(_request("aio", count=1), metadata=METADATA)),
        "call_object": await _aio_outcome(call_object),
        "unary_stream": await _aio_outcome(lambda: counted(count=3)),
        "stream_unary": await _aio_outcome(lambda: stub.Join(_requests("m", "n"))),
        "stream_stream": await _aio_outcome(chat),
        "not_found": await _aio_outcome(
            lambda: stub.Say(_request("aio-missing", fail_with=echo_pb2.NOT_FOUND))
        ),
        "stream_fails": await _aio_outcome(lambda: counted(count=2, fail_with=echo_pb2.NOT_FOUND)),
        "deadline": await _aio_outcome(
            lambda: stub.Say(
                _request("aio-slow", fail_with=echo_pb2.DEADLINE_EXCEEDED), timeout=0.3
            )
        ),
    }


def create_app(target: str, config: TraceConfig | None, wait_ready: bool = False) -> Starlette:
    app_state: dict[str, Any] = {}

    async def scenario_route(request: Request) -> JSONResponse:
        return JSONResponse(await run_in_threadpool(scenario, app_state["stub"]))

    async def aio_scenario_route(request: Request) -> JSONResponse:
        return JSONResponse(await aio_scenario(app_state["aio_stub"]))

    async def item_route(request: Request) -> JSONResponse:
        number = int(request.path_params["number"])
        return JSONResponse(
            await run_in_threadpool(
                lambda: shown(app_state["stub"].Say(_request(f"item-{number}", count=number)))
            )
        )

    async def aio_item_route(request: Request) -> JSONResponse:
        number = int(request.path_params["number"])
        stub = app_state["aio_stub"]
        return JSONResponse(shown(await stub.Say(_request(f"item-{number}", count=number))))

    async def lookup_route(request: Request) -> JSONResponse:
        text = request.path_params["text"]
        try:
            reply = await run_in_threadpool(app_state["stub"].Say, _request(text))
        except Exception as exc:  # noqa: BLE001 - the tests read what went wrong from the response
            return JSONResponse(
                {"error": type(exc).__qualname__, "message": str(exc)}, status_code=500
            )
        return JSONResponse(shown(reply))

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        if wait_ready:  # as services do at start: the channel connected before the first request
            await run_in_threadpool(grpc.channel_ready_future(app_state["channel"]).result, 10)
        # an aio channel belongs to the running loop: made here
        app_state["aio_channel"] = grpc.aio.insecure_channel(target)
        app_state["aio_stub"] = echo_pb2_grpc.EchoStub(app_state["aio_channel"])
        if wait_ready:
            await asyncio.wait_for(app_state["aio_channel"].channel_ready(), 10)
        yield
        app_state["channel"].close()
        await app_state["aio_channel"].close()

    app = Starlette(
        routes=[
            Route("/scenario", scenario_route),
            Route("/aio/scenario", aio_scenario_route),
            Route("/item/{number}", item_route),
            Route("/aio/item/{number}", aio_item_route),
            Route("/lookup/{text}", lookup_route),
        ],
        lifespan=lifespan,
    )
    # the grpc plugin instruments sync and aio channels; the channel is made after it, so it
    # calls through OpenTelemetry's interceptor
    auto_setup(app, config=config, plugins=["grpc"])
    app_state["channel"] = grpc.insecure_channel(target)
    app_state["stub"] = echo_pb2_grpc.EchoStub(app_state["channel"])
    return app


def from_environment() -> Starlette:
    return create_app(
        os.environ["GRPC_APP_TARGET"], None, wait_ready=True
    )  # TIMETRACER_* from the environment
