"""Logging, counters and the guard that keeps capture failures out of the app.

Capture code runs inside the user's requests. Any exception it raises is caught by
:func:`guarded`, counted, and logged at most once per minute per kind, so a bug in
recording never fails a request and never floods the log.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
import traceback
from collections import Counter
from collections.abc import Callable
from typing import Any


class _NotSilencedByConfig(logging.Logger):
    """timetracer's logger, which ``logging.config`` cannot disable: ``fileConfig`` and
    ``dictConfig`` disable every logger that exists and that the configuration leaves out
    (``disable_existing_loggers``, on by default), and alembic's ``env.py`` calls ``fileConfig``
    in-process, in a test suite's set-up: every console line and every recording error went
    silent, cassettes that failed to be written among them. Its level quiets it."""

    @property
    def disabled(self) -> bool:
        return False

    @disabled.setter
    def disabled(self, value: bool) -> None:
        """Ignored: see the class."""


logger = logging.getLogger("timetracer")
logger.__class__ = _NotSilencedByConfig

_LOG_INTERVAL_SECONDS = 60.0


def _root_shows_records() -> bool:
    """Whether the application configured the root logger to show records somewhere: a
    handler other than a ``NullHandler`` or OpenTelemetry's ``LoggingHandler`` (which only
    exports them: the FastAPI template's OpenTelemetry set-up adds one, and every console
    line went nowhere)."""
    return any(
        not isinstance(handler, logging.NullHandler)
        and not type(handler).__module__.startswith("opentelemetry.")
        for handler in logging.getLogger().handlers
    )


class _StderrUnlessConfigured(logging.StreamHandler):
    """Print to stderr only while the application has not configured logging itself.

    When the root logger has handlers that show records, records propagate there instead, so
    a line is never printed twice and the application's own logging setup decides the format.
    """

    def __init__(self) -> None:
        super().__init__(sys.stderr)
        self.setFormatter(logging.Formatter("%(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        if _root_shows_records():
            return
        self.stream = sys.stderr  # follow redirections (pytest capsys, contextlib.redirect_stderr)
        super().emit(record)


_stderr_handler = (
    next((h for h in logger.handlers if isinstance(h, _StderrUnlessConfigured)), None)
    or _StderrUnlessConfigured()
)
if _stderr_handler not in logger.handlers:
    logger.addHandler(_stderr_handler)
if logger.level == logging.NOTSET:
    logger.setLevel(logging.INFO)


def console(text: str, level: int = logging.INFO) -> None:
    """Log a console line (a cassette recorded, a request replayed) as ``logger.log`` would.

    Where only timetracer's own stderr handler would see it (no other handler or filter,
    and the application has not configured logging), the line is written straight to
    stderr: logging's record, caller search and formatting cost more than replaying a
    request without calls (13 against 2 µs a line here).
    """
    if not logger.isEnabledFor(level):
        return
    handler = _stderr_handler
    if (
        logger.handlers != [handler]
        or logger.filters
        or handler.filters
        or level < handler.level
        or logging.getLogger().handlers
    ):
        logger.log(level, "%s", text)
        return
    try:
        with handler.lock:  # type: ignore[union-attr]  # Handler.lock: None until createLock, always called
            stream = sys.stderr  # followed, as the handler does
            stream.write(text + handler.terminator)
            stream.flush()
    except Exception:  # a closed or broken stderr: logging's own handling of it
        logger.log(level, "%s", text)


class _Counters:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: Counter[str] = Counter()

    def add(self, name: str, amount: int = 1) -> None:
        with self._lock:
            self._counts[name] += amount

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return dict(self._counts)


counters = _Counters()


class _RateLimitedErrors:
    """Log an error kind at most once per interval; say how many were held back.

    ``clock`` (seconds, monotonic) is a parameter so tests can move time without sleeping.
    ``forward``, when set, receives every error instead (kind, message, traceback text or
    None): the writer process sends its errors to the application's process, whose
    limiter and logging decide.
    """

    def __init__(
        self, interval: float = _LOG_INTERVAL_SECONDS, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.forward: Callable[[str, str, str | None], None] | None = None
        self.first: dict[str, str] = {}  # kind -> the first line of its first message here
        self._interval = interval
        self._clock = clock
        self._lock = threading.Lock()
        self._last: dict[str, float] = {}
        self._suppressed: Counter[str] = Counter()

    def error(self, kind: str, message: str, exc: BaseException | None = None) -> None:
        if self.forward is not None:
            self.forward(
                kind, message, None if exc is None else "".join(traceback.format_exception(exc))
            )
            return
        now = self._clock()
        with self._lock:
            self.first.setdefault(kind, message.split("\n", 1)[0])
            last = self._last.get(kind)
            if last is not None and now - last < self._interval:
                self._suppressed[kind] += 1
                return
            self._last[kind] = now
            held_back = self._suppressed.pop(kind, 0)
        suffix = f" ({held_back} more since the last report)" if held_back else ""
        logger.error("timetracer: %s%s", message, suffix, exc_info=exc)


errors = _RateLimitedErrors()


def failures(since: dict[str, int]) -> dict[str, tuple[int, str]]:
    """kind -> (how many, the first message) of the failures inside timetracer counted since the
    :attr:`counters` snapshot ``since``: recording errors the code under test never sees."""
    found = {}
    for name, count in counters.snapshot().items():
        kind = name.removeprefix("errors.")
        if kind != name and count > since.get(name, 0):
            found[kind] = (count - since.get(name, 0), errors.first.get(kind, f"{kind} failed"))
    return found


def report_failure(kind: str, exc: BaseException) -> None:
    """Count and (rate-limited) log a failure inside timetracer itself."""
    counters.add(f"errors.{kind}")
    errors.error(kind, f"{kind} failed: {type(exc).__name__}: {exc}", exc)


class guarded:  # noqa: N801 - used as a function: ``with guarded("httpx.request"):``
    """Run capture code; swallow, count and log whatever it raises.

    A class rather than a generator-based context manager: it runs several times per
    recorded request, and this costs a third of the calls.
    """

    __slots__ = ("_kind",)

    def __init__(self, kind: str) -> None:
        self._kind = kind

    def __enter__(self) -> None:
        return None

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: Any
    ) -> bool:
        # capture must never raise into the app
        if not isinstance(exc, Exception):  # None too: nothing was raised
            return False
        report_failure(self._kind, exc)
        return True
