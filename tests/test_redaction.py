"""Redaction: secrets never reach a cassette, and the app and the upstream still see them.

Every secret in these tests contains ``s3cr3t``, so a plain search of the cassette
file (span attributes, events and all) proves none was written.
"""

from __future__ import annotations

import base64
import contextlib
import copy
import json
import secrets
import socket
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
import requests
from _replay import new_reports
from _services import closed_port
from conftest import Upstream, load_cassettes
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from timetracer_otel.config import TraceConfig
from timetracer_otel.integrations.starlette import auto_setup
from timetracer_otel.redaction import REDACTED
from timetracer_otel.replayers import ReplayReport
from timetracer_otel.sealing import redacted

T = TypeVar("T")

MARK = "s3cr3t"
SECRET_HEADERS = ("Authorization", "Cookie", "Set-Cookie", "Proxy-Authorization", "X-Api-Key")
# Keys that contain a secret name but are not one: they keep their values.
LOOKALIKES = {
    "page": 3,
    "message": "hello",
    "shipping": "express",
    "keyboard": "qwerty",
    "passage": 2,
}
LOGIN_BODY = {
    "user": "ann",
    "password": f"in-password-{MARK}",
    "profile": {
        "Client-Secret": f"in-client-secret-{MARK}",
        "settings": [{"API_KEY": f"in-api-key-{MARK}", "page": 1}],
    },
    "sessions": [{"access_token": f"in-at-{MARK}"}, {"Refresh-Token": f"in-rt-{MARK}"}],
    "auth": {
        "Authorization": f"in-authz-{MARK}",
        "passwd": f"in-passwd-{MARK}",
        "apikey": f"in-apikey-{MARK}",
    },
    **LOOKALIKES,
}
VAULT_BODY = {
    "token": f"up-token-{MARK}",
    "secret": {"nested": f"up-secret-{MARK}"},
    "grants": [{"refresh_token": f"up-rt-{MARK}", "shipping": "express"}],
    **LOOKALIKES,
}


def _headers(prefix: str) -> dict[str, str]:
    return {name: f"{prefix}-{name.lower()}-{MARK}" for name in SECRET_HEADERS}


def _values(pairs: list, name: str) -> list[str]:
    return [value for key, value in pairs if key.lower() == name.lower()]


def _only_cassette(directory: Path) -> tuple[dict[str, Any], str]:
    """The single cassette written, as a document read without the key (sealed values as [REDACTED]),
    and as the file's text."""
    (doc,) = load_cassettes(directory)
    (path,) = directory.rglob("*.json")
    return redacted(doc), path.read_text("utf-8")


def _assert_no_secret(text: str) -> None:
    at = text.find(MARK)
    assert at < 0, f"a secret reached the cassette: ...{text[max(at - 200, 0) : at + 40]}..."


# --------------------------------------------------------------------------- the login exchange
def _vault_app(log: list[dict[str, Any]]) -> Starlette:
    """The upstream: logs what it received and answers with secrets in headers and body."""

    async def vault(request: Request) -> Response:
        log.append(
            {
                "headers": dict(request.headers),
                "query": request.url.query,
                "json": await request.json(),
            }
        )
        response = JSONResponse(VAULT_BODY)
        for name, value in _headers("up").items():
            response.headers.append(name, value)
        return response

    return Starlette(routes=[Route("/vault", vault, methods=["POST"])])


def _login_app(vault_url: str) -> Starlette:
    """A proxy: forwards the client's headers, body and ``api_key`` to the vault, returns what it got."""

    async def login(request: Request) -> Response:
        inbound = await request.json()
        forwarded = {name: request.headers[name] for name in SECRET_HEADERS}
        async with httpx.AsyncClient() as client:
            answer = await client.post(
                f"{vault_url}/vault",
                params={"access_token": request.query_params["api_key"], "page": "1"},
                headers=forwarded,
                json={"forwarded": inbound, "secret": f"out-secret-{MARK}", **LOOKALIKES},
            )
        response = JSONResponse({"received": inbound, "upstream": answer.json()})
        for name in SECRET_HEADERS:
            response.headers.append(name, answer.headers[name])
        return response

    return Starlette(routes=[Route("/login", login, methods=["POST"])])


class LoginExchange:
    """One recorded request through the proxy app, and what each party saw."""

    def __init__(
        self, response: httpx.Response, vault_log: list[dict[str, Any]], cassette_dir: Path
    ) -> None:
        self.response = response
        self.vault_received = vault_log[-1]
        self.doc, self.text = _only_cassette(cassette_dir)

    @property
    def call(self) -> dict[str, Any]:
        (call,) = self.doc["calls"]
        return call


@pytest.fixture
def login(
    serve: Callable[..., Any], cassette_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> LoginExchange:
    # The server span also gets the secret headers as attributes, which must be redacted too.
    monkeypatch.setenv(
        "OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SERVER_REQUEST",
        ",".join((*SECRET_HEADERS, "X-Note")),
    )
    monkeypatch.setenv(
        "OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SERVER_RESPONSE", ",".join(SECRET_HEADERS)
    )
    vault_log: list[dict[str, Any]] = []
    vault = serve(_vault_app(vault_log))
    app = _login_app(vault.url)
    auto_setup(
        app, config=TraceConfig(mode="record", cassette_dir=str(cassette_dir)), plugins=["httpx"]
    )
    response = httpx.post(
        f"{serve(app).url}/login",
        params={"api_key": f"in-query-{MARK}", "page": "3"},
        headers={**_headers("in"), "X-Note": "visible"},
        json=LOGIN_BODY,
    )
    assert response.status_code == 200, response.text
    return LoginExchange(response, vault_log, cassette_dir)


def test_secret_headers_are_redacted_in_both_directions(login: LoginExchange) -> None:
    messages = {
        "inbound request": login.doc["request"],
        "app response": login.doc["response"],
        "outgoing request": login.call["request"],
        "upstream response": login.call["response"],
    }
    for where, message in messages.items():
        for name in SECRET_HEADERS:
            assert _values(message["headers"], name) == [REDACTED], f"{name} in the {where}"
    assert _values(login.doc["request"]["headers"], "X-Note") == ["visible"]


def test_secret_header_span_attributes_are_redacted(login: LoginExchange) -> None:
    (server,) = [s for s in login.doc["spans"] if s["kind"] == "SERVER"]
    attributes = server["attributes"]
    assert attributes["http.request.header.x_note"] == ["visible"]  # header capture is on
    for name in SECRET_HEADERS:
        key = name.lower().replace("-", "_")
        assert attributes[f"http.request.header.{key}"] == [REDACTED]
        assert attributes[f"http.response.header.{key}"] == [REDACTED]


def test_secret_json_fields_are_redacted_at_any_depth_by_pattern(login: LoginExchange) -> None:
    request_json = login.doc["request"]["body"]["json"]
    assert request_json == {
        "user": "ann",
        "password": REDACTED,
        "profile": {"Client-Secret": REDACTED, "settings": [{"API_KEY": REDACTED, "page": 1}]},
        "sessions": [{"access_token": REDACTED}, {"Refresh-Token": REDACTED}],
        "auth": {"Authorization": REDACTED, "passwd": REDACTED, "apikey": REDACTED},
        **LOOKALIKES,
    }
    assert login.doc["response"]["body"]["json"] == {
        "received": request_json,
        "upstream": {
            "token": REDACTED,
            "secret": REDACTED,
            "grants": [{"refresh_token": REDACTED, "shipping": "express"}],
            **LOOKALIKES,
        },
    }
    assert login.call["request"]["body"]["json"] == {
        "forwarded": request_json,
        "secret": REDACTED,
        **LOOKALIKES,
    }
    assert (
        login.call["response"]["body"]["json"] == login.doc["response"]["body"]["json"]["upstream"]
    )


def test_secret_query_parameters_are_redacted_in_request_call_and_span_urls(
    login: LoginExchange,
) -> None:
    assert parse_qs(login.doc["request"]["query"]) == {"api_key": [REDACTED], "page": ["3"]}
    assert parse_qs(urlsplit(login.call["request"]["url"]).query) == {
        "access_token": [REDACTED],
        "page": ["1"],
    }
    attributes = {span["kind"]: span["attributes"] for span in login.doc["spans"]}
    server, client = attributes["SERVER"], attributes["CLIENT"]
    assert parse_qs(urlsplit(server["http.url"]).query) == {"api_key": [REDACTED], "page": ["3"]}
    assert parse_qs(urlsplit(client["http.url"]).query) == {
        "access_token": [REDACTED],
        "page": ["1"],
    }


def test_no_secret_appears_anywhere_in_the_cassette_file(login: LoginExchange) -> None:
    _assert_no_secret(login.text)


def test_redaction_never_alters_what_the_app_and_the_upstream_see(login: LoginExchange) -> None:
    # The upstream got the client's real headers, body and query, forwarded by the app.
    assert {
        name: login.vault_received["headers"][name.lower()] for name in SECRET_HEADERS
    } == _headers("in")
    assert login.vault_received["json"]["forwarded"] == LOGIN_BODY
    assert login.vault_received["json"]["secret"] == f"out-secret-{MARK}"
    assert parse_qs(login.vault_received["query"]) == {
        "access_token": [f"in-query-{MARK}"],
        "page": ["1"],
    }
    # The client got the real upstream headers and bodies back through the app.
    assert login.response.json() == {"received": LOGIN_BODY, "upstream": VAULT_BODY}
    assert {name: login.response.headers[name] for name in SECRET_HEADERS} == _headers("up")


# --------------------------------------------------------------------------- forms and truncated bodies
async def _form(request: Request) -> Response:
    """Forward the form's ``password`` to the upstream as ``client_secret``, echo what was seen."""
    form = await request.form()
    async with httpx.AsyncClient() as client:
        answer = await client.post(
            f"{request.app.state.upstream}/json",
            params={"api_key": form["password"], "page": "2"},
            data={"client_secret": form["password"], "name": form["user"]},
        )
    return JSONResponse({"password": form["password"], "token": answer.json()["token"]})


async def _size(request: Request) -> Response:
    return JSONResponse({"size": len(await request.body())})


def _record(
    serve: Callable[..., Any], config: TraceConfig, upstream: Upstream | None = None
) -> str:
    """Serve the ``/form`` and ``/size`` app recorded per ``config``; its base URL."""
    app = Starlette(
        routes=[Route("/form", _form, methods=["POST"]), Route("/size", _size, methods=["POST"])]
    )
    app.state.upstream = upstream.url if upstream else None
    auto_setup(app, config=config, plugins=["httpx"])
    return serve(app).url


@pytest.mark.parametrize("encoding", ["urlencoded", "multipart"])
def test_form_bodies_and_query_strings_are_redacted(
    serve: Callable[..., Any],
    upstream: Upstream,
    record_config: TraceConfig,
    cassette_dir: Path,
    encoding: str,
) -> None:
    password = f"form-{encoding}-{MARK}"
    fields = {"user": "ann", "password": password}
    files = {"avatar": ("a.txt", b"picture")} if encoding == "multipart" else None
    url = f"{_record(serve, record_config, upstream)}/form"
    response = httpx.post(url, params={"token": password, "page": "1"}, data=fields, files=files)

    assert response.json() == {"password": password, "token": "upstream-secret"}
    (received,) = [r for r in upstream.requests if password in r["query"]]
    assert parse_qs(received["body"].decode()) == {"client_secret": [password], "name": ["ann"]}
    doc, text = _only_cassette(cassette_dir)
    _assert_no_secret(text)
    assert "upstream-secret" not in text
    assert parse_qs(doc["request"]["query"]) == {"token": [REDACTED], "page": ["1"]}
    request_text = doc["request"]["body"]["text"]
    if encoding == "urlencoded":
        assert parse_qs(request_text) == {"user": ["ann"], "password": [REDACTED]}
    else:
        assert f'name="password"\r\n\r\n{REDACTED}\r\n' in request_text
        assert 'name="user"\r\n\r\nann\r\n' in request_text and "picture" in request_text
    (call,) = doc["calls"]
    assert parse_qs(call["request"]["body"]["text"]) == {
        "client_secret": [REDACTED],
        "name": ["ann"],
    }
    assert parse_qs(urlsplit(call["request"]["url"]).query) == {
        "api_key": [REDACTED],
        "page": ["2"],
    }


def test_a_truncated_json_body_is_redacted_even_where_it_is_cut(
    serve: Callable[..., Any], cassette_dir: Path
) -> None:
    head = json.dumps(
        {
            "message": 'a "token": in a string',
            "user": {"password": f"t-pw-{MARK}"},
            "secret": {"k": [f"t-nested-{MARK}"]},
            "page": 2,
        }
    )
    body = head[:-1] + f', "token": "t-token-{MARK}-{"x" * 100}"}}'
    limit = body.index(f"t-token-{MARK}") + 4  # the cut falls inside the last secret
    config = TraceConfig(mode="record", cassette_dir=str(cassette_dir), max_body_bytes=limit)
    response = httpx.post(
        f"{_record(serve, config)}/size", content=body, headers={"Content-Type": "application/json"}
    )

    assert response.json() == {"size": len(body)}
    doc, text = _only_cassette(cassette_dir)
    _assert_no_secret(text)
    recorded = doc["request"]["body"]
    assert recorded["truncated"] is True and recorded["size"] == len(body)
    assert recorded["text"] == (
        f'{{"message": "a \\"token\\": in a string", "user": {{"password": "{REDACTED}"}}, '
        f'"secret": "{REDACTED}", "page": 2, "token": "{REDACTED}"'
    )


def test_error_messages_quoting_a_url_are_redacted(
    serve: Callable[..., Any], record_config: TraceConfig, cassette_dir: Path
) -> None:
    """A connection error from requests quotes the URL, query and all, in the call and the span event."""
    with socket.socket() as refusing:  # bound, never listening: connections are refused
        refusing.bind(("127.0.0.1", 0))
        target = f"http://127.0.0.1:{refusing.getsockname()[1]}/pay?api_key=err-{MARK}&page=1"

        def pay(request: Request) -> Response:
            try:
                requests.get(target, timeout=5)
            except requests.ConnectionError as exc:
                return JSONResponse({"error": type(exc).__name__}, status_code=502)
            return JSONResponse({"error": None})

        app = Starlette(routes=[Route("/pay", pay)])
        auto_setup(app, config=record_config, plugins=["requests"])
        response = httpx.get(f"{serve(app).url}/pay")

    assert response.json() == {"error": "ConnectionError"}
    doc, text = _only_cassette(cassette_dir)
    _assert_no_secret(text)
    (call,) = doc["calls"]
    assert f"api_key={REDACTED}&page=1" in call["error"]["message"]
    events = [e for s in doc["spans"] for e in s["events"] if e["name"] == "exception"]
    assert events and all(
        f"api_key={REDACTED}" in e["attributes"]["exception.message"] for e in events
    )


# --------------------------------------------------------------------------- user settings
def _mask_email_in_place(doc: dict[str, Any], seen: list[dict[str, Any]]) -> dict[str, Any] | None:
    seen.append(copy.deepcopy(doc))
    doc["request"]["body"]["json"]["email"] = "***"
    return None


def _mask_email_in_a_copy(doc: dict[str, Any], seen: list[dict[str, Any]]) -> dict[str, Any] | None:
    replacement = copy.deepcopy(doc)
    _mask_email_in_place(replacement, seen)
    return replacement


@pytest.mark.parametrize("hook", [_mask_email_in_place, _mask_email_in_a_copy])
def test_user_headers_fields_and_hook_add_to_the_built_in_redaction(
    serve: Callable[..., Any], cassette_dir: Path, hook: Callable[..., dict[str, Any] | None]
) -> None:
    seen: list[dict[str, Any]] = []
    config = TraceConfig(
        mode="record",
        cassette_dir=str(cassette_dir),
        redact_headers=["X-Session"],
        redact_fields=["ssn"],
        redact_hook=lambda doc: hook(doc, seen),
    )
    body = {
        "email": "ann@example.com",
        "SSN": f"ssn-{MARK}",
        "password": f"pw-{MARK}",
        "message": "hi",
    }
    headers = {"X-Session": f"xs-{MARK}", "Cookie": f"c-{MARK}"}
    response = httpx.post(f"{_record(serve, config)}/size", json=body, headers=headers)

    assert response.status_code == 200
    doc, text = _only_cassette(cassette_dir)
    _assert_no_secret(text)
    assert "ann@example.com" not in text
    assert doc["request"]["body"]["json"] == {
        "email": "***",
        "SSN": REDACTED,
        "password": REDACTED,
        "message": "hi",
    }
    assert (
        _values(doc["request"]["headers"], "x-session")
        == _values(doc["request"]["headers"], "cookie")
        == [REDACTED]
    )
    (before_hook,) = (
        seen  # the hook runs once, after the built-in redaction (which sealed with the test's key)
    )
    assert redacted(before_hook)["request"]["body"]["json"]["password"] == REDACTED
    assert before_hook["request"]["body"]["json"]["email"] == "ann@example.com"


def test_redact_false_keeps_every_value(serve: Callable[..., Any], cassette_dir: Path) -> None:
    config = TraceConfig(mode="record", cassette_dir=str(cassette_dir), redact=False)
    body = {"password": f"pw-{MARK}", "nested": [{"token": f"tok-{MARK}"}]}
    url = f"{_record(serve, config)}/size?api_key=q-{MARK}"
    httpx.post(url, json=body, headers={"Authorization": f"Bearer {MARK}"})

    doc, _ = _only_cassette(cassette_dir)
    assert doc["request"]["body"]["json"] == body
    assert doc["request"]["query"] == f"api_key=q-{MARK}"
    assert _values(doc["request"]["headers"], "authorization") == [f"Bearer {MARK}"]


def test_deeply_nested_json_is_redacted_without_recursion_limits():
    from timetracer_otel.redaction import REDACTED, Redactor

    deep: dict = {"password": "p", "keep": 1}
    for _ in range(5000):
        deep = {"child": deep, "token": "t"}
    redacted = Redactor().json_value(deep)
    node = redacted
    for _ in range(5000):
        assert node["token"] == REDACTED
        node = node["child"]
    assert node == {"password": REDACTED, "keep": 1}
    assert deep["token"] == "t"  # the input is left as it was


def test_the_value_of_a_name_value_pair_whose_name_is_a_secrets_is_redacted() -> None:
    """A settings entry or a variable (Prefect's ``openai_api_key``) keeps its secret under
    ``value``; its ``name`` (or ``key``) says what it is. A 422 about a secret field echoes it
    under ``input``."""
    from timetracer_otel.redaction import Redactor

    redacted = Redactor().json_value(
        [
            {"name": "openai_api_key", "value": "key-of-the-flows", "tags": []},
            {"key": "DB_PASSWORD", "value": "hunter2-hunter2"},
            {"name": "colour", "value": "teal"},
            {"loc": ["body", "new_password"], "input": "short", "msg": "too short"},
            {"loc": ["body", "email"], "input": "ada@example.com"},
        ]
    )
    assert redacted == [
        {"name": "openai_api_key", "value": REDACTED, "tags": []},
        {"key": "DB_PASSWORD", "value": REDACTED},
        {"name": "colour", "value": "teal"},
        {"loc": ["body", "new_password"], "input": REDACTED, "msg": "too short"},
        {"loc": ["body", "email"], "input": "ada@example.com"},
    ]


@pytest.mark.parametrize("binary", [False, True], ids=["text form", "form with a binary part"])
def test_a_password_sent_in_a_multipart_part_is_hidden_where_a_call_quotes_it(binary: bool) -> None:
    """The value taken out of a part is its content, without the line break that ends the part:
    that is what an SQL parameter or another call's URL quotes."""
    import base64

    from timetracer_otel.cassette.values import encode_value
    from timetracer_otel.redaction import Redactor

    password = "p4ss-multipart-77"
    body = (
        b"--b0undary\r\n"
        b'Content-Disposition: form-data; name="password"\r\n\r\n'
        + password.encode()
        + b"\r\n--b0undary\r\n"
        + b'Content-Disposition: form-data; name="avatar"; filename="a.png"\r\n\r\n'
        + (b"\x89PNG\xff\xfe" if binary else b"png")
        + b"\r\n--b0undary--\r\n"
    )
    encoded = (
        {"encoding": "base64", "base64": base64.b64encode(body).decode()}
        if binary
        else {"encoding": "text", "text": body.decode()}
    )
    doc = {
        "request": {
            "method": "POST",
            "path": "/signup",
            "query": "",
            "headers": [["Content-Type", "multipart/form-data; boundary=b0undary"]],
            "body": {"size": len(body), **encoded},
        },
        "calls": [
            {
                "protocol": "sql",
                "request": encode_value(
                    {
                        "operation": "execute",
                        "statement": "INSERT INTO audit VALUES (?)",
                        "parameters": (f"signup with {password}",),
                    }
                ),
                "response": None,
                "error": None,
            },
            {
                "protocol": "http",
                "request": {
                    "method": "GET",
                    "url": f"http://upstream/check?p={password}",
                    "headers": [],
                    "body": None,
                },
                "response": None,
                "error": None,
            },
        ],
    }
    Redactor().document(doc)
    assert password not in json.dumps(doc)
    assert doc["calls"][0]["request"]["parameters"]["items"] == [f"signup with {REDACTED}"]
    assert doc["calls"][1]["request"]["url"] == f"http://upstream/check?p={REDACTED}"


def test_an_error_reporters_auth_header_key_is_hidden_wherever_the_call_repeats_it(
    serve: Callable[..., Any], upstream: Upstream, cassette_dir: Path
) -> None:
    """sentry-sdk sends its DSN's key in ``X-Sentry-Auth: Sentry sentry_key=<key>, ...``, and
    again in the envelope it posts (the DSN) and in its ``baggage``: hidden in all three."""
    key = "0123456789abcdef0123456789abcdef"
    dsn = f"http://{key}@127.0.0.1:9/1"

    async def report(request: Request) -> JSONResponse:
        async with httpx.AsyncClient() as client:
            sent = await client.post(
                f"{upstream.url}/echo",
                json={"dsn": dsn, "event": "boom"},
                headers={
                    "X-Sentry-Auth": f"Sentry sentry_key={key}, sentry_version=7, sentry_client=sentry.python/2.19.0",
                    "baggage": f"sentry-trace_id=abc,sentry-public_key={key},sentry-environment=prod",
                },
            )
        return JSONResponse({"status": sent.status_code})

    app = Starlette(routes=[Route("/report", report)])
    auto_setup(app, TraceConfig(mode="record", cassette_dir=str(cassette_dir)), plugins=["httpx"])
    assert httpx.get(f"{serve(app).url}/report").json() == {"status": 200}
    assert upstream.requests[-1]["headers"]["X-Sentry-Auth"].endswith("sentry.python/2.19.0")
    (document,) = load_cassettes(cassette_dir)
    assert key not in json.dumps(document)
    (call,) = redacted(document)["calls"]
    headers = dict(call["request"]["headers"])
    assert headers["X-Sentry-Auth"] == REDACTED
    assert (
        headers["baggage"]
        == f"sentry-trace_id=abc,sentry-public_key={REDACTED},sentry-environment=prod"
    )


def test_a_flag_or_a_null_under_a_secret_name_stays_as_it_is(
    serve: Callable[..., Any], cassette_dir: Path
) -> None:
    """A ``password_needs_reset`` column (PostgreSQL boolean) and JSON flags, nulls and empty
    lists and objects under secret names hold no secret, in a body or in JSON text a column
    holds (ZenML's pipeline configuration, ``"secrets": []``): they stay as they are in the
    cassette, so a replay without the key gives the app the recorded flag or list, not a truthy
    ``[REDACTED]``; a password beside them is still hidden, and so is a token count only under a
    name no count pattern exempts."""
    import psycopg
    from _services import POSTGRES_ADMIN

    def account(request: Request) -> JSONResponse:
        with psycopg.connect(POSTGRES_ADMIN) as connection:
            row = connection.execute(
                "SELECT 'hunter2-hunter2' AS password, true AS password_needs_reset, NULL AS reset_token,"
                f" '{CONFIG}' AS config"
            ).fetchone()
        return JSONResponse(
            {
                "password": row[0],
                "password_needs_reset": row[1],
                "reset_token": row[2],
                "has_api_key": False,
                "llm_token_count_total": 120,
                "secrets": json.loads(row[3])["secrets"],
                "api_keys": {},
            }
        )

    app = Starlette(routes=[Route("/account", account)])
    auto_setup(
        app, config=TraceConfig(mode="record", cassette_dir=str(cassette_dir)), plugins=["psycopg"]
    )
    response = httpx.get(serve(app).url + "/account")
    assert response.json()["password_needs_reset"] is True
    (doc,) = [redacted(each) for each in load_cassettes(cassette_dir)]  # as read without the key
    assert doc["response"]["body"]["json"] == {
        "password": REDACTED,
        "password_needs_reset": True,
        "reset_token": None,
        "has_api_key": False,
        "llm_token_count_total": 120,
        "secrets": [],
        "api_keys": {},
    }
    (query,) = [call for call in doc["calls"] if "SELECT" in str(call["request"])]
    shown = CONFIG.replace("sk-0123456789", REDACTED)
    assert query["response"]["rows"] == [[REDACTED, True, None, shown]]


# a pipeline's configuration kept as JSON text
CONFIG = '{"name": "train", "secrets": [], "secret_refs": { }, "password_set": false, "api_key": "sk-0123456789"}'


def _replayed(server: Any, sent: Callable[[str], T]) -> tuple[T, list[ReplayReport]]:
    """What ``sent(url)`` got from ``server`` (replaying), and the replay reports of its
    requests: taken once the server has stopped, when every report has been made."""
    with new_reports() as reports:
        got = sent(server.url)
        server.stop()
    return got, reports


def _settings_app(
    port: int,
    database: str,
    value_of: Callable[[Request], Awaitable[tuple[str, str]]],
    config: TraceConfig,
) -> Starlette:
    """A service that saves a setting (``value_of`` the request: its name and value) in MariaDB's
    ``settings`` table with PyMySQL, which inlines the value into the statement, quotes escaped."""
    import pymysql

    async def save(request: Request) -> JSONResponse:
        name, value = await value_of(request)
        with pymysql.connect(
            host="127.0.0.1", port=port, user="root", database=database
        ) as connection:
            connection.cursor().execute(
                "INSERT INTO settings (name, value) VALUES (%s, %s)", (name, value)
            )
            connection.commit()
        return JSONResponse({"saved": len(value)})

    app = Starlette(routes=[Route("/settings", save, methods=["POST"])])
    auto_setup(app, config=config, plugins=["pymysql"])
    return app


@contextlib.contextmanager
def _settings_database() -> Iterator[tuple[int, str, Callable[[], list[str]]]]:
    """A fresh MariaDB database with a ``settings`` table: its port, its name, and its values."""
    import pymysql
    from _services import mariadb_database

    with mariadb_database() as where:
        host_port, database = where.split("/")
        port = int(host_port.split(":")[1])

        def values() -> list[str]:
            with pymysql.connect(
                host="127.0.0.1", port=port, user="root", database=database
            ) as connection:
                cursor = connection.cursor()
                cursor.execute("SELECT value FROM settings")
                return [row[0] for row in cursor.fetchall()]

        with pymysql.connect(
            host="127.0.0.1", port=port, user="root", database=database
        ) as connection:
            connection.cursor().execute("CREATE TABLE settings (name TEXT, value TEXT)")
        yield port, database, values


def test_a_form_field_holding_json_with_a_secret_member_is_hidden_wherever_it_goes(
    serve: Callable[..., Any], cassette_dir: Path
) -> None:
    """A form field no name calls secret holding a config as JSON text with an ``api_key``
    (fastapi-admin's config editor), written to MariaDB with PyMySQL, which inlines it into the
    statement with its quotes escaped: the field is hidden in the form, and the key wherever
    the statement and its span repeat it; the app and the database get the real values."""
    config = '{"host": "smtp.local", "api_key": "cfg-apikey-77AA-x"}'

    async def from_form(request: Request) -> tuple[str, str]:
        form = await request.form()
        return str(form["name"]), str(form["value"])

    with _settings_database() as (port, database, values):
        app = _settings_app(
            port, database, from_form, TraceConfig(mode="record", cassette_dir=str(cassette_dir))
        )
        response = httpx.post(serve(app).url + "/settings", data={"name": "mail", "value": config})
        assert response.json() == {"saved": len(config)}
        assert values() == [config]
    (doc,) = load_cassettes(cassette_dir)
    written = json.dumps(doc)
    assert "cfg-apikey-77AA-x" not in written
    assert "smtp.local" not in redacted(doc)["request"]["body"]["text"]  # the field, hidden whole
    assert any("INSERT INTO settings" in json.dumps(call) for call in doc["calls"])


def test_json_text_the_app_builds_with_a_secret_member_is_hidden_in_the_inlined_statement(
    serve: Callable[..., Any], cassette_dir: Path
) -> None:
    """The app builds the JSON itself (a provider's ``key`` in the request, no secret's name,
    kept as ``api_key``) and PyMySQL inlines it: the key is found as the member of the literal
    and hidden there, in the span and in the request's body; replayed with the key and no
    database, the statement still matches."""
    key = "prov-key-5Qx9-zz81"

    async def built(request: Request) -> tuple[str, str]:
        body = await request.json()
        return body["provider"], json.dumps({"provider": body["provider"], "api_key": body["key"]})

    sent = {"provider": "mailer", "key": key}
    with _settings_database() as (port, database, values):
        record = _settings_app(
            port, database, built, TraceConfig(mode="record", cassette_dir=str(cassette_dir))
        )
        recorded = httpx.post(serve(record).url + "/settings", json=sent)
        assert values() == [json.dumps({"provider": "mailer", "api_key": key})]
    (doc,) = load_cassettes(cassette_dir)
    assert key not in json.dumps(doc)
    (insert,) = [call for call in doc["calls"] if "INSERT INTO settings" in json.dumps(call)]
    assert "mailer" in json.dumps(insert)  # the rest of the literal stays readable

    replay = _settings_app(
        closed_port(), database, built, TraceConfig(mode="replay", cassette_path=str(cassette_dir))
    )
    replayed, reports = _replayed(
        serve(replay), lambda url: httpx.post(url + "/settings", json=sent)
    )
    assert replayed.json() == recorded.json()
    assert [(r.unmatched, r.unused) for r in reports] == [([], [])]


def test_a_drawn_key_an_app_wraps_in_base64_is_hidden_inside_it(
    serve: Callable[..., Any], cassette_dir: Path
) -> None:
    """ZenML's API keys are ``ZENKEY_`` and the base64 of a JSON object holding a key drawn with
    ``secrets``, under a member no secret's name (``key``): the drawn key is hidden inside the
    base64, in both alphabets, the rest of it kept; replayed with the key, the app answers the
    same keys."""

    def create(request: Request) -> JSONResponse:
        drawn = secrets.token_hex(32)
        wrapped = json.dumps({"id": "k1", "key": drawn}).encode()
        return JSONResponse(
            {
                "key": "APPKEY_" + base64.b64encode(wrapped).decode(),
                "url_safe": base64.urlsafe_b64encode(b"x" + wrapped).decode(),
            }
        )

    def app(config: TraceConfig) -> Starlette:
        built = Starlette(routes=[Route("/api_keys", create, methods=["POST"])])
        auto_setup(built, config=config, plugins=[])
        return built

    recorded = httpx.post(
        serve(app(TraceConfig(mode="record", cassette_dir=str(cassette_dir)))).url + "/api_keys"
    )
    wrapped = base64.b64decode(recorded.json()["key"].removeprefix("APPKEY_"))
    drawn = json.loads(wrapped)["key"]
    (doc,) = load_cassettes(cassette_dir)
    written = json.dumps(doc)
    for shown in (recorded.json()["key"], recorded.json()["url_safe"], drawn):
        assert shown[12:-12] not in written
    assert "APPKEY_eyJpZCI6ICJrMSIsICJrZXkiOiAi" in written  # {"id": "k1", "key": " stays

    replay = serve(app(TraceConfig(mode="replay", cassette_path=str(cassette_dir))))
    replayed, reports = _replayed(replay, lambda url: httpx.post(url + "/api_keys"))
    assert replayed.json() == recorded.json()
    assert [r.ok for r in reports] == [True]


def test_a_secret_inside_a_compressed_download_is_hidden_with_the_whole_body(
    serve: Callable[..., Any], cassette_dir: Path
) -> None:
    """Dagster's debug download is a gzip file of the run's configuration, whose ``api_key`` the
    request sent: the key is hidden in the request by its name, and the download that repeats it
    compressed is hidden whole; replayed with the key, the app's bytes come back exactly, and a
    download holding no secret stays as it is."""
    import gzip

    async def export(request: Request) -> Response:
        config = await request.json()
        data = gzip.compress(json.dumps({"config": config}).encode(), mtime=0)
        return Response(data, media_type="application/gzip")

    def app(config: TraceConfig) -> Starlette:
        built = Starlette(routes=[Route("/export", export, methods=["POST"])])
        auto_setup(built, config=config, plugins=[])
        return built

    sent = [{"api_key": "ak_live_9f8e7d6c5b4a"}, {"region": "eu-west-quiet"}]
    url = serve(app(TraceConfig(mode="record", cassette_dir=str(cassette_dir)))).url
    recorded = [httpx.post(url + "/export", json=body) for body in sent]
    assert json.loads(gzip.decompress(recorded[0].content)) == {"config": sent[0]}
    with_key, without = sorted(
        load_cassettes(cassette_dir), key=lambda doc: "api_key" not in json.dumps(doc)
    )
    assert with_key["response"]["body"]["encoding"] == "segments"
    assert "ak_live_9f8e7d6c5b4a" not in json.dumps(with_key)
    plain = base64.b64decode(without["response"]["body"]["base64"])
    assert json.loads(gzip.decompress(plain)) == {"config": sent[1]}

    replay = serve(app(TraceConfig(mode="replay", cassette_path=str(cassette_dir))))
    replayed, reports = _replayed(
        replay, lambda url: [httpx.post(url + "/export", json=body) for body in sent]
    )
    assert [r.content for r in replayed] == [r.content for r in recorded]
    assert [r.ok for r in reports] == [True, True]


def test_json_text_sent_as_a_string_member_has_its_secret_members_hidden(
    serve: Callable[..., Any], cassette_dir: Path
) -> None:
    """Airflow takes a connection's ``extra`` as a string of JSON text, and writes the request's
    body into an audit row as JSON text again: the token in ``extra`` is hidden in the request,
    in the row's parameter and in a list of such strings, the rest of the text kept; the app and
    the database get the real values, and the replay with the key answers as recorded."""
    import psycopg
    from _services import postgres_schema

    token = "tok_live_4Fq9zZ81xx"
    extra = json.dumps({"host": "smtp.local", "api_token": token})
    sent = {"conn_id": "mail", "extra": extra, "extras": [extra]}

    with postgres_schema() as url:
        plain = url.replace("postgresql+psycopg://", "postgresql://")
        with psycopg.connect(plain, autocommit=True) as connection:
            connection.execute("CREATE TABLE log (event TEXT, extra TEXT)")

        async def create(request: Request) -> JSONResponse:
            body = await request.json()
            with psycopg.connect(plain, autocommit=True) as connection:
                connection.execute(
                    "INSERT INTO log (event, extra) VALUES (%s, %s)", ("create", json.dumps(body))
                )
            return JSONResponse(
                {"conn_id": body["conn_id"], "host": json.loads(body["extra"])["host"]}
            )

        def app(config: TraceConfig) -> Starlette:
            built = Starlette(routes=[Route("/connections", create, methods=["POST"])])
            auto_setup(built, config=config, plugins=["psycopg"])
            return built

        recorded = httpx.post(
            serve(app(TraceConfig(mode="record", cassette_dir=str(cassette_dir)))).url
            + "/connections",
            json=sent,
        )
        with psycopg.connect(plain) as connection:
            assert connection.execute("SELECT extra FROM log").fetchone() == (json.dumps(sent),)
    (doc,) = load_cassettes(cassette_dir)
    assert token not in json.dumps(doc)
    shown = redacted(doc)["request"]["body"]["json"]
    assert json.loads(shown["extra"]) == {"host": "smtp.local", "api_token": REDACTED}
    assert shown["extras"] == [shown["extra"]]

    replay = serve(app(TraceConfig(mode="replay", cassette_path=str(cassette_dir))))
    replayed, reports = _replayed(replay, lambda url: httpx.post(url + "/connections", json=sent))
    assert replayed.json() == recorded.json() == {"conn_id": "mail", "host": "smtp.local"}
    assert [(r.ok, r.unmatched) for r in reports] == [(True, [])]
