"""No connection leaves a replaying test: ``socket.connect`` refuses at once, with the reason.

Calls of the libraries timetracer replays never reach a socket. Anything else that tries
(a client library timetracer does not cover, a call outside every cassette) gets
:class:`NetworkBlockedError` at the call site instead of a hang or a timeout, and the
test fails at teardown even if the code caught it. Own traffic (the OTLP export), an app
under test served in this process (a live server thread) and hosts the user allowed pass.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable, Iterable
from typing import Any

from timetracer_otel._apps_under_test import is_app_address
from timetracer_otel._own_io import is_own_io

__all__ = ["NetworkBlockedError", "NetworkGuard"]


class NetworkBlockedError(ConnectionRefusedError):
    """A connection attempted while a test replays: it is never made."""


def _host(address: Any) -> str:
    if isinstance(address, tuple) and address:
        return str(address[0])
    return str(address)  # a Unix socket path


class NetworkGuard:
    """Refuses connections while :attr:`reason` is set (a replay block is active); keeps each refusal."""

    def __init__(self, allowed_hosts: Iterable[str] = ()) -> None:
        self.allowed_hosts = frozenset(allowed_hosts)
        self.reason: str | None = None  # what replays now, named in the error
        self._refused: list[tuple[str, str]] = []  # (reason, target)
        self._lock = threading.Lock()
        self._originals: dict[str, Callable[..., Any]] = {}

    def install(self) -> None:
        """Wrap ``socket.socket.connect`` (once; the first replay does it, so a run that never replays is untouched)."""
        if self._originals:
            return
        for name in ("connect", "connect_ex"):
            original = getattr(socket.socket, name)
            self._originals[name] = original
            setattr(socket.socket, name, self._guarded(original))

    def uninstall(self) -> None:
        for name, original in self._originals.items():
            setattr(socket.socket, name, original)
        self._originals.clear()

    def take_refused(self, reason: str) -> list[str]:
        """The connections refused while ``reason`` replayed, forgotten once taken."""
        with self._lock:
            taken = [target for why, target in self._refused if why == reason]
            self._refused = [entry for entry in self._refused if entry[0] != reason]
        return taken

    def _guarded(self, original: Callable[..., Any]) -> Callable[..., Any]:
        guard = self

        def connect(sock: socket.socket, address: Any, *args: Any) -> Any:
            reason = guard.reason
            if (
                reason is not None
                and sock.family != getattr(socket, "AF_NETLINK", None)
                and not is_own_io()
            ):
                host = _host(address)
                port = address[1] if isinstance(address, tuple) and len(address) > 1 else None
                if host not in guard.allowed_hosts and not is_app_address(host, port):
                    target = host if port is None else f"{host}:{port}"
                    with guard._lock:
                        guard._refused.append((reason, target))
                    raise NetworkBlockedError(
                        f"timetracer: no connection to {target} while replaying {reason}: the cassette answers the calls "
                        "it recorded, and this one it cannot (a library timetracer does not replay, or a call made "
                        "outside the test's cassette). Record it with --timetracer-mode=once, or allow the host "
                        "with timetracer_allowed_hosts."
                    )
            return original(sock, address, *args)

        return connect
