"""Secrets found by value: a bearer token taken out of the Authorization header is also taken
out of the SQL, the upstream URL and the error quoting it, in the cassette (sealed) and in
the OTLP export; ``timetracer replay`` without the key needs the token supplied."""

from __future__ import annotations

import base64
import csv
import dataclasses
import gzip
import html
import io
import json
import os
import re
import subprocess
import sys
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import bcrypt
import httpx
import markupsafe
import pytest
import sqlalchemy
from _replay import new_reports
from apps.token_app import JWT, create_app, create_schema
from conftest import Upstream
from otlp_receiver import exporting_to_receiver
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.sessions import SessionMiddleware
from starlette.requests import Request
from starlette.responses import (
    HTMLResponse,
    JSONResponse,
    PlainTextResponse,
    RedirectResponse,
    Response,
)
from starlette.routing import Route

import timetracer_otel
from timetracer_otel._keys import Key
from timetracer_otel.config import TraceConfig
from timetracer_otel.dashboard._replay import ReplayTarget, run_replay
from timetracer_otel.dashboard.app import create_app as create_dashboard
from timetracer_otel.integrations.starlette import auto_setup
from timetracer_otel.sealing import Sealer, is_sealed, unsealed

TOKEN = "tok-3f9a1c77e2b04d18"
TIMETRACER = Path(sys.executable).with_name("timetracer")
APPS_DIR = Path(__file__).parent / "apps"
_SENT = [
    ("/me", {"Authorization": f"Bearer {TOKEN}"}),
    ("/boom", {"Authorization": f"Bearer {TOKEN}"}),
    ("/public", {}),
]
_CLEAR = (TOKEN, JWT, "upstream-secret")  # the upstream's JSON answer has a "token" member too


def _record(
    serve: Callable[..., Any], upstream: Upstream, cassette_dir: Path, db_url: str, **options: Any
) -> list[int]:
    create_schema(db_url, TOKEN, "ada")
    config = TraceConfig(mode="record", cassette_dir=str(cassette_dir), **options)
    server = serve(create_app(upstream.url, config, db_url))
    # a connection each: uvicorn closes one whose app raised after answering (/boom), and a
    # request sent on it meanwhile was reset
    statuses = [
        httpx.get(f"{server.url}{path}", headers=headers, timeout=30).status_code
        for path, headers in _SENT
    ]
    assert timetracer_otel.flush(30), "cassette writer did not drain"
    return statuses


def _every_cassette(cassette_dir: Path) -> list[bytes]:
    """Each cassette's JSON bytes (gunzipped)."""
    raws = ((path.name, path.read_bytes()) for path in cassette_dir.rglob("*.json*"))
    return [gzip.decompress(raw) if name.endswith(".gz") else raw for name, raw in raws]


def _cassette_bytes(cassette_dir: Path) -> dict[str, bytes]:
    """Each cassette's JSON bytes (gunzipped), by request path (one request to each path)."""
    return {json.loads(data)["request"]["path"]: data for data in _every_cassette(cassette_dir)}


def test_a_token_seen_once_is_sealed_wherever_it_appears_and_never_exported(
    serve: Callable[..., Any],
    upstream: Upstream,
    cassette_dir: Path,
    tmp_path: Path,
    key_file: Path,
) -> None:
    """Gzip cassettes and the OTLP protobuf hold no token in clear; the SQL parameter is sealed whole,
    the literal statement, the upstream URL and the error messages carry sealed tokens that open to it."""
    with exporting_to_receiver() as (receiver, processor):
        config = {"compression": "gzip", "otlp_endpoint": receiver.url}
        statuses = _record(
            serve, upstream, cassette_dir, f"sqlite:///{tmp_path / 'db.sqlite'}", **config
        )
        assert processor.force_flush()
    assert statuses == [200, 500, 200]
    cassettes = _cassette_bytes(cassette_dir)
    assert sorted(cassettes) == ["/boom", "/me", "/public"]
    assert [
        (path, secret)
        for path, data in cassettes.items()
        for secret in _CLEAR
        if secret.encode() in data
    ] == []
    assert (
        receiver.bodies
        and [secret for secret in _CLEAR for body in receiver.bodies if secret.encode() in body]
        == []
    )

    me = json.loads(cassettes["/me"])
    selects = [
        c["request"]
        for c in me["calls"]
        if c["protocol"] == "sql" and "sessions" in str(c["request"].get("statement"))
    ]
    by_parameter, literal = selects
    (parameter,) = by_parameter["parameters"]["items"]  # sqlite's positional parameters: a tuple
    assert is_sealed(parameter) and parameter.startswith("[SEALED:") and parameter.endswith("]")
    assert "token = '[SEALED:" in literal["statement"]
    (upstream_call,) = [c for c in me["calls"] if c["protocol"] == "http"]
    assert "session=[SEALED:" in upstream_call["request"]["url"]

    sealer = Sealer(Key(key_file.read_text("ascii").strip().encode("utf-8"), str(key_file)))
    opened = unsealed(me, sealer)
    opened_selects = [
        c["request"]
        for c in opened["calls"]
        if c["protocol"] == "sql" and "sessions" in str(c["request"].get("statement"))
    ]
    assert opened_selects[0]["parameters"]["items"] == [TOKEN]
    assert f"token = '{TOKEN}'" in opened_selects[1]["statement"]
    boom = unsealed(json.loads(cassettes["/boom"]), sealer)
    assert f"Bearer {TOKEN} and token {JWT}" in boom["error"]["message"]


def test_a_password_seen_only_in_the_request_body_is_not_exported(
    serve: Callable[..., Any], upstream: Upstream, cassette_dir: Path, tmp_path: Path
) -> None:
    """The app quotes the body's password in its exception: the span event the collector gets hides it."""
    password = "pw-only-in-the-body-5150"
    db_url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    create_schema(db_url, TOKEN, "ada")
    with exporting_to_receiver() as (receiver, processor):
        config = TraceConfig(
            mode="record", cassette_dir=str(cassette_dir), otlp_endpoint=receiver.url
        )
        server = serve(create_app(upstream.url, config, db_url))
        assert (
            httpx.post(
                f"{server.url}/login", json={"user": "ada", "password": password}, timeout=30
            ).status_code
            == 500
        )
        assert timetracer_otel.flush(30), "cassette writer did not drain"
        assert processor.force_flush()
    assert receiver.bodies and not [body for body in receiver.bodies if password.encode() in body]
    assert any(b"no account matches the password" in body for body in receiver.bodies)
    assert not [data for data in _every_cassette(cassette_dir) if password.encode() in data]


def _replay(
    cassette_dir: Path, upstream: Upstream, db_url: str, *options: str, key: bool
) -> tuple[subprocess.CompletedProcess, dict[str, Any]]:
    env = {**os.environ, "REPLAY_APP_UPSTREAM": upstream.url, "TOKEN_APP_DB": db_url}
    if not key:
        env["TIMETRACER_KEY_FILE"] = str(cassette_dir / "no-such-key")
    command = [
        str(TIMETRACER),
        "replay",
        str(cassette_dir),
        "--app",
        "token_app:create_app",
        "--factory",
        "--app-dir",
        str(APPS_DIR),
    ]
    done = subprocess.run([*command, *options], capture_output=True, text=True, timeout=60, env=env)
    reports = {r["path"]: r for r in json.loads(done.stdout)} if "--json" in options else {}
    return done, reports


@pytest.mark.parametrize("key", [True, False], ids=["with the key", "without the key"])
def test_replay_opens_the_token_with_the_key_and_needs_it_supplied_without(
    serve: Callable[..., Any], upstream: Upstream, cassette_dir: Path, tmp_path: Path, key: bool
) -> None:
    """With the key every request replays as recorded. Without it /me gets 401; with --header the token
    is sent, every call carrying it still matches, and the report names the request that needed it."""
    db_url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    _record(serve, upstream, cassette_dir, db_url)
    before = len(upstream.requests)
    plain, reports = _replay(cassette_dir, upstream, db_url, "--json", key=key)
    assert reports["/me"]["status"] == (200 if key else 401)
    assert (plain.returncode, reports["/me"]["verdict"]) == ((0, "ok") if key else (1, "diff"))
    assert [reports[p]["sealed"] for p in ("/me", "/boom", "/public")] == [not key, not key, False]
    keyless, _ = _replay(cassette_dir, upstream, db_url, key=key)
    hint = (
        "2 of 3 requests were replayed with [REDACTED] in place of secrets sealed with a key this "
        "process does not hold: replay with that key (TIMETRACER_SECRET_KEY, or TIMETRACER_KEY_FILE "
        "naming its file), or supply the credentials with --header, --cookie or --credentials"
    )
    assert (hint in keyless.stdout) is not key, keyless.stdout

    header = f"Authorization=Bearer {TOKEN}"
    supplied, reports = _replay(
        cassette_dir, upstream, db_url, "--header", header, "--json", key=key
    )
    assert supplied.returncode == 0, supplied.stdout + supplied.stderr
    assert {path: (r["status"], r["verdict"], r["unmatched"]) for path, r in reports.items()} == {
        "/me": (200, "ok", []),
        "/boom": (500, "ok", []),
        "/public": (200, "ok", []),
    }
    assert len(reports["/me"]["answered"]) == 4  # connect, two SELECTs, the upstream call
    needed = [] if key else ["header authorization"]
    assert [reports[p]["supplied_credentials"] for p in ("/me", "/boom", "/public")] == [
        needed,
        needed,
        [],
    ]

    summary, _ = _replay(cassette_dir, upstream, db_url, "--header", header, key=key)
    expected = (
        "2 of 3 requests were sent with supplied credentials (their own could not be unsealed)"
    )
    assert (expected in summary.stdout) is not key
    assert "replayed with [REDACTED]" not in summary.stdout  # they were supplied
    assert len(upstream.requests) == before


def test_a_credentials_hook_chooses_the_token_of_each_request_that_needs_one(
    serve: Callable[..., Any],
    upstream: Upstream,
    cassette_dir: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``--credentials MODULE:FUNCTION`` without the key: the hook is asked for the requests whose
    Authorization reads redacted, they replay as recorded, and the report names the hook; a hook
    that fails stops the replay with its error, naming the hook and the request."""
    db_url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    _record(serve, upstream, cassette_dir, db_url)
    monkeypatch.setenv("REPLAY_TOKEN", TOKEN)
    hooked, reports = _replay(
        cassette_dir,
        upstream,
        db_url,
        "--credentials",
        "token_credentials:bearer_for",
        "--json",
        key=False,
    )
    assert hooked.returncode == 0, hooked.stdout + hooked.stderr
    assert {path: (r["status"], r["verdict"]) for path, r in reports.items()} == {
        "/me": (200, "ok"),
        "/boom": (500, "ok"),
        "/public": (200, "ok"),
    }
    by_hook = ["header authorization from token_credentials:bearer_for"]
    assert [reports[p]["supplied_credentials"] for p in ("/me", "/boom", "/public")] == [
        by_hook,
        by_hook,
        [],
    ]

    failed, _ = _replay(
        cassette_dir, upstream, db_url, "--credentials", "token_credentials:broken", key=False
    )
    assert failed.returncode != 0
    assert "--credentials token_credentials:broken failed for GET /me: KeyError" in failed.stderr


@pytest.fixture
def me_without_the_key(
    serve: Callable[..., Any],
    upstream: Upstream,
    cassette_dir: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> Path:
    """The recorded ``/me`` cassette, in a test process that has no key and sets up what the replayed app reads."""
    db_url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    _record(serve, upstream, cassette_dir, db_url)
    (me,) = [
        p
        for p in cassette_dir.rglob("*.json")
        if json.loads(p.read_bytes())["request"]["path"] == "/me"
    ]
    monkeypatch.setenv("TIMETRACER_KEY_FILE", str(tmp_path / "no-such-key"))
    monkeypatch.setenv("REPLAY_APP_UPSTREAM", upstream.url)
    monkeypatch.setenv("TOKEN_APP_DB", db_url)
    return me


def test_the_dashboard_replay_sends_the_credentials_it_was_started_with(
    me_without_the_key: Path,
) -> None:
    """``timetracer serve --replay-header``: the Replay button's child process sends the token
    where the cassette's reads redacted (no key), and its report says so."""
    me = me_without_the_key
    target = ReplayTarget("token_app:create_app", str(APPS_DIR), True)
    without = anyio.run(run_replay, target, me)
    supplied = anyio.run(
        run_replay, dataclasses.replace(target, headers=(f"Authorization=Bearer {TOKEN}",)), me
    )
    assert without.report is not None and supplied.report is not None, (
        without.problem + supplied.problem
    )
    assert (without.report["status"], without.report["supplied_credentials"]) == (401, [])
    assert (supplied.report["status"], supplied.report["verdict"]) == (200, "ok")
    assert supplied.report["supplied_credentials"] == ["header authorization"]


def test_cookie_values_are_hidden_in_redis_bytes_and_mongo_documents_and_short_values_are_not_searched() -> (
    None
):
    """A document as the builder makes it: each cookie's value (not only the whole header) is found;
    typed bytes holding it are hidden whole, a string holding it in place; a 5-character value is left."""
    from timetracer_otel.cassette.values import encode_value
    from timetracer_otel.redaction import Redactor

    doc = {
        "request": {
            "method": "GET",
            "path": "/cart",
            "query": "",
            "headers": [["Cookie", "session=sess-91c2a7; theme=dark5"]],
            "body": None,
        },
        "response": {
            "status": 200,
            "headers": [["Set-Cookie", "csrf=csrf-77ab01e; Path=/"]],
            "body": None,
        },
        "calls": [
            {
                "protocol": "redis",
                "request": encode_value({"command": "GET", "args": [b"cart:sess-91c2a7"]}),
                "response": None,
                "error": None,
            },
            {
                "protocol": "mongo",
                "request": {
                    "command": {
                        "find": "carts",
                        "filter": {"session": "sess-91c2a7", "csrf": "csrf-77ab01e"},
                    }
                },
                "response": None,
                "error": None,
            },  # fmt: skip
        ],
        "spans": [
            {
                "span_id": "00000000000000aa",
                "attributes": {"note": "theme=dark5 for sess-91c2a7"},
                "events": [],
            }
        ],
    }
    Redactor().document(doc)
    redis, mongo = doc["calls"]
    assert redis["request"]["args"] == [{"$type": "bytes", "base64": "[REDACTED]"}]
    assert mongo["request"]["command"]["filter"] == {"session": "[REDACTED]", "csrf": "[REDACTED]"}
    assert doc["spans"][0]["attributes"]["note"] == "theme=dark5 for [REDACTED]"


def test_a_megabyte_password_is_sealed_wherever_it_is_quoted_and_opens_back() -> None:
    """A huge secret value (a 1 MiB ``password`` field) is searched as it is: quoted inside
    another call's body and in a span's text it is sealed in place, whole where it is whole,
    and the key opens the document back to what was recorded."""
    import secrets as secret_source

    from timetracer_otel.redaction import Redactor

    password = secret_source.token_urlsafe(800_000)[: 1 << 20]
    doc = {
        "request": {"method": "POST", "path": "/signup", "query": "", "headers": [],
                    "body": {"size": 1, "encoding": "json", "json": {"password": password, "user": "ann"}}},
        "response": {"status": 200, "headers": [], "body": {"size": 1, "encoding": "text", "text": f"saved {password}."}},
        "calls": [{"protocol": "http", "request": {"method": "POST", "url": "http://127.0.0.1:9/audit", "headers": [],
                   "body": {"size": 1, "encoding": "text", "text": f"user ann set password {password} and {password}"}},
                   "response": None, "error": None}],
        "spans": [{"span_id": "00000000000000aa", "attributes": {"note": password}, "events": []}],
    }  # fmt: skip
    original = json.loads(json.dumps(doc))
    sealer = Sealer(Key(b"k" * 32, "test"))
    Redactor().sealing(sealer).document(doc)
    assert password not in json.dumps(doc)
    assert doc["calls"][0]["request"]["body"]["text"].startswith("user ann set password [SEALED:")
    assert is_sealed(doc["spans"][0]["attributes"]["note"])
    opened = unsealed(doc, sealer)
    for part in ("response", "calls", "spans"):
        assert opened[part] == original[part]


def test_a_token_of_an_earlier_cassette_is_hidden_at_a_line_start_and_in_bytes_of_a_later_one() -> (
    None
):
    """The writer's memory of secrets: a bearer token taken out of one request's cassette is
    hidden in the next one's text, where it starts a line (JSON writes ``\\n`` before it), and
    in its stored bytes; a token it never saw, and short values, are left."""
    from timetracer_otel.cassette.values import encode_value
    from timetracer_otel.redaction import Redactor
    from timetracer_otel.secret_values import RecentSecrets

    token, other = "tok_5f2b9c0e7d1a4b3c8e6f", "tok_0000111122223333aaaa"
    recent, redactor = RecentSecrets(), Redactor()
    first = {"request": {"method": "GET", "path": "/a", "query": "", "headers": [["Authorization", f"Bearer {token}"]], "body": None},
             "calls": [], "spans": []}  # fmt: skip
    redactor.document(first, recent=recent)
    text = {"request": {"method": "GET", "path": "/b", "query": "", "headers": [], "body": None},
            "response": {"status": 200, "headers": [], "body": {"size": 1, "encoding": "text", "text": f"sent:\n{token}\n{other}"}},
            "calls": [], "spans": []}  # fmt: skip
    stored = {"request": {"method": "GET", "path": "/c", "query": "", "headers": [], "body": None},
              "calls": [{"protocol": "redis", "request": encode_value({"command": "GET", "args": ["job:1"]}),
                         "response": encode_value({"reply": b"\x80\x05" + token.encode() + b"\x94."}), "error": None}],
              "spans": []}  # fmt: skip
    for later in (text, stored):
        redactor.document(later, recent=recent)
    assert text["response"]["body"]["text"] == f"sent:\n[REDACTED]\n{other}"
    assert stored["calls"][0]["response"] == {"reply": {"$type": "bytes", "base64": "[REDACTED]"}}


def test_the_dashboard_replay_page_names_the_supplied_credentials(
    serve: Callable[..., Any], cassette_dir: Path, me_without_the_key: Path
) -> None:
    """The Replay button, pressed as a browser would (the page's form token, a POST): the result page
    lists the credential it had to supply."""
    me = me_without_the_key
    target = ReplayTarget(
        "token_app:create_app", str(APPS_DIR), True, headers=(f"Authorization=Bearer {TOKEN}",)
    )
    url = serve(create_dashboard(str(cassette_dir), target)).url
    key = me.relative_to(cassette_dir).as_posix()
    with httpx.Client(base_url=url, timeout=60) as client:
        token = re.search(
            r'name="token" value="([^"]+)"', client.get(f"/cassettes/{key}").text
        ).group(1)  # type: ignore[union-attr]
        page = client.post(f"/replay/{key}", data={"token": token}).text
    assert re.search(r"<th>supplied credential</th><td[^>]*>header authorization</td>", page), page
    assert TOKEN not in page


def test_a_session_id_made_with_uuid4_hex_is_sealed_in_the_draws_too(
    serve: Callable[..., Any], cassette_dir: Path
) -> None:
    """fastapi-admin's login (``token = uuid.uuid4().hex``, set as a cookie): the cookie is
    sealed, and so is the drawn UUID that spells it (it was kept in clear, dashes and all);
    replayed with the key, the login sets the same cookie."""

    def login(request: Any) -> RedirectResponse:
        response = RedirectResponse("/", status_code=303)
        response.set_cookie("access_token", uuid.uuid4().hex, httponly=True)
        return response

    def app(config: TraceConfig) -> Starlette:
        made = Starlette(routes=[Route("/login", login, methods=["POST"])])
        auto_setup(made, config=config, plugins=[])
        return made

    recording = serve(app(TraceConfig(mode="record", cassette_dir=str(cassette_dir))))
    recorded = httpx.post(f"{recording.url}/login", data={"username": "ada"})
    assert timetracer_otel.flush(30)
    token = recorded.cookies["access_token"]
    (raw,) = _cassette_bytes(cassette_dir).values()
    assert token.encode() not in raw and str(uuid.UUID(token)).encode() not in raw
    assert json.loads(raw)["draws"] and all(is_sealed(d["value"]) for d in json.loads(raw)["draws"])

    replaying = serve(app(TraceConfig(mode="replay", cassette_path=str(cassette_dir))))
    replayed = httpx.post(f"{replaying.url}/login", data={"username": "ada"})
    assert replayed.cookies["access_token"] == token


def test_a_password_a_page_escapes_for_html_or_csv_is_sealed_there_and_replays(
    serve: Callable[..., Any], cassette_dir: Path
) -> None:
    """Templates escape what they show (an edit form's ``value=``, a detail page) and a CSV export
    doubles quotes: the password taken out of the form was in clear in those responses."""
    password = 'Tr0ub4dor&3-"horse" <o\'k>'
    written = {
        html.escape(password),  # the standard library's, Django's
        str(markupsafe.escape(password)),  # Jinja2's
        html.escape(password, quote=False),  # text outside attributes
        password.replace('"', '""'),  # csv
    }

    async def profile(request: Request) -> Response:
        shown = str((await request.form())["password"])
        if request.url.path == "/export":
            buffer = io.StringIO()
            csv.writer(buffer).writerow(["ada", shown])
            return PlainTextResponse(buffer.getvalue(), media_type="text/csv")
        page = (
            f'<input name="password" value="{html.escape(shown)}">'
            f"<p>{markupsafe.escape(shown)}</p><pre>{html.escape(shown, quote=False)}</pre>"
        )
        return HTMLResponse(page)

    def app(config: TraceConfig) -> Starlette:
        routes = [Route(path, profile, methods=["POST"]) for path in ("/profile", "/export")]
        application = Starlette(routes=routes)
        auto_setup(application, config=config)
        return application

    def send(url: str) -> list[httpx.Response]:
        with httpx.Client(base_url=url, timeout=30) as client:
            return [
                client.post(path, data={"password": password}) for path in ("/profile", "/export")
            ]

    recorded = send(serve(app(TraceConfig(mode="record", cassette_dir=str(cassette_dir)))).url)
    assert timetracer_otel.flush(30), "cassette writer did not drain"
    assert all(spelling in recorded[0].text + recorded[1].text for spelling in written)
    cassettes = b"".join(_every_cassette(cassette_dir)).decode()
    assert len(_cassette_bytes(cassette_dir)) == 2
    assert [spelling for spelling in written if spelling in cassettes] == []
    with new_reports() as reports:
        replaying = serve(app(TraceConfig(mode="replay", cassette_path=str(cassette_dir))))
        replayed = send(replaying.url)
        replaying.stop()  # its requests' reports are made
    assert [r.content for r in replayed] == [r.content for r in recorded]
    assert [report.verdict for report in reports] == ["ok", "ok"]


def test_a_replayed_response_quoting_an_opened_secret_under_another_name_is_reported_redacted(
    serve: Callable[..., Any], upstream: Upstream, cassette_dir: Path
) -> None:
    """With the key, the app gets the recording's secrets back, and may answer them where no
    secret name marks them: the differences the report shows hide them by value."""
    token = "sk-live-opened-0123456789abcdef"
    shape = {"member": "data"}

    async def me(request: Request) -> Response:
        async with httpx.AsyncClient() as client:
            sent = request.headers["authorization"]
            echoed = (await client.post(f"{upstream.url}/echo", content=sent)).json()
        return JSONResponse({shape["member"]: echoed["body"]})

    def app(config: TraceConfig) -> Starlette:
        application = Starlette(routes=[Route("/me", me)])
        auto_setup(application, config=config, plugins=["httpx"])
        return application

    def send(url: str) -> httpx.Response:
        return httpx.get(f"{url}/me", headers={"Authorization": f"Bearer {token}"}, timeout=30)

    assert send(
        serve(app(TraceConfig(mode="record", cassette_dir=str(cassette_dir)))).url
    ).json() == {"data": f"Bearer {token}"}
    assert timetracer_otel.flush(30), "cassette writer did not drain"
    shape["member"] = "result"
    with new_reports() as reports:
        replaying = serve(app(TraceConfig(mode="replay", cassette_path=str(cassette_dir))))
        replayed = send(replaying.url)
        replaying.stop()  # its request's report is made
    assert replayed.json() == {"result": f"Bearer {token}"}  # the app got the opened secret
    (report,) = reports
    assert report.verdict == "diff"
    assert any("$.result" in line for line in report.differences)
    assert token not in report.console_text() and token not in json.dumps(report.differences)


def test_a_bcrypt_salt_and_hash_kept_as_bytes_in_sql_are_sealed_and_replay(
    serve: Callable[..., Any], cassette_dir: Path, tmp_path: Path
) -> None:
    """A salt and a hash stored in a BLOB/BYTEA column are bytes in the cassette (base64): found by
    their shape there too, as they are in text."""
    engine = sqlalchemy.create_engine(f"sqlite:///{tmp_path / 'salts.sqlite'}")
    with engine.begin() as connection:
        connection.execute(sqlalchemy.text("CREATE TABLE login (salt BLOB, digest BLOB)"))

    def store(request: Request) -> Response:
        salt = bcrypt.gensalt(rounds=4)
        digest = bcrypt.hashpw(b"correct horse", salt)
        with engine.begin() as connection:
            connection.execute(
                sqlalchemy.text("INSERT INTO login (salt, digest) VALUES (:salt, :digest)"),
                {"salt": salt, "digest": digest},
            )
            kept = connection.execute(sqlalchemy.text("SELECT digest FROM login")).scalars().all()
        return JSONResponse(
            {"stored": len(kept), "checks": bcrypt.checkpw(b"correct horse", kept[-1])}
        )

    def app(config: TraceConfig) -> Starlette:
        application = Starlette(routes=[Route("/store", store, methods=["POST"])])
        auto_setup(application, config=config, plugins=["sqlalchemy"])
        return application

    recording = serve(app(TraceConfig(mode="record", cassette_dir=str(cassette_dir))))
    recorded = httpx.post(f"{recording.url}/store", timeout=30)
    assert recorded.json() == {"stored": 1, "checks": True}
    assert timetracer_otel.flush(30), "cassette writer did not drain"
    with engine.connect() as connection:
        ((salt, digest),) = connection.execute(sqlalchemy.text("SELECT salt, digest FROM login"))
    (cassette,) = _cassette_bytes(cassette_dir).values()
    written = [salt, digest, base64.b64encode(salt), base64.b64encode(digest)]
    assert [value for value in written if value in cassette] == []
    engine.dispose()
    (tmp_path / "salts.sqlite").unlink()  # replay needs no database
    with new_reports() as reports:
        replaying = serve(app(TraceConfig(mode="replay", cassette_path=str(cassette_dir))))
        replayed = httpx.post(f"{replaying.url}/store", timeout=30)
        replaying.stop()  # its request's report is made
    assert replayed.content == recorded.content
    assert [report.verdict for report in reports] == ["ok"]


def test_a_response_that_differs_for_a_request_sending_another_cookie_says_so(
    serve: Callable[..., Any], cassette_dir: Path
) -> None:
    """Served replay takes the client's cookies as they come: a session from another request
    (signed later than this one was recorded, or another user's) is no longer the recorded one."""

    async def login(request: Request) -> Response:
        request.session["user"] = request.query_params["user"]
        return JSONResponse({"logged_in": True})

    async def me(request: Request) -> Response:
        return JSONResponse({"user": request.session.get("user")})

    def app(config: TraceConfig) -> Starlette:
        application = Starlette(
            routes=[Route("/login", login, methods=["POST"]), Route("/me", me)],
            middleware=[Middleware(SessionMiddleware, secret_key="signing-key-of-the-app")],
        )
        auto_setup(application, config=config)
        return application

    recording = serve(app(TraceConfig(mode="record", cassette_dir=str(cassette_dir))))
    with httpx.Client(base_url=recording.url, timeout=30) as client:
        client.post("/login", params={"user": "olga"})
        assert client.get("/me").json() == {"user": "olga"}
    assert timetracer_otel.flush(30), "cassette writer did not drain"
    with new_reports() as reports:
        replaying = serve(app(TraceConfig(mode="replay", cassette_path=str(cassette_dir))))
        with httpx.Client(base_url=replaying.url, timeout=30) as client:
            assert client.get("/me").json() == {"user": None}  # no session sent
            client.post("/login", params={"user": "olga"})
            assert client.get("/me").json() == {"user": "olga"}
        replaying.stop()  # its requests' reports are made
    alone, _, again = reports
    assert alone.verdict == "diff"
    assert alone.notes == [
        "the request's cookie differs from the recorded request's: what the app read from it may"
        " differ (a session signed with the time it was made reads as expired or not yet valid"
        " when the requests come in another order than recorded)"
    ]
    assert (again.verdict, again.notes) == ("ok", [])


def test_api_keys_found_by_their_prefix_are_sealed_where_no_secret_name_marks_them(
    serve: Callable[..., Any], upstream: Upstream, cassette_dir: Path, tmp_path: Path
) -> None:
    """A settings row or a variable holding an API key (Prefect's ``openai_api_key`` variable:
    a ``name`` and a ``value``), and a partner's key sent in a header of its own: their shape
    says what they are."""
    keys = {
        "openai": "sk-proj-Xy7QpL2mNv8RtZ4sKw9BdF3hJc6",
        "stripe": "sk_live_51HxYzAbCdEfGhIjKlMnOpQr",
        "github": "ghp_R2d2C3p0BB8xWingsAndTie01234567890",
        "github_fine_grained": "github_pat_11ABQ2Y7I0aBcDeFgHiJkL_mNoPqRsTuVwXyZ0123456789",
        "gitlab": "glpat-Zx9Yw8Vu7Ts6Rq5Po4Nm",
        "slack": "xoxb-2048-4096-Qw3Er5Ty7Ui9Op1As",
        "google": "AIzaSyD4f6G8h0J2k4L6z8X0c2V4b6N8m0Q2w4E",
        "anthropic": "sk-ant-api03-Lm4Nb6Vc8Xz0As2Df4Gh6Jk8",
        "stripe_restricted": "rk_test_51QaZwSxEdCrFvTgByHn",
    }
    engine = sqlalchemy.create_engine(f"sqlite:///{tmp_path / 'settings.sqlite'}")
    with engine.begin() as connection:
        connection.execute(sqlalchemy.text("CREATE TABLE variable (name TEXT, value TEXT)"))

    async def variables(request: Request) -> Response:
        variable = await request.json()
        with engine.begin() as connection:
            connection.execute(
                sqlalchemy.text("INSERT INTO variable (name, value) VALUES (:name, :value)"),
                variable,
            )
        async with httpx.AsyncClient() as client:
            partner = await client.post(
                f"{upstream.url}/echo", content="sync", headers={"X-Partner": keys["stripe"]}
            )
        return JSONResponse({"stored": variable["name"], "partner": partner.status_code})

    application = Starlette(routes=[Route("/variables", variables, methods=["POST"])])
    auto_setup(application, config=TraceConfig(mode="record", cassette_dir=str(cassette_dir)))
    server = serve(application)
    for name in keys.keys() - {"stripe"}:
        sent = {"name": f"{name}_for_the_flows", "value": keys[name]}
        assert httpx.post(f"{server.url}/variables", json=sent, timeout=30).status_code == 200
    assert timetracer_otel.flush(30), "cassette writer did not drain"
    cassettes = b"".join(_every_cassette(cassette_dir)).decode()
    assert [name for name, key in keys.items() if key in cassettes] == []


_BYTES_HASH_APP = """
import os

import bcrypt
from sqlalchemy import Column, Integer, LargeBinary, String, create_engine, select
from sqlalchemy.orm import Session, declarative_base
from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Route

from timetracer_otel.integrations.starlette import auto_setup

engine = create_engine(os.environ["BYTES_HASH_DB"])
Base = declarative_base()


class User(Base):
    __tablename__ = "users"
    id = Column(Integer, primary_key=True)
    email = Column(String)
    hashed_password = Column(LargeBinary)


Base.metadata.create_all(engine)


async def sign_up(request):
    with Session(engine) as session:
        user = User(email="ada@example.com", hashed_password=bcrypt.hashpw(b"s3cret-pass", bcrypt.gensalt()))
        session.add(user)
        session.commit()
        return JSONResponse({"id": user.id})


async def profile(request):
    with Session(engine) as session:
        user = session.execute(select(User).where(User.id == 1)).scalar_one()
        return JSONResponse({"email": user.email, "hashed": type(user.hashed_password).__name__})


app = Starlette(routes=[Route("/users", sign_up, methods=["POST"]), Route("/users/1", profile)])
auto_setup(app, plugins=["sqlalchemy"])
"""


def test_bytes_under_a_secret_column_replay_as_bytes_without_the_key(
    serve: Callable[..., Any], cassette_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bcrypt hash kept as bytes (a ``LargeBinary``/``bytea`` column, as Netflix Dispatch keeps
    it) is sealed with its type kept: replayed without the key, the app gets ``b"[REDACTED]"``,
    bytes, where a string made SQLAlchemy's ``bytes(value)`` raise and every request read 500."""
    database = tmp_path / "app.db"
    (tmp_path / "bytes_hash_app.py").write_text(_BYTES_HASH_APP, "utf-8")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("BYTES_HASH_DB", f"sqlite:///{database}")
    monkeypatch.setenv("TIMETRACER_MODE", "record")
    monkeypatch.setenv("TIMETRACER_DIR", str(cassette_dir))
    import bytes_hash_app

    server = serve(bytes_hash_app.app)
    with httpx.Client(base_url=server.url) as client:
        assert client.post("/users").json() == {"id": 1}
        assert client.get("/users/1").json() == {"email": "ada@example.com", "hashed": "bytes"}
    assert timetracer_otel.flush(30)
    written = "".join(p.read_text("utf-8") for p in cassette_dir.rglob("*.json"))
    assert '"$type": "bytes",\n' in written and "$2b$" not in written
    database.unlink()

    env = {**os.environ, "TIMETRACER_KEY_FILE": str(tmp_path / "no-such-key")}
    command = [
        str(TIMETRACER),
        "replay",
        str(cassette_dir),
        "--app",
        "bytes_hash_app:app",
        "--app-dir",
        str(tmp_path),
        "--json",
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120, env=env)
    reports = json.loads(done.stdout)
    assert [(r["path"], r["status"], r["verdict"], r["unmatched"]) for r in reports] == [
        ("/users", 200, "ok", []),
        ("/users/1", 200, "ok", []),
    ], done.stderr
