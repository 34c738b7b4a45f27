"""A replayed directory chooses each request's cassette by its body, even one holding a sealed
secret (a sign-up's JSON password, a login form's), and by its query string (a page of a
list), whatever order requests arrive in: concurrent clients of a real service never repeat
the recording's order, and a developer replays the one request they care about. The app is a
sign-up service on real PostgreSQL (SQLAlchemy on asyncpg, ``uuid4()``/``now()`` defaults)
and Redis."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from _replay import Sent, assert_same_response, cassette_files, new_reports, replay_config, send
from _services import REDIS, closed_port, postgres_schemas
from apps.signup_app import create_app, create_tables
from hypothesis import given
from hypothesis import strategies as st

import timetracer_otel
from timetracer_otel._own_io import own_io
from timetracer_otel.config import TraceConfig
from timetracer_otel.protocols.http import content_fits
from timetracer_otel.replayers import ReplayReport

_POSTGRES = "postgresql+asyncpg://postgres@127.0.0.1:5432/test"
_REDIS = REDIS.format(port=6379)
_PREFIX = "tt-signup"
# one for every user, as a suite's users often share: their fingerprints are equal
_PASSWORD = "Passw0rd!x"


def _sign_up(name: str) -> Sent:
    body = {"username": name, "email": f"{name}@example.com", "password": _PASSWORD}
    return ("POST", "/users", {"json": body})


def _login(name: str) -> Sent:
    return ("POST", "/login", {"data": {"username": name, "password": _PASSWORD}})


@pytest.fixture
def schema() -> Iterator[str]:
    """A PostgreSQL schema holding the app's table; the app's Redis keys are removed afterwards."""
    with postgres_schemas("") as name:
        with own_io():
            asyncio.run(create_tables(_POSTGRES, name))
        yield name
    with own_io(), redis.Redis.from_url(_REDIS) as client:
        for key in client.scan_iter(f"{_PREFIX}:*"):
            client.delete(key)


def _ids_in_recording_order(directory: Path) -> list[str]:
    docs = [json.loads(path.read_text("utf-8")) for path in cassette_files(directory)]
    docs.sort(key=lambda doc: datetime.fromisoformat(doc["recorded_at"].replace("Z", "+00:00")))
    return [doc["id"] for doc in docs]


def _replayed_offline(
    serve: Callable[..., Any],
    schema: str,
    cassette_dir: Path,
    sent: list[Sent],
    login_hint: bool = False,
) -> tuple[list[httpx.Response], list[ReplayReport]]:
    """``sent`` replayed from ``cassette_dir`` by a server whose PostgreSQL and Redis are a closed port."""
    closed = closed_port()
    offline = f"postgresql+asyncpg://postgres@127.0.0.1:{closed}/test"
    app = create_app(
        offline,
        schema,
        f"redis://127.0.0.1:{closed}/3",
        _PREFIX,
        replay_config(cassette_dir),
        login_hint,
    )
    with new_reports() as reports:
        server = serve(app)
        replayed = send(server.url, sent)
        server.stop()
    return replayed, list(reports)


def test_sealed_bodies_choose_their_own_cassette_in_any_order(
    serve: Callable[..., Any], schema: str, cassette_dir: Path
) -> None:
    """Recorded ada's then bob's sign-up and login, with the same password; replayed bob first: each
    request gets the cassette recorded with its body, so every call matches and each answer is the recorded one."""
    recording = TraceConfig(mode="record", cassette_dir=str(cassette_dir))
    app = create_app(_POSTGRES, schema, _REDIS, _PREFIX, recording)
    sent = [_sign_up("ada"), _sign_up("bob"), _login("ada"), _login("bob")]
    recorded = send(serve(app).url, sent)
    assert timetracer_otel.flush(30), "cassette writer did not drain"
    assert [r.status_code for r in recorded] == [201, 201, 200, 200]
    assert all(_PASSWORD not in path.read_text("utf-8") for path in cassette_files(cassette_dir))
    ada_up, bob_up, ada_in, bob_in = _ids_in_recording_order(cassette_dir)

    replayed, reports = _replayed_offline(
        serve, schema, cassette_dir, [sent[1], sent[0], sent[3], sent[2]]
    )

    assert [r.cassette_id for r in reports] == [bob_up, ada_up, bob_in, ada_in]
    for before, after in zip(
        [recorded[1], recorded[0], recorded[3], recorded[2]], replayed, strict=True
    ):
        assert_same_response(before, after)
    assert all(r.ok and not r.notes for r in reports), [r.console_text() for r in reports]


def test_a_query_string_chooses_its_own_cassette(
    serve: Callable[..., Any], schema: str, cassette_dir: Path
) -> None:
    """Recorded the first page, the same page again (from the Redis cache), then the second page;
    replayed the second page alone, first: it gets the cassette recorded with its query."""
    recording = TraceConfig(mode="record", cassette_dir=str(cassette_dir))
    app = create_app(_POSTGRES, schema, _REDIS, _PREFIX, recording)
    first, second = (
        ("GET", "/users/", {"params": {"page": page, "items_per_page": 1}}) for page in (1, 2)
    )
    recorded = send(serve(app).url, [_sign_up("ada"), _sign_up("bob"), first, first, second])
    assert timetracer_otel.flush(30), "cassette writer did not drain"
    assert [user["username"] for r in recorded[2:] for user in r.json()["data"]] == [
        "ada",
        "ada",
        "bob",
    ]
    second_id = _ids_in_recording_order(cassette_dir)[-1]

    (replayed,), reports = _replayed_offline(serve, schema, cassette_dir, [second])

    assert [r.cassette_id for r in reports] == [second_id]
    assert_same_response(recorded[4], replayed)
    assert all(r.ok and not r.notes for r in reports), [r.console_text() for r in reports]


def test_a_login_whose_cookie_repeats_the_username_chooses_its_own_cassette(
    serve: Callable[..., Any], schema: str, cassette_dir: Path
) -> None:
    """After a first attempt, the browser sends back a ``login_hint`` cookie holding the username
    (as fief does): the recording hides the cookie's value in that login's form too. Replay hides
    it alike in the live form before comparing, so the retried login gets its own cassette, not
    the first attempt's (whose form, without the cookie, kept the username)."""
    name = "ada.lovelace"
    form = {"username": name, "password": _PASSWORD}
    hinted = {"data": form, "headers": {"cookie": f"login_hint={name}"}}
    attempts: list[Sent] = [
        ("POST", "/login", {"data": {**form, "password": "not-the-password"}}),
        ("POST", "/login", hinted),
        ("POST", "/login", {"data": form}),
    ]
    recording = TraceConfig(mode="record", cassette_dir=str(cassette_dir))
    app = create_app(_POSTGRES, schema, _REDIS, _PREFIX, recording)
    recorded = send(serve(app).url, [_sign_up(name), *attempts])
    assert timetracer_otel.flush(30), "cassette writer did not drain"
    assert [r.status_code for r in recorded] == [201, 401, 200, 200]
    ids = _ids_in_recording_order(cassette_dir)[1:]
    forms = {
        doc["id"]: doc["request"]["body"]["text"]
        for doc in (json.loads(path.read_text("utf-8")) for path in cassette_files(cassette_dir))
        if doc["request"]["path"] == "/login"
    }
    assert [name in forms[id_] for id_ in ids] == [True, False, True]

    order = [1, 0, 2]
    replayed, reports = _replayed_offline(serve, schema, cassette_dir, [attempts[i] for i in order])

    assert [r.cassette_id for r in reports] == [ids[i] for i in order]
    for index, after in zip(order, replayed, strict=True):
        assert_same_response(recorded[index + 1], after)
    assert all(r.ok and not r.notes for r in reports), [r.console_text() for r in reports]


def test_a_login_whose_answer_sets_a_cookie_holding_the_username_chooses_its_own_cassette(
    serve: Callable[..., Any], schema: str, cassette_dir: Path
) -> None:
    """A wrong password, then the right one, whose answer sets the ``login_hint`` cookie to the
    username: the recording hides the username in that login's form, the live request (sent
    without the cookie) shows it, and so does the first attempt's form. Replay compares the
    live form with the recorded one where the username was hidden, and the fingerprint of the
    password tells the attempts apart: each login gets its own cassette, together or alone."""
    name = "grace.hopper"
    wrong = ("POST", "/login", {"data": {"username": name, "password": "not-the-password"}})
    right = _login(name)
    recording = TraceConfig(mode="record", cassette_dir=str(cassette_dir))
    app = create_app(_POSTGRES, schema, _REDIS, _PREFIX, recording, login_hint=True)
    recorded = send(serve(app).url, [_sign_up(name), wrong, right])
    assert timetracer_otel.flush(30), "cassette writer did not drain"
    assert [r.status_code for r in recorded] == [201, 401, 200]
    assert recorded[2].cookies["login_hint"] == name
    _, wrong_id, right_id = _ids_in_recording_order(cassette_dir)

    replayed, reports = _replayed_offline(serve, schema, cassette_dir, [wrong, right], True)
    assert [r.cassette_id for r in reports] == [wrong_id, right_id]
    for before, after in zip(recorded[1:], replayed, strict=True):
        assert_same_response(before, after)
    assert all(r.ok and not r.notes for r in reports), [r.console_text() for r in reports]

    (alone,), reports = _replayed_offline(serve, schema, cassette_dir, [right], True)
    assert [r.cassette_id for r in reports] == [right_id]
    assert_same_response(recorded[2], alone)
    assert all(r.ok and not r.notes for r in reports), [r.console_text() for r in reports]


_FORM = [["content-type", "application/x-www-form-urlencoded"]]
_JSON = [["content-type", "application/json"]]


def _text(text: str) -> dict[str, Any]:
    return {"encoding": "text", "text": text}


@pytest.mark.parametrize(
    ("recorded", "live", "fits"),
    [
        # a form field hidden whole, in any field order
        (
            ("", _text("username=%5BREDACTED%5D&password=%5BREDACTED%5D"), _FORM),
            ("", _text("password=%5BREDACTED%5D&username=ada"), _FORM),
            True,
        ),
        # another value where nothing was hidden
        (
            ("", _text("username=%5BREDACTED%5D&remember=on"), _FORM),
            ("", _text("username=ada&remember=off"), _FORM),
            False,
        ),
        # a JSON value hidden inside a text, at depth
        (
            ("", {"encoding": "json", "json": {"user": {"bio": "I am [REDACTED], hi"}}}, _JSON),
            ("", {"encoding": "json", "json": {"user": {"bio": "I am ada, hi"}}}, _JSON),
            True,
        ),
        # a hidden value stands for some text, never for none
        (
            ("", {"encoding": "json", "json": {"email": "[REDACTED]"}}, _JSON),
            ("", {"encoding": "json", "json": {"email": ""}}, _JSON),
            False,
        ),
        # a JSON member more or less does not fit
        (
            ("", {"encoding": "json", "json": {"email": "[REDACTED]"}}, _JSON),
            ("", {"encoding": "json", "json": {"email": "a", "admin": True}}, _JSON),
            False,
        ),
        # the query too
        (("next=%5BREDACTED%5D&page=2", None, []), ("page=2&next=%2Fhome", None, []), True),
        (("next=%5BREDACTED%5D&page=2", None, []), ("page=3&next=%2Fhome", None, []), False),
    ],
)
def test_a_recorded_request_with_hidden_values_fits_the_live_requests_that_show_them(
    recorded: tuple[str, dict | None, list], live: tuple[str, dict | None, list], fits: bool
) -> None:
    """Each ``[REDACTED]`` of a recorded query or body stands for any non-empty text of the live
    request at that place; every other part must be equal."""
    assert content_fits(recorded, live) is fits


@given(
    pieces=st.lists(st.text(alphabet="ab", max_size=3), min_size=2, max_size=5),
    live=st.text(alphabet="ab", max_size=12),
)
def test_hidden_values_fit_exactly_the_texts_a_pattern_of_them_would(
    pieces: list[str], live: str
) -> None:
    """Each [REDACTED] is one character or more of any text: the answer a regular expression
    gives, found without one."""
    recorded = "[REDACTED]".join(pieces)
    pattern = ".+?".join(map(re.escape, pieces))
    expected = re.fullmatch(pattern, live, re.DOTALL) is not None
    assert content_fits(("", _text(recorded), []), ("", _text(live), [])) is expected


def test_a_recording_with_many_hidden_values_is_compared_in_linear_time() -> None:
    """A hostile recording of 16 markers against 100 characters: a regular expression backtracks
    for hours; the comparison answers at once, and right."""
    recorded = "q=" + "[REDACTED]a" * 16 + "b"
    assert content_fits((recorded, None, []), ("q=" + "a" * 100, None, [])) is False
    assert content_fits((recorded, None, []), ("q=" + "xa" * 16 + "b", None, [])) is True
