"""The dashboard's pages: the table of recordings, one recording, a diff of two, a replay.

Cassettes are addressed only by their key in the directory's index (their path relative
to the directory, as a scan found it); anything else is a 404, so no parameter can reach
a file outside the directory. Every recorded value goes through Jinja2's autoescaping.
Reading the directory and the cassettes runs in worker threads, never on the event loop,
so a large or hostile cassette slows only the page that shows it.
"""

from __future__ import annotations

import os
import re
import secrets
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, unquote_to_bytes, urlencode

from jinja2 import Environment, PackageLoader, StrictUndefined
from markupsafe import Markup
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.convertors import PathConvertor, register_url_convertor
from starlette.datastructures import QueryParams
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from timetracer_otel._terminal import cut, printable
from timetracer_otel.cassette.body import decode_body
from timetracer_otel.cassette.naming import sanitise
from timetracer_otel.cassette.reader import CassetteError, load_cassette
from timetracer_otel.cli.call_views import call_view
from timetracer_otel.cli.diff import (
    DEFAULT_IGNORED,
    diff_cassettes,
    environment_sealer,
    show_value,
)
from timetracer_otel.cli.index import CassetteIndex
from timetracer_otel.cli.query import SORT_KEYS, Filters, is_error, select
from timetracer_otel.cli.search import matches
from timetracer_otel.cli.views import (
    body_text,
    call_rows,
    exception_event,
    total_ms,
    value_text,
    waterfall,
)
from timetracer_otel.config import ReadLimits

from ._replay import ReplayTarget, call_pairs, response_rows, run_replay
from ._security import SecurityHeaders, allowed_hosts

__all__ = ["create_app", "ReplayTarget"]

_PAGE_SIZE = 200
# A page reads again only the directories that changed (cassettes added, removed or renamed show
# at once); every file is looked at again at most this often (a cassette rewritten in place shows then).
_FULL_SCAN_SECONDS = 60.0
_FILTER_FIELDS = (
    "method",
    "path",
    "route",
    "status",
    "errors",
    "since",
    "until",
    "service",
    "text",
)
_COLUMNS = (("recorded_at", "recorded (UTC)"), ("method", "method"), ("path", "path"), ("status", "status"),
            ("route", "route"), ("duration", "ms"), ("calls", "calls"), ("service", "service"), ("id", "id"))  # fmt: skip
_PARTS = ("request", "response")
_CALL_NUMBER = re.compile(r"[0-9]{1,9}")  # ASCII digits only: int() takes others ("²" is not)
_TICKS = 5  # time axis labels: at 0, 1/4, 1/2, 3/4 and the whole of the request
# spans, and calls outside them, a recording's page shows (a page of 200,000 calls was 114 MB
# of HTML, 21 s to make, and more than a browser opens); each beyond is counted
_SHOWN_ROWS = 1000


def _filters(params: dict[str, str]) -> Filters:
    """The table's filter form as :class:`Filters` (``ValueError`` for a value it cannot use)."""
    return Filters(
        methods=[params["method"]] if params["method"] else [], path=params["path"] or None,
        route=params["route"] or None, statuses=[params["status"]] if params["status"] else [],
        errors=params["errors"] == "1", since=params["since"] or None, until=params["until"] or None,
        services=[params["service"]] if params["service"] else [],
    )  # fmt: skip


def _shown(value: Any) -> Any:
    """What a page prints of a value: text with control, bidi and surrogate characters escaped, as on a terminal
    (the page's own markup, a macro's output, stays as it is)."""
    return (
        printable(value, multiline=True)
        if isinstance(value, str) and not isinstance(value, Markup)
        else value
    )


_VALUE_CHARS = 4096  # of a header's or a span attribute's value shown on a page


def _short(value: Any) -> str:
    """A header's or an attribute's value, cut (a hostile file's 50 MB header made a 50 MB
    page); the whole of it is in the cassette, which the page offers to download."""
    return cut(str(value), _VALUE_CHARS)


def _url_part(key: str) -> str:
    """A key in a URL; a file name that is not UTF-8 keeps its bytes (``%FF``)."""
    return quote(os.fsencode(key), safe="/")


class _AnyPath(PathConvertor):
    """A path parameter of any characters: a cassette's file name may hold a line break, which
    Starlette's ``path`` (``.*``) does not take, and its page was not found."""

    regex = r"[\s\S]*"


register_url_convertor("anypath", _AnyPath())


def _key(request: Request, prefix: str) -> str:
    """The key a URL names, from the raw path: a file name that is not UTF-8 comes back byte for byte."""
    raw = request.scope.get("raw_path")
    if raw is None or not raw.startswith(prefix.encode("ascii")):
        return request.path_params["key"]
    return os.fsdecode(unquote_to_bytes(raw[len(prefix) :].split(b"?", 1)[0]))


def _query(request: Request) -> dict[str, str]:
    """The first value of each query parameter; a key of a file name that is not UTF-8 comes back byte for byte."""
    query = request.scope.get("query_string", b"").decode("latin-1")
    return {
        name: values[0]
        for name, values in parse_qs(query, encoding="utf-8", errors="surrogateescape").items()
    }


def _part(doc: dict[str, Any], name: str) -> tuple[Any, str]:
    """The body (or non-HTTP value) a download names, and its file suffix: ``request``, ``response``,
    ``calls.3.request``...; 404 for any other name."""
    where = name.split(".")
    if (
        len(where) == 3
        and where[0] == "calls"
        and _CALL_NUMBER.fullmatch(where[1])
        and where[2] in _PARTS
    ):
        calls = doc.get("calls", [])
        index = int(where[1])
        if index >= len(calls):
            raise HTTPException(404, "no such call in this recording")
        call, message_name = calls[index], where[2]
        if call.get("protocol") != "http":
            return value_text(call.get(message_name)).text.encode("utf-8"), "json"
        message = call.get(message_name)
    elif len(where) == 1 and where[0] in _PARTS:
        message = doc[where[0]]
    else:
        raise HTTPException(404, "no such part of a recording")
    body = message.get("body") if isinstance(message, dict) else None
    return (decode_body(body) if body else b""), "bin"


class _Pages:
    """The request handlers, over one cassette directory, scanned when they are made.

    Each handler hands its work (scanning, reading, rendering) to a worker thread; the index
    is shared, so scans take turns.
    """

    def __init__(self, directory: str, target: ReplayTarget | None, limits: ReadLimits) -> None:
        self.index = CassetteIndex(directory, limits)
        self.limits = limits
        self.directory = directory
        self.target = target
        # the Replay form's token: another site cannot read it, so cannot post
        self.token = secrets.token_urlsafe(32)
        self.env = Environment(
            loader=PackageLoader("timetracer_otel.dashboard", "templates"),
            autoescape=True,
            undefined=StrictUndefined,
            finalize=_shown,
        )
        self.env.filters["urlencode"] = _url_part
        self.env.filters["short"] = _short
        self._scan_lock = threading.Lock()
        self._scanned()  # now, so the first page is as quick as the next

    def render(self, template: str, status_code: int = 200, **context: Any) -> HTMLResponse:
        html = self.env.get_template(template).render(directory=self.directory, **context)
        return HTMLResponse(html, status_code=status_code)

    def _scanned(self) -> CassetteIndex:
        with self._scan_lock:
            return self.index.refresh(_FULL_SCAN_SECONDS)

    def _document(self, key: str) -> tuple[Path, dict[str, Any]]:
        """The cassette of an index key; 404 for anything the index does not hold, 422 for an unusable file."""
        index = (
            self.index
            if key in self.index.entries or key in self.index.problems
            else self._scanned()
        )
        path, problem = index.path_of(key), index.problem_of(key)
        if problem is None and path is not None:
            try:
                return Path(path), load_cassette(path, limits=self.limits)
            except CassetteError as exc:  # changed since the scan
                problem = exc.problem
        if problem is not None:
            raise HTTPException(422, f"cannot use cassette {key}: {problem}")
        raise HTTPException(404, "no such cassette in this directory")

    def table(self, query: QueryParams) -> HTMLResponse:
        params = {name: query.get(name, "").strip() for name in _FILTER_FIELDS}
        sort = query.get("sort", "recorded_at")
        descending = query.get("desc", "1" if sort == "recorded_at" else "") == "1"
        offset_text = query.get("offset", "")
        offset = int(offset_text) if offset_text.isdigit() else 0
        problem = ""
        index = self._scanned()
        try:
            rows = select(
                index.entries.values(),
                _filters(params),
                sort if sort in SORT_KEYS else "recorded_at",
                descending,
            )
        except ValueError as exc:
            problem, rows = str(exc), []
        if params["text"]:
            rows = [row for row in rows if self._contains(row["key"], params["text"])]
        kept = {k: v for k, v in params.items() if v}
        links = {
            column: "?"
            + urlencode(
                {**kept, "sort": column, "desc": "" if column == sort and descending else "1"}
            )
            for column, _ in _COLUMNS
        }

        def page(start: int) -> str:
            return "?" + urlencode(
                {**kept, "sort": sort, "desc": "1" if descending else "", "offset": start}
            )

        return self.render(
            "table.html",
            status_code=400 if problem else 200,
            rows=rows[offset : offset + _PAGE_SIZE], total=len(index.entries), matched=len(rows), offset=offset,
            previous=page(max(0, offset - _PAGE_SIZE)) if offset else None,
            next=page(offset + _PAGE_SIZE) if offset + _PAGE_SIZE < len(rows) else None,
            params=params, columns=_COLUMNS, links=links, sort=sort, descending=descending, problem=problem,
            methods=sorted({e["method"] for e in index.entries.values()}),
            services=sorted({e["service"] for e in index.entries.values() if e["service"]}),
            unusable=sorted(index.problems.items())[:_PAGE_SIZE], unusable_count=len(index.problems), is_error=is_error,
        )  # fmt: skip

    def _contains(self, key: str, text: str) -> bool:
        path = self.index.path_of(key)
        try:
            return path is not None and bool(matches(load_cassette(path, limits=self.limits), text))
        except CassetteError:
            return False

    def detail(self, key: str) -> HTMLResponse:
        _, doc = self._document(key)
        return self.render_detail(key, doc)

    def render_detail(self, key: str, doc: dict[str, Any]) -> HTMLResponse:
        """The page of recording ``doc`` (a validated cassette), found under ``key``."""
        total = total_ms(doc)
        spans = [
            {
                **row,
                "indent": "\u00a0\u00a0" * row["depth"],
                "x": row["start_offset_ms"] / total * 1000,
                "width": max(row["duration_ms"] / total * 1000, 2.0),
            }
            for row in waterfall(doc)
        ]
        limit = self.limits.show_body_bytes
        calls = list(zip(call_rows(doc), doc.get("calls", []), strict=False))
        in_spans = {span["call"] for span in spans if span["call"] is not None}
        outside = [c for c in calls if c[0]["index"] not in in_spans]
        return self.render(
            "detail.html", key=key, doc=doc, spans=spans[:_SHOWN_ROWS], calls=calls, outside=outside[:_SHOWN_ROWS],
            spans_not_shown=max(len(spans) - _SHOWN_ROWS, 0), outside_not_shown=max(len(outside) - _SHOWN_ROWS, 0),
            ticks=[total * i / (_TICKS - 1) for i in range(_TICKS)], exception_event=exception_event,
            body_text=lambda body: body_text(body, limit), call_view=lambda call: call_view(call, limit),
            limit=limit, target=self.target, token=self.token,
        )  # fmt: skip

    def download(self, key: str, part: str) -> Response:
        """One body of a recording, whole, as a file (never shown as a page)."""
        _, doc = self._document(key)
        data, suffix = _part(doc, part)
        name = f"{sanitise(doc.get('id') or '', 32) or 'cassette'}-{sanitise(part, 40)}.{suffix}"
        headers = {"content-disposition": f'attachment; filename="{name}"'}
        return Response(data, media_type="application/octet-stream", headers=headers)

    def diff(self, query: dict[str, str]) -> HTMLResponse:
        a, b = query.get("a", ""), query.get("b", "")
        if not a or not b:
            return self.render(
                "error.html", status_code=400, message="Choose two recordings (a and b) to compare."
            )
        ignore_text = query.get("ignore", ", ".join(DEFAULT_IGNORED))
        ignore = [name.strip() for name in ignore_text.split(",")]
        (_, doc_a), (_, doc_b) = self._document(a), self._document(b)
        found = diff_cassettes(doc_a, doc_b, ignore, environment_sealer())
        return self.render(
            "diff.html",
            a=a,
            b=b,
            doc_a=doc_a,
            doc_b=doc_b,
            found=found[:_SHOWN_ROWS],
            found_count=len(found),
            ignore=ignore_text,
            show=show_value,
        )

    async def replay(self, request: Request) -> HTMLResponse:
        form = parse_qs((await request.body()).decode("utf-8", errors="replace"))
        if not secrets.compare_digest(form.get("token", [""])[0], self.token):
            return self.render(
                "error.html",
                status_code=403,
                message="This replay was not asked for from the dashboard.",
            )
        key = _key(request, "/replay/")
        path, doc = await run_in_threadpool(self._document, key)
        if self.target is None:
            return self.render(
                "error.html",
                status_code=400,
                message="Start the dashboard with --app MODULE:APP to replay.",
            )
        outcome = await run_replay(self.target, path)
        labels = [row["label"] for row in call_rows(doc)]
        pairs = call_pairs(outcome.report, labels) if outcome.report else []
        return await run_in_threadpool(
            lambda: self.render(
                "replay.html",
                key=key,
                doc=doc,
                outcome=outcome,
                target=self.target,
                pairs=pairs,
                response_rows=response_rows,
            )
        )


def _in_thread(handler: Callable[[Request], Response]) -> Callable[[Request], Any]:
    """An endpoint running ``handler`` in a worker thread: the event loop keeps serving meanwhile."""

    async def endpoint(request: Request) -> Response:
        return await run_in_threadpool(handler, request)

    return endpoint


async def _error(request: Request, exc: Exception) -> HTMLResponse:
    status = exc.status_code if isinstance(exc, HTTPException) else 500
    detail = exc.detail if isinstance(exc, HTTPException) else "internal error"
    return request.app.state.pages.render("error.html", status_code=status, message=detail)


def create_app(
    directory: str,
    target: ReplayTarget | None = None,
    host: str = "127.0.0.1",
    limits: ReadLimits | None = None,
) -> Starlette:
    """The dashboard over the cassettes in ``directory``; the Replay button uses ``target`` when given.

    ``host`` is the address it is served on: requests naming any other host are refused.
    ``limits`` bound reading each cassette and how much of a body a page shows (default: the environment's).
    """
    pages = _Pages(directory, target, limits if limits is not None else ReadLimits.from_env())
    routes = [
        Route("/", _in_thread(lambda request: pages.table(request.query_params))),
        Route(
            "/cassettes/{key:anypath}",
            _in_thread(lambda request: pages.detail(_key(request, "/cassettes/"))),
        ),
        Route(
            "/download/{key:anypath}",
            _in_thread(
                lambda request: pages.download(
                    _key(request, "/download/"), request.query_params.get("part", "")
                )
            ),
        ),
        Route("/diff", _in_thread(lambda request: pages.diff(_query(request)))),
        Route("/replay/{key:anypath}", pages.replay, methods=["POST"]),
        Mount(
            "/static",
            StaticFiles(packages=[("timetracer_otel.dashboard", "static")]),
            name="static",
        ),
    ]
    middleware = [
        Middleware(SecurityHeaders),
        Middleware(TrustedHostMiddleware, allowed_hosts=allowed_hosts(host)),
    ]
    app = Starlette(
        routes=routes, middleware=middleware, exception_handlers={HTTPException: _error}
    )
    app.state.pages = pages
    return app
