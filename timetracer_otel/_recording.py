"""The state of one request being recorded, reachable from capture code via a contextvar.

The ASGI layer creates a :class:`TraceRecording` per sampled request and sets it as
current; capture wrappers for client libraries add their calls to whatever recording
is current in their context, so concurrent requests never see each other's calls.
Code running outside every request (lifespan, import time, threads without the
request's context) records into the process recording, when the process has one
(:mod:`._process_recording`); a request that is not recorded records nothing.
"""

from __future__ import annotations

import contextvars
import itertools
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from opentelemetry import trace

from ._diagnostics import counters
from ._own_io import is_own_io
from ._request_scope import request_scoped
from .cassette.body import BodySink
from .determinism import DrawRecorder, called

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import ReadableSpan

    from .config import TraceConfig

_current: contextvars.ContextVar[TraceRecording | None] = request_scoped(
    contextvars.ContextVar("timetracer_recording", default=None)
)
# True inside an inbound request (an ASGI scope other than lifespan), recorded or not.
_in_request: contextvars.ContextVar[bool] = request_scoped(
    contextvars.ContextVar("timetracer_in_request", default=False)
)
# True while a library records one call whole: the library it drives underneath records nothing of it.
_outer_call: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "timetracer_outer_call", default=False
)
# Where calls made outside every request go (set by _process_recording), or None.
_process: TraceRecording | None = None
_process_lock = threading.Lock()

Headers = list[tuple[str, str]]

# Identifies a recording within its process, also when seeded random numbers repeat trace and span ids.
_serials = itertools.count(1)
# Calls, and spans, a request's recording keeps after its response went out (a task it left
# running, a poller, calling on for as long as the process lives): the rest are counted only.
MAX_LATE = 1000


def current_recording() -> TraceRecording | None:
    """The recording of the request this code runs for; outside every request, the process recording; or None
    (also for timetracer's own I/O, which no recording keeps)."""
    recording = _current.get()
    if recording is None:
        # a request not recorded (not sampled, excluded): nothing more to ask
        if _process is None or _in_request.get():
            return None
        recording = _process
    return None if is_own_io() else recording


class outer_call:  # noqa: N801 - used as a function: ``with outer_call():``
    """Mark the block as part of one call being recorded (a SQLAlchemy statement, its connect, its
    commit; a requests call; a urllib3 pool's own retries), or as a library's own housekeeping (a
    pool resetting a connection): a driver below it (asyncpg under SQLAlchemy, urllib3 under
    requests) records nothing, so each call is kept once. Replay marks a call it lets go live
    (hybrid mode) alike, so the replayer of the library below lets it go too.

    A class rather than a generator-based context manager: it runs for every statement."""

    __slots__ = ("_token",)

    def __enter__(self) -> None:
        self._token = _outer_call.set(True)

    def __exit__(self, *exc_info: object) -> None:
        _outer_call.reset(self._token)


def in_outer_call() -> bool:
    """True inside :func:`outer_call`: a driver's own capture stands aside."""
    return _outer_call.get()


def process_recording() -> TraceRecording | None:
    """The recording of calls made outside every request, if this process keeps one."""
    return _process


def use_process_recording(recording: TraceRecording) -> TraceRecording:
    """Make ``recording`` the process recording, unless there is one already; return the one in use."""
    global _process
    with _process_lock:
        if _process is None:
            _process = recording
        return _process


def request_recording() -> TraceRecording | None:
    """The recording of the request this code runs for, or None (never the process recording)."""
    return _current.get()


def exception_info(exc: BaseException) -> dict[str, str]:
    """``{"type": "module.Class", "message": str(exc)}`` for a cassette.

    Never raises: an exception's ``__str__`` can (FastAPI's ``ResponseValidationError`` shows
    ORM objects whose lazy attributes fail outside their session), and the app's exception,
    not that one, must reach the server."""
    cls = type(exc)
    module = cls.__module__
    qualname = (
        cls.__qualname__ if module in ("builtins", "__main__") else f"{module}.{cls.__qualname__}"
    )
    try:
        message = str(exc)
    except Exception as failure:  # as traceback prints it: "<exception str() failed>"
        message = f"<str() raised {type(failure).__name__}>"
    return {"type": qualname, "message": message}


@dataclass
class HttpCall:
    """One outgoing HTTP call as the client library saw it."""

    library: str
    method: str
    url: str
    request_headers: Headers
    request_body: BodySink
    started_ns: int = field(default_factory=time.time_ns)
    span_id: int = 0
    status: int | None = None
    response_headers: Headers | None = None
    response_body: BodySink | None = None
    # True when the client library already undid Content-Encoding before we saw the bytes.
    response_decoded: bool = False
    error: dict[str, str] | None = None

    protocol = "http"
    kind = "http.client"

    def seal(self) -> None:
        self.request_body.seal()
        if self.response_body is not None:
            self.response_body.seal()


@dataclass
class ProtocolCall:
    """One outgoing call of a protocol other than HTTP (SQL, Redis, Mongo).

    ``request`` and ``response`` hold plain Python values, exactly as the client library
    gave and returned them; the cassette stores them as typed values so replay gives back
    the same types. Their shape is the protocol's own (see each capture module).
    """

    protocol: str  # "sql", "redis", "mongo"
    library: str  # "sqlalchemy", "redis", "pymongo", ...
    request: dict[str, Any]
    started_ns: int = field(default_factory=time.time_ns)
    span_id: int = 0
    response: dict[str, Any] | None = None
    error: dict[str, str] | None = None

    @property
    def kind(self) -> str:
        """The dependency kind shown on the console line: ``sql.client``, ``redis.client``, ..."""
        return f"{self.protocol}.client"

    def seal(self) -> None:
        """Nothing streams into a protocol call after it returns."""


class TraceRecording:
    """One inbound request: its payloads, the outgoing calls made for it, and its spans."""

    scope = "request"  # what the cassette records: one request, or the process outside its requests
    dropped_calls = 0  # calls not kept (a process recording is bounded)

    def __init__(
        self,
        config: TraceConfig,
        *,
        trace_id: int,
        root_span_id: int,
        method: str,
        path: str,
        query: str,
        headers: Headers,
        service: str,
        server_parts: dict[str, Any] | None = None,
    ) -> None:
        self.config = config
        self.serial = next(_serials)
        self.trace_id = trace_id
        self.root_span_id = root_span_id
        self.method = method
        self.path = path
        self.query = query
        self.headers = headers
        self.service = service
        # scope keys the server set (client, scheme, root_path): see capture.asgi
        self.server_parts = server_parts or {}
        # the id of the process cassette of the process that served it (concurrent workers)
        self.process: str | None = None
        self.route: str | None = None
        self.started_ns = time.time_ns()
        self.request_body = BodySink(config.max_body_bytes)
        self.status: int | None = None
        self.response_headers: Headers | None = None
        self.response_body = BodySink(config.max_body_bytes)
        self.error: dict[str, str] | None = None
        self.calls: list[Any] = []
        self.spans: list[ReadableSpan] = []
        self.finished = False  # the root span ended; what comes later is a late span
        self.discarded = False  # finished but not kept (errors_only and the request succeeded)
        self.open_spans = (
            0  # spans of this request started and not yet ended (kept by the processor)
        )
        self.fixed_path: str | None = None  # write exactly here instead of the dated directory
        # The clock, UUID and random values the request draws (None: config.draws is empty).
        self.draws: DrawRecorder | None = DrawRecorder(config.draws) if config.draws else None
        # secrets the code recorded gave an app it serves in-process (see _given_secrets)
        self.given_secrets: frozenset[str] = frozenset()
        self._late: dict[str, int] = {}  # calls and spans that came after the response
        self._lock = threading.Lock()

    def add_call(self, call: Any) -> None:
        """Attach an outgoing call to the span that is current for the caller."""
        span_context = trace.get_current_span().get_span_context()
        call.span_id = span_context.span_id if span_context.trace_id == self.trace_id else 0
        with self._lock:
            if not self._keeps_late("calls"):
                return
            self.calls.append(call)
            number = len(self.calls) - 1
        called(self.draws, number)

    def give(self, secrets: frozenset[str]) -> None:
        """Note secrets hidden by value in this recording's cassette wherever they appear."""
        with self._lock:
            self.given_secrets = self.given_secrets | secrets

    def add_span(self, span: ReadableSpan) -> bool:
        """Keep ``span``; False when it came after the response and :data:`MAX_LATE` such did."""
        with self._lock:
            if not self._keeps_late("spans"):
                return False
            self.spans.append(span)
            return True

    def _keeps_late(self, kind: str) -> bool:
        """Whether one more call or span is kept (under the lock): after the response, the first :data:`MAX_LATE`."""
        if not self.finished:
            return True
        late = self._late[kind] = self._late.get(kind, 0) + 1
        if late <= MAX_LATE:
            return True
        counters.add(f"dropped.late_{kind}")
        return False

    def snapshot(self) -> tuple[list[Any], list[ReadableSpan]]:
        """The calls and spans so far, as lists the caller may iterate freely."""
        with self._lock:
            return list(self.calls), list(self.spans)

    def seal(self) -> None:
        """Freeze all bodies: the request is over, what arrives later is not kept."""
        self.request_body.seal()
        self.response_body.seal()
        with self._lock:
            calls = list(self.calls)
        for call in calls:
            call.seal()

    @property
    def failed(self) -> bool:
        return self.error is not None or (self.status or 500) >= 500


class RecordingWriter(Protocol):
    """Where finished recordings go to become cassettes (the cassette processor's one seam).

    Shaped like OpenTelemetry's ``SpanExporter``: ``submit`` hands a recording over
    without blocking the request (False: dropped, and counted), ``flush`` waits until
    everything handed over before is written, ``unwritten`` says how many are still
    on their way. A thread
    (:class:`~timetracer_otel.exporters.writer.CassetteWriter`) and a writer process
    (:class:`~timetracer_otel.exporters.process_writer.ProcessWriter`) implement it.
    """

    def submit(self, recording: TraceRecording) -> bool: ...

    def flush(self, timeout: float | None = None) -> bool: ...

    def unwritten(self) -> int:
        """How many recordings handed over are not written yet."""
        ...


def activate(recording: TraceRecording) -> contextvars.Token:
    return _current.set(recording)


def deactivate(token: contextvars.Token) -> None:
    _current.reset(token)


def activate_none() -> contextvars.Token:
    """No request's recording for the code that follows (until :func:`deactivate`): what a
    replay answers there (a replayed fixture set up while its test records) is no call of it."""
    return _current.set(None)


def enter_request() -> contextvars.Token:
    """Mark the code that follows as serving an inbound request: its calls never go to the process recording."""
    return _in_request.set(True)


def leave_request(token: contextvars.Token) -> None:
    _in_request.reset(token)


def in_request() -> bool:
    """True in code serving an inbound request (recorded, replayed, or neither)."""
    return _in_request.get()
