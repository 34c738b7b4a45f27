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

__all__ = ["respx_mocking"]


def respx_mocking() -> bool:
    """Whether a respx router is mocking httpcore now (``respx.mock``, its default ``using``)."""
    mocks = sys.modules.get("respx.mocks")
    if mocks is None:
        return False
    mocker = getattr(mocks, "Mocker", None)
    httpcore = mocker.registry.get("httpcore") if mocker is not None else None
    return bool(getattr(httpcore, "routers", None))
