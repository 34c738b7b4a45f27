"""Apps under test served in this process: a test's requests to them are not dependencies.

A test suite may serve the app it tests with uvicorn in a thread of the test process (a
"live server") and call it over HTTP. Those calls are the test driving the app, not calls
the app depends on: they are neither recorded nor answered from a cassette, and the app
behind them runs, so its own calls are what the cassette records and replays. A call made
while the app serves a request (the app calling another in-process server) stays a
dependency.
"""

from __future__ import annotations

import contextvars
import threading
from urllib.parse import urlsplit

from timetracer_otel.protocols.view import is_loopback

__all__ = ["end_serving", "is_app_address", "is_app_under_test", "serve", "serving_request", "stop"]

_ports: dict[int, int] = {}  # port -> how many listening sockets of apps under test use it
_lock = threading.Lock()
_serving: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "timetracer_serving_app_under_test", default=False
)


def serve(port: int) -> None:
    """An app under test listens on ``port`` (a loopback or wildcard address)."""
    with _lock:
        _ports[port] = _ports.get(port, 0) + 1


def stop(port: int) -> None:
    with _lock:
        left = _ports.get(port, 0) - 1
        if left > 0:
            _ports[port] = left
        else:
            _ports.pop(port, None)


def serving_request() -> contextvars.Token[bool]:
    """Mark the code that follows (in this context) as the app handling a request; reset the token after."""
    return _serving.set(True)


def end_serving(token: contextvars.Token[bool]) -> None:
    _serving.reset(token)


def is_app_address(host: str, port: int | None) -> bool:
    """Whether a connection to ``host:port`` reaches an app under test of this process."""
    return bool(_ports) and port in _ports and is_loopback(host)


def is_app_under_test(url: str) -> bool:
    """Whether an HTTP call to ``url`` is a test driving an app under test (not the app's own call)."""
    if not _ports or _serving.get():
        return False
    try:
        parts = urlsplit(url)
        port = parts.port or (443 if parts.scheme in ("https", "wss") else 80)
    except ValueError:
        return False
    return is_app_address(parts.hostname or "", port)
