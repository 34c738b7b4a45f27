"""Cassettes in S3 or S3-compatible storage: ``s3://bucket/prefix`` beside local paths.

Objects are read and written with boto3 (the ``s3`` extra). The endpoint comes from the
standard ``AWS_ENDPOINT_URL_S3`` / ``AWS_ENDPOINT_URL`` variables (or the AWS config file)
and the credentials from the usual AWS chain. One PUT is atomic, so a reader sees a whole
cassette or none, as with local files. Every failure is raised as the :class:`OSError` a
local disk would raise (``FileNotFoundError``, ``PermissionError``, ``FileExistsError``).
These requests are timetracer's own: they run under OpenTelemetry's
``suppress_instrumentation``, so a botocore or urllib3 instrumentation makes no spans of them,
and as timetracer's own I/O, so the urllib3 plugin neither records nor replays them.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import stat
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from opentelemetry.instrumentation.utils import suppress_instrumentation

from timetracer_otel._own_io import own_io

__all__ = [
    "CassetteFile",
    "TooLarge",
    "is_url",
    "is_cassette_name",
    "join",
    "read_bytes",
    "write",
    "list_files",
]

CassetteFile = Path | str  # a local file, or the URL of a remote one
_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]+://")  # two letters at least: C:\ is a Windows drive
_READ_FLAGS = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
_clients: dict[tuple, Any] = {}
_clients_lock = threading.Lock()
# S3 error codes -> the OSError a local file system raises for the same thing
_ERRORS: dict[str, type[OSError]] = {
    "NoSuchKey": FileNotFoundError,
    "NoSuchBucket": FileNotFoundError,
    "404": FileNotFoundError,
    "AccessDenied": PermissionError,
    "403": PermissionError,
    "PreconditionFailed": FileExistsError,
    "412": FileExistsError,
}


class TooLarge(OSError):
    """A file larger than a reader takes; ``size`` is its size in bytes."""

    def __init__(self, size: int) -> None:
        super().__init__(f"{size} bytes")
        self.size = size


def is_url(location: str | os.PathLike) -> bool:
    """True for ``s3://...`` (and any other ``scheme://``), False for local paths."""
    return isinstance(location, str) and bool(_URL.match(location))


def is_cassette_name(name: str) -> bool:
    """``*.json`` and gzip-compressed ``*.json.gz`` files, but no dot files (temporary files, the index)."""
    return name.endswith((".json", ".json.gz")) and not name.startswith(".")


def join(root: str | os.PathLike, relpath: str) -> CassetteFile:
    """``relpath`` (``/``-separated) inside a directory or below a URL prefix."""
    return f"{str(root).rstrip('/')}/{relpath}" if is_url(root) else Path(root) / relpath


def _split(url: str) -> tuple[str, str]:
    scheme, _, rest = url.partition("://")
    bucket, _, key = rest.partition("/")
    if scheme != "s3" or not bucket:
        raise OSError(f"{url}: not an s3://bucket/key URL (the only remote storage supported)")
    return bucket, key


def _client() -> Any:
    """One boto3 S3 client per process and AWS configuration (clients are thread-safe, not fork-safe)."""
    settings = (os.getpid(), *sorted((k, v) for k, v in os.environ.items() if k.startswith("AWS_")))
    with _clients_lock:
        client = _clients.get(settings)
        if client is None:
            try:
                import boto3
            except ImportError as exc:
                raise OSError(
                    f"s3:// cassettes need boto3: pip install 'timetracer-otel[s3]' ({exc})"
                ) from None
            client = _clients[settings] = boto3.session.Session().client("s3")
        return client


@contextlib.contextmanager
def _request(url: str) -> Iterator[None]:
    """Timetracer's own request about ``url``: no spans, not recorded nor replayed, and failures as the
    ``OSError`` a disk raises."""
    try:
        with suppress_instrumentation(), own_io():
            yield
    except OSError:
        raise
    except Exception as exc:  # noqa: BLE001 - botocore errors become what a disk would raise
        response = getattr(exc, "response", None) or {}
        code = str(response.get("Error", {}).get("Code", ""))
        raise _ERRORS.get(code, OSError)(f"{url}: {exc}") from exc


def read_bytes(file: str | os.PathLike, limit: int | None = None) -> bytes:
    """The bytes of a local file or of the object at an ``s3://`` URL; :class:`TooLarge`, before
    reading it, when it holds more than ``limit`` bytes."""
    if not is_url(file):
        # O_NONBLOCK: a FIFO (or a device) named like a cassette must not hang the reader.
        with open(os.open(file, _READ_FLAGS), "rb") as stream:
            found = os.fstat(stream.fileno())
            if stat.S_ISDIR(found.st_mode):
                raise IsADirectoryError(errno.EISDIR, "is a directory", str(file))
            if not stat.S_ISREG(found.st_mode):
                raise OSError(errno.EINVAL, "not a regular file", str(file))
            if limit is not None and found.st_size > limit:
                raise TooLarge(found.st_size)
            data = stream.read() if limit is None else _bounded_read(stream, found.st_size, limit)
    else:
        url = str(file)
        bucket, key = _split(url)
        with _request(url):
            answer = _client().get_object(Bucket=bucket, Key=key)
            size = answer.get("ContentLength", 0)
            if limit is not None and size > limit:
                answer["Body"].close()
                raise TooLarge(size)
            data = (
                answer["Body"].read()
                if limit is None
                else _bounded_read(answer["Body"], size, limit)
            )
    if limit is not None and len(data) > limit:  # it grew while being read
        raise TooLarge(len(data))
    return data


def _bounded_read(stream: Any, size: int, limit: int) -> bytes:
    """At most ``limit + 1`` bytes of ``stream``, which said it holds ``size``: a read sized by
    the file (asking for the limit at once would allocate it), then whatever it grew by."""
    data = stream.read(min(size, limit) + 1)
    if len(data) > size:
        data += stream.read(limit + 1 - len(data))
    return data


def write(url: str, data: bytes, exclusive: bool = False) -> None:
    """Put ``data`` at ``url`` in one request; ``exclusive``: ``FileExistsError`` if it exists (``If-None-Match: *``)."""
    bucket, key = _split(url)
    with _request(url):
        _client().put_object(
            Bucket=bucket, Key=key, Body=data, **({"IfNoneMatch": "*"} if exclusive else {})
        )


def list_files(url: str) -> list[str]:
    """``url`` itself if it names an object, else the URLs of the cassettes below the prefix ``url``."""
    bucket, key = _split(url)
    client = _client()
    if key and not key.endswith("/"):
        # no such object: a prefix, then
        with (
            contextlib.suppress(FileNotFoundError),
            _request(url),
        ):
            client.head_object(Bucket=bucket, Key=key)
            return [url]
    prefix = f"{key.rstrip('/')}/" if key.strip("/") else ""
    with _request(url):
        pages = client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
        keys = [item["Key"] for page in pages for item in page.get("Contents", ())]
    return sorted(
        f"s3://{bucket}/{name}" for name in keys if is_cassette_name(name.rsplit("/", 1)[-1])
    )
