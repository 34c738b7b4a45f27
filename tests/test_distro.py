"""``opentelemetry-instrument`` with timetracer's distro records, exports and replays an app
that has no timetracer code (tests/apps/plain_app.py), each run in a fresh process."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
from _replay import FreshServer, serving_process
from conftest import Upstream, load_cassettes, running_upstream
from otlp_receiver import running_receiver

BIN = Path(sys.executable).parent
APPS_DIR = Path(__file__).parent / "apps"
SECRETS = ("header-secret", "query-secret")
# (path, headers) of each request sent to the app
SENT = [
    ("/profile/ada?token=query-secret", {"Authorization": "Bearer header-secret"}),
    ("/profile/grace", {}),
]


def instrumented_app(
    env: dict[str, str], app_name: str = "app"
) -> contextlib.AbstractContextManager[FreshServer]:
    """``opentelemetry-instrument uvicorn plain_app:<app_name>`` on a socket bound here; stopped after the block.

    The process sees no ``OTEL_*`` variable but those in ``env``. Stopping it flushes
    its span processors, so cassettes and exports are complete once the block is left.
    Its cwd is not the checkout, whose egg-info would list our entry points before any
    other distribution's.
    """
    command = [
        str(BIN / "opentelemetry-instrument"), str(BIN / "uvicorn"), "--app-dir", str(APPS_DIR), f"plain_app:{app_name}",
        "--log-level", "warning",
    ]  # fmt: skip
    base = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    return serving_process(command, {**base, **env}, cwd=APPS_DIR)


def send(app: FreshServer) -> list[httpx.Response]:
    with httpx.Client(base_url=app.url, timeout=30) as client:
        return [client.get(path, headers=headers) for path, headers in SENT]


def record_env(upstream: Upstream, cassette_dir: Path, **otel: str) -> dict[str, str]:
    return {
        "TIMETRACER_MODE": "record",
        "TIMETRACER_DIR": str(cassette_dir),
        "PLAIN_APP_UPSTREAM": upstream.url,
        **otel,
    }


def assert_recorded(
    cassettes: list[dict[str, Any]], responses: list[httpx.Response], upstream_url: str
) -> None:
    """One cassette per request, each holding the app's two upstream calls and the response it sent."""
    assert [r.status_code for r in responses] == [200, 200], responses[0].text
    by_path = {c["request"]["path"]: c for c in cassettes}
    assert sorted(by_path) == ["/profile/ada", "/profile/grace"]
    for (path, _), response in zip(SENT, responses, strict=False):
        cassette = by_path[path.split("?")[0]]
        assert cassette["request"]["route"] == "/profile/{name}"
        assert [(c["library"], c["request"]["url"]) for c in cassette["calls"]] == [
            ("httpx", f"{upstream_url}/json"),
            ("httpx", f"{upstream_url}/echo"),
        ]
        assert cassette["response"]["body"]["json"] == response.json()


def assert_exported_same_traces(cassettes: list[dict[str, Any]], receiver: Any) -> None:
    """The collector got every span of every cassette, secrets redacted and no payload attribute."""
    for cassette in cassettes:
        received = receiver.trace(cassette["trace_id"])
        assert {s.span_id for s in received} == {s["span_id"] for s in cassette["spans"]}
        assert {s.service for s in received} == {cassette["service"]} == {"plain-app"}
    server = [s for s in receiver.spans if "http.request.header.authorization" in s.attributes]
    # sent once
    assert [s.attributes["http.request.header.authorization"] for s in server] == [["[REDACTED]"]]
    assert not [k for s in receiver.spans for k in s.attributes if k.startswith("timetracer.")]
    for secret in SECRETS:
        assert all(secret.encode() not in body for body in receiver.bodies), secret


_EXPORT = {
    "OTEL_TRACES_EXPORTER": "otlp",  # OTEL_EXPORTER_OTLP_PROTOCOL stays unset
    "OTEL_SERVICE_NAME": "plain-app",
    "OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SERVER_REQUEST": "authorization",
}


@pytest.mark.parametrize("app_name", ["app", "fastapi_app"], ids=["starlette", "fastapi"])
def test_records_and_exports_an_app_without_timetracer_code(
    app_name: str, upstream: Upstream, cassette_dir: Path
) -> None:
    with running_receiver() as receiver:
        env = record_env(
            upstream, cassette_dir, OTEL_EXPORTER_OTLP_ENDPOINT=receiver.url, **_EXPORT
        )
        with instrumented_app(env, app_name) as app:
            responses = send(app)
    cassettes = load_cassettes(cassette_dir)
    assert_recorded(cassettes, responses, upstream.url)
    assert_exported_same_traces(cassettes, receiver)
    text = "".join(p.read_text() for p in cassette_dir.rglob("*.json"))
    assert '"[REDACTED]"' in text and not [s for s in SECRETS if s in text]
    assert app.stderr.count("timetracer [OK] recorded GET /profile/") == len(SENT), app.stderr
    # SQLAlchemy 2.1, past its instrumentor's declared range, is instrumented by timetracer:
    # auto-instrumentation's error that nothing could be is not shown
    assert "only instruments" not in app.stderr, app.stderr


def test_replays_with_the_upstream_down(cassette_dir: Path) -> None:
    with running_upstream() as upstream:
        with instrumented_app(record_env(upstream, cassette_dir)) as app:
            recorded = send(app)
    replay = {
        "TIMETRACER_MODE": "replay",
        "TIMETRACER_CASSETTE": str(cassette_dir),
        "PLAIN_APP_UPSTREAM": upstream.url,
    }
    with instrumented_app(replay) as app:
        replayed = send(app)
    assert [(r.status_code, r.json()) for r in replayed] == [
        (r.status_code, r.json()) for r in recorded
    ]
    reports = [
        line
        for line in app.stderr.splitlines()
        if line.startswith("timetracer [OK] replayed GET /profile/")
    ]
    assert len(reports) == len(SENT) and all(
        "calls=2/2" in r and "response=same" in r for r in reports
    ), app.stderr


@pytest.mark.parametrize("app_name", ["app", "fastapi_app"], ids=["starlette", "fastapi"])
def test_timetracer_replay_answers_as_recorded_when_the_app_raises(
    app_name: str, cassette_dir: Path
) -> None:
    """The app raised behind the recording middleware; ``timetracer replay --app`` must observe
    it at the same place (inside Starlette's error middleware), not the 500 page outside it."""
    with running_upstream() as upstream:
        with instrumented_app(record_env(upstream, cassette_dir), app_name) as app:
            # one connection each: uvicorn closes the one whose request raised
            assert httpx.get(f"{app.url}/broken", timeout=30).status_code == 500
            assert httpx.get(f"{app.url}/profile/grace", timeout=30).status_code == 200
    replay = subprocess.run(
        [str(BIN / "timetracer"), "replay", str(cassette_dir), "--app", f"plain_app:{app_name}",
         "--app-dir", str(APPS_DIR)],
        env={**os.environ, "PLAIN_APP_UPSTREAM": upstream.url},
        cwd=APPS_DIR, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert "replayed 2 cassettes: 2 ok, 0 differ" in replay.stdout, replay.stdout + replay.stderr


def test_unusable_cassettes_stop_the_app_at_start(tmp_path: Path) -> None:
    """Not a replay that could reach the network: the process ends before serving anything."""
    env = {
        "TIMETRACER_MODE": "replay",
        "TIMETRACER_CASSETTE": str(tmp_path / "missing"),
        "PLAIN_APP_UPSTREAM": "http://127.0.0.1:1",
    }
    with instrumented_app(env) as app:
        assert app.process.wait(30) != 0
    assert "timetracer: " in app.stderr and str(tmp_path / "missing") in app.stderr, app.stderr


def test_a_collector_that_is_down_fails_no_request(upstream: Upstream, cassette_dir: Path) -> None:
    """Requests succeed and are recorded; the failed export is logged. (A short export timeout keeps the exit quick.)"""
    closed = {
        **_EXPORT,
        "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:1",
        "OTEL_EXPORTER_OTLP_TIMEOUT": "1",
    }
    with instrumented_app(record_env(upstream, cassette_dir, **closed)) as app:
        responses = send(app)
    assert_recorded(load_cassettes(cassette_dir), responses, upstream.url)
    assert (
        "timetracer: OTLP export of" in app.stderr
        and "to http://127.0.0.1:1/v1/traces failed" in app.stderr
    ), app.stderr


def test_an_exporter_that_is_not_installed_stops_no_recording(
    upstream: Upstream, cassette_dir: Path
) -> None:
    """gRPC asked for, its exporter absent: the SDK setup fails, is logged, and cassettes are still recorded."""
    with instrumented_app(
        record_env(upstream, cassette_dir, OTEL_EXPORTER_OTLP_PROTOCOL="grpc", **_EXPORT)
    ) as app:
        responses = send(app)
    assert (
        "timetracer: OpenTelemetry SDK setup failed (Requested component 'otlp_proto_grpc' not found"
        in app.stderr
    )
    assert_recorded(load_cassettes(cassette_dir), responses, upstream.url)


_OTHER_DISTRO = """
import os
from opentelemetry.instrumentation.distro import BaseDistro
from opentelemetry.sdk._configuration import _OTelSDKConfigurator


class Distro(BaseDistro):  # what opentelemetry-distro does
    def _configure(self, **kwargs):
        os.environ.setdefault("OTEL_TRACES_EXPORTER", "otlp")
        os.environ.setdefault("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")


class Configurator(_OTelSDKConfigurator):
    pass
"""


@pytest.fixture
def other_distro(tmp_path: Path) -> str:
    """A directory for PYTHONPATH with another distribution's distro and configurator, listed before ours."""
    (tmp_path / "other_distro.py").write_text(_OTHER_DISTRO)
    info = tmp_path / "other_distro-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: other-distro\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(
        "[opentelemetry_distro]\nother = other_distro:Distro\n\n[opentelemetry_configurator]\nother = other_distro:Configurator\n"
    )
    return str(tmp_path)


def test_with_another_distribution_in_charge_the_timetracer_exporter_records(
    other_distro: str, upstream: Upstream, cassette_dir: Path
) -> None:
    """Its configurator builds the SDK; naming the ``timetracer`` exporter is enough to record."""
    env = record_env(
        upstream, cassette_dir, PYTHONPATH=other_distro, OTEL_TRACES_EXPORTER="timetracer"
    )
    with instrumented_app(env) as app:
        responses = send(app)
    assert "Configuration of timetracer not loaded, other already loaded" in app.stderr, app.stderr
    assert_recorded(load_cassettes(cassette_dir), responses, upstream.url)


def test_choosing_the_timetracer_distro_beside_another_one(
    other_distro: str, upstream: Upstream, cassette_dir: Path
) -> None:
    """``OTEL_PYTHON_DISTRO=timetracer`` brings our configurator too, though the other one is listed first."""
    with running_receiver() as receiver:
        otel = {
            **_EXPORT,
            "OTEL_PYTHON_DISTRO": "timetracer",
            "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.url,
        }
        with instrumented_app(
            record_env(upstream, cassette_dir, PYTHONPATH=other_distro, **otel)
        ) as app:
            responses = send(app)
    assert (
        "Configuration of other not loaded because timetracer is set by OTEL_PYTHON_CONFIGURATOR"
        in app.stderr
    )
    cassettes = load_cassettes(cassette_dir)
    assert_recorded(cassettes, responses, upstream.url)
    assert_exported_same_traces(cassettes, receiver)


def _children(pid: int) -> list[int]:
    return [
        int(child)
        for task in Path(f"/proc/{pid}/task").iterdir()
        for child in (task / "children").read_text().split()
    ]


def test_the_writer_process_does_not_instrument_itself(
    upstream: Upstream, cassette_dir: Path
) -> None:
    """``opentelemetry-instrument`` puts its sitecustomize on PYTHONPATH; the cassette writer's path leaves it out,
    so OpenTelemetry's start-up (and its warnings) run once, in the app."""
    with instrumented_app(record_env(upstream, cassette_dir)) as app:
        send(app)
        (writer,) = _children(app.process.pid)
        assert b"_writer_main" in Path(f"/proc/{writer}/cmdline").read_bytes()
        environ = dict(
            item.split(b"=", 1)
            for item in Path(f"/proc/{writer}/environ").read_bytes().split(b"\0")
            if b"=" in item
        )
    entries = environ[b"PYTHONPATH"].decode().split(os.pathsep)
    assert entries and not [e for e in entries if e.rstrip("/").endswith("auto_instrumentation")]
    assert len(load_cassettes(cassette_dir)) == len(SENT)


def test_each_forked_gunicorn_worker_writes_a_process_cassette_of_its_own(tmp_path: Path) -> None:
    """``opentelemetry-instrument gunicorn -w 2``: the distro begins the process recording in
    gunicorn's arbiter, which forks the workers. Each worker's calls and draws outside requests
    go to a process cassette of its own, and its requests name it (both wrote one file)."""
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("OTEL_")},
        "TIMETRACER_MODE": "record",
        "TIMETRACER_DIR": str(tmp_path),
    }
    command = [
        str(BIN / "opentelemetry-instrument"), str(BIN / "gunicorn"), "--workers", "2",
        "--worker-class", "uvicorn.workers.UvicornWorker", "--chdir", str(APPS_DIR),
        "worker_app:app",
    ]  # fmt: skip
    keys: dict[int, str] = {}
    # stopped after the block: the workers write their process cassettes
    with serving_process(command, env, APPS_DIR, lambda fd: ["--bind", f"fd://{fd}"]) as server:
        # each request on a new connection: gunicorn's workers take turns accepting
        for _ in range(500):
            headers = {"Connection": "close"}
            answer = httpx.get(f"{server.url}/whoami", headers=headers, timeout=30).json()
            keys[answer["pid"]] = answer["key"]
            if len(keys) == 2:
                break
    assert len(keys) == 2, server.stderr[-2000:]
    processes = [json.loads(p.read_text()) for p in tmp_path.rglob("process__*.json")]
    assert len({process["id"] for process in processes}) == len(processes) == 2
    assert {c["process"] for c in load_cassettes(tmp_path)} == {p["id"] for p in processes}
