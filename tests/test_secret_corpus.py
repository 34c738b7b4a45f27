"""One request with a secret in every place a cassette keeps one (see ``apps/secrets_app.py``),
recorded through uvicorn with real PostgreSQL, Redis, an upstream and the loopback Mongo server.

The cassette file (plain and gzip) holds none of the secret values in clear, while the app
got them all; replay with the key answers the app with the real values (what each store
gives back equals what it stored), and replay without the key still matches every call.
"""

from __future__ import annotations

import contextlib
import gzip
import json
import logging
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import quote, quote_plus

import httpx
import pytest
import redis
from _replay import new_reports, send
from apps.secrets_app import Deps, Secrets, accounts, create_app
from conftest import Upstream
from mongo_server import running_mongo
from otlp_receiver import exporting_to_receiver
from sqlalchemy import create_engine

import timetracer_otel
from timetracer_otel._keys import Key
from timetracer_otel.cassette.values import decode_value, encode_value
from timetracer_otel.config import TraceConfig
from timetracer_otel.dashboard.app import create_app as create_dashboard
from timetracer_otel.redaction import Redactor
from timetracer_otel.replayers import ReplayReport
from timetracer_otel.sealing import Sealer, redacted, unsealed
from timetracer_otel.secret_names import SecretNames

PG = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
REDIS = "redis://127.0.0.1:6379/0"
ALL_TRUE = {
    "inbound": True,
    "outbound": True,
    "sql": True,
    "redis": True,
    "mongo": True,
    "errors": True,
}
# What each library's span records of the failing call quoting the API key: the export must carry these texts.
ERRORS = (
    b"Illegal header value",
    b"Max retries exceeded",
    b"404, message=",
    b"already exists",
    b"of pipeline caused error",
    b"E11000",
)


@pytest.fixture
def secrets() -> Secrets:
    return Secrets(uuid.uuid4().hex)


@pytest.fixture
def deps(upstream: Upstream) -> Iterator[Deps]:
    suffix = uuid.uuid4().hex[:12]
    postgres = create_engine(PG)
    accounts(suffix).metadata.create_all(postgres)
    with running_mongo() as mongo:
        try:
            yield Deps(upstream.url, PG, REDIS, mongo.url, suffix)
        finally:
            accounts(suffix).metadata.drop_all(postgres)
            postgres.dispose()
            with contextlib.closing(redis.Redis.from_url(REDIS)) as client:
                client.delete(f"tt-names:{suffix}:user:1", f"tt-names:{suffix}:note")


def _request(secrets: Secrets) -> tuple[str, str, dict[str, Any]]:
    return (
        "POST",
        "/account",
        {
            "params": {"api_key": secrets.inbound_query},
            "headers": {
                "Authorization": f"Bearer {secrets.inbound_auth}",
                "X-Session-Token": secrets.inbound_token,
            },
            "json": {
                "user": "ann",
                "current_password": secrets.current,
                "new_password": secrets.new,
            },
        },
    )


def _run(
    serve: Callable[..., Any], deps: Deps, secrets: Secrets, config: TraceConfig
) -> dict[str, Any]:
    server = serve(create_app(deps, secrets, config))
    (response,) = send(server.url, [_request(secrets)])
    server.stop()
    assert response.status_code == 200, response.text
    return response.json()


def _record(
    serve: Callable[..., Any], deps: Deps, secrets: Secrets, directory: Path, compression: str
) -> Path:
    assert (
        _run(
            serve,
            deps,
            secrets,
            TraceConfig(mode="record", cassette_dir=str(directory), compression=compression),
        )
        == ALL_TRUE
    )
    assert timetracer_otel.flush(30), "cassette writer did not drain"
    (path,) = [p for p in directory.rglob("*") if p.is_file()]
    return path


@pytest.mark.parametrize("compression", ["none", "gzip"])
def test_no_secret_is_in_the_cassette_or_the_otlp_export_in_clear(
    serve: Callable[..., Any],
    deps: Deps,
    secrets: Secrets,
    cassette_dir: Path,
    compression: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Nor in the protobuf a collector gets: its spans carry each library's error quoting the API key
    (found only in an SQL row), the app's span quoting a hash before any statement did, the
    statements, without any of the values. The span processor exports each span as soon as it
    ends, so a span that quotes a value before the request finds it secret is held until it does."""
    monkeypatch.setenv("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "1")
    monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "1")
    with exporting_to_receiver() as (receiver, processor):
        path = _record(serve, deps, secrets, cassette_dir, compression)
        assert processor.force_flush()
    exported = b"".join(receiver.bodies)
    assert [
        text for text in (*ERRORS, b"about to store", b"ON CONFLICT") if text not in exported
    ] == []
    assert [
        value for value in [*secrets.values(), "upstream-secret"] if value.encode() in exported
    ] == []
    data = gzip.decompress(path.read_bytes()) if compression == "gzip" else path.read_bytes()
    doc = json.loads(data)
    protocols = sorted({call["protocol"] for call in doc["calls"]})
    assert protocols == ["http", "mongo", "redis", "sql"]
    for value in [*secrets.values(), "upstream-secret"]:
        assert value.encode() not in data, f"{value} is in the cassette in clear"
    # the multipart body with a binary part kept its bytes around the sealed password part
    multipart = [
        c
        for c in doc["calls"]
        if c["protocol"] == "http" and "multipart" in json.dumps(c["request"]["headers"])
    ]
    assert [c["request"]["body"]["encoding"] for c in multipart] == ["segments"]


def _replay(
    serve: Callable[..., Any], deps: Deps, secrets: Secrets, cassette: Path
) -> tuple[dict[str, Any], ReplayReport]:
    """The app's answer replayed from ``cassette``, and the report, which says every call was answered."""
    with new_reports() as reports:
        answered = _run(
            serve, deps, secrets, TraceConfig(mode="replay", cassette_path=str(cassette))
        )
    (report,) = reports
    assert (report.unmatched, report.unused, report.error) == ([], [], None)
    return answered, report


def test_replay_with_the_key_answers_the_real_values(
    serve: Callable[..., Any], deps: Deps, secrets: Secrets, cassette_dir: Path
) -> None:
    cassette = _record(serve, deps, secrets, cassette_dir, "none")
    answered, report = _replay(serve, deps, secrets, cassette)
    assert answered == ALL_TRUE and report.response_matches and report.notes == []


def test_replay_without_the_key_matches_every_call(
    serve: Callable[..., Any],
    deps: Deps,
    secrets: Secrets,
    cassette_dir: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    cassette = _record(serve, deps, secrets, cassette_dir, "none")
    monkeypatch.setenv("TIMETRACER_KEY_FILE", str(tmp_path / "no-key"))
    answered, report = _replay(serve, deps, secrets, cassette)
    # the report says why it differs
    assert [note for note in report.notes if note.startswith("unverifiable without the key")]
    # every call matched; what the upstream and the stores gave back reads as [REDACTED]
    assert answered == {
        "inbound": True,
        "outbound": False,
        "sql": False,
        "redis": False,
        "mongo": False,
        "errors": False,
    }


@pytest.mark.parametrize(
    ("name", "secret"),
    [
        ("password", True), ("current_password", True), ("New-Password", True), ("hashed_password", True),
        ("client_secret", True), ("refresh_token", True), ("X-API-Key", True), ("ssh_private_key", True),
        ("authorization", True), ("page", False), ("message", False), ("shipping", False), ("author", False),
        ("token_type", False), ("token_type_hint", False), ("access_token", True),
        # an LLM API's token counts (LiteLLM's usage), but not a list of tokens
        ("prompt_tokens", False), ("completion_tokens_details", False), ("max_tokens", False),
        ("cache_read_input_tokens", False), ("refresh_tokens", True), ("api_tokens", True),
        # two-factor logins (piccolo_admin's MFA set-up answered its recovery codes in clear)
        ("otp", True), ("TOTP", True), ("totp_code", True), ("mfa_code", True), ("recovery_codes", True),
        ("backupCodes", True), ("qrcode_image", True), ("qr_code", True), ("footprint", False),
        ("shortcode", False), ("postcode", False),
    ],
)  # fmt: skip
def test_field_names_match_by_pattern(name: str, secret: bool) -> None:
    assert SecretNames().field(name) is secret


def test_exempt_names_and_added_patterns() -> None:
    names = SecretNames(headers=["x-tenant-*"], fields=["card_*"], exempt=["page_token"])
    assert (names.field("page_token"), names.field("Token-Type"), names.field("next_token")) == (
        False,
        False,
        True,
    )
    assert (
        names.field("card_number") and names.header("X-Tenant-Id") and names.header("X-CSRF-Token")
    )
    assert names.header("cookie") and not names.header("content-type")


def test_sealed_typed_values_open_to_the_same_typed_values() -> None:
    """A secret bytes argument, tuple parameter or bytes-keyed hash reply seals whole and opens back exactly."""
    sealer = Sealer(Key(b"k" * 32, "test"))
    redactor = Redactor().sealing(sealer)
    statement = "UPDATE t SET name = $1, hashed_password = $2 WHERE id = $3"
    calls = [
        {"protocol": "redis", "request": {"command": "HSET", "args": ["u:1", b"password", b"\xff\x00x"]}, "response": {"reply": 1}},
        {"protocol": "redis", "request": {"command": "HGETALL", "args": [b"u:1"]}, "response": {"reply": {b"password": b"\xff"}}},
        {"protocol": "redis", "request": {"command": "HMGET", "args": ["u:1", "name", "api_key"]}, "response": {"reply": ["ann", "k"]}},
        {"protocol": "sql", "request": {"operation": "execute", "statement": statement, "parameters": ("ann", b"\x01h", 7)}},
        {"protocol": "sql", "request": {"operation": "executemany", "statement": "INSERT INTO t (name, token) VALUES (?, ?)", "parameters": [("a", 1), ("b", 2)]}},
        {"protocol": "sql", "request": {"operation": "execute", "statement": "SELECT 1", "parameters": {"password": "p"}},
         "response": {"description": [["name"], ["hashed_password"]], "rows": [["ann", Decimal("1.5")]]}},
        {"protocol": "mongo", "request": {"command": {"insert": "u", "documents": [{"n": 1, "secret": {"deep": (1, 2)}}]}}, "response": {"reply": {"ok": 1.0}}},
    ]  # fmt: skip
    original = [encode_value(call) for call in calls]
    doc = {"calls": json.loads(json.dumps(original))}
    redactor.document(doc)
    shown = json.dumps(redacted(doc))
    hidden = [encode_value(b)["base64"] for b in (b"\xff\x00x", b"\xff", b"\x01h")]
    for secret in [*hidden, '"1.5"', '"deep"', '"k"', '"p"', '"a", 1']:
        assert secret not in shown, secret
    assert json.dumps(doc).count("[SEALED:") == 9
    assert unsealed(doc, sealer)["calls"] == original
    assert [decode_value(call) for call in unsealed(doc, sealer)["calls"]] == calls


def test_redis_8_hash_field_commands_and_resp3_replies_hide_fields_named_like_secrets() -> None:
    """Redis 8's HSETEX/HGETEX/HGETDEL (no Redis 8 here: their cassette form), HRANDFIELD's RESP3
    pairs, and an XREAD RESP3 reply whose stream is named like a secret (a key, not a field)."""
    calls = [
        {"command": "HSETEX", "args": ["u:1", "EX", 60, "FIELDS", 2, "name", "ann", "api_token", "t-hsetex"], "reply": 1},
        {"command": "HGETEX", "args": ["u:1", "PERSIST", "FIELDS", 2, "api_token", "name"], "reply": ["t-hgetex", "ann"]},
        {"command": "HGETDEL", "args": ["u:1", "FIELDS", 1, "api_token"], "reply": ["t-hgetdel"]},
        {"command": "HRANDFIELD", "args": ["u:1", 2, "WITHVALUES"], "reply": [["api_token", "t-pair"], ["name", "ann"]]},
        {"command": "XREAD", "args": ["STREAMS", "tokens", 0],
         "reply": {"tokens": [("1-0", {"user": "ann", "access_token": "t-xread"})]}},
    ]  # fmt: skip
    doc = {
        "calls": [
            encode_value(
                {"protocol": "redis", "request": {"command": c["command"], "args": c["args"]}, "response": {"reply": c["reply"]}}
            )
            for c in calls
        ]
    }  # fmt: skip
    Redactor().document(doc)
    text = json.dumps(doc)
    assert not [
        token
        for token in ("t-hsetex", "t-hgetex", "t-hgetdel", "t-pair", "t-xread")
        if token in text
    ]
    replies = [decode_value(call["response"])["reply"] for call in doc["calls"]]
    assert replies[1][1] == "ann" and replies[3][1] == ["name", "ann"]
    assert replies[4]["tokens"][0][1]["user"] == "ann"  # the stream's name is no field


def test_a_secret_found_in_a_database_call_is_hidden_wherever_else_it_appears() -> None:
    """A Redis hash password, a SQL ``hashed_password`` column and a Mongo ``secret`` field, quoted again by
    another call's URL, body and statement: none stays in clear, and each opens back with the key."""
    sealer = Sealer(Key(b"k" * 32, "test"))
    calls = [
        {"protocol": "redis", "request": {"command": "HSET", "args": ["u:1", "password", "redis-pass-4711"]}, "response": {"reply": 1}},
        {"protocol": "sql", "request": {"operation": "execute", "statement": "SELECT name, hashed_password FROM u", "parameters": {}},
         "response": {"description": [["name"], ["hashed_password"]], "rows": [["ann", "$argon2id$sql-hash-0815"]]}},
        {"protocol": "mongo", "request": {"command": {"insert": "u", "documents": [{"secret": "mongo-secret-0042"}]}}, "response": {"reply": {"ok": 1.0}}},
        {"protocol": "http", "request": {"method": "POST", "url": "http://127.0.0.1:9/audit?q=redis-pass-4711",
         "headers": [["content-type", "text/plain"]], "body": {"encoding": "text", "text": "hash $argon2id$sql-hash-0815", "size": 28}},
         "response": None},
        {"protocol": "sql", "request": {"operation": "execute", "statement": "SELECT 'mongo-secret-0042'", "parameters": {}}},
    ]  # fmt: skip
    doc = {"calls": json.loads(json.dumps([encode_value(call) for call in calls]))}
    original = json.loads(json.dumps(doc))
    Redactor().sealing(sealer).document(doc)
    text = json.dumps(doc)
    for secret in ("redis-pass-4711", "$argon2id$sql-hash-0815", "mongo-secret-0042"):
        assert secret not in text, secret
    assert unsealed(doc, sealer) == original


def test_a_secret_is_found_percent_encoded_and_json_escaped_too() -> None:
    """A password with a space, a slash, a quote and an accent, taken out of a JSON login body by
    name, is also hidden where another call quotes it percent-encoded (a query string, a form body)
    or escaped in a JSON string, and opens back to exactly what was there with the key."""
    password = 'pa ss/wörd"&+1'
    login = json.dumps({"username": "ann", "password": password})
    calls = [
        {"protocol": "http", "request": {"method": "POST", "url": "http://127.0.0.1:9/login", "headers": [["content-type", "application/json"]],
         "body": {"encoding": "json", "json": json.loads(login), "size": len(login)}}, "response": None},
        {"protocol": "http", "request": {"method": "GET", "url": f"http://127.0.0.1:9/check?p={quote(password, safe='')}", "headers": [],
         "body": None}, "response": None},
        {"protocol": "http", "request": {"method": "POST", "url": "http://127.0.0.1:9/form", "headers": [["content-type", "application/x-www-form-urlencoded"]],
         "body": {"encoding": "text", "text": f"note=x&p2={quote_plus(password)}", "size": 40}}, "response": None},
        {"protocol": "sql", "request": {"operation": "execute", "statement": "INSERT INTO log (line) VALUES (%(line)s)",
         "parameters": {"line": "login " + json.dumps({"pw": password})}}},
        {"protocol": "sql", "request": {"operation": "execute", "statement": "INSERT INTO log (line) VALUES (%(line)s)",
         "parameters": {"line": "login " + json.dumps({"pw": password}, ensure_ascii=False)}}},
    ]  # fmt: skip
    doc = {"calls": json.loads(json.dumps([encode_value(call) for call in calls]))}
    original = json.loads(json.dumps(doc))
    sealer = Sealer(Key(b"k" * 32, "test"))
    Redactor().sealing(sealer).document(doc)
    text = json.dumps(doc, ensure_ascii=False)
    for spelling in (
        password,
        quote(password, safe=""),
        quote_plus(password),
        json.dumps(password)[1:-1],
    ):
        assert spelling not in text, spelling
    assert "pa ss" not in text and "pa%20ss" not in text and "pa+ss" not in text
    assert unsealed(doc, sealer) == original


def test_no_secret_reaches_the_console_line_the_cli_or_the_dashboard(
    serve: Callable[..., Any],
    deps: Deps,
    secrets: Secrets,
    cassette_dir: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """What people read: the record line, ``timetracer show``, ``list``, ``search`` (for a secret and for a
    sealed value's key id) and the dashboard's table and cassette page."""
    with caplog.at_level(logging.INFO, logger="timetracer"):
        path = _record(serve, deps, secrets, cassette_dir, "none")
    timetracer = Path(sys.executable).with_name("timetracer")
    outputs = ["\n".join(r.getMessage() for r in caplog.records)]
    where = ["--dir", str(cassette_dir)]

    def run(*command: str) -> str:
        done = subprocess.run(
            [str(timetracer), *command], capture_output=True, text=True, timeout=60
        )
        return done.stdout + done.stderr

    cassette_id = path.stem.rsplit("__", 1)[1]
    outputs += [run("show", str(path)), run("list", *where), run("search", "SEALED", *where)]
    assert cassette_id in outputs[3], "search finds the sealed values themselves"
    for value in secrets.values():  # the search term is echoed back; no cassette matches it
        assert cassette_id not in run("search", value, *where)
    dashboard = serve(create_dashboard(str(cassette_dir))).url
    key = path.relative_to(cassette_dir).as_posix()
    outputs += [
        httpx.get(f"{dashboard}{page}", timeout=30).text for page in ("/", f"/cassettes/{key}")
    ]
    assert "/account" in outputs[-1]
    for output in outputs:
        for value in [*secrets.values(), "upstream-secret"]:
            assert value not in output, f"{value} shown in clear"
