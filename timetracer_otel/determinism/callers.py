"""Who drew a value: the module and function that asked for it, seen through the standard library's helpers.

``uuid.uuid4()`` draws from ``os.urandom`` and ``secrets.token_hex()`` from
``random.SystemRandom``: the caller is the first module outside those helpers (the app's
own code, SQLAlchemy's column defaults, argon2's salt), and the outermost helper names
the source. Draws by timetracer, OpenTelemetry, pytest's own timing, SQLAlchemy's
connection pool (the time a connection was opened: replay opens its connections anew) and
pymongo's own ids have no caller: they stay real. The log libraries' (``logging``, loguru,
structlog: a log line's time) are their own source, ``logs``, off unless asked for.

The caller is written ``module:function``: work a process does once (a rate limiter's task
started by the first request, a lazily set start time) draws in another function than the
requests' own code in the same module, so replaying a request without the one that did that
work does not shift the values the request's own code gets. A comprehension's draws are its
function's, as Python 3.12 runs them inline.
"""

from __future__ import annotations

import sys
from pathlib import Path
from types import FrameType

__all__ = ["LOG_HELPER", "attribute", "library_timer"]

_HELPERS = frozenset({"random", "secrets", "uuid"})
_OURS = (
    "timetracer_otel.determinism"  # the patched functions themselves: looked through, like a helper
)
# pymongo's own ids and choices (the topology's ObjectId, server sessions' uuid4, wire request
# ids, SCRAM nonces, retry jitter, server selection): drawn once per client or per message, in
# whichever request first uses the client, and never seen by the app. Not its collection modules:
# the _id an insert gives a document without one is the app's.
_PYMONGO_OWN = tuple(
    f"pymongo.{module}"
    for module in (
        "settings", "settings_shared", "client_session", "client_session_shared",
        "synchronous.client_session", "asynchronous.client_session", "message", "_telemetry",
        "auth", "auth_shared", "helpers", "helpers_shared", "topology", "synchronous.topology",
        "asynchronous.topology", "srv_resolver", "synchronous.srv_resolver", "asynchronous.srv_resolver",
    )
)  # fmt: skip
_OWN_PREFIXES = (
    "timetracer_otel", "opentelemetry", "_pytest", "sqlalchemy.pool", *_PYMONGO_OWN,
)  # fmt: skip
# The log libraries: their clock reads (a line's time) are drawn from the source ``logs`` only.
_LOG_PREFIXES = ("logging", "loguru", "structlog")
LOG_HELPER = "logging"  # the helper a log library's draw is reported through

_COMPREHENSIONS = frozenset({"<listcomp>", "<dictcomp>", "<setcomp>"})
_APP, _HELPER, _THROUGH, _OWN, _LOG = range(5)
_kinds: dict[str, int] = {}  # module name -> kind; a dict lookup per frame once seen


def _within(module: str, packages: tuple[str, ...]) -> bool:
    """``module`` is one of ``packages`` or inside one."""
    return any(module == package or module.startswith(package + ".") for package in packages)


def _kind(module: str) -> int:
    kind = _kinds.get(module)
    if kind is None:
        if module in _HELPERS:
            kind = _HELPER
        elif _within(module, (_OURS,)):
            kind = _THROUGH
        elif _within(module, _OWN_PREFIXES):
            kind = _OWN
        elif _within(module, _LOG_PREFIXES):
            kind = _LOG
        else:
            kind = _APP
        _kinds[module] = kind
    return kind


def _function(frame: FrameType) -> str:
    name = frame.f_code.co_name
    if name in _COMPREHENSIONS and frame.f_back is not None:
        return frame.f_back.f_code.co_name
    return name


def attribute(frame: FrameType | None) -> tuple[str | None, str | None]:
    """(caller ``module:function``, outermost helper module) for a draw made in ``frame``.

    The caller is None for a draw that stays real (timetracer's, OpenTelemetry's, ...); a
    log library's draw has :data:`LOG_HELPER` for its helper.
    """
    helper: str | None = None
    kinds = _kinds
    while frame is not None:
        module = frame.f_globals.get("__name__") or "__main__"
        kind = kinds.get(module)  # _kind's own first step, without a call for each frame
        if kind is None:
            kind = _kind(module)
        if kind == _APP:
            return f"{module}:{_function(frame)}", helper
        if kind == _OWN:
            return None, helper
        if kind == _LOG:
            return f"{module}:{_function(frame)}", LOG_HELPER
        if kind == _HELPER:
            helper = module
        frame = frame.f_back
    return "__main__", helper


_timers: dict[str, bool] = {}  # module name -> library_timer's answer


def library_timer(caller: str) -> bool:
    """Whether ``caller`` (``module:function``) reads the performance counter or the monotonic
    clock as a library: the standard library or an installed package (in ``site-packages``)
    timing or scheduling its own work (the event loop's timers, httpx's ``elapsed``,
    SQLAlchemy's compile times, an APM agent's spans, trio's clock, pytest-xdist's durations).
    Never part of a response, read again or not by a replay whatever the app does, and a
    recorded reading would set a live timer: only the app's own modules' reads are drawn."""
    module = caller.partition(":")[0]
    found = _timers.get(module)
    if found is None:
        file = getattr(sys.modules.get(module), "__file__", None) or ""
        installed = {"site-packages", "dist-packages"} & set(Path(file).parts)
        found = _timers[module] = module.partition(".")[0] in sys.stdlib_module_names or bool(
            installed
        )
    return found
