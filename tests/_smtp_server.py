"""A real SMTP server on loopback (aiosmtpd), for the mail tests: plain, STARTTLS or implicit
TLS, with AUTH PLAIN and LOGIN checked against one account. It keeps every message it
accepted, as the bytes it received."""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import ipaddress
import socket
import ssl
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiosmtpd.smtp import SMTP, AuthResult, LoginPassword
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

USER, PASSWORD = "mailer@example.com", "s3cret-Smtp-Pa55"


@dataclass
class MailServer:
    host: str
    port: int
    certificate: Path  # the CA file a client trusts the server with
    stop: Callable[[], None]  # closes the port and ends open sessions; once is enough
    received: list[dict[str, Any]] = field(default_factory=list)


class _Handler:
    def __init__(self, server: MailServer) -> None:
        self.server = server

    async def handle_DATA(self, smtp: Any, session: Any, envelope: Any) -> str:  # noqa: N802 - aiosmtpd's hook
        self.server.received.append(
            {"from": envelope.mail_from, "to": list(envelope.rcpt_tos), "data": envelope.content}
        )
        return "250 2.0.0 Ok: queued"


def _authenticate(smtp: Any, session: Any, envelope: Any, mechanism: str, data: Any) -> AuthResult:
    good = isinstance(data, LoginPassword) and (data.login, data.password) == (
        USER.encode(),
        PASSWORD.encode(),
    )
    return AuthResult(success=good, handled=False)


def _certificate(directory: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 and its key, as PEM files (made once per directory:
    every server there presents it)."""
    cert_path, key_path = directory / "smtp-cert.pem", directory / "smtp-key.pem"
    if cert_path.exists():
        return cert_path, key_path
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.timezone.utc)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


@contextlib.contextmanager
def running_mail_server(directory: Path, tls: str = "starttls") -> Iterator[MailServer]:
    """An SMTP server on 127.0.0.1 until the block ends. ``tls``: ``"starttls"`` (offered,
    not required; AUTH allowed without it), ``"implicit"`` (SMTP over TLS, as ``SMTP_SSL``
    speaks) or ``"none"``."""
    cert_path, key_path = _certificate(directory)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert_path, key_path)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    loop = asyncio.new_event_loop()

    def stop() -> None:
        if not loop.is_closed():
            asyncio.run_coroutine_threadsafe(_shut(serving), loop).result(10)
            loop.call_soon_threadsafe(loop.stop)
            thread.join(10)
            loop.close()

    server = MailServer("127.0.0.1", sock.getsockname()[1], cert_path, stop)
    handler = _Handler(server)

    def protocol() -> SMTP:
        return SMTP(
            handler,
            hostname="mail.test",
            tls_context=context if tls == "starttls" else None,
            auth_require_tls=False,
            authenticator=_authenticate,
            loop=loop,
        )

    serving = loop.run_until_complete(
        loop.create_server(protocol, sock=sock, ssl=context if tls == "implicit" else None)
    )
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        stop()


async def _shut(serving: asyncio.Server) -> None:
    """Stop listening and end the sessions still open (a client that never said QUIT)."""
    serving.close()
    sessions = [task for task in asyncio.all_tasks() if task is not asyncio.current_task()]
    for task in sessions:
        task.cancel()
    await asyncio.gather(*sessions, return_exceptions=True)
