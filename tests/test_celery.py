"""Celery, the most common job queue of Python services, on its two usual brokers: Redis
(kombu over redis-py) and RabbitMQ (kombu over py-amqp), its results in Redis. Tasks queued
while requests are recorded replay in a fresh process without queueing anything, although
every process sends its own identity with each message."""

from __future__ import annotations

import importlib
import json
import os
import re
import socket
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import amqp
import httpx
import kombu.pools
import pytest
import redis

import timetracer_otel
from timetracer_otel.config import TraceConfig
from timetracer_otel.integrations.starlette import auto_setup

REDIS_URL = "redis://127.0.0.1:6379/0"
AMQP_URL = "amqp://guest:guest@127.0.0.1:5672//"
TIMETRACER = Path(sys.executable).with_name("timetracer")

_SERVICE = """
import os

from celery import Celery
from celery.result import AsyncResult
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

celery = Celery("service", broker=os.environ["BROKER_URL"], backend=os.environ["BACKEND_URL"])
celery.conf.task_default_queue = os.environ["QUEUE"]


@celery.task
def send_welcome(address: str) -> str:
    return f"welcome sent to {address}"


@celery.task
def add(x: int, y: int) -> int:
    return x + y


def total(request: Request) -> JSONResponse:
    job = add.delay(int(request.query_params["x"]), 2)
    return JSONResponse({"job": job.id, "sum": job.get(timeout=60)})


async def signup(request: Request) -> JSONResponse:
    address = (await request.json())["email"]
    job = send_welcome.delay(address.upper() if os.environ.get("SHOUT") else address)
    return JSONResponse({"email": address, "job": job.id}, status_code=202)


async def job_state(request: Request) -> JSONResponse:
    return JSONResponse({"state": AsyncResult(request.path_params["job"], app=celery).state})


app = Starlette(
    routes=[
        Route("/signup", signup, methods=["POST"]),
        Route("/jobs/{job}", job_state),
        Route("/sum", total),
    ]
)
"""


@pytest.fixture(params=["redis", "amqp"])
def queue(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A queue of the test's own on the broker (the shared Redis, or RabbitMQ), deleted afterwards."""
    if request.param == "amqp":
        _broker_up()
    kombu.pools.reset()  # Celery's producers are kombu's, per broker URL: none from another test
    name = f"tt-celery-{uuid.uuid4().hex[:12]}"
    monkeypatch.setenv("QUEUE", name)
    monkeypatch.setenv("BROKER_URL", REDIS_URL if request.param == "redis" else AMQP_URL)
    monkeypatch.setenv("BACKEND_URL", REDIS_URL)
    yield name
    with redis.Redis.from_url(REDIS_URL) as client:
        client.delete(name, f"_kombu.binding.{name}")
    if request.param == "amqp":
        _delete_queue(name)


def _broker_up() -> None:
    """The RabbitMQ of this machine answers (.ci/run starts it): fail, never skip, without it."""
    with socket.create_connection(("127.0.0.1", 5672), timeout=5):
        pass


def _delete_queue(name: str) -> None:
    """The queue, and the exchange of its name Celery declared for it."""
    with amqp.Connection("127.0.0.1:5672") as connection:
        channel = connection.channel()
        channel.queue_delete(name)
        channel.exchange_delete(name)


def _queued(queue: str) -> list[dict[str, Any]]:
    """The messages waiting in ``queue``, each with its headers, left where they are."""
    if os.environ["BROKER_URL"] == REDIS_URL:
        with redis.Redis.from_url(REDIS_URL) as client:
            return [json.loads(m) for m in client.lrange(queue, 0, -1)]
    messages = []
    with amqp.Connection("127.0.0.1:5672") as connection:
        channel = connection.channel()
        while (message := channel.basic_get(queue)) is not None:
            messages.append({"headers": message.headers})
        channel.close()  # the messages go back to the queue, unacknowledged
    return messages


def _service(directory: Path) -> Any:
    (directory / "celery_service.py").write_text(_SERVICE, "utf-8")
    sys.path.insert(0, str(directory))
    try:
        return importlib.import_module("celery_service")
    finally:
        sys.path.remove(str(directory))
        sys.modules.pop("celery_service", None)


def _record_signups(serve: Callable[..., Any], cassette_dir: Path, tmp_path: Path) -> str:
    """Two sign-ups and the first job's state, recorded; the first job's id."""
    service = _service(tmp_path)
    auto_setup(service.app, config=TraceConfig(mode="record", cassette_dir=str(cassette_dir)))
    server = serve(service.app)
    with httpx.Client(base_url=server.url, timeout=30) as client:
        first = client.post("/signup", json={"email": "ada@example.com"})
        second = client.post("/signup", json={"email": "grace@example.com"})
        state = client.get(f"/jobs/{first.json()['job']}")
    assert (first.status_code, second.status_code, state.json()) == (202, 202, {"state": "PENDING"})
    assert timetracer_otel.flush(30)
    return str(first.json()["job"])


def _replayed(location: Path, tmp_path: Path, same: bool = True) -> list[dict[str, Any]]:
    """``timetracer replay LOCATION --json`` in a fresh process: the reports; ``same``: every
    response the recorded one."""
    done = subprocess.run(
        [str(TIMETRACER), "replay", str(location), "--app", "celery_service:app",
         "--app-dir", str(tmp_path), "--json"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == (0 if same else 1), done.stdout + done.stderr
    return list(json.loads(done.stdout))


def test_tasks_queued_while_recording_replay_in_a_fresh_process_without_queueing(
    serve: Callable[..., Any], cassette_dir: Path, tmp_path: Path, queue: str
) -> None:
    """Together, and the second sign-up alone: kombu checks the connection and binds the queue
    once per process, in the first sign-up, and the second has those answers from its cassette."""
    first_job = _record_signups(serve, cassette_dir, tmp_path)
    messages = _queued(queue)
    assert len(messages) == 2
    assert {m["headers"]["origin"] for m in messages} == {f"gen{os.getpid()}@{os.uname().nodename}"}

    reports = _replayed(cassette_dir, tmp_path)
    assert [(r["method"], r["path"], r["verdict"]) for r in reports] == [
        ("POST", "/signup", "ok"),
        ("POST", "/signup", "ok"),
        ("GET", f"/jobs/{first_job}", "ok"),
    ]
    assert all(r["refused"] == [] and r["unmatched"] == [] for r in reports)
    first, second = sorted(
        cassette_dir.rglob("POST__signup__*.json"),
        key=lambda p: json.loads(p.read_text("utf-8"))["recorded_at"],
    )
    (alone,) = _replayed(second, tmp_path)
    assert alone["verdict"] == "ok" and alone["from_earlier"], alone
    assert all(f"(answered by {first.name}, recorded before)" in x for x in alone["from_earlier"])
    assert len(_queued(queue)) == 2  # nothing was queued by the replay


def test_results_waited_for_over_rpc_replay_with_no_broker_and_no_worker(
    serve: Callable[..., Any],
    cassette_dir: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Celery's ``rpc://`` result backend on RabbitMQ: each process consumes its results from a
    reply queue named by kombu's ``oid_from`` (the node, the process id, the thread), which the
    replaying process names as recorded; a result delivered while a later request waits is
    that request's, handed to it only after its task is sent."""
    _broker_up()
    kombu.pools.reset()  # Celery's producers are kombu's, per broker URL: none from another test
    queue = f"tt-celery-{uuid.uuid4().hex[:12]}"
    for name, value in (("QUEUE", queue), ("BROKER_URL", AMQP_URL), ("BACKEND_URL", "rpc://")):
        monkeypatch.setenv(name, value)
    service = _service(tmp_path)
    with (tmp_path / "worker.log").open("w") as log:
        worker = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "celery_service.celery", "worker",
             "-Q", queue, "--pool", "solo", "-l", "warning"],
            cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(tmp_path)}, stdout=log, stderr=log,
        )  # fmt: skip
        try:
            auto_setup(
                service.app, config=TraceConfig(mode="record", cassette_dir=str(cassette_dir))
            )
            server = serve(service.app)
            with httpx.Client(base_url=server.url, timeout=90) as client:
                sums = [client.get("/sum", params={"x": x}).json() for x in (1, 5, 7)]
        finally:
            worker.terminate()
            worker.wait(timeout=30)
    assert [s["sum"] for s in sums] == [3, 7, 9], (tmp_path / "worker.log").read_text()
    assert timetracer_otel.flush(30)
    _delete_queue(queue)

    reports = _replayed(cassette_dir, tmp_path)
    assert [(r["path"], r["verdict"]) for r in reports] == [("/sum", "ok")] * 3, reports
    assert all(r["refused"] == [] and r["unmatched"] == [] for r in reports)


def test_a_task_sent_with_other_arguments_fails_at_its_publish_not_at_the_close_after_it(
    serve: Callable[..., Any],
    cassette_dir: Path,
    tmp_path: Path,
    queue: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """After the publish fails, kombu closes the channel and Celery retries: the error the app
    gets, and the report names, is the publish the cassette does not hold, with its arguments."""
    _record_signups(serve, cassette_dir, tmp_path)
    monkeypatch.setenv("SHOUT", "1")  # the app now sends the address in capitals
    first, *_ = _replayed(cassette_dir, tmp_path, same=False)
    assert first["verdict"] == "diff"
    assert first["error"]["type"].endswith(".ReplayMismatchError"), first
    message = first["error"]["message"]
    assert re.match(
        r"timetracer replay: no recorded call matches (AMQP \S+ Basic\.Publish|LPUSH )", message
    ), message
    if os.environ["BROKER_URL"] == AMQP_URL:  # Redis carries the message in base64
        assert "ADA@EXAMPLE.COM" in message, message
