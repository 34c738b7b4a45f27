"""Payload capture: what the application sends and receives, recorded without changing it.

What the HTTP clients built on http.client (requests, urllib3) share: header names and
values given as text or bytes, a body given as bytes, text, an iterable of chunks or a file.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from timetracer_otel._diagnostics import guarded
from timetracer_otel.cassette.body import BodySink

__all__ = ["header_text", "tee_request_body"]


def header_text(value: Any) -> str:
    """A header name or value as text: bytes are sent as they are, read as latin-1."""
    return bytes(value).decode("latin-1") if isinstance(value, (bytes, bytearray)) else str(value)


def tee_request_body(body: Any, sink: BodySink, where: str) -> Any:
    """Keep ``body`` in ``sink``; an iterable body is teed as it is sent. Returns the body to send.

    ``where`` names the capture point in diagnostics.
    """
    if body is None:
        sink.finish()
    elif isinstance(body, (bytes, bytearray, memoryview)):
        sink.feed(bytes(body))
        sink.finish()
    elif isinstance(body, str):
        sink.feed(body.encode("utf-8"))
        sink.finish()
    elif hasattr(body, "__iter__") and not hasattr(body, "read"):

        def tee(chunks: Any = body) -> Iterator[Any]:
            for chunk in chunks:
                with guarded(where):
                    sink.feed(chunk.encode("utf-8") if isinstance(chunk, str) else bytes(chunk))
                yield chunk
            sink.finish()

        return tee()
    elif hasattr(body, "read"):
        _keep_file(body, sink)
    return body


def _keep_file(body: Any, sink: BodySink) -> None:
    """Keep a seekable file body from where it stands to its end, then put it back where it stood.

    A file that cannot seek back is sent as is and not kept: reading it would take what it sends.
    """
    seekable = getattr(body, "seekable", None)
    if seekable is None or not seekable():
        return
    start = body.tell()
    try:
        while chunk := body.read(2**16):
            sink.feed(chunk.encode("utf-8") if isinstance(chunk, str) else bytes(chunk))
    finally:
        body.seek(start)
    sink.finish()
