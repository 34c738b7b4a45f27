"""HTTP calls a test's own mock answers: the test's doing, not dependencies to record or to
answer from a cassette.

respx mocks httpx by default one level below httpx's transport, where timetracer records
and replays (httpcore's connection pool): without this, a recording would keep the mock's
answer as a call, and replay would answer it from the cassette before respx saw it, so an
assertion on the route (``route.called``) failed. Mocks that replace the transport or the
client's method (pytest-httpx, ``responses``, aioresponses) answer above timetracer and
need nothing here.
"""

from __future__ import annotations

import sys

__all__ = ["mocked_by_test"]


def mocked_by_test(library: str) -> bool:
    """Whether the test mocks ``library``'s calls now: httpx's while a respx router mocks
    httpcore (``respx.mock``, its default ``using``); httpx2 has a core of its own."""
    if library != "httpx":
        return False
    mocks = sys.modules.get("respx.mocks")
    if mocks is None:
        return False
    mocker = getattr(mocks, "Mocker", None)
    httpcore = mocker.registry.get("httpcore") if mocker is not None else None
    return bool(getattr(httpcore, "routers", None))
