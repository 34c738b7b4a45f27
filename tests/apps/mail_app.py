"""A service that sends mail with smtplib and aiosmtplib, as web backends do: a welcome mail
over STARTTLS after AUTH, a password-reset mail carrying a signed link (its HTML part
base64-encoded, as UTF-8 text parts are), a notice over implicit TLS (``SMTP_SSL``) after
AUTH LOGIN's challenges, a login the server refuses; and with aiosmtplib a digest through
``aiosmtplib.send`` (STARTTLS, AUTH PLAIN) and an alert over implicit TLS after AUTH LOGIN.

Every route answers with what smtplib returned to it (the server's replies, its EHLO
features, the refused recipients, the exception), so equal responses mean the app got the
same answers. ``create_app(config)``: the server from ``$MAIL_HOST``, ``$MAIL_PORT``,
``$MAIL_SSL_PORT`` (implicit TLS), the CA to trust from ``$MAIL_CA_FILE``, the account from
``$MAIL_USER``/``$MAIL_PASSWORD``; timetracer configured by ``TIMETRACER_*`` without ``config``.
"""

from __future__ import annotations

import datetime
import os
import smtplib
import ssl
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from typing import Any

import aiosmtplib
import jwt
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from timetracer_otel.config import TraceConfig
from timetracer_otel.integrations.starlette import auto_setup

SIGNING_KEY = "mail-app-signing-key-0123456789abcdef"


def mail_settings() -> dict[str, Any]:
    return {
        "host": os.environ["MAIL_HOST"],
        "port": int(os.environ["MAIL_PORT"]),
        "ssl_port": int(os.environ.get("MAIL_SSL_PORT", "0")),
        "context": ssl.create_default_context(cafile=os.environ["MAIL_CA_FILE"]),
        "user": os.environ["MAIL_USER"],
        "password": os.environ["MAIL_PASSWORD"],
    }


def mail_message(to: str, subject: str, text: str, html: str | None = None) -> EmailMessage:
    message = EmailMessage()
    message["From"] = "Service <noreply@service.test>"
    message["To"] = to
    message["Subject"] = subject
    message["Date"] = formatdate(localtime=True)
    message["Message-ID"] = make_msgid(domain="service.test")
    message.set_content(text)
    if html is not None:
        message.add_alternative(html, subtype="html", charset="utf-8", cte="base64")
    return message


def _text(reply: Any) -> Any:
    return reply.decode() if isinstance(reply, bytes) else reply


def send_over_starttls(settings: dict[str, Any], message: EmailMessage) -> dict[str, Any]:
    with smtplib.SMTP(settings["host"], settings["port"], timeout=10) as smtp:
        features = smtp.ehlo()
        tls = smtp.starttls(context=settings["context"])
        smtp.ehlo()
        login = smtp.login(settings["user"], settings["password"])
        refused = smtp.send_message(message)
        return {
            "features": [features[0], _text(features[1])],
            "starttls": [tls[0], _text(tls[1])],
            "login": [login[0], _text(login[1])],
            "refused": refused,
            "noop": list(map(_text, smtp.noop())),
        }


async def welcome(request: Request) -> JSONResponse:
    to = request.query_params["to"]
    message = mail_message(to, "Welcome", f"Hello {to}, your account is ready.")
    return JSONResponse(await run_in_threadpool(send_over_starttls, mail_settings(), message))


async def reset(request: Request) -> JSONResponse:
    """A reset link with a signed token, as password-recovery endpoints send."""
    to = request.query_params["to"]
    now = datetime.datetime.now(datetime.timezone.utc)
    token = jwt.encode(
        {"sub": to, "exp": now + datetime.timedelta(hours=1), "nbf": now}, SIGNING_KEY
    )
    link = f"https://service.test/reset-password?token={token}"
    message = mail_message(
        to,
        "Réinitialisation du mot de passe",
        f"Follow {link} to choose a new password.",
        f"<p>Follow <a href='{link}'>this link</a> — it expires in an hour.</p>",
    )
    sent = await run_in_threadpool(send_over_starttls, mail_settings(), message)
    return JSONResponse({"sent": sent, "expires": int(now.timestamp()) + 3600})


def _login_send(settings: dict[str, Any], to: str) -> dict[str, Any]:
    with smtplib.SMTP_SSL(
        settings["host"], settings["ssl_port"], context=settings["context"], timeout=10
    ) as smtp:
        smtp.ehlo()
        smtp.user, smtp.password = settings["user"], settings["password"]
        login = smtp.auth("LOGIN", smtp.auth_login, initial_response_ok=False)
        refused = smtp.sendmail(
            "noreply@service.test",
            [to, "audit@service.test"],
            "Subject: notice\r\n\r\n.leading dot\r\nbody\r\n",
        )
        return {"login": [login[0], _text(login[1])], "refused": refused}


async def notice(request: Request) -> JSONResponse:
    return JSONResponse(
        await run_in_threadpool(_login_send, mail_settings(), request.query_params["to"])
    )


def _refused_login(settings: dict[str, Any]) -> dict[str, Any]:
    with smtplib.SMTP(settings["host"], settings["port"], timeout=10) as smtp:
        try:
            smtp.login(settings["user"], "not-the-password")
        except smtplib.SMTPAuthenticationError as exc:
            return {
                "error": type(exc).__name__,
                "code": exc.smtp_code,
                "message": _text(exc.smtp_error),
            }
    return {"error": None}


async def bad_login(request: Request) -> JSONResponse:
    return JSONResponse(await run_in_threadpool(_refused_login, mail_settings()), status_code=401)


async def send_digest(settings: dict[str, Any], message: EmailMessage) -> dict[str, Any]:
    """``aiosmtplib.send``: connect, STARTTLS, login, send, quit in one call."""
    refused, reply = await aiosmtplib.send(
        message,
        hostname=settings["host"],
        port=settings["port"],
        start_tls=True,
        tls_context=settings["context"],
        username=settings["user"],
        password=settings["password"],
        timeout=10,
    )
    return {"refused": {k: list(v) for k, v in refused.items()}, "reply": reply}


async def digest(request: Request) -> JSONResponse:
    to = request.query_params["to"]
    message = mail_message(to, "Your digest", f"Three new items for {to}.")
    return JSONResponse(await send_digest(mail_settings(), message))


def _refused_smtplib(port: int) -> str:
    try:
        smtplib.SMTP("127.0.0.1", port, timeout=10)
    except OSError as exc:
        return type(exc).__name__
    return "connected"


async def unreachable(request: Request) -> JSONResponse:
    """Both clients at a port where nothing listens: what each raised."""
    port = int(os.environ["MAIL_CLOSED_PORT"])
    try:
        await aiosmtplib.send(
            "Subject: x\r\n\r\nx",
            sender="a@b.test",
            recipients=["c@d.test"],
            hostname="127.0.0.1",
            port=port,
            timeout=10,
        )
        aio = "connected"
    except aiosmtplib.SMTPException as exc:
        aio = f"{type(exc).__name__}: {exc}"
    sync = await run_in_threadpool(_refused_smtplib, port)
    return JSONResponse({"smtplib": sync, "aiosmtplib": aio}, status_code=503)


async def alert(request: Request) -> JSONResponse:
    """An ``aiosmtplib.SMTP`` over implicit TLS, AUTH LOGIN's challenges, two recipients."""
    settings = mail_settings()
    to = request.query_params["to"]
    client = aiosmtplib.SMTP(
        hostname=settings["host"],
        port=settings["ssl_port"],
        use_tls=True,
        tls_context=settings["context"],
        timeout=10,
    )
    async with client:
        await client.ehlo()
        login = await client.auth_login(settings["user"], settings["password"])
        refused, reply = await client.sendmail(
            "noreply@service.test", [to, "audit@service.test"], b"Subject: alert\r\n\r\n.dot\r\n"
        )
        noop = await client.noop()
    return JSONResponse(
        {"login": list(login), "refused": refused, "reply": reply, "noop": list(noop)}
    )


_POOL: dict[str, smtplib.SMTP] = {}


def _send_pooled(settings: dict[str, Any], message: EmailMessage) -> dict[str, Any]:
    """One connection for every request, opened by the first (as mail pools keep one)."""
    smtp = _POOL.get("smtp")
    if smtp is None:
        smtp = _POOL["smtp"] = smtplib.SMTP(settings["host"], settings["port"], timeout=10)
        smtp.starttls(context=settings["context"])
        smtp.login(settings["user"], settings["password"])
    return {"refused": smtp.send_message(message)}


async def pooled(request: Request) -> JSONResponse:
    to = request.query_params["to"]
    message = mail_message(to, "Pooled", f"Sent on a kept connection to {to}.")
    return JSONResponse(await run_in_threadpool(_send_pooled, mail_settings(), message))


def create_plain_app() -> Starlette:
    """The app without timetracer code, for ``opentelemetry-instrument``."""
    return Starlette(
        routes=[
            Route("/welcome", welcome, methods=["POST"]),
            Route("/reset", reset, methods=["POST"]),
            Route("/notice", notice, methods=["POST"]),
            Route("/bad-login", bad_login, methods=["POST"]),
            Route("/digest", digest, methods=["POST"]),
            Route("/alert", alert, methods=["POST"]),
            Route("/unreachable", unreachable, methods=["POST"]),
            Route("/pooled", pooled, methods=["POST"]),
        ]
    )


def create_app(config: TraceConfig | None = None) -> Starlette:
    app = create_plain_app()
    auto_setup(app, config=config, plugins=["smtplib", "aiosmtplib"])
    return app
