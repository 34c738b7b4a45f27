"""RabbitMQ through kombu and py-amqp (tests/apps/amqp_app.py) and through aio-pika and aiormq
(tests/apps/aio_pika_app.py): recorded through uvicorn against the RabbitMQ of this machine,
the connection opened as the app starts; replayed by a fresh process that reaches no broker,
publishes nothing and answers as the broker did."""

from __future__ import annotations

import asyncio
import json
import os
import re
import socket
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import amqp
import httpx
import pytest
from _replay import APPS_DIR, CONNECTS, audited_uvicorn_process, cassette_files, uvicorn_process

from timetracer_otel.protocols.amqp import method_request, request_view

BROKER = ("127.0.0.1", 5672)
TIMETRACER = str(Path(sys.executable).with_name("timetracer"))
ORDERS = [
    {"item": "lamp", "card_token": "card-5c1d7e0f9a"},
    {"item": "desk", "card_token": "card-88b2e4a61c"},
]
# each app, and what its client raises for a broker that is not there
APPS = {
    "amqp_app:create_app": "ConnectionRefusedError",
    "aio_pika_app:create_app": "AMQPConnectionError",
}
REPLAYED = re.compile(
    r"^timetracer \[OK\] replayed (GET|POST) (\S+)  id=\w+  status=(\d+)  calls=(\d+)/\4  unused=0  response=same$",
    re.M,
)


def _broker_up() -> None:
    """The RabbitMQ of this machine answers (.ci/run starts it): fail, never skip, without it."""
    with socket.create_connection(BROKER, timeout=5):
        pass


@pytest.fixture
def queue() -> Iterator[str]:
    """A queue of the test's own on RabbitMQ, deleted afterwards."""
    _broker_up()
    name = f"tt-orders-{uuid.uuid4().hex[:12]}"
    yield name
    with amqp.Connection(f"{BROKER[0]}:{BROKER[1]}") as connection:
        channel = connection.channel()
        channel.queue_delete(name)
        channel.exchange_delete(name)


@pytest.fixture(scope="module")
def closed_port() -> Iterator[int]:
    """A loopback port bound for the tests where nothing listens: connecting is refused."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield sock.getsockname()[1]


def _waiting(queue: str) -> int:
    with amqp.Connection(f"{BROKER[0]}:{BROKER[1]}") as connection:
        return int(connection.channel().queue_declare(queue, passive=True).message_count)


def _move_on(queue: str) -> None:
    """The broker's state moves on after the recording: one stale order waits alone. A replay
    that reached the broker would count it and take it."""
    with amqp.Connection(f"{BROKER[0]}:{BROKER[1]}") as connection:
        channel = connection.channel()
        channel.queue_purge(queue)
        channel.basic_publish(
            amqp.Message('{"order": "stale", "item": "stale"}'), routing_key=queue
        )


def _session(url: str) -> list[httpx.Response]:
    """Two orders, the queue's depth, the oldest order taken, the depth again, a broker that is not there."""
    with httpx.Client(base_url=url, timeout=30) as client:
        return [
            *(client.post("/orders", json=order) for order in ORDERS),
            client.get("/orders/depth"),
            client.post("/orders/next"),
            client.get("/orders/depth"),
            client.get("/unreachable"),
        ]


def _settings(queue: str, closed_port: int) -> dict[str, str]:
    return {
        "AMQP_URL": f"amqp://guest:guest@{BROKER[0]}:{BROKER[1]}//",
        "AMQP_QUEUE": queue,
        "AMQP_EXCHANGE": queue,
        "AMQP_CLOSED": f"127.0.0.1:{closed_port}",
    }


def _calls(directory: Path) -> list[dict[str, Any]]:
    return [
        call
        for path in cassette_files(directory)
        for call in json.loads(path.read_text("utf-8"))["calls"]
        if call["protocol"] == "amqp"
    ]


@pytest.mark.parametrize("app", list(APPS))
def test_orders_published_while_recording_replay_with_no_broker_and_publish_nothing(
    cassette_dir: Path, queue: str, closed_port: int, app: str
) -> None:
    settings = _settings(queue, closed_port)
    record_env = {**settings, "TIMETRACER_MODE": "record", "TIMETRACER_DIR": str(cassette_dir)}
    with uvicorn_process(record_env, app=app) as server:
        recorded = _session(server.url)
    assert [r.status_code for r in recorded] == [201, 201, 200, 200, 200, 503], server.stderr
    first_order = recorded[0].json()["order"]
    assert recorded[2].json() == {"waiting": 2, "consumers": 0}
    assert recorded[3].json() == {"order": first_order, "item": "lamp", "signed": True}
    assert recorded[4].json() == {"waiting": 1, "consumers": 0}
    assert recorded[5].json() == {"error": APPS[app]}
    _move_on(queue)

    replay_env = {**settings, "TIMETRACER_MODE": "replay", "TIMETRACER_CASSETTE": str(cassette_dir)}
    with audited_uvicorn_process(replay_env, app=app) as server:
        replayed = _session(server.url)
    assert [(r.status_code, r.content) for r in replayed] == [
        (r.status_code, r.content) for r in recorded
    ], server.stderr
    reports = REPLAYED.findall(server.stderr)
    assert [(method, path, status) for method, path, status, _ in reports] == [
        ("POST", "/orders", "201"),
        ("POST", "/orders", "201"),
        ("GET", "/orders/depth", "200"),
        ("POST", "/orders/next", "200"),
        ("GET", "/orders/depth", "200"),
        ("GET", "/unreachable", "503"),
    ], server.stderr
    assert "replaying calls outside requests" in server.stderr  # the connection opened at start
    connected = [eval(found) for found in CONNECTS.findall(server.stderr)]  # noqa: S307 - our own repr
    assert [a for a in connected if isinstance(a, tuple) and a[1] in (BROKER[1], closed_port)] == []
    assert _waiting(queue) == 1  # the replay published nothing, took nothing

    calls = _calls(cassette_dir)
    methods = [call["request"].get("method", "connect") for call in calls]
    assert methods.count("Basic.Publish") == 2 and methods.count("Basic.Ack") == 0
    publish = next(c for c in calls if c["request"].get("method") == "Basic.Publish")
    assert [f["method"] for f in publish["response"]["frames"]] == ["Basic.Ack"]  # confirmed
    got = next(c for c in calls if c["request"].get("method") == "Basic.Get")
    assert [f["method"] for f in got["response"]["frames"]] == ["Basic.GetOk"]
    assert json.loads(got["response"]["frames"][0]["content"]["body"])["item"] == "lamp"

    # no secret in clear: the login, the API token in each message's headers, the card tokens
    stored = "\n".join(path.read_text("utf-8") for path in cassette_files(cassette_dir))
    for secret in ("\\u0000guest\\u0000guest", "AGd1ZXN0AGd1ZXN0", "tok-7f3a9c2e51d84b06a1e2",
                   *(order["card_token"] for order in ORDERS)):  # fmt: skip
        assert secret not in stored, secret
    assert '"x-api-token": "[SEALED:' in stored


@pytest.mark.parametrize("app", list(APPS))
def test_a_message_not_recorded_fails_at_the_publish_naming_it_and_the_closest_recorded(
    cassette_dir: Path, queue: str, closed_port: int, app: str
) -> None:
    settings = _settings(queue, closed_port)
    record_env = {**settings, "TIMETRACER_MODE": "record", "TIMETRACER_DIR": str(cassette_dir)}
    with uvicorn_process(record_env, app=app) as server:
        with httpx.Client(base_url=server.url, timeout=30) as client:
            assert client.post("/orders", json=ORDERS[0]).status_code == 201

    replay_env = {**settings, "TIMETRACER_MODE": "replay", "TIMETRACER_CASSETTE": str(cassette_dir)}
    with audited_uvicorn_process(replay_env, app=app) as server:
        with httpx.Client(base_url=server.url, timeout=30) as client:
            other = client.post("/orders", json={**ORDERS[0], "item": "chair"})
    assert other.status_code == 500
    # the error the app got is the publish's, not that of the channel its client closed after it
    assert re.search(
        r"^  error: the app raised \S+ReplayMismatchError: timetracer replay: no recorded call "
        r"matches AMQP 127\.0\.0\.1:5672 Basic\.Publish",
        server.stderr,
        re.M,
    ), server.stderr
    assert f"AMQP 127.0.0.1:5672 Basic.Publish exchange='{queue}' routing_key='orders.created'" in (
        server.stderr
    )
    assert '"item": "chair"' in server.stderr or "chair" in server.stderr
    assert _waiting(queue) == 1  # only the recorded order reached the broker


def test_matching_leaves_out_what_each_process_sends_of_itself() -> None:
    """Celery's ``reply_to`` and ``origin`` header, and the channel number; never the message."""

    def published(channel: int, reply_to: str, origin: str, body: str) -> Any:
        content = (
            body,
            {"reply_to": reply_to, "application_headers": {"origin": origin, "task": "t"}},
        )
        return request_view(
            method_request("h:5672", channel, (60, 40), [0, "", "q", False, False], content)
        )

    one = published(1, "6eaeaca8", "gen1@a", '[["ada"], {}]')
    assert one == published(2, "0b1c2d3e", "gen2@b", '[["ada"], {}]')
    assert one != published(1, "6eaeaca8", "gen1@a", '[["grace"], {}]')
    assert one.label == "AMQP h:5672 Basic.Publish exchange='' routing_key='q'"


def test_a_replayed_aio_pika_connection_answers_each_heartbeat_and_nothing_else() -> None:
    """aiormq closes a connection that has read nothing for three heartbeat intervals: the
    stand-in it writes to in replay answers each heartbeat with one, and a frame no recorded
    answer waits for with nothing."""
    from timetracer_otel._aiormq import HEARTBEAT
    from timetracer_otel.replayers.aio_pika import _Writer

    async def written(*frames: bytes) -> bytes:
        reader = asyncio.StreamReader()
        writer = _Writer(reader)
        for data in frames:
            writer.write(data)
        writer.close()
        return await reader.read()

    publish = b"\x01\x00\x01\x00\x00\x00\x0b\x00<\x00(\x00\x00\x01x\x01r\x00\xce"
    assert asyncio.run(written(HEARTBEAT, publish, HEARTBEAT)) == HEARTBEAT * 2
    assert asyncio.run(written(publish)) == b""


@pytest.mark.parametrize("app", list(APPS))
def test_orders_placed_at_once_replay_together_and_each_alone_confirmed_as_recorded(
    cassette_dir: Path, queue: str, closed_port: int, app: str
) -> None:
    """Eight orders at once, their publishes confirmed by the broker in any order (one confirm
    may cover several); replayed together, and each alone, where its delivery tag is another."""
    settings = _settings(queue, closed_port)
    record_env = {**settings, "TIMETRACER_MODE": "record", "TIMETRACER_DIR": str(cassette_dir)}
    orders = [{"item": f"item-{n}", "card_token": f"card-{n:04d}"} for n in range(8)]
    with uvicorn_process(record_env, app=app) as server:
        placed = asyncio.run(_posted_at_once(server.url, orders))
    assert sorted(r.json()["item"] for r in placed) == sorted(o["item"] for o in orders)
    last = max(cassette_dir.rglob("POST__orders__*.json"), key=lambda p: p.stat().st_mtime_ns)
    for location in (cassette_dir, last):
        done = subprocess.run(
            [TIMETRACER, "replay", str(location), "--app", app, "--factory",
             "--app-dir", str(APPS_DIR)],
            env={**os.environ, **settings}, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert done.returncode == 0, done.stdout + done.stderr
        reports = re.findall(
            r"^timetracer \[OK\] replayed POST /orders .* response=same$", done.stdout, re.M
        )
        assert len(reports) == (8 if location == cassette_dir else 1), done.stdout


async def _posted_at_once(url: str, orders: list[dict[str, str]]) -> list[httpx.Response]:
    async with httpx.AsyncClient(base_url=url, timeout=30) as client:
        return list(await asyncio.gather(*(client.post("/orders", json=o) for o in orders)))


def test_a_confirmed_publish_whose_confirm_the_recording_lacks_fails_at_the_publish(
    cassette_dir: Path, queue: str, closed_port: int
) -> None:
    """aiormq would wait forever for a confirm no broker sends: the publish fails instead,
    saying why (a confirm that came after its request ended is not in its cassette)."""
    settings = _settings(queue, closed_port)
    record_env = {**settings, "TIMETRACER_MODE": "record", "TIMETRACER_DIR": str(cassette_dir)}
    with uvicorn_process(record_env, app="aio_pika_app:create_app") as server:
        with httpx.Client(base_url=server.url, timeout=30) as client:
            assert client.post("/orders", json=ORDERS[0]).status_code == 201
    (path,) = cassette_dir.rglob("POST__orders__*.json")
    document = json.loads(path.read_text("utf-8"))
    (publish,) = [c for c in document["calls"] if c["request"].get("method") == "Basic.Publish"]
    assert [f["method"] for f in publish["response"]["frames"]] == ["Basic.Ack"]
    publish["response"]["frames"] = []
    path.write_text(json.dumps(document), "utf-8")
    done = subprocess.run(
        [TIMETRACER, "replay", str(path), "--app", "aio_pika_app:create_app", "--factory",
         "--app-dir", str(APPS_DIR)],
        env={**os.environ, **settings}, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 1, done.stdout + done.stderr
    assert re.search(
        r"^  error: the app raised \S+ReplayMismatchError: timetracer replay: no recorded call "
        r"matches AMQP 127\.0\.0\.1:5672 Basic\.Publish",
        done.stdout,
        re.M,
    ), done.stdout


@pytest.mark.parametrize("app", list(APPS))
@pytest.mark.parametrize(
    "answer",
    [
        [{"channel": 1, "method": "Basic.Nope", "args": []}],
        [{"channel": 1, "method": "Basic.Ack", "args": ["one", "two"]}],
        {"frames": "not a list"},
    ],
    ids=["unknown method", "arguments of another type", "not methods"],
)
def test_a_damaged_answer_fails_the_call_naming_the_cassette(
    tmp_path: Path, queue: str, closed_port: int, app: str, answer: Any
) -> None:
    """A cassette whose broker answer no broker could send (a damaged or hostile file) fails
    the replayed call with a cassette error naming the file, never anything of the client's."""
    settings = _settings(queue, closed_port)
    cassette_dir = tmp_path / "damaged"  # not checked against the schema afterwards, as others are
    record_env = {**settings, "TIMETRACER_MODE": "record", "TIMETRACER_DIR": str(cassette_dir)}
    with uvicorn_process(record_env, app=app) as server:
        with httpx.Client(base_url=server.url, timeout=30) as client:
            assert client.post("/orders", json=ORDERS[0]).status_code == 201
    (path,) = cassette_dir.rglob("POST__orders__*.json")
    document = json.loads(path.read_text("utf-8"))
    (publish,) = [c for c in document["calls"] if c["request"].get("method") == "Basic.Publish"]
    publish["response"] = answer if isinstance(answer, dict) else {"frames": answer}
    path.write_text(json.dumps(document), "utf-8")
    done = subprocess.run(
        [TIMETRACER, "replay", str(path), "--app", app, "--factory", "--app-dir", str(APPS_DIR)],
        env={**os.environ, **settings}, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 1, done.stdout + done.stderr
    assert re.search(
        r"^  error: the app raised timetracer_otel\.cassette\.errors\.CassetteError: timetracer: "
        r"cannot use cassette /",
        done.stdout,
        re.M,
    ), done.stdout
