"""Mail sent with smtplib (tests/apps/mail_app.py): recorded through uvicorn against a real SMTP
server on loopback (aiosmtpd: STARTTLS, implicit TLS, AUTH PLAIN and LOGIN), replayed by
another process with the server gone, no secret stored in clear."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import re
import socket
import sys
from collections.abc import Callable, Iterator
from email import message_from_bytes, policy
from pathlib import Path
from typing import Any

import httpx
import pytest
from _replay import (
    APPS_DIR,
    CONNECTS,
    FreshServer,
    audited_uvicorn_process,
    cassette_files,
    serving_process,
    uvicorn_process,
)
from _smtp_server import PASSWORD, USER, MailServer, running_mail_server
from apps.mail_app import (
    create_app,
    mail_message,
    mail_settings,
    send_digest,
    send_over_starttls,
)
from conftest import load_cassettes
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

import timetracer_otel
from timetracer_otel.cli.labels import call_label
from timetracer_otel.config import TraceConfig
from timetracer_otel.protocols.smtp import exchange_request, request_view
from timetracer_otel.replayers import ReplayMismatchError, ReplaySession, install_replayers
from timetracer_otel.replayers.session import activate, deactivate
from timetracer_otel.sealing import redacted

BIN = Path(sys.executable).parent
# (path, what the app is asked) of each request, in order
REQUESTS = [
    ("/welcome?to=ada@example.org", "a welcome mail over STARTTLS after AUTH PLAIN"),
    ("/reset?to=ada@example.org", "a reset link signed as a JWT, its HTML part in base64"),
    ("/notice?to=bob@example.org", "SMTP_SSL, AUTH LOGIN's challenges, a line with a leading dot"),
    ("/bad-login", "a login the server refuses"),
    ("/digest?to=cy@example.org", "aiosmtplib.send: STARTTLS, AUTH PLAIN"),
    ("/alert?to=dee@example.org", "aiosmtplib over implicit TLS, AUTH LOGIN, two recipients"),
    ("/unreachable", "both clients at a closed port"),
    ("/pooled?to=ed@example.org", "a connection opened for this request and kept"),
    ("/pooled?to=flo@example.org", "the kept connection: MAIL, RCPT, DATA only"),
]
REPLAYED = re.compile(
    r"^timetracer \[OK\] replayed POST (\S+)  id=\w+  status=(\d+)  calls=(\d+)/\3  unused=0  response=same$",
    re.M,
)


@pytest.fixture
def mail(tmp_path: Path) -> Iterator[tuple[MailServer, MailServer]]:
    """A STARTTLS server and an implicit-TLS one, presenting one self-signed certificate."""
    with (
        running_mail_server(tmp_path) as starttls,
        running_mail_server(tmp_path, tls="implicit") as implicit,
    ):
        yield starttls, implicit


@pytest.fixture(scope="module")
def closed_port() -> Iterator[int]:
    """A loopback port bound for the tests where nothing listens: connecting is refused."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield sock.getsockname()[1]


@pytest.fixture
def recording(
    serve: Callable[..., Any],
    record_config: TraceConfig,
    mail: tuple[MailServer, MailServer],
    closed_port: int,
    monkeypatch: pytest.MonkeyPatch,
) -> str:
    """The URL of the mail app recording in this process, its settings in the environment."""
    for name, value in _settings(mail, closed_port).items():
        monkeypatch.setenv(name, value)
    return str(serve(create_app(record_config)).url)


def _settings(servers: tuple[MailServer, MailServer], closed_port: int) -> dict[str, str]:
    starttls, implicit = servers
    return {
        "MAIL_HOST": starttls.host,
        "MAIL_PORT": str(starttls.port),
        "MAIL_SSL_PORT": str(implicit.port),
        "MAIL_CLOSED_PORT": str(closed_port),
        "MAIL_CA_FILE": str(starttls.certificate),
        "MAIL_USER": USER,
        "MAIL_PASSWORD": PASSWORD,
    }


def _post_all(url: str) -> list[httpx.Response]:
    with httpx.Client(base_url=url, timeout=30) as client:
        return [client.post(path) for path, _ in REQUESTS]


def _reset_token(server: MailServer) -> str:
    """The token of the reset link the server received (in the base64 HTML part)."""
    (reset,) = [m for m in server.received if b"Subject: =?utf-8?" in m["data"]]
    html = message_from_bytes(reset["data"], policy=policy.default).get_body(("html",))
    found = re.search(r"token=([\w.-]+)", html.get_content())
    assert found is not None
    return found.group(1)


def test_mail_replays_in_another_process_with_the_server_gone(
    cassette_dir: Path, mail: tuple[MailServer, MailServer], closed_port: int
) -> None:
    cassettes = cassette_dir
    settings = _settings(mail, closed_port)
    record_env = {**settings, "TIMETRACER_MODE": "record", "TIMETRACER_DIR": str(cassettes)}
    with uvicorn_process(record_env, app="mail_app:create_app") as server:
        recorded = _post_all(server.url)
    assert [r.status_code for r in recorded] == [200, 200, 200, 401, 200, 200, 503, 200, 200], [
        r.text for r in recorded
    ]
    assert recorded[3].json() == {
        "error": "SMTPAuthenticationError",
        "code": 535,
        "message": "5.7.8 Authentication credentials invalid",
    }
    starttls, implicit = mail
    assert len(starttls.received) == 5 and len(implicit.received) == 2
    assert implicit.received[0]["to"] == ["bob@example.org", "audit@service.test"]
    token = _reset_token(starttls)
    assert recorded[6].json()["smtplib"] == "ConnectionRefusedError"
    assert recorded[6].json()["aiosmtplib"].startswith("SMTPConnectError: Error connecting")
    ports = {starttls.port, implicit.port, closed_port}
    for server_gone in mail:
        server_gone.received.clear()

    # the servers stop: nothing answers on their ports
    replay_env = {**settings, "TIMETRACER_MODE": "replay", "TIMETRACER_CASSETTE": str(cassettes)}
    with audited_uvicorn_process(replay_env, app="mail_app:create_app") as server:
        _stop(mail)
        replayed = _post_all(server.url)
    assert [(r.status_code, r.content) for r in replayed] == [
        (r.status_code, r.content) for r in recorded
    ]
    reports = REPLAYED.findall(server.stderr)
    assert [(path, status) for path, status, _ in reports] == [
        ("/welcome", "200"),
        ("/reset", "200"),
        ("/notice", "200"),
        ("/bad-login", "401"),
        ("/digest", "200"),
        ("/alert", "200"),
        ("/unreachable", "503"),
        ("/pooled", "200"),
        ("/pooled", "200"),
    ], server.stderr
    assert [int(calls) for *_, calls in reports] == [11, 11, 11, 6, 10, 11, 2, 9, 4]
    connected = [eval(found) for found in CONNECTS.findall(server.stderr)]  # noqa: S307 - our own repr
    assert [a for a in connected if isinstance(a, tuple) and a[1] in ports] == []

    # no secret in clear: the password, what AUTH sent for it, the reset link's token
    stored = "\n".join(path.read_text("utf-8") for path in cassette_files(cassettes))
    plain = base64.b64encode(f"\0{USER}\0{PASSWORD}".encode()).decode()
    for secret in (PASSWORD, plain, base64.b64encode(PASSWORD.encode()).decode(), token):
        assert secret not in stored
    # and the mail reads as it was written: the HTML part decoded, the token sealed in it
    assert "choose a new password" in stored and "it expires in an hour" in stored


def _instrumented(env: dict[str, str]) -> contextlib.AbstractContextManager[FreshServer]:
    """``opentelemetry-instrument uvicorn`` on the mail app without timetracer code."""
    command = [
        str(BIN / "opentelemetry-instrument"), str(BIN / "uvicorn"), "--factory",
        "--app-dir", str(APPS_DIR), "mail_app:create_plain_app", "--log-level", "warning",
    ]  # fmt: skip
    base = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    return serving_process(command, {**base, **env}, cwd=APPS_DIR)


def test_opentelemetry_instrument_records_and_replays_mail_by_its_entry_points(
    cassette_dir: Path, mail: tuple[MailServer, MailServer], closed_port: int
) -> None:
    """timetracer's own instrumentors load as contrib's do: an app with no timetracer code."""
    settings = _settings(mail, closed_port)
    paths = ["/welcome?to=ada@example.org", "/digest?to=cy@example.org"]
    env = {**settings, "TIMETRACER_MODE": "record", "TIMETRACER_DIR": str(cassette_dir)}
    with _instrumented(env) as server, httpx.Client(base_url=server.url, timeout=30) as client:
        recorded = [client.post(path) for path in paths]
    assert [r.status_code for r in recorded] == [200, 200], server.stderr
    assert "deps=smtp.client:11" in server.stderr and "deps=smtp.client:10" in server.stderr
    _stop(mail)
    env = {**settings, "TIMETRACER_MODE": "replay", "TIMETRACER_CASSETTE": str(cassette_dir)}
    with _instrumented(env) as server, httpx.Client(base_url=server.url, timeout=30) as client:
        replayed = [client.post(path) for path in paths]
    assert [(r.status_code, r.content) for r in replayed] == [
        (r.status_code, r.content) for r in recorded
    ]
    assert [path for path, *_ in REPLAYED.findall(server.stderr)] == ["/welcome", "/digest"]


def test_a_mail_server_on_another_port_is_answered_as_the_recorded_one(
    recording: str,
    cassette_dir: Path,
    mail: tuple[MailServer, MailServer],
    serve: Callable[..., Any],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A suite's mail server listens where the OS put it, another port each run (smtplib and
    aiosmtplib alike)."""
    paths = ["/welcome?to=ada@example.org", "/digest?to=cy@example.org"]
    recorded = [httpx.post(f"{recording}{path}", timeout=30) for path in paths]
    assert timetracer_otel.flush(30)
    _stop(mail)
    (tmp_path / "again").mkdir()
    with running_mail_server(tmp_path / "again") as moved:
        monkeypatch.setenv("MAIL_PORT", str(moved.port))
        monkeypatch.setenv("MAIL_CA_FILE", str(moved.certificate))
        config = TraceConfig(mode="replay", cassette_path=str(cassette_dir))
        url = serve(create_app(config)).url
        replayed = [httpx.post(f"{url}{path}", timeout=30) for path in paths]
        assert moved.received == []
    assert moved.port != mail[0].port
    assert [(r.status_code, r.content) for r in replayed] == [
        (r.status_code, r.content) for r in recorded
    ]


def _stop(servers: tuple[MailServer, MailServer]) -> None:
    for server in servers:
        server.stop()


def _smtplib_welcome(to: str) -> Any:
    return send_over_starttls(mail_settings(), mail_message(to, "Welcome", f"Hello {to[:3]}"))


def _aiosmtplib_digest(to: str) -> Any:
    message = mail_message(to, "Your digest", f"Three new items for {to}.")
    return asyncio.run(send_digest(mail_settings(), message))


@pytest.mark.parametrize(
    ("path", "send", "library"),
    [
        ("/welcome?to=ada@example.org", _smtplib_welcome, "smtplib"),
        ("/digest?to=ada@example.org", _aiosmtplib_digest, "aiosmtplib"),
    ],
)
def test_a_different_recipient_fails_at_the_call_naming_the_recorded_one(
    recording: str,
    cassette_dir: Path,
    mail: tuple[MailServer, MailServer],
    path: str,
    send: Callable[[str], Any],
    library: str,
) -> None:
    assert httpx.post(f"{recording}{path}", timeout=30).status_code == 200
    (document,) = load_cassettes(cassette_dir)
    _stop(mail)
    install_replayers()
    token = activate(ReplaySession(redacted(document), "mail.json"))
    try:
        with pytest.raises(ReplayMismatchError) as raised:
            send("eve@example.org")
    finally:
        deactivate(token)
    port = mail[0].port
    message = str(raised.value)
    assert (
        f"no recorded call matches SMTP 127.0.0.1:{port} RCPT TO:<eve@example.org> ({library})"
        in message
    )
    assert f"SMTP 127.0.0.1:{port} RCPT TO:<ada@example.org>" in message


@pytest.mark.parametrize(
    ("path", "names"),
    [
        (
            "/notice?to=bob@example.org",  # smtplib.SMTP_SSL, AUTH LOGIN
            "connect EHLO AUTH AUTH AUTH MAIL RCPT RCPT DATA DATA QUIT".split(),
        ),
        (
            "/alert?to=dee@example.org",  # aiosmtplib with use_tls, AUTH LOGIN
            "connect EHLO AUTH AUTH MAIL RCPT RCPT DATA DATA NOOP QUIT".split(),
        ),
    ],
)
def test_each_exchange_is_a_client_span_whose_name_never_holds_a_secret(
    recording: str,
    mail: tuple[MailServer, MailServer],
    spans: InMemorySpanExporter,
    path: str,
    names: list[str],
) -> None:
    """An answer to an AUTH challenge (the user name, the password) is a ``SMTP AUTH`` span;
    the message is a second ``SMTP DATA``."""
    assert httpx.post(f"{recording}{path}", timeout=30).status_code == 200
    assert timetracer_otel.flush(30)  # the cassette is written once the server span ended
    server = next(s for s in spans.get_finished_spans() if s.kind is SpanKind.SERVER)
    # (the test's own httpx call has a client span when an earlier test instrumented httpx)
    client = [
        s
        for s in spans.get_finished_spans()
        if s.kind is SpanKind.CLIENT and s.parent and s.parent.span_id == server.context.span_id
    ]
    assert [s.name for s in client] == [f"SMTP {name}" for name in names]
    assert {(s.attributes["server.address"], s.attributes["server.port"]) for s in client} == {
        ("127.0.0.1", mail[1].port)
    }


@pytest.mark.parametrize(
    ("sent", "after", "expected"),
    [
        (b"", None, {"connect": True}),
        (b"ehlo [10.0.0.7]\r\n", 220, {"command": "EHLO", "args": "[10.0.0.7]"}),
        # Python 3.13's smtplib: the keyword in lower case
        (
            b"mail from:<a@b.test> size=9\r\n",
            250,
            {"command": "MAIL", "args": "FROM:<a@b.test> size=9"},
        ),
        (b"rcpt to:<c@d.test>\r\n", 250, {"command": "RCPT", "args": "TO:<c@d.test>"}),
        (
            b"AUTH PLAIN AGEAYg==\r\n",
            250,
            {"command": "AUTH", "args": "PLAIN", "credentials": "AGEAYg=="},
        ),
        (b"cGFzcw==\r\n", 334, {"auth_response": "cGFzcw=="}),
        (b"NOOP\r\nNOOP\r\n", 250, {"sent": "NOOP\r\nNOOP\r\n"}),
    ],
)
def test_an_exchange_is_read_by_the_reply_before_it(
    sent: bytes, after: int | None, expected: dict[str, Any]
) -> None:
    assert exchange_request("mail.test:25", sent, after) == {"server": "mail.test:25", **expected}


def _sent_message(message_id: str) -> bytes:
    return (
        b"Subject: hi\r\nMessage-ID: " + message_id.encode() + b"\r\n"
        b"Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: base64\r\n\r\n"
        + base64.encodebytes("..caf\u00e9\r\n.end".encode())
        + b".\r\n"
    )


def test_a_message_is_kept_decoded_and_matched_without_the_process_identity() -> None:
    first = exchange_request("mail.test:25", _sent_message("<1.111.9@host-a>"), 354)
    assert first["message"]["content"] == "..caf\u00e9\r\n.end"
    again = exchange_request("mail.test:25", _sent_message("<1.222.9@host-b>"), 354)
    assert request_view(first).key == request_view(again).key
    other = exchange_request(
        "mail.test:25", _sent_message("<1.111.9@host-a>").replace(b"hi", b"yo"), 354
    )
    assert request_view(other).key != request_view(first).key
    # the size MAIL FROM declares counts the Message-ID: it never counts either
    assert request_view(exchange_request("m:25", b"MAIL FROM:<a@b> SIZE=120\r\n", 250)).key == (
        request_view(exchange_request("m:25", b"MAIL FROM:<a@b> size=1201\r\n", 250)).key
    )
    # the host name EHLO sends is the machine's: it never counts
    assert (
        request_view(exchange_request("m:25", b"EHLO a\r\n", 220)).key
        == request_view(exchange_request("m:25", b"EHLO b\r\n", 220)).key
    )


def test_a_message_dated_in_another_time_zone_matches_the_same_instant() -> None:
    """``formatdate(localtime=True)`` writes the process's time zone: recorded in UTC and
    replayed in Tokyo, the same instant is another text."""

    def dated(date: str) -> Any:
        return request_view(
            exchange_request(
                "m:25", f"Subject: hi\r\nDate: {date}\r\n\r\nhello\r\n.\r\n".encode(), 354
            )
        ).key

    recorded = dated("Sun, 06 Dec 2026 00:41:39 +0000")
    assert dated("Sun, 06 Dec 2026 09:41:39 +0900") == recorded
    assert dated("Sun, 06 Dec 2026 00:41:40 +0000") != recorded  # another instant
    assert dated("not a date") != recorded


def test_dot_stuffing_is_undone() -> None:
    sent = b"Subject: x\r\n\r\n..leading\r\nplain\r\n.\r\n"
    assert exchange_request("m:25", sent, 354)["message"]["content"] == ".leading\r\nplain\r\n"


def test_show_and_the_dashboard_name_each_exchange_and_never_its_credentials(
    recording: str,
    cassette_dir: Path,
    mail: tuple[MailServer, MailServer],
) -> None:
    assert httpx.post(f"{recording}/notice?to=bob@example.org", timeout=30).status_code == 200
    (document,) = load_cassettes(cassette_dir)
    labels = [call_label(call) for call in document["calls"]]
    assert labels[0] == f"smtp connect 127.0.0.1:{mail[1].port}"
    assert labels[1].startswith("smtp EHLO ")
    assert labels[2:] == [
        "smtp AUTH LOGIN",
        "smtp AUTH response",
        "smtp AUTH response",
        "smtp MAIL FROM:<noreply@service.test> size=39",
        "smtp RCPT TO:<bob@example.org>",
        "smtp RCPT TO:<audit@service.test>",
        "smtp DATA",
        "smtp message 'notice'",
        "smtp QUIT",
    ]
