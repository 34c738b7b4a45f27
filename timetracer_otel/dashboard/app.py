"""The dashboard's pages: the table of recordings, one recording, a diff of two, a replay.

Cassettes are addressed only by their key in the directory's index (their path relative
to the directory, as a scan found it); anything else is a 404, so no parameter can reach
a file outside the directory. Every recorded value goes through Jinja2's autoescaping.
"""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import Any, Optional
from urllib.parse import parse_qs, urlencode

from jinja2 import Environment, PackageLoader, StrictUndefined
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.requests import Request
from starlette.responses import HTMLResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from timetracer_otel.cassette.reader import CassetteError, load_cassette
from timetracer_otel.cli.diff import DEFAULT_IGNORED, diff_cassettes, show_value
from timetracer_otel.cli.index import CassetteIndex
from timetracer_otel.cli.query import SORT_KEYS, Filters, is_error, select
from timetracer_otel.cli.search import matches
from timetracer_otel.cli.views import body_text, call_rows, total_ms, value_text, waterfall

from ._replay import ReplayTarget, run_replay
from ._security import SecurityHeaders, allowed_hosts

__all__ = ["create_app", "ReplayTarget"]

_PAGE_SIZE = 200
_FILTER_FIELDS = ("method", "path", "route", "status", "errors", "since", "until", "service", "text")
_COLUMNS = (("recorded_at", "recorded (UTC)"), ("method", "method"), ("path", "path"), ("status", "status"),
            ("duration", "ms"), ("calls", "calls"), ("service", "service"), ("id", "id"))  # fmt: skip


def _filters(params: dict[str, str]) -> Filters:
    """The table's filter form as :class:`Filters` (``ValueError`` for a value it cannot use)."""
    return Filters(
        methods=[params["method"]] if params["method"] else [], path=params["path"] or None,
        route=params["route"] or None, statuses=[params["status"]] if params["status"] else [],
        errors=params["errors"] == "1", since=params["since"] or None, until=params["until"] or None,
        services=[params["service"]] if params["service"] else [],
    )  # fmt: skip


class _Pages:
    """The request handlers, over one cassette directory."""

    def __init__(self, directory: str, target: Optional[ReplayTarget]) -> None:
        self.index = CassetteIndex(directory)
        self.directory = directory
        self.target = target
        self.token = secrets.token_urlsafe(32)  # the Replay form's token: another site cannot read it, so cannot post
        self.env = Environment(loader=PackageLoader("timetracer_otel.dashboard", "templates"), autoescape=True, undefined=StrictUndefined)

    def _render(self, template: str, status_code: int = 200, **context: Any) -> HTMLResponse:
        html = self.env.get_template(template).render(directory=self.directory, **context)
        return HTMLResponse(html, status_code=status_code)

    def _document(self, key: str) -> tuple[Path, dict[str, Any]]:
        """The cassette of an index key; 404 for anything the index does not hold."""
        path = self.index.path_of(key)
        if path is None:
            path = self.index.refresh().path_of(key)
        if path is None:
            raise HTTPException(404, "no such cassette in this directory")
        try:
            return path, load_cassette(path)
        except CassetteError:
            raise HTTPException(404, "no such cassette in this directory") from None

    async def table(self, request: Request) -> HTMLResponse:
        params = {name: request.query_params.get(name, "").strip() for name in _FILTER_FIELDS}
        sort = request.query_params.get("sort", "recorded_at")
        descending = request.query_params.get("desc", "1" if sort == "recorded_at" else "") == "1"
        offset_text = request.query_params.get("offset", "")
        offset = int(offset_text) if offset_text.isdigit() else 0
        problem = ""
        self.index.refresh()
        try:
            rows = select(self.index.entries.values(), _filters(params), sort if sort in SORT_KEYS else "recorded_at", descending)
        except ValueError as exc:
            problem, rows = str(exc), []
        if params["text"]:
            rows = [row for row in rows if self._contains(row["key"], params["text"])]
        kept = {k: v for k, v in params.items() if v}
        links = {
            column: "?" + urlencode({**kept, "sort": column, "desc": "" if column == sort and descending else "1"})
            for column, _ in _COLUMNS
        }

        def page(start: int) -> str:
            return "?" + urlencode({**kept, "sort": sort, "desc": "1" if descending else "", "offset": start})

        return self._render(
            "table.html",
            status_code=400 if problem else 200,
            rows=rows[offset : offset + _PAGE_SIZE], total=len(self.index.entries), matched=len(rows), offset=offset,
            previous=page(max(0, offset - _PAGE_SIZE)) if offset else None,
            next=page(offset + _PAGE_SIZE) if offset + _PAGE_SIZE < len(rows) else None,
            params=params, columns=_COLUMNS, links=links, sort=sort, descending=descending, problem=problem,
            methods=sorted({e["method"] for e in self.index.entries.values()}),
            services=sorted({e["service"] for e in self.index.entries.values() if e["service"]}),
            unusable=len(self.index.problems), is_error=is_error,
        )  # fmt: skip

    def _contains(self, key: str, text: str) -> bool:
        path = self.index.path_of(key)
        try:
            return path is not None and bool(matches(load_cassette(path), text))
        except CassetteError:
            return False

    async def detail(self, request: Request) -> HTMLResponse:
        key = request.path_params["key"]
        _, doc = self._document(key)
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
        return self._render(
            "detail.html", key=key, doc=doc, spans=spans, calls=list(zip(call_rows(doc), doc.get("calls", []))),
            body_text=body_text, value_text=value_text, target=self.target, token=self.token,
        )  # fmt: skip

    async def diff(self, request: Request) -> HTMLResponse:
        a, b = request.query_params.get("a", ""), request.query_params.get("b", "")
        if not a or not b:
            return self._render("error.html", status_code=400, message="Choose two recordings (a and b) to compare.")
        ignore_text = request.query_params.get("ignore", ", ".join(DEFAULT_IGNORED))
        ignore = [name.strip() for name in ignore_text.split(",")]
        (_, doc_a), (_, doc_b) = self._document(a), self._document(b)
        found = diff_cassettes(doc_a, doc_b, ignore)
        return self._render("diff.html", a=a, b=b, doc_a=doc_a, doc_b=doc_b, found=found, ignore=ignore_text, show=show_value)

    async def replay(self, request: Request) -> HTMLResponse:
        form = parse_qs((await request.body()).decode("utf-8", errors="replace"))
        if not secrets.compare_digest(form.get("token", [""])[0], self.token):
            return self._render("error.html", status_code=403, message="This replay was not asked for from the dashboard.")
        key = request.path_params["key"]
        path, doc = self._document(key)
        if self.target is None:
            return self._render("error.html", status_code=400, message="Start the dashboard with --app MODULE:APP to replay.")
        outcome = await run_replay(self.target, path)
        return self._render("replay.html", key=key, doc=doc, outcome=outcome, target=self.target)


async def _error(request: Request, exc: Exception) -> HTMLResponse:
    status = exc.status_code if isinstance(exc, HTTPException) else 500
    detail = exc.detail if isinstance(exc, HTTPException) else "internal error"
    env = request.app.state.pages.env
    return HTMLResponse(env.get_template("error.html").render(directory=request.app.state.pages.directory, message=detail), status_code=status)


def create_app(directory: str, target: Optional[ReplayTarget] = None, host: str = "127.0.0.1") -> Starlette:
    """The dashboard over the cassettes in ``directory``; the Replay button uses ``target`` when given.

    ``host`` is the address it is served on: requests naming any other host are refused.
    """
    pages = _Pages(directory, target)
    routes = [
        Route("/", pages.table),
        Route("/cassettes/{key:path}", pages.detail),
        Route("/diff", pages.diff),
        Route("/replay/{key:path}", pages.replay, methods=["POST"]),
        Mount("/static", StaticFiles(packages=[("timetracer_otel.dashboard", "static")]), name="static"),
    ]
    middleware = [Middleware(SecurityHeaders), Middleware(TrustedHostMiddleware, allowed_hosts=allowed_hosts(host))]
    app = Starlette(routes=routes, middleware=middleware, exception_handlers={HTTPException: _error})
    app.state.pages = pages
    return app
