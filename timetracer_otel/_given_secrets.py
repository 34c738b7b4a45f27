"""Secrets a test gives the app it serves in-process: hidden by value in the test's cassette.

A test drives the app under test through ``TestClient``, ``httpx.ASGITransport`` or a live
server in a thread; those requests are not recorded (the app is not a dependency), so the
API key, session cookie or bearer token they carry never passes redaction by name. The app
passes them on to its dependencies (an SQL lookup by key, a Redis session) under names no
pattern knows. The secrets of each such request and of its answer (found by name, as in an
inbound request's recording) join the secret values of the cassette recorded now, which
hides them wherever they appear in it and in its spans' export.
"""

from __future__ import annotations

from collections.abc import Iterable

from ._recording import current_recording
from .cassette.body import encode_body
from .redaction import redactor_for

__all__ = ["give"]


def give(headers: Iterable[tuple[str, str]], query: str = "", body: bytes | None = None) -> None:
    """The code recorded now sends (or is answered with) a message of these parts; ``body``
    only when it is at hand whole. Callers run it guarded, with what they took the parts from."""
    recording = current_recording()
    if recording is None:
        return
    redactor = redactor_for(recording.config)
    if redactor is None:
        return
    message: dict = {"headers": [[name, value] for name, value in headers], "query": query}
    limit = recording.config.max_body_bytes
    if body and len(body) <= limit:
        message["body"] = encode_body(body, size=len(body), truncated=False, limit=limit)
    found = redactor.secret_values({"request": message})
    if found:
        recording.give(found)
