"""A moto S3 server on loopback and the fake AWS credentials botocore signs with, as fixtures any test
module imports."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from moto.server import ThreadedMotoServer

__all__ = ["AWS", "aws", "moto", "s3_url"]

AWS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing-secret-key",
    "AWS_SESSION_TOKEN": "testing-session-token",
    "AWS_DEFAULT_REGION": "us-east-1",
}


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """Fake credentials, as botocore reads them; no AWS config file."""
    for name, value in {**AWS, "AWS_CONFIG_FILE": "/nonexistent"}.items():
        monkeypatch.setenv(name, value)
    return AWS


@pytest.fixture
def moto() -> Iterator[ThreadedMotoServer]:
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def s3_url(moto: ThreadedMotoServer) -> str:
    host, port = moto.get_host_and_port()
    return f"http://{host}:{port}"
