"""The pytest plugin as a user meets it: the spec's example, recorded once with
``--timetracer-mode=record`` while the upstream is up, then passing with the upstream down.

The inner runs use ``runpytest_subprocess``: each is a fresh ``pytest`` process that loads the
plugin from its ``pytest11`` entry point and starts with no OpenTelemetry provider and no
instrumentation, as on a user's machine. In-process runs would inherit this session's global
provider and enabled plugins (and would enable every plugin in this process when recording).
"""

from __future__ import annotations

import base64
import json
import re
import secrets
import shutil
import socket
import uuid
from pathlib import Path

import httpcore  # noqa: F401  (before pytester's sys.modules snapshot; see below)
import httpx
import pytest
import redis
import sqlalchemy as sa
from apps.replay_app import HTTPX_CLIENTS
from conftest import running_upstream

from timetracer_otel._keys import Key
from timetracer_otel._pytest.workers import as_worker, recorded_by
from timetracer_otel.cassette.reader import load_cassette

pytest_plugins = ["pytester"]


@pytest.fixture(autouse=True)
def _inner_runs_leave_out_plugins_no_test_here_uses(monkeypatch: pytest.MonkeyPatch) -> None:
    """hypothesis's and faker's plugins (this suite's own tools, installed beside it): loading
    them was 1.2 s of CPU of each inner run's 3 s, and no inner test uses them."""
    monkeypatch.setenv("PYTEST_ADDOPTS", "-p no:hypothesispytest -p no:faker")


# pytester removes the modules a test imported first. httpx imports httpcore on its first
# transport and maps httpcore's exception classes once: were that first import here, later
# tests would get httpcore classes httpx no longer maps. So httpcore is imported up front.

_APP = """
import httpx
from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Route

from timetracer_otel.integrations.starlette import auto_setup

UPSTREAM = "{upstream}"


async def get_user(request):
    user_id = request.path_params["user_id"]
    async with httpx.AsyncClient() as client:
        response = await client.get(f"{{UPSTREAM}}/json", params={{"user": user_id}})
        github_data = response.json()
    greeting = f"hello {{github_data['login'].upper()}} #{{user_id}}"
    return JSONResponse({{"user": github_data["login"], "github": github_data, "greeting": greeting}})


app = Starlette(debug=True, routes=[
    Route("/users/{{user_id:int}}", get_user),
])

auto_setup(app, plugins=["httpx"])
"""

# The spec's example as written (import root timetracer_otel), and one test showing the app's code ran.
_TEST_APP = '''
from starlette.testclient import TestClient
from app import app

client = TestClient(app)

def test_with_replay(timetracer_replay):
    """Test using a pre-recorded cassette."""
    with timetracer_replay("cassettes/test_user.json"):
        response = client.get("/users/1")
        assert response.status_code == 200
        assert "github" in response.json()


def test_the_app_computed_its_answer(timetracer_replay):
    with timetracer_replay("cassettes/test_user.json"):
        response = client.get("/users/1")
    assert response.json()["greeting"] == "hello OCTOCAT #1"
'''

_TEST_STRICT = """
from test_app import client

def test_strict_fails_on_an_unused_call(timetracer_replay):
    with timetracer_replay("cassettes/test_user.json", strict=True):
        pass  # the recorded call is never made


def test_strict_passes_when_every_call_is_used(timetracer_replay):
    with timetracer_replay("cassettes/test_user.json", strict=True):
        assert client.get("/users/1").json()["user"] == "octocat"
"""

_TEST_RECORD = """
import datetime
import json
import socket
import uuid

import httpx

def test_record_then_replay(timetracer_record):
    with timetracer_record("echo"):
        data = httpx.post("{upstream}/echo?q=1", json={{"n": 1}}).json()
    assert (data["query"], data["body"]) == ("q=1", '{{"n":1}}')


def test_a_call_carrying_a_new_uuid_and_the_time_replays(timetracer_record):
    with timetracer_record("order"):
        order = {{"id": str(uuid.uuid4()), "at": datetime.datetime.now().isoformat()}}
        data = httpx.post("{upstream}/echo", json=order).json()
    assert json.loads(data["body"]) == order
"""


def test_a_mode_given_to_a_suite_that_never_opted_in_is_named_in_the_summary(
    pytester: pytest.Pytester,
) -> None:
    """``--timetracer-mode=none`` without ``timetracer_autouse`` or a marker replays nothing:
    the tests ran live, and the summary says how to opt in instead of saying nothing."""
    pytester.makepyfile(test_live="def test_live():\n    assert True\n")
    result = pytester.runpytest_subprocess("--timetracer-mode=none")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(
        ["*--timetracer-mode=none was given, but no test used a cassette (they ran live): set "
         "timetracer_autouse = true*"]
    )  # fmt: skip


def test_an_app_recording_on_its_own_records_into_the_tests_cassette_under_testclient(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    """pytest started with ``TIMETRACER_MODE=record`` (the app's auto_setup records too): a
    request served through TestClient inside a test's cassette belongs to that cassette, calls
    and all. The app took the test's span for its request's root, and the test's cassette was
    never written."""
    monkeypatch.setenv("TIMETRACER_MODE", "record")
    monkeypatch.setenv("TIMETRACER_DIR", str(pytester.path / "app-cassettes"))
    with running_upstream() as live:
        pytester.makepyfile(app=_APP.format(upstream=live.url), test_app=_TEST_APP)
        pytester.runpytest_subprocess("--timetracer-mode=record").assert_outcomes(passed=2)
    cassette = json.loads((pytester.path / "cassettes" / "test_user.json").read_text("utf-8"))
    assert [call["request"]["url"] for call in cassette["calls"]] == [live.url + "/json?user=1"]
    assert not list((pytester.path / "app-cassettes").rglob("GET__*.json"))
    monkeypatch.delenv("TIMETRACER_MODE")
    pytester.runpytest_subprocess("--timetracer-mode=none").assert_outcomes(passed=2)


# FastAPI's older SQL tutorial: the app module creates its tables as it is imported, and the
# test module imports the app, so the calls are made while pytest collects the suite.
_APP_CREATING_TABLES = """
import os

import sqlalchemy as sa
from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Route

from timetracer_otel.integrations.starlette import auto_setup

engine = sa.create_engine(os.environ["APP_DB_URL"])
metadata = sa.MetaData()
items = sa.Table("{table}", metadata, sa.Column("id", sa.Integer, primary_key=True))
metadata.create_all(engine)


async def count(request):
    with engine.connect() as connection:
        return JSONResponse({{"items": connection.execute(sa.select(sa.func.count()).select_from(items)).scalar()}})


app = Starlette(routes=[Route("/count", count)])
auto_setup(app)
"""

_TEST_APP_CREATING_TABLES = """
from starlette.testclient import TestClient

from app import app


def test_counts_the_items():
    assert TestClient(app).get("/count").json() == {"items": 0}
"""


def test_calls_made_while_the_suite_is_imported_are_recorded_and_answered(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A test module importing an app that runs ``create_all()`` on PostgreSQL at import: the
    calls, made while pytest collects, are kept in ``@collection-calls.json`` and answered from
    it, so the suite replays with the database unreachable, serially and on xdist's workers."""
    table = f"tt_collected_{secrets.token_hex(4)}"
    pytester.makeini("[pytest]\ntimetracer_autouse = true\n")
    pytester.makepyfile(
        app=_APP_CREATING_TABLES.format(table=table), test_app=_TEST_APP_CREATING_TABLES
    )
    monkeypatch.setenv("APP_DB_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
    try:
        pytester.runpytest_subprocess("--timetracer-mode=all").assert_outcomes(passed=1)
    finally:
        with sa.create_engine("postgresql+psycopg://postgres@127.0.0.1:5432/test").begin() as db:
            db.execute(sa.text(f"DROP TABLE IF EXISTS {table}"))
    (kept,) = pytester.path.glob("cassettes/@collection-calls*.json")
    statements = [call["request"].get("statement", "") for call in load_cassette(kept)["calls"]]
    assert any(s.strip().startswith("CREATE TABLE") for s in statements), statements
    monkeypatch.setenv("APP_DB_URL", "postgresql+psycopg://postgres@127.0.0.1:1/test")
    pytester.runpytest_subprocess("--timetracer-mode=none").assert_outcomes(passed=1)
    pytester.runpytest_subprocess("--timetracer-mode=none", "-n", "2").assert_outcomes(passed=1)


def test_an_unusable_collection_cassette_stops_the_run_naming_it(
    pytester: pytest.Pytester,
) -> None:
    """The calls of the collection are answered before any test runs: a damaged cassette for
    them stops a replaying run at once, with one line naming it."""
    pytester.makeini("[pytest]\ntimetracer_autouse = true\n")
    pytester.makepyfile(test_nothing="def test_nothing():\n    pass\n")
    (pytester.path / "cassettes").mkdir()
    (pytester.path / "cassettes/@collection-calls.json").write_text('{"format": "timetrac')
    result = pytester.runpytest_subprocess("--timetracer-mode=none")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        ["ERROR: timetracer: cannot use cassette *@collection-calls.json: is truncated*"]
    )


def test_a_cassette_that_is_a_link_to_nothing_fails_the_test_and_is_not_recorded_over(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    """In mode once a missing cassette is recorded; a link whose target is gone is a cassette
    that cannot be read: its calls went out live and the link was replaced by a recording."""
    monkeypatch.delenv("CI", raising=False)
    with running_upstream() as live:
        pytester.makepyfile(app=_APP.format(upstream=live.url), test_app=_TEST_APP)
        (pytester.path / "cassettes").mkdir()
        link = pytester.path / "cassettes" / "test_user.json"
        link.symlink_to("moved-away.json")
        result = pytester.runpytest_subprocess("test_app.py")
        assert live.requests == []
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines(["*timetracer: cannot use cassette *test_user.json: no such file*"])
    assert link.is_symlink() and not link.exists()


# A module fixture fetching from the upstream, used by two tests.
_TEST_MODULE_FIXTURE = """
import httpx
import pytest

UPSTREAM = "{upstream}"


@pytest.fixture(scope="module")
def profile():
    return httpx.get(UPSTREAM + "/json").json()


def test_first(profile):
    assert profile["login"] == "octocat"


def test_second(profile):
    assert profile["id"] == 1
"""


def _record_module_fixture_suite(pytester: pytest.Pytester) -> Path:
    """The suite above recorded; its fixture's cassette."""
    pytester.makeini("[pytest]\ntimetracer_autouse = true\n")
    with running_upstream() as live:
        pytester.makepyfile(test_profile=_TEST_MODULE_FIXTURE.format(upstream=live.url))
        pytester.runpytest_subprocess("--timetracer-mode=all").assert_outcomes(passed=2)
    (fixture,) = (pytester.path / "cassettes").rglob("@fixtures/profile*.json")
    return fixture


def test_a_damaged_fixture_cassette_fails_each_test_using_it_and_is_never_pruned(
    pytester: pytest.Pytester,
) -> None:
    """Every test using the fixture fails naming the file (the second got pytest's own bare
    AssertionError), and the file, which a fixture owns, is not called stale nor removed."""
    fixture = _record_module_fixture_suite(pytester)
    fixture.write_text('{"format": "timetrac')
    replayed = pytester.runpytest_subprocess("--timetracer-mode=none", "--timetracer-prune")
    replayed.assert_outcomes(errors=2)
    # one line each, naming the file; no traceback through timetracer's frames
    output = replayed.stdout.str()
    errors = [line for line in output.splitlines() if line.startswith("timetracer: cannot use")]
    assert len(errors) == 2 and all("profile.json: is truncated" in e for e in errors), output
    assert "blocks.py" not in output
    assert "stale" not in replayed.stdout.str() and "removed" not in replayed.stdout.str()
    assert fixture.read_text() == '{"format": "timetrac'


def test_a_fixture_instance_without_a_cassette_names_the_missing_file_where_its_call_fails(
    pytester: pytest.Pytester,
) -> None:
    """A wider-scoped fixture set up more often than when recorded (the suite run in another
    order) has no file: a call it makes says so, with the file's name and how to record it,
    rather than only that "the cassette" holds no such call."""
    fixture = _record_module_fixture_suite(pytester)
    fixture.unlink()
    replayed = pytester.runpytest_subprocess("--timetracer-mode=none")
    output = replayed.stdout.str()
    assert f"no file {fixture.relative_to(pytester.path)} holds it" in output, output
    assert "record it again with pytest --timetracer-mode=once" in output


def test_a_cassette_linked_out_of_the_cassette_directory_is_not_read(
    pytester: pytest.Pytester, tmp_path: Path
) -> None:
    """A cassette travels: a link in it to another file of the reader's is refused, naming the
    link, as the command line and the dashboard refuse it; the target is not read."""
    _record_module_fixture_suite(pytester)
    test = pytester.path / "cassettes/test_profile/test_first.json"
    outside = tmp_path / "elsewhere.json"
    outside.write_text('{"format": "SECRET-FROM-OUTSIDE"}')
    test.unlink()
    test.symlink_to(outside)
    replayed = pytester.runpytest_subprocess("--timetracer-mode=none")
    replayed.assert_outcomes(passed=1, errors=1)
    replayed.stdout.fnmatch_lines(
        ["*test_first.json*is a link to a file outside the cassette directory*"]
    )
    assert "SECRET-FROM-OUTSIDE" not in replayed.stdout.str()


def test_control_characters_a_cassette_holds_reach_the_terminal_escaped(
    pytester: pytest.Pytester,
) -> None:
    """A recorded call's URL with a terminal's escape sequences (clear the screen, set the
    title) is listed, as recorded but not made, with them written as escapes."""
    fixture = _record_module_fixture_suite(pytester)
    document = json.loads(fixture.read_text())
    document["calls"][0]["request"]["url"] += "?\u001b]0;PWN\u0007\u001b[2J"
    fixture.write_text(json.dumps(document))
    replayed = pytester.runpytest_subprocess("--timetracer-mode=none")
    assert "\x1b" not in replayed.stdout.str() and "\a" not in replayed.stdout.str()
    replayed.stdout.fnmatch_lines(["*recorded but not made*", "*\\x1b]0;PWN\\x07\\x1b[2J*"])


def test_spec_example_records_then_replays_with_the_upstream_down(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("CI", raising=False)  # the default mode: once (record what is missing)
    with running_upstream() as live:
        pytester.makepyfile(
            app=_APP.format(upstream=live.url),
            test_app=_TEST_APP,
            test_record=_TEST_RECORD.format(upstream=live.url),
        )
        pytester.runpytest_subprocess("--timetracer-mode=record", "test_app.py").assert_outcomes(
            passed=2
        )
        # no cassettes yet: records them
        pytester.runpytest_subprocess("test_record.py").assert_outcomes(passed=2)
        assert [(r["path"], r["query"]) for r in live.requests] == [("/json", "user=1")] * 2 + [
            ("/echo", "q=1"),
            ("/echo", ""),
        ]
    with pytest.raises(httpx.ConnectError):
        httpx.get(live.url + "/json")  # the upstream is down: a call that went out would fail

    cassette = json.loads((pytester.path / "cassettes" / "test_user.json").read_text("utf-8"))
    assert [call["request"]["url"] for call in cassette["calls"]] == [live.url + "/json?user=1"]
    assert (pytester.path / "cassettes" / "echo.json").is_file()

    pytester.makepyfile(test_strict=_TEST_STRICT)
    result = pytester.runpytest_subprocess()
    # the order replays: its uuid4() and now() are the recorded ones
    result.assert_outcomes(passed=5, failed=1)
    result.stdout.fnmatch_lines(
        [
            "timetracer replay of cassettes/test_user.json failed:",
            f"  recorded but unused: GET {live.url}/json?user=1",
            "FAILED test_strict.py::test_strict_fails_on_an_unused_call - *",
        ]
    )

    (pytester.path / "cassettes" / "echo.json").unlink()
    monkeypatch.setenv("CI", "true")  # where CI is set, the default mode only replays
    in_ci = pytester.runpytest_subprocess("test_record.py")
    in_ci.assert_outcomes(passed=1, failed=1)
    in_ci.stdout.fnmatch_lines(
        [
            "*no cassette at *echo.json and --timetracer-mode=none only replays: record it with pytest --timetracer-mode=once*"
        ]
    )

    live_run = pytester.runpytest_subprocess("--timetracer-mode=off", "test_app.py")
    live_run.assert_outcomes(failed=2)  # without replay the same tests cannot pass
    live_run.stdout.fnmatch_lines(["*ConnectError*"])


_TEST_MARKED = """
import socket

import httpx
import pytest

pytestmark = pytest.mark.timetracer


@pytest.mark.parametrize("path", ["a/b", "x:y"])
def test_each_parameter_has_its_cassette(path):
    assert httpx.get("{upstream}/echo", params={{"p": path}}).json()["query"] == httpx.QueryParams({{"p": path}}).__str__()


def test_a_connection_the_cassette_cannot_answer_fails_the_test_even_when_caught():
    if {replaying}:
        try:
            socket.create_connection(("127.0.0.1", {port}), timeout=5).close()
        except ConnectionRefusedError:
            pass  # the code under test copes with a service being down: the test must still fail
"""


def test_marked_tests_get_readable_cassettes_and_the_network_is_closed_in_replay(
    pytester: pytest.Pytester,
) -> None:
    with running_upstream() as live:
        port = int(live.url.rsplit(":", 1)[1])
        pytester.makepyfile(
            test_marked=_TEST_MARKED.format(upstream=live.url, replaying=False, port=port)
        )
        pytester.runpytest_subprocess("--timetracer-mode=once").assert_outcomes(passed=3)
        assert sorted(
            str(p.relative_to(pytester.path / "cassettes"))
            for p in (pytester.path / "cassettes").rglob("*.json")
        ) == [
            "test_marked/test_a_connection_the_cassette_cannot_answer_fails_the_test_even_when_caught.json",
            "test_marked/test_each_parameter_has_its_cassette[a_b]-99f15b61.json",
            "test_marked/test_each_parameter_has_its_cassette[x_y]-fd5e754d.json",
        ]
        pytester.makepyfile(
            test_marked=_TEST_MARKED.format(upstream=live.url, replaying=True, port=port)
        )
        # the upstream is still up: only the guard stops it
        result = pytester.runpytest_subprocess("--timetracer-mode=none")
        assert len(live.requests) == 2  # the two recorded calls, none in replay
    result.assert_outcomes(passed=3, errors=1)  # the swallowed refusal fails it at teardown
    result.stdout.fnmatch_lines(
        [
            "*timetracer replay of cassettes/test_marked/test_a_connection_*.json failed:",
            f"  refused connection: 127.0.0.1:{port}",
            "*tests: 3 replayed, 0 recorded*",
        ]
    )


# Two servers in the test process, both uvicorn in a thread: the app under test (a live
# server the tests call over HTTP) and a fake upstream the app calls, started only while
# recording. The app is also reached through TestClient.
# A uvicorn server in a thread of the test process, as suites serve a "live server" (no
# braces: it goes into templates that are formatted).
_SERVE_IN_A_THREAD = """
class Server(uvicorn.Server):
    def __init__(self, config):
        super().__init__(config)
        self.ready = threading.Event()

    async def startup(self, sockets=None):
        await super().startup(sockets)
        self.ready.set()


def serve(asgi_app, port):
    server = Server(uvicorn.Config(asgi_app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    assert server.ready.wait(30)
    return server, thread, server.servers[0].sockets[0].getsockname()[1]
"""

_TEST_LIVE = (
    """
import asyncio
import importlib
import os
import threading

import httpx
import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.testclient import TestClient

UPSTREAM = "http://127.0.0.1:{upstream_port}"
pytestmark = pytest.mark.timetracer


async def rate(request):
    return JSONResponse({{"rate": 1.25}})


async def price(request):
    async with httpx.AsyncClient() as client:
        rate = (await client.get(f"{{UPSTREAM}}/rate")).json()["rate"]
    return JSONResponse({{"price": 8 * rate}})


app = Starlette(routes=[Route("/price", price)])


"""
    + _SERVE_IN_A_THREAD
    + """

@pytest.fixture(scope="module", autouse=True)
def upstream():
    if os.environ.get("UPSTREAM_UP") != "1":
        yield
        return
    server, thread, _ = serve(Starlette(routes=[Route("/rate", rate)]), {upstream_port})
    yield
    server.should_exit = True
    thread.join(30)


@pytest.fixture(scope="module")
def live_url():
    server, thread, port = serve(app, 0)
    yield f"http://127.0.0.1:{{port}}"
    server.should_exit = True
    thread.join(30)


def test_through_the_live_server(live_url):
    assert httpx.get(f"{{live_url}}/price").json() == {{"price": 10.0}}


def test_through_the_test_client():
    assert TestClient(app).get("/price").json() == {{"price": 10.0}}


@pytest.mark.parametrize("client", {clients!r})
def test_through_an_asgi_transport(client):
    module = importlib.import_module(client)

    async def get():
        transport = module.ASGITransport(app=app)
        async with module.AsyncClient(transport=transport, base_url="http://app") as session:
            return (await session.get("/price")).json()

    assert asyncio.run(get()) == {{"price": 10.0}}
"""
)


def test_a_live_servers_calls_replay_while_the_tests_requests_reach_it(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The app in a uvicorn thread runs in replay too: the tests' requests reach it and are
    not in any cassette; its call to the fake upstream (uvicorn in the same process) is
    recorded and answered, in the live server and behind TestClient or an ``ASGITransport``
    (httpx's and httpx2's) alike."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        upstream_port = probe.getsockname()[1]
    pytester.makepyfile(
        test_live=_TEST_LIVE.format(upstream_port=upstream_port, clients=HTTPX_CLIENTS)
    )
    monkeypatch.setenv("UPSTREAM_UP", "1")
    tests = [
        "test_through_the_live_server",
        "test_through_the_test_client",
        *(f"test_through_an_asgi_transport[{client}]" for client in HTTPX_CLIENTS),
    ]
    pytester.runpytest_subprocess("--timetracer-mode=all").assert_outcomes(passed=len(tests))

    cassettes = pytester.path / "cassettes" / "test_live"
    for test in tests:
        cassette = json.loads((cassettes / f"{test}.json").read_text("utf-8"))
        assert [call["request"]["url"] for call in cassette["calls"]] == [
            f"http://127.0.0.1:{upstream_port}/rate"
        ]

    monkeypatch.setenv("UPSTREAM_UP", "0")  # the upstream is not started: only the cassette answers
    replayed = pytester.runpytest_subprocess("--timetracer-mode=replay")
    replayed.assert_outcomes(passed=len(tests))
    replayed.stdout.fnmatch_lines(
        [
            "*mode none (replay only), cassettes in cassettes*",  # pytest-recording's name, and what it does
            f"*tests: {len(tests)} replayed, 0 recorded*",
            f"*calls: {len(tests)} answered from cassettes, 0 not answered*",
        ]
    )


# A suite's fake upstream, started by a fixture on a port the OS picks (another one each run),
# counting what reaches it; the app under test reads its address from the fixture.
_TEST_STUB_PORT = (
    """
import os
import threading

import httpx
import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.testclient import TestClient

pytestmark = pytest.mark.timetracer
REACHED = []


async def rate(request):
    REACHED.append(request.url.path)
    return JSONResponse({"rate": 1.25, "currency": request.query_params["currency"]})


"""
    + _SERVE_IN_A_THREAD
    + """

@pytest.fixture(scope="module")
def upstream():
    server, thread, port = serve(Starlette(routes=[Route("/rate", rate)]), 0)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(30)


@pytest.fixture
def client(upstream):
    async def price(request):
        async with httpx.AsyncClient(base_url=upstream) as http:
            answer = await http.get("/rate", params={"currency": request.query_params["in"]})
        return JSONResponse({"price": 8 * answer.json()["rate"], **answer.json()})

    return TestClient(Starlette(routes=[Route("/price", price)]))


@pytest.mark.parametrize("currency", ["EUR", "GBP"])
def test_price(client, currency):
    assert client.get("/price", params={"in": currency}).json() == {
        "price": 10.0, "rate": 1.25, "currency": currency
    }
    assert len(REACHED) == int(os.environ["REACHES_UPSTREAM"])
    REACHED.clear()
"""
)


def test_a_stub_server_on_a_port_the_os_picks_replays(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The suite's fake upstream is on another port in the replaying run; its calls are answered
    from the cassettes all the same, and nothing reaches it."""
    pytester.makepyfile(test_stub=_TEST_STUB_PORT)
    monkeypatch.setenv("REACHES_UPSTREAM", "1")
    pytester.runpytest_subprocess("--timetracer-mode=all").assert_outcomes(passed=2)
    monkeypatch.setenv("REACHES_UPSTREAM", "0")
    replayed = pytester.runpytest_subprocess("--timetracer-mode=replay")
    replayed.assert_outcomes(passed=2)
    replayed.stdout.fnmatch_lines(["*calls: 2 answered from cassettes, 0 not answered*"])


# The same stub, which the suite's client waits for once per process (as Prefect's hosted API
# server is polled on /api/health): only the first test's cassette holds that poll.
_TEST_STUB_POLLED = """
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest

pytestmark = pytest.mark.timetracer
READY = []


class Stub(BaseHTTPRequestHandler):
    def do_GET(self):
        body = json.dumps({"/health": {"status": "ok"}, "/rate": {"rate": 1.25}}[self.path]).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture(scope="module")
def upstream():
    server = ThreadingHTTPServer(("127.0.0.1", 0), Stub)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def client(upstream):
    if not READY:
        READY.append(httpx.get(f"{upstream}/health").json())
    return httpx.Client(base_url=upstream)


def test_first(upstream):
    assert client(upstream).get("/rate").json() == {"rate": 1.25}


def test_second(upstream):
    assert client(upstream).get("/rate").json() == {"rate": 1.25}
"""


def test_a_test_run_alone_gets_the_earlier_tests_answer_from_the_stub_on_its_new_port(
    pytester: pytest.Pytester,
) -> None:
    """Replayed alone, ``test_second`` polls the stub itself, on another port: the poll is in
    ``test_first``'s cassette only, made to the port the stub had then."""
    pytester.makepyfile(test_polled=_TEST_STUB_POLLED)
    pytester.runpytest_subprocess("--timetracer-mode=all").assert_outcomes(passed=2)
    alone = pytester.runpytest_subprocess("--timetracer-mode=replay", "-k", "test_second")
    alone.assert_outcomes(passed=1, deselected=1)
    alone.stdout.fnmatch_lines(
        [
            "*cassettes/test_polled/test_second.json: httpx GET http://127.0.0.1:*/health (answered by cassettes/test_polled/test_first.json)"
        ]
    )


# Prefect's states carry the current trace context (prefect.states._traced): a test's call
# sends whatever propagate.inject finds.
_TEST_TRACE_CONTEXT = """
import httpx
import pytest
from opentelemetry import propagate

pytestmark = pytest.mark.timetracer


def test_sends_its_trace_context():
    carrier = {{}}
    propagate.inject(carrier)
    answer = httpx.post("{upstream}/echo", json={{"state": {{"traceparent": carrier.get("traceparent")}}}})
    assert answer.status_code == 200
"""


def test_a_tests_trace_context_is_there_in_replay_as_when_recorded(
    pytester: pytest.Pytester,
) -> None:
    """Recorded, the test ran under the span of its cassette, and the state it sent carried that
    span's trace context; replayed, it ran under none and sent null, and nothing matched."""
    with running_upstream() as live:
        pytester.makepyfile(test_context=_TEST_TRACE_CONTEXT.format(upstream=live.url))
        pytester.runpytest_subprocess("--timetracer-mode=all").assert_outcomes(passed=1)
        (request,) = live.requests
        pytester.runpytest_subprocess("--timetracer-mode=replay").assert_outcomes(passed=1)
    assert b'"traceparent":"00-' in request["body"]


# The app answers from a secret it reads from its upstream (a stored token, as a password
# hash is read from a row): replayed without its key it gets [REDACTED] and says no.
_TEST_SEALED = """
import httpx
import pytest
from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.testclient import TestClient

pytestmark = pytest.mark.timetracer


async def check(request):
    async with httpx.AsyncClient() as client:
        stored = (await client.get("{upstream}/json")).json()["token"]
    return JSONResponse({{"ok": stored == "upstream-secret"}})


def test_the_app_reads_a_sealed_token():
    assert TestClient(Starlette(routes=[Route("/check", check)])).get("/check").json() == {{"ok": True}}
"""


def test_the_report_names_the_key_a_recording_run_made(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    """pytest shows no log line: the run that made the key says so in its report, with -n 2 too
    (a worker made it); a run that found it says nothing, nor does a run that only replayed
    while another process made it."""
    made = pytester.path / "config" / "key"
    monkeypatch.setenv("TIMETRACER_KEY_FILE", str(made))
    line = f"key: created {made} (readable by you alone): replaying the secrets this run sealed needs it; *"
    with running_upstream() as live:
        pytester.makepyfile(test_sealed=_TEST_SEALED.format(upstream=live.url))
        first = pytester.runpytest_subprocess("--timetracer-mode=all", "-n", "2")
        first.assert_outcomes(passed=1)
        first.stdout.fnmatch_lines([line])
        again = pytester.runpytest_subprocess("--timetracer-mode=all")
        again.assert_outcomes(passed=1)
        assert made.is_file() and "key: created" not in again.stdout.str()
        aside = made.with_name("elsewhere")
        made.rename(aside)
        pytester.makeconftest(  # the key made by another process, before this run's report
            f"import os\n\ndef pytest_sessionfinish(session):\n    os.replace({str(aside)!r}, {str(made)!r})\n"
        )
        replayed = pytester.runpytest_subprocess("--timetracer-mode=none")
    assert "tests: 1 replayed" in replayed.stdout.str() and made.is_file()
    assert "key: created" not in replayed.stdout.str()


def test_the_report_says_when_tests_replay_without_their_sealed_secrets(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, key_file: Path
) -> None:
    """A CI runner without the key replays sealed secrets as [REDACTED]: the report counts those
    tests and names the variable that supplies the key; with another key, the key id they need."""
    with running_upstream() as live:
        pytester.makepyfile(test_sealed=_TEST_SEALED.format(upstream=live.url))
        pytester.runpytest_subprocess("--timetracer-mode=record").assert_outcomes(passed=1)
    assert "[SEALED:" in next((pytester.path / "cassettes").rglob("*.json")).read_text("utf-8")

    monkeypatch.setenv("TIMETRACER_KEY_FILE", str(pytester.path / "no-key"))
    without_key = pytester.runpytest_subprocess("--timetracer-mode=none")
    without_key.assert_outcomes(failed=1)  # the app compared [REDACTED] with the token
    without_key.stdout.fnmatch_lines(
        [
            "secrets: 1 test replayed without its secrets: sealed in its cassette and this process has no key, "
            "so the app got [[]REDACTED] in their place (credentials, password hashes, random values it drew)",
            "  to replay with the secrets, put the key file that sealed them where this process looks for it, "
            f"{pytester.path / 'no-key'} (TIMETRACER_KEY_FILE), or set TIMETRACER_SECRET_KEY to its content; "
            "in CI, from a secret",
        ]
    )

    needed = Key(key_file.read_text("ascii").strip().encode(), "file").key_id
    monkeypatch.setenv("TIMETRACER_SECRET_KEY", secrets.token_hex(32))
    other_key = pytester.runpytest_subprocess("--timetracer-mode=none")
    other_key.assert_outcomes(errors=1)
    other_key.stdout.fnmatch_lines(
        [
            f"secrets: 1 cassette not replayed: holds sealed secrets this process cannot open: "
            f"it is sealed with key {needed}, and this process has key *; replay with that key "
            "(TIMETRACER_SECRET_KEY or TIMETRACER_KEY_FILE)"
        ]
    )

    monkeypatch.setenv("TIMETRACER_SECRET_KEY", key_file.read_text("ascii").strip())
    with_key = pytester.runpytest_subprocess("--timetracer-mode=none")
    with_key.assert_outcomes(passed=1)
    with_key.stdout.fnmatch_lines(["tests: 1 replayed, 0 recorded"])
    with_key.stdout.no_fnmatch_line("secrets:*")


_TEST_GARBAGE = """
import gc
import weakref

import pytest

class Node:
    pass

def _cycle():
    node = Node()
    node.me = node  # freed by the collector only
    return weakref.ref(node)

LEFT_BEFORE = _cycle()

@pytest.mark.timetracer
def test_a_cassette_test_starts_collected_and_collects_nothing_while_it_runs():
    assert LEFT_BEFORE() is None  # collected when the test was set up
    assert not gc.isenabled()
    during = _cycle()
    for _ in range(100_000):
        [[]]  # allocations that would trigger a collection
    assert during() is not None

def test_a_test_without_a_cassette_runs_with_the_collector_as_it_was():
    assert gc.isenabled()
"""


def test_garbage_is_collected_before_a_cassette_test_and_held_while_it_runs(
    pytester: pytest.Pytester,
) -> None:
    """Whether an ORM sends a query can depend on when the collector frees an object (its
    identity map holds them weakly): record and replay must free the same objects at the same points."""
    pytester.makepyfile(test_garbage=_TEST_GARBAGE)
    pytester.runpytest_subprocess("--timetracer-mode=record").assert_outcomes(passed=2)
    pytester.runpytest_subprocess("--timetracer-mode=none").assert_outcomes(passed=2)


# A rates client that asks the upstream for its currencies once per process and keeps them:
# only the first test that quotes makes that call, so only its cassette holds it.
_RATES = """
import httpx

UPSTREAM = "{upstream}"
_currencies = []


def quote(currency):
    if not _currencies:
        _currencies.extend(httpx.get(f"{{UPSTREAM}}/currencies").json())
    if currency not in _currencies:
        raise LookupError(currency)
    return httpx.get(f"{{UPSTREAM}}/echo", params={{"symbols": currency}}).json()["query"]
"""

_TEST_RATES = """
import pytest

from rates import quote


def test_euro():
    assert quote("EUR") == "symbols=EUR"


@pytest.mark.xdist_group("pound")
def test_pound():
    assert quote("GBP") == "symbols=GBP"
"""


def test_a_test_run_alone_gets_what_the_recording_process_had_from_an_earlier_test(
    pytester: pytest.Pytester,
) -> None:
    """Replayed alone, or first on its pytest-xdist worker, ``test_pound`` asks for the
    currencies its cassette lacks: the answer comes from ``test_euro``'s, recorded before it,
    and the report names it. Once ``test_euro`` is recorded again (after ``test_pound``), the
    answer comes from it still, as the first test recorded after; with its cassette gone, no
    other cassette holds the call and ``test_pound`` fails where it is made."""
    pytester.makeini("[pytest]\ntimetracer_autouse = true\n")
    with running_upstream() as live:  # up throughout: in replay the network guard keeps it out
        pytester.makepyfile(rates=_RATES.format(upstream=live.url), test_rates=_TEST_RATES)
        pytester.runpytest_subprocess("--timetracer-mode=once").assert_outcomes(passed=2)
        pound = json.loads((pytester.path / "cassettes/test_rates/test_pound.json").read_text())
        assert [call["request"]["url"] for call in pound["calls"]] == [
            f"{live.url}/echo?symbols=GBP"
        ]
        report_lines = [
            "*tests: 1 replayed, 0 recorded*",
            "*calls: 2 answered from cassettes, 0 not answered, 0 recorded but not made",
            "  1 call not in its test's cassette, answered from another test's (recorded or run before it, else recorded next: the process had it from there):",
            f"    cassettes/test_rates/test_pound.json: httpx GET {live.url}/currencies"
            " (answered by cassettes/test_rates/test_euro.json)",
        ]
        alone = pytester.runpytest_subprocess("--timetracer-mode=none", "-k", "test_pound")
        alone.assert_outcomes(passed=1, deselected=1)
        alone.stdout.fnmatch_lines(report_lines)

        # each test first on a worker of its own: the workers' reports are merged
        spread = pytester.runpytest_subprocess(
            "--timetracer-mode=none", "-n", "2", "--dist", "loadgroup"
        )
        spread.assert_outcomes(passed=2)
        spread.stdout.fnmatch_lines(["*tests: 2 replayed, 0 recorded*", *report_lines[2:]])
        assert len(live.requests) == 3  # those recorded; none in replay

        # test_euro recorded again, now after test_pound: the first recorded after it answers
        pytester.runpytest_subprocess("--timetracer-mode=all", "-k", "test_euro").assert_outcomes(
            passed=1, deselected=1
        )
        later = pytester.runpytest_subprocess("--timetracer-mode=none", "-k", "test_pound")
        later.assert_outcomes(passed=1, deselected=1)
        later.stdout.fnmatch_lines(report_lines)
        (pytester.path / "cassettes/test_rates/test_euro.json").unlink()
        unanswered = pytester.runpytest_subprocess("--timetracer-mode=none", "-k", "test_pound")
    unanswered.assert_outcomes(failed=1, deselected=1)
    unanswered.stdout.fnmatch_lines(["*no recorded call matches GET*/currencies*"])


# A rates client that opens a session with the upstream once per process, stamped with the
# time it reads in a function of its own (as a token's issue time): only the first test that
# quotes opens it, and its cassette alone holds the draw and the call.
_SESSION_RATES = """
import time

import httpx

UPSTREAM = "{upstream}"
_session = {{}}


def _open_session():
    opened = time.time_ns()
    httpx.post(f"{{UPSTREAM}}/echo", params={{"session": "open", "at": opened}})
    _session["opened"] = opened


def quote(currency):
    if not _session:
        _open_session()
    return httpx.get(f"{{UPSTREAM}}/echo", params={{"symbols": currency}}).json()["query"]
"""


def test_a_test_run_alone_gets_the_values_an_earlier_test_drew_for_once_per_process_work(
    pytester: pytest.Pytester,
) -> None:
    """``test_pound`` replayed alone opens the session itself: the time it reads there is the
    one ``test_euro``'s recording read (the process read it there), so the call it makes with
    it is ``test_euro``'s, answered from its cassette; with a time of its own, no cassette would
    hold the call."""
    pytester.makeini("[pytest]\ntimetracer_autouse = true\n")
    with running_upstream() as live:
        pytester.makepyfile(rates=_SESSION_RATES.format(upstream=live.url), test_rates=_TEST_RATES)
        pytester.runpytest_subprocess("--timetracer-mode=once").assert_outcomes(passed=2)
        alone = pytester.runpytest_subprocess("--timetracer-mode=none", "-k", "test_pound")
        alone.assert_outcomes(passed=1, deselected=1)
        alone.stdout.fnmatch_lines(
            [
                "*calls: 2 answered from cassettes, 0 not answered, 0 recorded but not made",
                f"    cassettes/test_rates/test_pound.json: httpx POST {live.url}/echo?session=open&at=*"
                " (answered by cassettes/test_rates/test_euro.json)",
            ]
        )
        assert len(live.requests) == 3  # those recorded; none in replay


# Tests that leave state for the tests after them (sqladmin's tests/test_forms.py): one
# defines a model on the module's metadata, whose table every later test's fixture creates.
_TESTS_DEFINING_MODELS = """
import os

import pytest
from sqlalchemy import Column, Integer, create_engine
from sqlalchemy.orm import declarative_base

engine = create_engine("sqlite:///" + os.environ["ORDER_DB"])
Base = declarative_base()


class User(Base):
    __tablename__ = "users"
    id = Column(Integer, primary_key=True)


@pytest.fixture(autouse=True)
def tables():
    Base.metadata.create_all(engine)
    yield
    Base.metadata.drop_all(engine)


def _users():
    with engine.connect() as connection:
        return connection.exec_driver_sql("SELECT count(*) FROM users").scalar()


def test_counts_users():
    assert _users() == 0


def test_defines_a_model():
    class Extra(Base):
        __tablename__ = "extra"
        id = Column(Integer, primary_key=True)


def test_counts_users_again():
    assert _users() == 0
"""


def test_a_test_run_after_others_than_when_recorded_gets_their_answers(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Replayed after ``test_defines_a_model`` (recorded after it, as pytest-randomly shuffles),
    ``test_counts_users``'s fixture reads, creates and drops the table that test added: calls
    its cassette lacks, answered from the cassette of the test that ran before it (which
    looked for the table), else from the first recorded after it (which created it)."""
    database = pytester.path / "order.sqlite"
    monkeypatch.setenv("ORDER_DB", str(database))
    pytester.makeini("[pytest]\ntimetracer_autouse = true\n")
    pytester.makepyfile(test_order=_TESTS_DEFINING_MODELS)
    pytester.runpytest_subprocess("--timetracer-mode=all").assert_outcomes(passed=3)
    database.unlink()
    shuffled = pytester.runpytest_subprocess(
        "--timetracer-mode=none",
        "test_order.py::test_defines_a_model",
        "test_order.py::test_counts_users",
        "test_order.py::test_counts_users_again",
    )
    shuffled.assert_outcomes(passed=3)
    answered = "    cassettes/test_order/test_counts_users.json: sqlalchemy execute {} (answered by cassettes/test_order/{}.json)"
    shuffled.stdout.fnmatch_lines(
        [
            "*calls: * answered from cassettes, 0 not answered, 0 recorded but not made",
            "  5 calls not in its test's cassette, answered from another test's*",
            answered.format('PRAGMA main.table_info("extra")', "test_defines_a_model"),
            answered.format('PRAGMA temp.table_info("extra")', "test_defines_a_model"),
            answered.format("CREATE TABLE extra*", "test_counts_users_again"),
        ]
    )
    assert not database.exists()


# Values drawn while pytest imports the suite: a signing key made when the conftest is
# imported, test ids and a UUID drawn when a test module is.
_CONFTEST_KEY = """
import hashlib
import hmac
import secrets

SIGNING_KEY = secrets.token_hex(16)


def signed(text):
    return hmac.new(SIGNING_KEY.encode(), text.encode(), hashlib.sha256).hexdigest()[:16]
"""

_NAMES = """
import random
import string


def random_name():
    return "".join(random.choices(string.ascii_lowercase, k=8))
"""

_TEST_NAMES = """
import uuid
from datetime import datetime, timedelta, timezone

import httpx
import pytest

from conftest import signed
from names import random_name

UPSTREAM = "{upstream}"
ORDER = str(uuid.uuid4())
PLACED_AT = datetime.now(timezone.utc)  # test data stamped as its module is imported
EXPIRES_AT = PLACED_AT + timedelta(hours=1)


@pytest.mark.parametrize("name", [random_name(), random_name()])
def test_{module}_signs(name):
    assert PLACED_AT < datetime.now(timezone.utc) < EXPIRES_AT
    query = {{"name": name, "order": ORDER, "at": PLACED_AT.isoformat(), "signature": signed(name)}}
    assert httpx.get(f"{{UPSTREAM}}/echo", params=query).json()["query"].startswith("name=" + name)
"""


def test_values_drawn_while_the_suite_is_imported_are_the_same_in_every_run(
    pytester: pytest.Pytester,
) -> None:
    """A conftest's signing key, parametrized names, a module-level UUID and time are drawn
    before any cassette is active: they come out the same in the replaying run, so each test
    finds its cassette (named after its random parameter) and sends what it recorded, when its
    module is collected alone too, and pytest-xdist's workers collect the same tests. The
    recording run's collection instant is kept beside the cassettes."""
    pytester.makeini("[pytest]\ntimetracer_autouse = true\n")
    with running_upstream() as live:
        pytester.makepyfile(
            conftest=_CONFTEST_KEY,
            names=_NAMES,
            test_first=_TEST_NAMES.format(upstream=live.url, module="first"),
            test_second=_TEST_NAMES.format(upstream=live.url, module="second"),
        )
        pytester.runpytest_subprocess("--timetracer-mode=once").assert_outcomes(passed=4)
        recorded = sorted(p.name for p in (pytester.path / "cassettes").rglob("*.json"))
        assert len(recorded) == 5 and "@collection.json" in recorded and len(live.requests) == 4

        pytester.runpytest_subprocess("--timetracer-mode=none").assert_outcomes(passed=4)
        alone = pytester.runpytest_subprocess("--timetracer-mode=none", "test_second.py")
        alone.assert_outcomes(passed=2)
        alone.stdout.fnmatch_lines(["*tests: 2 replayed, 0 recorded*"])
        workers = pytester.runpytest_subprocess("--timetracer-mode=none", "-n", "2")
        workers.assert_outcomes(passed=4)
        assert len(live.requests) == 4  # every run after the first replayed
    assert sorted(p.name for p in (pytester.path / "cassettes").rglob("*.json")) == recorded


# An audit log sink that sends each line to a queue and swallows what goes wrong (fief's
# loguru sink): a call its cassette cannot answer fails where it is made, and the test passes.
_TEST_SWALLOWED = """
import httpx


def audit(line):
    try:
        httpx.post("{upstream}/echo", json={{"line": line}})
    except Exception:
        pass


def test_z_runs_first():
    audit("{line}")


def test_a_runs_second():
    audit("{line}")
"""


def test_the_report_names_the_calls_not_answered_and_not_made_even_where_the_test_passed(
    pytester: pytest.Pytester,
) -> None:
    """In the order their tests ran: the first is often what failed the tests after it."""
    pytester.makeini("[pytest]\ntimetracer_autouse = true\n")
    with running_upstream() as live:
        pytester.makepyfile(test_audit=_TEST_SWALLOWED.format(upstream=live.url, line="recorded"))
        pytester.runpytest_subprocess("--timetracer-mode=all").assert_outcomes(passed=2)
        pytester.makepyfile(test_audit=_TEST_SWALLOWED.format(upstream=live.url, line="changed"))
        replayed = pytester.runpytest_subprocess("--timetracer-mode=none")
    replayed.assert_outcomes(passed=2)
    unmatched = f"timetracer replay: no recorded call matches POST {live.url}/echo (httpx)"
    replayed.stdout.fnmatch_lines(
        [
            "calls: 0 answered from cassettes, 2 not answered, 2 recorded but not made",
            "  2 calls not answered, each raised where it was made (where the code caught the error, its test may still have passed):",
            f"    cassettes/test_audit/test_z_runs_first.json: {unmatched}",
            f"    cassettes/test_audit/test_a_runs_second.json: {unmatched}",
            "  2 calls recorded but not made (the replayed code made other calls, or fewer):",
            f"    cassettes/test_audit/test_z_runs_first.json: POST {live.url}/echo",
            f"    cassettes/test_audit/test_a_runs_second.json: POST {live.url}/echo",
        ]
    )


_TEST_BROKEN_FIRST = """
import os

import httpx
import pytest


@pytest.fixture
def user():
    response = httpx.get("{upstream}/json", params={{"user": "ada"}})
    if os.path.exists("fixture-broken"):
        raise RuntimeError("the fixture broke")
    return response.json()


def test_sets_up_a_user(user):
    assert user["login"]


def test_fetches_a_user():
    response = httpx.get("{upstream}/json", params={{"user": "bob"}})
    assert not os.path.exists("test-broken"), response.status_code


@pytest.fixture
def session():
    yield httpx.get("{upstream}/json", params={{"user": "cy"}}).json()
    if os.path.exists("teardown-broken"):
        raise RuntimeError("the logout broke")


@pytest.fixture(scope="module")
def admin():
    response = httpx.get("{upstream}/json", params={{"user": "root"}})
    if os.path.exists("module-fixture-broken"):
        raise LookupError("no admin yet")
    return response.json()


def test_uses_the_admin(admin):
    assert admin["login"]


def test_logs_in(session):
    assert session["login"]
"""


def test_a_test_that_fails_while_recording_keeps_no_cassette_and_the_next_run_records_it(
    pytester: pytest.Pytester,
) -> None:
    """A cassette of a failed test (a set-up that errored has no calls at all) would be replayed
    by the next ``once`` run after the test is mended, and answer it with what went wrong."""
    pytester.makeini("[pytest]\ntimetracer_autouse = true\n")
    cassettes = pytester.path / "cassettes" / "test_users"
    with running_upstream() as live:
        pytester.makepyfile(test_users=_TEST_BROKEN_FIRST.format(upstream=live.url))
        every = ("fixture-broken", "test-broken", "teardown-broken", "module-fixture-broken")
        for broken in every:
            (pytester.path / broken).touch()
        broken = pytester.runpytest_subprocess("--timetracer-mode=once")
        broken.assert_outcomes(passed=1, failed=1, errors=3)  # the teardown's error is its own
        broken.stdout.fnmatch_lines(
            [
                "tests: 0 replayed, 0 recorded, 4 failed while recording (not kept: recorded again by the next run that records)",
                "fixture scopes: 0 replayed, 0 recorded, 1 failed while recording*",
            ]
        )
        assert not cassettes.exists()  # the module-scoped fixture's neither
        for broken in every:
            (pytester.path / broken).unlink()
        mended = pytester.runpytest_subprocess("--timetracer-mode=once")
        mended.assert_outcomes(passed=4)
        mended.stdout.fnmatch_lines(
            ["tests: 0 replayed, 4 recorded", "fixture scopes: 0 replayed, 1 recorded"]
        )
    assert sorted(path.relative_to(cassettes).as_posix() for path in cassettes.rglob("*.json")) == [
        "@fixtures/admin.json",
        "test_fetches_a_user.json",
        "test_logs_in.json",
        "test_sets_up_a_user.json",
        "test_uses_the_admin.json",
    ]
    pytester.runpytest_subprocess("--timetracer-mode=none").assert_outcomes(passed=4)


_SESSION_TEARDOWN_FAILS = """
import sqlite3

import pytest


@pytest.fixture(scope="session")
def db(tmp_path_factory):
    connection = sqlite3.connect(tmp_path_factory.mktemp("d") / "x.db")
    connection.execute("CREATE TABLE t (x INT)")
    yield connection
    raise RuntimeError("DROP DATABASE failed: sessions are still open")


@pytest.fixture
def row(db):
    yield db.execute("SELECT count(*) FROM t").fetchone()
    if {own_teardown_fails}:
        raise RuntimeError("the test's own fixture failed")


def test_one(row):
    assert row == (0,)


def test_two(row):
    assert row == (0,)
"""


@pytest.mark.parametrize("own_teardown_fails", [False, True], ids=["session", "function"])
def test_a_session_fixtures_failed_teardown_after_the_last_test_keeps_its_cassette(
    pytester: pytest.Pytester, own_teardown_fails: bool
) -> None:
    """pytest tears a session fixture down in the last test's teardown (a suite dropping its
    database while sessions are open, as Netflix Dispatch's does): its error is the fixture's,
    whose calls are in its own cassette, and the last test's cassette is kept, so replay passes
    what recording passed. A function-scoped fixture's failed teardown is still the test's."""
    pytester.makeini("[pytest]\ntimetracer_autouse = true\n")
    pytester.makepyfile(
        test_db=_SESSION_TEARDOWN_FAILS.format(own_teardown_fails=own_teardown_fails)
    )
    recorded = pytester.runpytest_subprocess("--timetracer-mode=record")
    recorded.assert_outcomes(passed=2, errors=2 if own_teardown_fails else 1)
    kept = sorted(p.name for p in (pytester.path / "cassettes" / "test_db").glob("*.json"))
    assert kept == ([] if own_teardown_fails else ["test_one.json", "test_two.json"])
    if not own_teardown_fails:
        pytester.runpytest_subprocess("--timetracer-mode=none").assert_outcomes(passed=2, errors=1)


_TESTS_OF_A_DATABASE = """
import pytest
from sqlalchemy import create_engine, text


@pytest.fixture(scope="module")
def database():
    engine = create_engine("sqlite:///app.db")
    with engine.begin() as connection:  # replayed, the table is not made
        connection.execute(text("CREATE TABLE items (name TEXT)"))
    yield engine
    engine.dispose()


def test_reads(database):
    with database.connect() as connection:
        assert connection.execute(text("SELECT count(*) FROM items")).scalar() == 0


def test_writes(database):
    with database.begin() as connection:
        connection.execute(text("INSERT INTO items VALUES ('ada')"))
"""


def test_a_test_recorded_while_its_fixture_replays_fails_and_the_report_names_the_fixture(
    pytester: pytest.Pytester,
) -> None:
    """``once`` with one test's cassette gone: the module fixture it uses replays from its
    cassette, so its set-up does not run for real and the test recording against it fails,
    run after run. The report says which fixture, and how to record it with its tests."""
    pytester.makeini("[pytest]\ntimetracer_autouse = true\n")
    pytester.makepyfile(test_db=_TESTS_OF_A_DATABASE)
    pytester.runpytest_subprocess("--timetracer-mode=once").assert_outcomes(passed=2)
    (pytester.path / "app.db").unlink()  # the database is dropped
    (pytester.path / "cassettes" / "test_db" / "test_writes.json").unlink()
    again = pytester.runpytest_subprocess("--timetracer-mode=once")
    again.assert_outcomes(passed=1, failed=1)
    again.stdout.fnmatch_lines(
        [
            "  failed while recording, with these fixtures replayed from their cassettes (their set-up did not run for real):",
            "    database",
            "  record the fixtures with their tests: --timetracer-mode=all*",
        ]
    )
    (pytester.path / "app.db").unlink(missing_ok=True)
    pytester.runpytest_subprocess("--timetracer-mode=all").assert_outcomes(passed=2)


def test_the_report_names_a_cassette_the_writer_could_not_write(
    pytester: pytest.Pytester,
) -> None:
    """A recording error never fails the test, so the report says it: else a run reads as all
    recorded while those tests have nothing to replay."""
    pytester.makeini("[pytest]\ntimetracer_autouse = true\n")
    (pytester.path / "cassettes").mkdir()
    (pytester.path / "cassettes" / "test_audit").write_text("a file where the directory goes")
    with running_upstream() as live:
        pytester.makepyfile(test_audit=_TEST_SWALLOWED.format(upstream=live.url, line="x"))
        recorded = pytester.runpytest_subprocess("--timetracer-mode=all")
    recorded.assert_outcomes(passed=2)
    recorded.stdout.fnmatch_lines(
        [
            "errors inside timetracer (the log has each one's traceback):",
            "  2 × write: write failed: *",
        ]
    )


_TEST_FROZEN = """
import gc
import json


def test_the_collections_before_tests_leave_the_imports_out(request):
    frozen = gc.get_freeze_count()
    (request.config.rootpath / "frozen").write_text(json.dumps(frozen))
"""


def test_what_the_suite_imported_is_left_out_of_the_collection_before_each_test(
    pytester: pytest.Pytester,
) -> None:
    """The collection before each test with a cassette (which holds the ORM's weakly held
    objects to the same moments in both modes) looks at what the tests made, not at the
    modules, classes and functions the suite imported: frozen once, after collection. A run
    with no cassette freezes nothing."""
    pytester.makeini("[pytest]\ntimetracer_autouse = true\n")
    pytester.makepyfile(test_frozen=_TEST_FROZEN)
    for mode, frozen in (("all", True), ("off", False)):
        pytester.runpytest_subprocess(f"--timetracer-mode={mode}").assert_outcomes(passed=1)
        count = json.loads((pytester.path / "frozen").read_text())
        assert (count > 10_000) is frozen, (mode, count)


# A plugin that wraps each fixture's function in one of its own, as pytest-asyncio 0.21 does
# for async fixtures; it lives in site-packages, the fixture in the project's conftest.
_WRAPPING_PLUGIN = """
import functools

import pytest


@pytest.hookimpl(hookwrapper=True, tryfirst=True)
def pytest_fixture_setup(fixturedef, request):
    func = fixturedef.func
    if not hasattr(func, "__wrapped__"):
        @functools.wraps(func)
        def wrapper(*args, **kwargs):
            return func(*args, **kwargs)

        fixturedef.func = wrapper
    yield
"""

_CONFTEST_RATE = """
import httpx
import pytest


@pytest.fixture(scope="module")
def rate():
    return httpx.get("{upstream}/echo", params={{"rate": "1.25"}}).json()["query"]
"""

_TEST_RATE = """
def test_rate(rate):
    assert rate == "rate=1.25"
"""


def test_a_fixture_wrapped_by_an_installed_plugin_keeps_its_own_cassette(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The fixture is the project's although the function pytest calls is the plugin's wrapper."""
    site = pytester.path / "venv/lib/site-packages"
    site.mkdir(parents=True)
    (site / "wrapping_plugin.py").write_text(_WRAPPING_PLUGIN)
    monkeypatch.setenv("PYTHONPATH", str(site))
    pytester.makeini("[pytest]\ntimetracer_autouse = true\n")
    with running_upstream() as live:
        pytester.makepyfile(conftest=_CONFTEST_RATE.format(upstream=live.url), test_rate=_TEST_RATE)
        recording = pytester.runpytest_subprocess("-p", "wrapping_plugin", "--timetracer-mode=once")
        recording.assert_outcomes(passed=1)
    cassettes = pytester.path / "cassettes"
    assert sorted(str(p.relative_to(cassettes)) for p in cassettes.rglob("*.json")) == [
        "@collection.json",
        "test_rate/@fixtures/rate.json",
        "test_rate/test_rate.json",
    ]
    fixture = json.loads((cassettes / "test_rate/@fixtures/rate.json").read_text())
    assert [call["request"]["url"] for call in fixture["calls"]] == [f"{live.url}/echo?rate=1.25"]
    replaying = pytester.runpytest_subprocess("-p", "wrapping_plugin", "--timetracer-mode=none")
    replaying.assert_outcomes(passed=1)
    replaying.stdout.fnmatch_lines(["fixture scopes: 1 replayed, 0 recorded"])


_TEST_IDS = """
import uuid

import pytest


@pytest.mark.parametrize("n", range(4))
def test_gets_an_id(n):
    assert uuid.uuid4().version == 4
"""


def test_recording_with_pytest_xdist_in_the_default_mode_records_every_test(
    pytester: pytest.Pytester,
) -> None:
    """``pytest -n 2`` in mode ``once``: first with no cassette (the run's own files, written
    before xdist's scheduler is made, are no test's), then with half of them. xdist asks a
    test's scope again once it is done, and a test recorded meanwhile had another: the run
    stopped with an internal error after two tests."""
    pytester.makeini("[pytest]\ntimetracer_autouse = true\n")
    pytester.makepyfile(test_ids=_TEST_IDS)
    first = pytester.runpytest_subprocess("-n", "2", "--timetracer-mode=once")
    first.assert_outcomes(passed=4)
    first.stdout.fnmatch_lines(["tests: 0 replayed, 4 recorded"])
    recorded = sorted((pytester.path / "cassettes" / "test_ids").iterdir())
    assert len(recorded) == 4
    for path in recorded[:2]:
        path.unlink()
    second = pytester.runpytest_subprocess("-n", "2", "--timetracer-mode=once")
    second.assert_outcomes(passed=4)
    second.stdout.fnmatch_lines(["tests: 2 replayed, 2 recorded"])


# A suite giving each pytest-xdist worker data of its own, named after it (as fief names its
# test database fief-test-gw0): a session fixture stores the worker's settings in Redis, and
# each test reads them back and counts its visit under the worker's prefix.
_CONFTEST_WORKER_DATA = """
import json

import pytest
import redis


@pytest.fixture(scope="session")
def store(worker_id):
    client = redis.Redis(port=6379)
    name = "{namespace}-" + worker_id
    client.set(name + ":settings", json.dumps({{"database": name}}))
    yield client, name
    client.delete(name + ":settings", name + ":visits")
"""

_TEST_WORKER_DATA = """
import json

import pytest


@pytest.mark.parametrize("n", range(4))
def test_reads_its_workers_settings(store, n):
    client, name = store
    assert json.loads(client.get(name + ":settings")) == {"database": name}
    assert client.incr(name + ":visits") >= 1
"""


def test_cassettes_recorded_by_one_pytest_xdist_worker_replay_on_another(
    pytester: pytest.Pytester,
) -> None:
    """Recorded without workers (xdist's ``master``), replayed by two workers, and the other
    way round: each worker reads the cassettes as its own, its name in every key and answer."""
    namespace = f"tt-workers-{secrets.token_hex(4)}"
    pytester.makeini("[pytest]\ntimetracer_autouse = true\n")
    pytester.makepyfile(
        conftest=_CONFTEST_WORKER_DATA.format(namespace=namespace), test_workers=_TEST_WORKER_DATA
    )
    pytester.runpytest_subprocess("--timetracer-mode=all").assert_outcomes(passed=4)
    fixture = json.loads((pytester.path / "cassettes/@fixtures/store.json").read_text())
    assert fixture["request"]["worker"] == "master"
    replayed = pytester.runpytest_subprocess("--timetracer-mode=none", "-n", "2")
    replayed.assert_outcomes(passed=4)
    replayed.stdout.fnmatch_lines(["*calls: * answered from cassettes, 0 not answered*"])

    pytester.runpytest_subprocess("--timetracer-mode=all", "-n", "2").assert_outcomes(passed=4)
    workers = {
        json.loads(path.read_text())["request"]["worker"]
        for path in (pytester.path / "cassettes").rglob("test_*.json")
    }
    assert workers == {"gw0", "gw1"}
    pytester.runpytest_subprocess("--timetracer-mode=none").assert_outcomes(passed=4)


# The same suite naming its data after the environment, the way many conftests do (the
# full-stack templates' ``os.getenv("PYTEST_XDIST_WORKER", "gw0")``): a run without workers
# names it ``gw0``, where xdist's ``worker_id`` says ``master``.
_CONFTEST_WORKER_FROM_ENVIRONMENT = _CONFTEST_WORKER_DATA.replace(
    "def store(worker_id):", "def store():"
).replace('"{namespace}-" + worker_id', '"{namespace}-" + os.getenv("PYTEST_XDIST_WORKER", "gw0")')


def _suite_naming_its_data(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, conftest: str
) -> None:
    """The worker-data suite with ``conftest`` (naming the data from the environment), outside
    this suite's own pytest-xdist worker."""
    monkeypatch.delenv("PYTEST_XDIST_WORKER", raising=False)  # this suite's own worker's
    namespace = f"tt-workers-{secrets.token_hex(4)}"
    pytester.makeini("[pytest]\ntimetracer_autouse = true\n")
    pytester.makepyfile(
        conftest="import os\n" + conftest.format(namespace=namespace),
        test_workers=_TEST_WORKER_DATA,
    )


def test_a_suite_naming_its_data_after_the_environment_replays_with_and_without_workers(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Recorded by two workers, replayed without any (where the suite's data is named ``gw0``
    and xdist's name is ``master``), and the other way round."""
    _suite_naming_its_data(pytester, monkeypatch, _CONFTEST_WORKER_FROM_ENVIRONMENT)
    pytester.runpytest_subprocess("--timetracer-mode=all", "-n", "2").assert_outcomes(passed=4)
    assert {
        json.loads(path.read_text())["request"]["worker"]
        for path in (pytester.path / "cassettes").rglob("test_*.json")
    } == {"gw0", "gw1"}
    replayed = pytester.runpytest_subprocess("--timetracer-mode=none")
    replayed.assert_outcomes(passed=4)
    replayed.stdout.fnmatch_lines(["*calls: * answered from cassettes, 0 not answered*"])
    with monkeypatch.context() as outer:  # left by an outer run: the suite's data says gw1
        outer.setenv("PYTEST_XDIST_WORKER", "gw1")
        pytester.runpytest_subprocess("--timetracer-mode=none").assert_outcomes(passed=4)

    pytester.runpytest_subprocess("--timetracer-mode=all").assert_outcomes(passed=4)
    replayed = pytester.runpytest_subprocess("--timetracer-mode=none", "-n", "2")
    replayed.assert_outcomes(passed=4)
    replayed.stdout.fnmatch_lines(["*calls: * answered from cassettes, 0 not answered*"])


# The same suite naming its data pytest-django's way: after the worker under xdist
# (``tt-workers-x_gw0``), after none without workers (``tt-workers-x``).
_CONFTEST_WORKER_OR_NONE = _CONFTEST_WORKER_DATA.replace(
    "def store(worker_id):", "def store():"
).replace(
    '"{namespace}-" + worker_id',
    '"{namespace}" + ("_" + os.environ["PYTEST_XDIST_WORKER"] if "PYTEST_XDIST_WORKER" in os.environ else "")',
)


def test_a_suite_naming_its_data_after_no_worker_without_workers_replays_a_recording_with_them(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Recorded by two workers, replayed without any: the first call names no worker where the
    cassette names ``gw0``, and every cassette is read with the workers' names taken off. And
    recorded without workers, replayed by two: each worker's first call names its data
    ``x_gw0`` where the cassette says ``x``, and every cassette is read with the name added."""
    _suite_naming_its_data(pytester, monkeypatch, _CONFTEST_WORKER_OR_NONE)
    pytester.runpytest_subprocess("--timetracer-mode=all", "-n", "2").assert_outcomes(passed=4)
    replayed = pytester.runpytest_subprocess("--timetracer-mode=none")
    replayed.assert_outcomes(passed=4)
    replayed.stdout.fnmatch_lines(["*calls: * answered from cassettes, 0 not answered*"])

    pytester.runpytest_subprocess("--timetracer-mode=all").assert_outcomes(passed=4)
    replayed = pytester.runpytest_subprocess("--timetracer-mode=none", "-n", "2")
    replayed.assert_outcomes(passed=4)
    replayed.stdout.fnmatch_lines(["*calls: * answered from cassettes, 0 not answered*"])


# Prefect's setup_db lists SQLite's tables: the word master in sqlite_master names no worker.
_TEST_SQLITE_TABLES = """
import os

import sqlalchemy as sa


def test_lists_its_tables():
    engine = sa.create_engine("sqlite:///" + os.environ["TABLES_DB"])
    with engine.begin() as connection:
        connection.execute(sa.text("CREATE TABLE IF NOT EXISTS item (id INTEGER PRIMARY KEY)"))
        query = sa.text("SELECT name FROM sqlite_master WHERE type = 'table'")
        assert connection.execute(query).scalars().all() == ["item"]


def test_nothing():
    pass
"""


def test_sqlites_own_tables_are_not_taken_for_a_workers_data(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Recorded without workers, replayed by two: ``sqlite_master`` was read as the controller's
    data and renamed ``sqlite_gw0``, and every test of Prefect's suite failed."""
    monkeypatch.setenv("TABLES_DB", str(pytester.path / "tables.sqlite"))
    pytester.makeini("[pytest]\ntimetracer_autouse = true\n")
    pytester.makepyfile(test_tables=_TEST_SQLITE_TABLES)
    pytester.runpytest_subprocess("--timetracer-mode=all").assert_outcomes(passed=2)
    pytester.runpytest_subprocess("--timetracer-mode=none", "-n", "2").assert_outcomes(passed=2)


# Tests that depend on the tests before them in their process (fief's tests/data.py): the first
# renames a module-level profile, and the later ones read a key named after it.
_TESTS_IN_ORDER = """
import os

import redis

PROFILE = {{"name": "alice"}}


def _client():
    return redis.Redis(port=6379)


def test_0_renames_the_profile(request):
    PROFILE["name"] = "alicia"
    _client().set("{namespace}:" + PROFILE["name"], "renamed")


@pytest.mark.parametrize("n", range(7))
def test_reads_the_renamed_profile(n, request):
    _client().get("{namespace}:" + PROFILE["name"])
    ran = request.config.rootpath / "ran" / os.environ.get("PYTEST_XDIST_WORKER", "master")
    ran.mkdir(parents=True, exist_ok=True)
    (ran / str(n)).touch()
"""


def _ran_together(pytester: pytest.Pytester) -> set[frozenset[str]]:
    """Which tests each process ran (by parameter), taken out."""
    groups = {
        frozenset(p.name for p in folder.iterdir()) for folder in (pytester.path / "ran").iterdir()
    }
    shutil.rmtree(pytester.path / "ran")
    return groups


def test_replaying_with_pytest_xdist_runs_each_recording_process_tests_on_one_worker(
    pytester: pytest.Pytester,
) -> None:
    """Tests that depend on the tests before them replay under ``-n 2``: recorded serially, all
    run on one worker; recorded by two workers, each worker's tests run together again. Replayed
    in one process, the report names the recording workers mixed there."""
    pytester.makeini("[pytest]\ntimetracer_autouse = true\n")
    pytester.makepyfile(
        test_order="import pytest\n"
        + _TESTS_IN_ORDER.format(namespace=f"tt-order-{secrets.token_hex(4)}")
    )
    pytester.runpytest_subprocess("--timetracer-mode=all", "-p", "no:xdist").assert_outcomes(
        passed=8
    )
    _ran_together(pytester)
    pytester.runpytest_subprocess("--timetracer-mode=none", "-n", "2").assert_outcomes(passed=8)
    assert _ran_together(pytester) == {frozenset(map(str, range(7)))}

    pytester.runpytest_subprocess("--timetracer-mode=all", "-n", "2").assert_outcomes(passed=8)
    recorded = _ran_together(pytester)
    assert len(recorded) == 2
    pytester.runpytest_subprocess("--timetracer-mode=none", "-n", "2").assert_outcomes(passed=8)
    assert _ran_together(pytester) == recorded
    # in one process, some tests run after others than their recording worker's: the calls
    # their cassettes lack come from the tests that ran before them, and the report names them
    serial = pytester.runpytest_subprocess("--timetracer-mode=none")
    serial.assert_outcomes(passed=8)
    serial.stdout.fnmatch_lines(
        [
            "  * not in its test's cassette, answered from another test's *",
            "    cassettes/test_order/test_reads_the_renamed_profile*: redis GET tt-order-*:alicia"
            " (answered by cassettes/test_order/test_*.json)",
        ]
    )


# Test data stamped with the clock as its module is imported (fief's tests/data.py), sent by a
# session fixture that each pytest-xdist worker sets up (and records) itself.
_DATA_STAMPED = """
from datetime import datetime, timezone

created_at = datetime.now(timezone.utc)
"""

_CONFTEST_STAMPED = """
import pytest
import sqlalchemy as sa

from stamped import created_at


@pytest.fixture(scope="session")
def stored(tmp_path_factory):
    engine = sa.create_engine(f"sqlite:///{tmp_path_factory.mktemp('db') / 't.db'}")
    with engine.begin() as connection:
        connection.execute(sa.text("create table t (created_at text)"))
        connection.execute(sa.text("insert into t values (:c)"), {"c": created_at.isoformat()})
    yield created_at
    engine.dispose()
"""

_TEST_STAMPED = """
import pytest


@pytest.mark.parametrize("n", range(4))
def test_stored(stored, n, request):
    worker = getattr(request.config, "workerinput", {}).get("workerid", "serial")
    (request.config.rootpath / f"stamp-{worker}").write_text(stored.isoformat())
"""


def _stamps(pytester: pytest.Pytester) -> dict[str, str]:
    """The import-time stamp each process (``gw0``, ``gw1``, ``serial``) sent, taken out."""
    found = {}
    for path in pytester.path.glob("stamp-*"):
        found[path.name.removeprefix("stamp-")] = path.read_text()
        path.unlink()
    return found


def test_a_suite_recorded_by_pytest_xdist_workers_imports_at_the_one_kept_instant(
    pytester: pytest.Pytester,
) -> None:
    """Every worker of a recording run imports the suite at its controller's collection instant,
    the one kept in @collection.json: the stamp each worker's session fixture recorded at import
    is the same, and the one a serial or parallel replay sends."""
    pytester.makeini("[pytest]\ntimetracer_autouse = true\n")
    pytester.makepyfile(
        stamped=_DATA_STAMPED, conftest=_CONFTEST_STAMPED, test_stamped=_TEST_STAMPED
    )
    recording = pytester.runpytest_subprocess("--timetracer-mode=all", "-n", "2")
    recording.assert_outcomes(passed=4)
    assert "not a timetracer setting" not in recording.stderr.str()
    recorded = _stamps(pytester)
    assert sorted(recorded) == ["gw0", "gw1"] and len(set(recorded.values())) == 1, recorded
    serial = pytester.runpytest_subprocess("--timetracer-mode=none")
    serial.assert_outcomes(passed=4)
    # both workers' tests in one process, every call answered: the order did no harm, no hint
    assert "order:" not in serial.stdout.str()
    assert _stamps(pytester) == {"serial": recorded["gw0"]}
    pytester.runpytest_subprocess("--timetracer-mode=none", "-n", "2").assert_outcomes(passed=4)
    assert set(_stamps(pytester).values()) == {recorded["gw0"]}


# fief's test data: a session fixture stores rows whose created_at the ORM stamps with the
# clock as the fixture runs (a Python-side default), each pytest-xdist worker in a database of
# its own; tests then send a row, stamp included, to a webhook.
_CONFTEST_FIXTURE_CLOCK = """
from datetime import datetime, timezone

import pytest
import sqlalchemy as sa

metadata = sa.MetaData()
rows = sa.Table(
    "rows", metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("created_at", sa.DateTime, default=lambda: datetime.now(timezone.utc)),
)


@pytest.fixture(scope="session")
def stored(tmp_path_factory, worker_id):
    engine = sa.create_engine(f"sqlite:///{{tmp_path_factory.mktemp(worker_id) / 'db.sqlite'}}")
    metadata.create_all(engine)
    with engine.begin() as connection:
        connection.execute(rows.insert(), [{{"id": 1}}, {{"id": 2}}])
        yield [dict(row._mapping) for row in connection.execute(rows.select())]
    engine.dispose()
"""

_TEST_FIXTURE_CLOCK = """
import httpx
import pytest


@pytest.mark.parametrize("n", range(8))
def test_sends_a_stored_row(stored, n, request):
    worker = getattr(request.config, "workerinput", {{}}).get("workerid", "serial")
    (request.config.rootpath / f"ran-{{worker}}").touch()
    row = stored[n % 2]
    sent = {{"id": row["id"], "created_at": row["created_at"].isoformat(), "n": n}}
    assert httpx.post("{upstream}/echo", json=sent).status_code == 200
"""


def test_a_session_fixture_recorded_by_pytest_xdist_workers_reads_one_clock(
    pytester: pytest.Pytester,
) -> None:
    """Each worker sets the session fixture up, stamping its rows with the clock: every worker
    reads the same instants, so either worker's fixture cassette replays the stamps every
    test recorded, on any worker and serially."""
    pytester.makeini("[pytest]\ntimetracer_autouse = true\n")
    with running_upstream() as live:
        pytester.makepyfile(
            conftest=_CONFTEST_FIXTURE_CLOCK.format(),
            test_webhook=_TEST_FIXTURE_CLOCK.format(upstream=live.url),
        )
        pytester.runpytest_subprocess("--timetracer-mode=all", "-n", "2").assert_outcomes(passed=8)
    assert sorted(path.name for path in pytester.path.glob("ran-*")) == ["ran-gw0", "ran-gw1"]
    sent = {json.loads(request["body"])["created_at"] for request in live.requests}
    assert len(sent) == 2, sent  # one stamp per row, the same on both workers
    pytester.runpytest_subprocess("--timetracer-mode=none").assert_outcomes(passed=8)
    pytester.runpytest_subprocess("--timetracer-mode=none", "-n", "2").assert_outcomes(passed=8)


# A module fixture numbering its user from a sequence every pytest-xdist worker shares (one
# database for the whole run, as most suites have): each worker's instance has its own number.
_CONFTEST_SHARED_SEQUENCE = """
import pytest
import redis


@pytest.fixture(scope="module")
def user_number():
    with redis.Redis(port=6379) as client:
        number = client.incr("{namespace}:users")
        client.set(f"{namespace}:user:{{number}}", "ada")
    return number
"""

_TEST_SHARED_SEQUENCE = """
import os

import pytest
import redis


@pytest.mark.parametrize("n", range(6))
def test_reads_its_user(user_number, n, request):
    with redis.Redis(port=6379) as client:
        assert client.get(f"{namespace}:user:{{user_number}}") == b"ada"
    ran = request.config.rootpath / "ran" / os.environ.get("PYTEST_XDIST_WORKER", "master")
    ran.mkdir(parents=True, exist_ok=True)
    (ran / str(n)).touch()
"""


def _record_on_a_shared_store(pytester: pytest.Pytester, conftest: str) -> str:
    """Record the shared-sequence suite with ``conftest`` under ``-n 2``, both workers setting its
    module fixture up; the namespace its Redis keys are in."""
    pytester.makeini("[pytest]\ntimetracer_autouse = true\n")
    namespace = f"tt-shared-{secrets.token_hex(4)}"
    pytester.makepyfile(
        conftest=conftest.format(namespace=namespace),
        test_users=_TEST_SHARED_SEQUENCE.format(namespace=namespace),
    )
    pytester.runpytest_subprocess("--timetracer-mode=all", "-n", "2").assert_outcomes(passed=6)
    assert len(_ran_together(pytester)) == 2  # both workers set the fixture up
    return namespace


def test_each_pytest_xdist_workers_fixture_instance_is_kept_and_replayed_for_its_tests(
    pytester: pytest.Pytester,
) -> None:
    """Recorded with ``-n 2`` against one shared store, each worker's module fixture drew
    another number from its sequence: each instance is kept, named for its worker, and each
    test replays with the instance its recording worker made."""
    _record_on_a_shared_store(pytester, _CONFTEST_SHARED_SEQUENCE)
    kept = sorted(p.name for p in (pytester.path / "cassettes/test_users/@fixtures").iterdir())
    assert kept == ["user_number@gw0.json", "user_number@gw1.json"]
    pytester.runpytest_subprocess("--timetracer-mode=none", "-n", "2").assert_outcomes(passed=6)


# The module fixture of the shared-sequence suite, numbering its user with a uuid4() instead,
# refused if taken (a primary key in the one database every pytest-xdist worker shares, as an
# ORM's Python-side default makes it).
_CONFTEST_UUID_KEY = """
import uuid

import pytest
import redis


@pytest.fixture(scope="module")
def user_number():
    number = uuid.uuid4()
    with redis.Redis(port=6379) as client:
        assert client.set(f"{namespace}:user:{{number}}", "ada", nx=True), f"{{number}} is taken"
    return number
"""


def test_pytest_xdist_workers_setting_up_one_fixture_draw_uuids_of_their_own(
    pytester: pytest.Pytester,
) -> None:
    """Recorded with ``-n 2``, each worker's instance of a module fixture draws its own
    ``uuid4()``, as without timetracer: one drawn alike by both collided in the store they
    share (the second worker's insert refused), so the suite failed only while recorded."""
    namespace = _record_on_a_shared_store(pytester, _CONFTEST_UUID_KEY)
    with redis.Redis(port=6379) as client:
        assert len(client.keys(f"{namespace}:user:*")) == 2
    pytester.runpytest_subprocess("--timetracer-mode=none", "-n", "2").assert_outcomes(passed=6)


def test_a_serial_replay_keeps_the_other_workers_fixture_instances_when_it_prunes(
    pytester: pytest.Pytester,
) -> None:
    """A serial run uses one instance of a module fixture recorded with ``-n 2``: the other
    worker's is not stale, and ``--timetracer-prune`` leaves it to the next ``-n 2`` replay."""
    _record_on_a_shared_store(pytester, _CONFTEST_SHARED_SEQUENCE)
    fixtures = pytester.path / "cassettes/test_users/@fixtures"
    kept = sorted(p.name for p in fixtures.iterdir())
    assert kept == ["user_number@gw0.json", "user_number@gw1.json"]
    serial = pytester.runpytest_subprocess("--timetracer-mode=none", "--timetracer-prune")
    assert "stale" not in serial.stdout.str()
    assert sorted(p.name for p in fixtures.iterdir()) == kept
    pytester.runpytest_subprocess("--timetracer-mode=none", "-n", "2").assert_outcomes(passed=6)


def test_the_kept_instant_is_found_in_a_cassette_directory_given_on_the_command_line(
    pytester: pytest.Pytester,
) -> None:
    """--timetracer-dir is known while the initial conftests are imported."""
    pytester.makeini("[pytest]\ntimetracer_autouse = true\n")
    pytester.makepyfile(
        stamped=_DATA_STAMPED, conftest=_CONFTEST_STAMPED, test_stamped=_TEST_STAMPED
    )
    directory = f"--timetracer-dir={pytester.path / 'elsewhere'}"
    pytester.runpytest_subprocess("--timetracer-mode=all", directory).assert_outcomes(passed=4)
    assert (pytester.path / "elsewhere/@collection.json").exists()
    pytester.runpytest_subprocess("--timetracer-mode=none", directory).assert_outcomes(passed=4)


def test_a_cassette_reads_as_another_workers_its_sealed_values_and_other_names_untouched() -> None:
    sealed = "[SEALED:0a1b2c3d:x-gw1-yz]"  # token data that happens to hold the name
    stored = base64.b64encode(b"fief-test-gw1\x00").decode()
    recorded = {
        "request": {"worker": "gw1"},
        "calls": [
            {"statement": "CREATE DATABASE fief-test-gw1", "params": ["gw1", "gw12", "agw1"]},
            {"args": [{"$type": "bytes", "base64": stored}, sealed, "test:gw1:n"]},
        ],
    }
    replayed = as_worker(recorded, "gw0")
    assert replayed["calls"] == [
        {"statement": "CREATE DATABASE fief-test-gw0", "params": ["gw0", "gw12", "agw1"]},
        {
            "args": [
                {"$type": "bytes", "base64": base64.b64encode(b"fief-test-gw0\x00").decode()},
                sealed,
                "test:gw0:n",
            ]
        },
    ]
    assert recorded["calls"][0]["params"][0] == "gw1"  # the loaded document is not changed
    assert as_worker({"request": {"worker": "master"}, "calls": ["master", "db-master"]}, "gw3")[
        "calls"
    ] == ["master", "db-gw3"]


@pytest.mark.parametrize("named", ["encoding", "$type", "gwé", "../../x", ""])
def test_a_cassette_naming_no_worker_of_pytest_xdist_is_read_as_it_is(named: str) -> None:
    """A worker name pytest-xdist never gives (a hand-made or hostile file) changes nothing:
    not a member's name (``encoding``, ``$type``), not a path, and it cannot raise."""
    recorded = {
        "request": {"worker": named, "body": {"encoding": "empty"}},
        "calls": [{"args": [{"$type": "bytes", "base64": "eA=="}, "gw0"]}],
    }
    assert as_worker(recorded, "gw0") is recorded
    assert recorded_by(recorded) == "master"


_RESPX_TESTS = """
import httpx
import pytest
import respx


def test_a_mocked_call():
    with respx.mock(assert_all_called=True) as mock:
        route = mock.get("https://api.example.test/users/1").respond(json={"id": 1})
        response = httpx.get("https://api.example.test/users/1")
    assert route.called and response.json() == {"id": 1}


async def test_a_mocked_async_call():
    with respx.mock(assert_all_called=True) as mock:
        route = mock.post("https://api.example.test/users").respond(201, json={"id": 2})
        async with httpx.AsyncClient() as client:
            response = await client.post("https://api.example.test/users", json={"n": 2})
    assert route.called and response.status_code == 201
"""


def test_calls_a_test_mocks_with_respx_are_answered_by_its_mock_in_record_and_replay(
    pytester: pytest.Pytester,
) -> None:
    """respx answers below httpx's transport, where timetracer records: its answers are the test's
    mock, not calls to keep, and in replay the mock answers again, so ``route.called`` holds."""
    pytester.makeini("[pytest]\ntimetracer_autouse = true\nasyncio_mode = auto\n")
    pytester.makepyfile(test_mocked=_RESPX_TESTS)
    pytester.runpytest_subprocess("--timetracer-mode=all").assert_outcomes(passed=2)
    stored = [load_cassette(str(path)) for path in (pytester.path / "cassettes").rglob("*.json")]
    assert [call for cassette in stored for call in cassette.get("calls", [])] == []
    pytester.runpytest_subprocess("--timetracer-mode=none").assert_outcomes(passed=2)


# AnyIO's way, which FastAPI's docs teach: a module-scoped backend and an async fixture of the
# module keep one test runner, and one task, for every test of the module.
_ANYIO_TESTS = """
import uuid

import httpx
import pytest


@pytest.fixture(scope="module")
def anyio_backend():
    return "asyncio"


@pytest.fixture(scope="module")
async def client():
    async with httpx.AsyncClient(base_url="{upstream}") as client:
        yield client


@pytest.mark.anyio
async def test_first(client):
    assert (await client.get("/json", params={{"test": "first"}})).status_code == 200
    print("first", uuid.uuid4())


@pytest.mark.anyio
async def test_second(client):
    answer = await client.get("/json", params={{"test": "second"}})
    print("second", uuid.uuid4(), answer.status_code)
"""


# An AnyIO async fixture of the session that calls as it is set up (lnbits' app fixture runs
# the lifespan's migrations), stamping the call with the clock.
_ANYIO_SESSION_FIXTURE = """
import time

import httpx
import pytest


@pytest.fixture(scope="session")
def anyio_backend():
    return "asyncio"


@pytest.fixture(scope="session")
async def token():
    async with httpx.AsyncClient() as client:
        answer = await client.get("{upstream}/json", params={{"now": time.time_ns()}})
    return answer.status_code


@pytest.mark.anyio
async def test_one(token):
    assert token == 200


@pytest.mark.anyio
async def test_two(token):
    assert token == 200
"""


def test_an_anyio_async_fixture_of_a_wider_scope_has_a_cassette_of_its_own(
    pytester: pytest.Pytester,
) -> None:
    """AnyIO sets an async fixture up through a wrapper of its own module: the fixture was
    taken for an installed plugin's, got no cassette, and its calls went to the first test
    using it, so a later test replayed alone, or first, set it up with nothing to answer."""
    pytester.makeini("[pytest]\ntimetracer_autouse = true\n")
    with running_upstream() as live:
        pytester.makepyfile(test_tokens=_ANYIO_SESSION_FIXTURE.format(upstream=live.url))
        pytester.runpytest_subprocess("--timetracer-mode=record").assert_outcomes(passed=2)
    fixture = load_cassette(pytester.path / "cassettes/@fixtures/token.json")
    assert [c["request"]["url"].split("?")[0] for c in fixture["calls"]] == [f"{live.url}/json"]
    alone = pytester.runpytest_subprocess("--timetracer-mode=none", "-k", "test_two")
    alone.assert_outcomes(passed=1, deselected=1)
    backwards = pytester.runpytest_subprocess(
        "--timetracer-mode=none", "test_tokens.py::test_two", "test_tokens.py::test_one"
    )
    backwards.assert_outcomes(passed=2)


def test_anyio_tests_sharing_a_module_runner_each_record_into_their_own_cassette(
    pytester: pytest.Pytester,
) -> None:
    """AnyIO runs every test of the module in one task, whose context was copied once: every
    test's calls and draws went to the first test's cassette, and a later test replayed
    alone found none of its own."""
    pytester.makeini("[pytest]\ntimetracer_autouse = true\n")
    with running_upstream() as live:
        pytester.makepyfile(test_pages=_ANYIO_TESTS.format(upstream=live.url))
        recorded = pytester.runpytest_subprocess("--timetracer-mode=record", "-s")
        recorded.assert_outcomes(passed=2)
    second = load_cassette(pytester.path / "cassettes/test_pages/test_second.json")
    assert [c["request"]["url"] for c in second["calls"]] == [f"{live.url}/json?test=second"]
    assert [d["kind"] for d in second["draws"]].count("uuid4") == 1
    printed = re.search(r"second ([0-9a-f-]{36}) 200", recorded.stdout.str())
    assert printed is not None, recorded.stdout.str()

    alone = pytester.runpytest_subprocess("--timetracer-mode=none", "-s", "-k", "test_second")
    alone.assert_outcomes(passed=1, deselected=1)
    assert printed.group(0) in alone.stdout.str()


# A wallet service as lnbits is: a wallet's key is a uuid4().hex the app makes, the test sends
# it back in a header, a cookie or a query string, and the app looks it up in a column no
# secret name covers. The tests note each key they got, for the scan below.
_TEST_WALLET_KEYS = (
    """
import pathlib
import threading
import uuid

import httpx
import pytest
import sqlalchemy as sa
import uvicorn
from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.testclient import TestClient

engine = sa.create_engine("sqlite:///wallets.db")
with engine.begin() as connection:
    connection.exec_driver_sql(
        "CREATE TABLE IF NOT EXISTS wallets (name TEXT, inkey TEXT, balance INTEGER)"
    )


def _key(request):
    return request.headers.get("x-api-key") or request.cookies.get("wallet") or request.query_params.get("usr")


async def create(request):
    body = await request.json()
    inkey = uuid.uuid4().hex
    with engine.begin() as connection:
        connection.execute(
            sa.text("INSERT INTO wallets VALUES (:name, :inkey, 10)"), {{"name": body["name"], "inkey": inkey}}
        )
    return JSONResponse({{"inkey": inkey}}, headers={{"set-cookie": f"wallet={{inkey}}"}})


async def balance(request):
    with engine.connect() as connection:
        row = connection.execute(
            sa.text("SELECT name, inkey, balance FROM wallets WHERE inkey = :key"), {{"key": _key(request)}}
        ).first()
    if row is None:
        return JSONResponse({{"detail": "no such wallet"}}, status_code=401)
    return JSONResponse({{"name": row.name, "balance": row.balance}})


async def listing(request):
    with engine.connect() as connection:
        rows = connection.execute(sa.text("SELECT name, inkey FROM wallets ORDER BY name")).all()
    if _key(request) not in [row.inkey for row in rows]:
        return JSONResponse({{"detail": "no such wallet"}}, status_code=401)
    return JSONResponse([row.name for row in rows])


app = Starlette(routes=[
    Route("/wallets", create, methods=["POST"]),
    Route("/wallets", listing, methods=["GET"]),
    Route("/balance", balance),
])


def _noted(key):
    with open("keys.txt", "a") as keys:
        keys.write(key + "\\n")
    return key


@pytest.fixture(scope="module")
def wallet():
    return _noted(TestClient(app).post("/wallets", json={{"name": "module"}}).json()["inkey"])


def test_balance_by_header(wallet):
    answer = TestClient(app).get("/balance", headers={{"X-Api-Key": wallet}})
    assert answer.json() == {{"name": "module", "balance": 10}}


def test_balance_by_cookie():
    client = TestClient(app)
    _noted(client.post("/wallets", json={{"name": "cookie"}}).json()["inkey"])
    assert client.get("/balance").json() == {{"name": "cookie", "balance": 10}}


@pytest.mark.anyio
async def test_balance_by_query_through_asgi_transport():
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://app") as client:
        key = _noted((await client.post("/wallets", json={{"name": "query"}})).json()["inkey"])
        answer = await client.get("/balance", params={{"usr": key}})
    assert answer.json() == {{"name": "query", "balance": 10}}


"""
    + _SERVE_IN_A_THREAD
    + """

def test_balance_through_a_live_server(wallet):
    server, thread, port = serve(app, 0)
    try:
        answer = httpx.get(f"http://127.0.0.1:{{port}}/balance", headers={{"X-Api-Key": wallet}})
    finally:
        server.should_exit = True
        thread.join(30)
    assert answer.json() == {{"name": "module", "balance": 10}}


def test_listing_shows_every_wallets_key_to_the_app(wallet):
    answer = TestClient(app).get("/wallets", headers={{"X-Api-Key": wallet}})
    assert answer.json() == ["cookie", "module", "query"]


def test_zz_a_wallet_made_by_the_test_itself():
    inkey = _noted(uuid.uuid4().hex)
    with engine.begin() as connection:
        connection.execute(
            sa.text("INSERT INTO wallets (name, inkey, balance) VALUES ('direct', :inkey, 0)"),
            {{"inkey": inkey}},
        )
"""
)


def test_keys_a_test_sends_the_app_it_serves_are_sealed_wherever_the_app_passes_them(
    pytester: pytest.Pytester,
) -> None:
    """A key the test sends the app in-process (TestClient, httpx.ASGITransport, a live server)
    never passed redaction by name: the test's request is not recorded. In lnbits' suite 2,016
    wallet keys stood in clear in SQL parameters and rows under ``inkey``. Now each is sealed,
    as sent and as the UUID its app drew, and the suite replays with the key. The column that
    held one, ``inkey``, is learned: the other wallets' keys a listing reads, and the key of a
    wallet a later test writes itself, are sealed too."""
    pytester.makeini("[pytest]\ntimetracer_autouse = true\nanyio_mode = strict\n")
    pytester.makepyfile(test_wallets=_TEST_WALLET_KEYS.format())
    pytester.runpytest_subprocess("--timetracer-mode=record", "-p", "anyio").assert_outcomes(
        passed=6
    )
    keys = (pytester.path / "keys.txt").read_text().split()
    assert len(keys) == 4
    cassettes = {
        path: path.read_text("utf-8") for path in (pytester.path / "cassettes").rglob("*.json")
    }
    spelled = [spelling for key in keys for spelling in (key, str(uuid.UUID(key)))]
    in_clear = {
        (path.name, spelling)
        for path, text in cassettes.items()
        for spelling in spelled
        if spelling in text
    }
    assert not in_clear
    holding_keys = {path.name for path, text in cassettes.items() if "[SEALED:" in text}
    assert holding_keys == {  # the module fixture's and each test's
        "wallet.json",
        "test_balance_by_header.json",
        "test_balance_by_cookie.json",
        "test_balance_by_query_through_asgi_transport[asyncio].json",
        "test_balance_through_a_live_server.json",
        "test_listing_shows_every_wallets_key_to_the_app.json",
        "test_zz_a_wallet_made_by_the_test_itself.json",
    }

    (pytester.path / "wallets.db").unlink()
    (pytester.path / "keys.txt").unlink()
    replayed = pytester.runpytest_subprocess("--timetracer-mode=none", "-p", "anyio")
    replayed.assert_outcomes(passed=6)


_API_TEST = """
import sqlite3


def test_same():
    assert sqlite3.connect(":memory:").execute("SELECT '{name}'").fetchone() == ("{name}",)
"""


def test_test_files_pytest_gives_one_node_id_keep_a_cassette_each(
    pytester: pytest.Pytester,
) -> None:
    """Collected from outside the rootdir (its configuration in another directory),
    ``pa/tests/test_api.py`` and ``pb/tests/test_api.py`` are both ``test_api.py`` to pytest: each
    keeps its own cassette, named by its path, and replays from it."""
    pytester.makefile(
        ".toml", **{"cfg/pyproject": "[tool.pytest.ini_options]\ntimetracer_autouse = true\n"}
    )
    for name in ("pa", "pb"):
        tests = pytester.path / name / "tests"
        tests.mkdir(parents=True)
        (pytester.path / name / "__init__.py").write_text("")
        (tests / "__init__.py").write_text("")
        (tests / "test_api.py").write_text(_API_TEST.format(name=name))
    command = ("-c", "cfg/pyproject.toml", "pa/tests", "pb/tests")
    recorded = pytester.runpytest_subprocess(*command, "--timetracer-mode=once")
    recorded.assert_outcomes(passed=2)
    recorded.stdout.fnmatch_lines(["tests: 0 replayed, 2 recorded"])
    replayed = pytester.runpytest_subprocess(*command, "--timetracer-mode=none")
    replayed.assert_outcomes(passed=2)
    replayed.stdout.fnmatch_lines(["tests: 2 replayed, 0 recorded"])


_SESSION_FIXTURE = """
import sqlite3

import pytest


@pytest.fixture(scope="session")
def database():
    connection = sqlite3.connect(":memory:")
    connection.execute("SELECT 'set up'").fetchone()
    yield connection
"""


def test_a_fixture_replayed_while_a_new_test_records_leaves_its_calls_out_of_the_tests_cassette(
    pytester: pytest.Pytester,
) -> None:
    """``once``, a test added beside recorded ones: the session fixture it uses replays from its
    cassette while the new test records; the fixture's calls stay the fixture's (they were in
    the test's cassette too, which a replay then reported as recorded but not made)."""
    pytester.makeini("[pytest]\ntimetracer_autouse = true\n")
    pytester.makeconftest(_SESSION_FIXTURE)
    pytester.makepyfile(test_b="def test_b(database):\n    assert database\n")
    pytester.runpytest_subprocess("--timetracer-mode=once").assert_outcomes(passed=1)
    pytester.makepyfile(test_a="def test_a(database):\n    assert database\n")
    added = pytester.runpytest_subprocess("--timetracer-mode=once")
    added.assert_outcomes(passed=2)
    added.stdout.fnmatch_lines(["tests: 1 replayed, 1 recorded"])
    recorded = json.loads((pytester.path / "cassettes" / "test_a" / "test_a.json").read_text())
    assert recorded["calls"] == []
    replayed = pytester.runpytest_subprocess("--timetracer-mode=none")
    replayed.assert_outcomes(passed=2)
    replayed.stdout.fnmatch_lines(
        ["calls: 1 answered from cassettes, 0 not answered, 0 recorded but not made"]
    )


_ISOLATED_ASYNCIO_TESTS = """
import sqlite3
import unittest


class TestAccounts(unittest.IsolatedAsyncioTestCase):
    async def asyncSetUp(self):
        self.db = sqlite3.connect("accounts.db")
        self.db.execute("CREATE TABLE IF NOT EXISTS account (name TEXT)")

    async def test_adds_an_account(self):
        self.db.execute("INSERT INTO account VALUES ('ann')")
        self.assertEqual(self.db.execute("SELECT count(*) FROM account").fetchone(), (1,))

    async def asyncTearDown(self):
        self.db.close()
"""


def test_an_isolated_asyncio_test_case_records_and_replays(pytester: pytest.Pytester) -> None:
    """``unittest.IsolatedAsyncioTestCase`` (Tortoise ORM's test classes) runs in a context copied
    when pytest made its instance, as it collected: its calls went to no cassette, and every
    test failed in replay with the database gone."""
    pytester.makeini("[pytest]\ntimetracer_autouse = true\n")
    pytester.makepyfile(test_accounts=_ISOLATED_ASYNCIO_TESTS)
    pytester.runpytest_subprocess("--timetracer-mode=once").assert_outcomes(passed=1)
    cassette = (
        pytester.path / "cassettes" / "test_accounts" / "TestAccounts" / "test_adds_an_account.json"
    )
    statements = [
        call["request"]["statement"] for call in json.loads(cassette.read_text())["calls"]
    ]
    assert statements == [
        "CREATE TABLE IF NOT EXISTS account (name TEXT)",
        "INSERT INTO account VALUES ('ann')",
        "SELECT count(*) FROM account",
    ]
    (pytester.path / "accounts.db").unlink()
    pytester.runpytest_subprocess("--timetracer-mode=none").assert_outcomes(passed=1)


_TEST_ONE_FAILING = """
import os

import httpx


def test_passes():
    assert httpx.get("{upstream}/json").status_code == 200


def test_fails_while_told():
    assert httpx.get("{upstream}/json").status_code == 200
    assert not os.environ.get("MAKE_IT_FAIL")
"""


def test_a_last_failed_run_leaves_the_cassettes_of_the_tests_it_did_not_run(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``--lf`` drops a module's passed tests as it collects it, telling no hook: the module is
    not run whole, so their cassettes are neither stale nor removed by a rewrite."""
    pytester.makeini("[pytest]\ntimetracer_autouse = true\n")
    with running_upstream() as live:
        pytester.makepyfile(test_calls=_TEST_ONE_FAILING.format(upstream=live.url))
        monkeypatch.setenv("MAKE_IT_FAIL", "1")
        first = pytester.runpytest_subprocess("--timetracer-mode=all")
        first.assert_outcomes(passed=1, failed=1)
        monkeypatch.delenv("MAKE_IT_FAIL")
        again = pytester.runpytest_subprocess("--lf", "--timetracer-mode=rewrite")
        again.assert_outcomes(passed=1)
    assert "stale" not in again.stdout.str() and "removed" not in again.stdout.str()
    names = {path.name for path in (pytester.path / "cassettes").rglob("*.json")}
    assert {"test_passes.json", "test_fails_while_told.json"} <= names
    pytester.runpytest_subprocess("--timetracer-mode=none").assert_outcomes(passed=2)
