"""No connection leaves a replay: ``socket.connect`` (and uvloop's, which connects in C)
refuses at once, with the reason.

Calls of the libraries timetracer replays never reach a socket. Anything else that tries
(a client library timetracer does not cover, such as a message broker's; a call outside
every cassette) gets :class:`NetworkBlockedError` at the call site instead of going out
unseen, and the replay reports it even if the code caught it. While a :class:`Closure`
is in force, everywhere (a replaying pytest block: the test's threads carry no context)
or in one context (a request the replay middleware serves), connections are refused,
except own traffic (the OTLP export), an app under test served in this process (a live
server thread) and the closure's allowed hosts. A client library checking its servers in
threads of its own (pymongo's monitors, made with a client before the replay began) is
refused too, but not reported: that is not a call of the code replayed.

Outside every replayed request, in a process started to replay, a connection goes out (an
app that opens a message broker's connection as it starts needs it to start) but never
silently: :func:`watch_outside` names each host and port in one warning, which says too that
what the app sends on such a connection while it replays requests reaches the service.
"""

from __future__ import annotations

import asyncio
import contextvars
import socket
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from timetracer_otel._apps_under_test import is_app_address
from timetracer_otel._diagnostics import logger
from timetracer_otel._own_io import is_own_io
from timetracer_otel._request_scope import request_scoped

__all__ = [
    "Closure",
    "NetworkBlockedError",
    "close_everywhere",
    "close_in_context",
    "install",
    "reopen_context",
    "uninstall",
    "watch_outside",
]


class NetworkBlockedError(ConnectionRefusedError):
    """A connection attempted while replaying: it is never made."""


@dataclass(eq=False)
class Closure:
    """The network closed for one replay: ``label`` names it in the refusal, ``hint`` says the way out."""

    label: str
    hint: str
    allowed_hosts: frozenset[str] = frozenset()
    refused: list[str] = field(default_factory=list)  # "host:port" of each refused connection

    def allows(self, host: str, port: Any) -> bool:
        return _allowed(self.allowed_hosts, host, port)


def _allowed(allowed_hosts: frozenset[str], host: str, port: Any) -> bool:
    """A host (or host:port) the user allowed, or an app under test served in this process."""
    return (
        host in allowed_hosts
        or (port is not None and f"{host}:{port}" in allowed_hosts)
        or is_app_address(host, port)
    )


@dataclass(eq=False)
class _Watch:
    """Connections outside replayed requests: let through, each host and port named once."""

    allowed_hosts: frozenset[str]
    seen: set[str] = field(default_factory=set)

    def see(self, host: str, port: Any) -> None:
        target = f"{host}:{port}"
        if target in self.seen or _allowed(self.allowed_hosts, host, port):
            return
        with _lock:
            if target in self.seen:
                return
            self.seen.add(target)
        logger.warning(
            "timetracer: a connection to %s went out while replaying, outside any request (start-up, a "
            "background task): no replayer answers it, so it reached the real service (a library "
            "timetracer does not replay, such as a message broker's). TIMETRACER_ALLOWED_HOSTS=%s lets "
            "it go without this warning. A new connection inside a replayed request is refused, but "
            "what the app sends on this one while it replays reaches the service.",
            target,
            target,
        )


_everywhere: Closure | None = None
_watched: _Watch | None = None
_in_context: contextvars.ContextVar[Closure | None] = request_scoped(
    contextvars.ContextVar("timetracer_network_closure", default=None)
)
_lock = threading.Lock()
_METHODS = ("connect", "connect_ex")
_originals: dict[str, Callable[..., Any]] = {}  # what each wrapper calls
_installed: dict[str, Callable[..., Any]] = {}  # the wrappers, to tell whether they are in place


def watch_outside(allowed_hosts: frozenset[str]) -> None:
    """In a process started to replay: warn of each host and port connected to outside every
    replayed request (except ``allowed_hosts``), once; the connection goes on."""
    global _watched
    install()
    if _watched is None:
        _watched = _Watch(allowed_hosts)


def close_everywhere(closure: Closure | None) -> Closure | None:
    """Refuse connections in every thread under ``closure`` (None: no longer); returns the one it replaces."""
    global _everywhere
    install()
    previous, _everywhere = _everywhere, closure
    return previous


def close_in_context(closure: Closure) -> contextvars.Token:
    """Refuse connections made in this context (and the tasks and threads it hands it to)."""
    install()
    return _in_context.set(closure)


def reopen_context(token: contextvars.Token) -> None:
    _in_context.reset(token)


def install() -> None:
    """Wrap ``socket.socket.connect`` and ``connect_ex``, and uvloop's ``create_connection`` and
    ``create_unix_connection`` (it connects in C, never through the socket's methods), once
    uvloop is imported; a process that never replays is untouched.

    Again whenever a wrapper is no longer in place: something that patched the socket
    methods before the first replay (a test's connection recorder) may put its own back.
    """
    if (  # once per replayed request: checked without a loop
        socket.socket.connect is _installed.get("connect")
        and socket.socket.connect_ex is _installed.get("connect_ex")
        and (_uvloop_guarded or "uvloop" not in sys.modules)
    ):
        return
    with _lock:
        for name in _METHODS:
            current = getattr(socket.socket, name)
            if current is not _installed.get(name):
                _originals[name] = current
                _installed[name] = _guarded(current)
                setattr(socket.socket, name, _installed[name])
        _guard_uvloop()


def _guard_uvloop() -> None:
    """Wrap the connecting methods of ``uvloop.Loop`` (a Python class over uvloop's own), once it is imported."""
    global _uvloop_guarded
    uvloop = sys.modules.get("uvloop")
    if _uvloop_guarded or uvloop is None:
        return
    loop_class = uvloop.Loop
    for name, screen in _LOOP_METHODS.items():
        _loop_originals[name] = loop_class.__dict__.get(name)
        setattr(loop_class, name, _guarded_loop_method(getattr(loop_class, name), screen))
    _uvloop_guarded = True


def uninstall() -> None:
    global _uvloop_guarded
    with _lock:
        for name, original in _originals.items():
            if getattr(socket.socket, name) is _installed.get(name):
                setattr(socket.socket, name, original)
        _originals.clear()
        _installed.clear()
        if _uvloop_guarded:
            loop_class = sys.modules["uvloop"].Loop
            for name, own in _loop_originals.items():
                if own is None:
                    delattr(loop_class, name)
                else:
                    setattr(loop_class, name, own)
            _loop_originals.clear()
            _uvloop_guarded = False


def _host(address: Any) -> str:
    if isinstance(address, tuple) and address:
        return str(address[0])
    return str(address)  # a Unix socket path


# The threads and tasks in which a client library checks its servers on its own (pymongo's
# monitors, round-trip timers, SRV polling, cursor killer): a client made before a replaying
# block keeps running them, whenever their heartbeat comes.
_UPKEEP_PREFIX = "pymongo_"
_INTERNET = (socket.AF_INET, socket.AF_INET6)


def _library_upkeep() -> bool:
    """The connection is a client library's own upkeep, not a call of the code replayed: refused
    like any other, and not reported (the test did not reach for the network)."""
    if threading.current_thread().name.startswith(_UPKEEP_PREFIX):
        return True
    try:
        task = asyncio.current_task()
    except RuntimeError:  # no running loop in this thread
        return False
    return task is not None and task.get_name().startswith(_UPKEEP_PREFIX)


def _screen(family: int, address: Any) -> None:
    """Refuse a connection to ``address`` as the closure in force says (``NetworkBlockedError``);
    outside every closure, in a process started to replay, note it for the warning."""
    closure = _everywhere or _in_context.get()
    if (
        closure is None
        and _watched is not None
        and family in _INTERNET
        and isinstance(address, tuple)
        and not is_own_io()
    ):
        _watched.see(_host(address), address[1] if len(address) > 1 else None)
    if closure is not None and family != getattr(socket, "AF_NETLINK", None) and not is_own_io():
        host = _host(address)
        port = address[1] if isinstance(address, tuple) and len(address) > 1 else None
        if not closure.allows(host, port):
            target = host if port is None else f"{host}:{port}"
            if not _library_upkeep():
                with _lock:
                    closure.refused.append(target)
            raise NetworkBlockedError(
                f"timetracer: no connection to {target} while replaying {closure.label}: the "
                "cassette answers the calls it recorded, and this one it cannot (a library "
                f"timetracer does not replay, or a call the recording did not make). {closure.hint}"
            )


def _guarded(original: Callable[..., Any]) -> Callable[..., Any]:
    def connect(sock: socket.socket, address: Any, *args: Any) -> Any:
        _screen(sock.family, address)
        return original(sock, address, *args)

    return connect


def _tcp_address(args: tuple, kwargs: dict) -> tuple[int, Any] | None:
    """``create_connection(protocol_factory, host, port, ..., sock=None)``: the address it connects to, None for a socket given connected."""
    if kwargs.get("sock") is not None:
        return None
    host = args[1] if len(args) > 1 else kwargs.get("host")
    port = args[2] if len(args) > 2 else kwargs.get("port")
    return socket.AF_INET, (host, port)


def _unix_address(args: tuple, kwargs: dict) -> tuple[int, Any] | None:
    """``create_unix_connection(protocol_factory, path, ..., sock=None)``: the path it connects to."""
    if kwargs.get("sock") is not None:
        return None
    return socket.AF_UNIX, args[1] if len(args) > 1 else kwargs.get("path")


_LOOP_METHODS: dict[str, Callable[[tuple, dict], tuple[int, Any] | None]] = {
    "create_connection": _tcp_address,
    "create_unix_connection": _unix_address,
}
_loop_originals: dict[str, Any] = {}  # the methods uvloop.Loop had of its own (None: inherited)
_uvloop_guarded = False


def _guarded_loop_method(
    original: Callable[..., Any], address_of: Callable[[tuple, dict], tuple[int, Any] | None]
) -> Callable[..., Any]:
    async def connect(loop: Any, *args: Any, **kwargs: Any) -> Any:
        target = address_of(args, kwargs)
        if target is not None:
            _screen(*target)
        return await original(loop, *args, **kwargs)

    return connect
