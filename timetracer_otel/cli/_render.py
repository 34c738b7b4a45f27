"""Terminal output of the commands. Recorded values are always wrapped in ``Text``, never
parsed as rich markup (a recorded ``[bold]`` stays the characters it was), and go through
:func:`printable` first (a recorded ESC is shown as ``\\x1b``, never sent to the terminal)."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any

from rich.console import Console, Group
from rich.table import Table
from rich.text import Text

from timetracer_otel._terminal import cut, printable

from .call_views import CallView, SqlResult, call_view
from .diff import Difference
from .views import Shown, body_text, call_rows, exception_event, total_ms, waterfall

__all__ = ["console", "list_lines", "show", "differences"]

_BAR_CELLS = 40
_PREVIEW_LINES = 20
_PREVIEW_HEADERS = 100
_PREVIEW_VALUE_CHARS = 4096  # of a header's value, without --payloads
_SHOWN_SPANS = 1000  # the waterfall's rows: 100,000 spans took 90 s to lay out
_LIST_COLUMNS = ("RECORDED (UTC)", "ID", "METHOD", "PATH", "STATUS", "MS", "CALLS", "SERVICE")
# of a path and query in the listing: a sealed token in one (a reset link's) is some 900
# characters, and every line was padded to it
_LIST_PATH_CHARS = 120


def _text(value: Any, style: str = "", multiline: bool = False) -> Text:
    """A recorded value as terminal text: escaped, and never read as markup."""
    return Text(printable(str(value), multiline), style=style)


def console() -> Console:
    """Rich output on a terminal; plain, 160 columns wide, when piped (no wrapping of long URLs at 80)."""
    return Console(highlight=False, width=None if sys.stdout.isatty() else 160)


def _cells(entry: dict[str, Any]) -> tuple[str, ...]:
    """The listing's columns of one summary, in :data:`_LIST_COLUMNS` order."""
    duration = entry["duration_ms"]
    return (
        printable((entry["recorded_at"] or "")[:19].replace("T", " ")),
        printable(entry["id"] or ""),
        printable(entry["method"]),
        cut(
            printable(entry["path"] + (f"?{entry['query']}" if entry["query"] else "")),
            _LIST_PATH_CHARS,
        ),
        f"{entry['status']}{'!' if entry['error'] else ''}",
        f"{duration:.1f}" if duration is not None else "",
        str(entry["calls"]),
        printable(entry["service"] or ""),
    )


def list_lines(entries: Sequence[dict[str, Any]]) -> list[str]:
    """The listing as aligned plain columns: fast for 50,000 rows, and easy to grep or cut."""
    rows = [_cells(e) for e in entries]
    widths = [
        max([len(title), *(len(row[i]) for row in rows)]) for i, title in enumerate(_LIST_COLUMNS)
    ]
    template = "  ".join(f"{{:<{width}}}" for width in widths)
    return [template.format(*row).rstrip() for row in (_LIST_COLUMNS, *rows)]


def _status_style(status: Any) -> str:
    return (
        "red"
        if isinstance(status, int) and status >= 500
        else "yellow"
        if isinstance(status, int) and status >= 400
        else "green"
    )


def _headers(pairs: Any, full: bool) -> Text:
    """The headers, one a line: the first :data:`_PREVIEW_HEADERS` unless ``full``, the rest counted
    (a hostile file of a million headers took two minutes to lay out)."""
    pairs = list(pairs or ())
    shown = pairs if full else pairs[:_PREVIEW_HEADERS]
    width = None if full else _PREVIEW_VALUE_CHARS
    text = "\n".join(f"{_value(name, width)}: {_value(value, width)}" for name, value in shown)
    left = len(pairs) - len(shown)
    return Text(text or "(no headers)", style="dim") + Text(
        f"\n… {left} more headers (--payloads shows all)" if left else "", style="dim"
    )


def _value(value: Any, width: int | None) -> str:
    """A header's name or value: cut to ``width`` characters (a hostile file's 50 MB value)."""
    text = str(value)
    return printable(text if width is None else cut(text, width))


def _shown(shown: Shown, full: bool) -> Text:
    """A body or value: its first lines unless ``full``, and a note where the rest was left out."""
    lines = shown.text.splitlines()
    text, note = shown.text, "… the rest is cut (--payloads shows all)" if shown.cut else ""
    if not full and len(lines) > _PREVIEW_LINES:
        text = "\n".join(lines[:_PREVIEW_LINES])
        note = note or f"… {len(lines) - _PREVIEW_LINES} more lines (--payloads shows all)"
    return _text(text, multiline=True) + Text(f"\n{note}" if note else "", style="dim")


def _body(body: Any, limit: int | None) -> Text:
    """A body: in full when ``limit`` is None, else its first lines and characters."""
    shown = body_text(body, limit)
    return _shown(shown, limit is None) if shown.text else Text("(empty body)", style="dim")


def _message(title: str, line: Text, message: dict[str, Any], limit: int | None) -> Group:
    return Group(
        Text(title, style="bold"),
        line,
        _headers(message.get("headers"), limit is None),
        _body(message.get("body"), limit),
        Text(""),
    )


def _bar(offset: float, duration: float, total: float) -> Text:
    start = min(_BAR_CELLS - 1, int(offset / total * _BAR_CELLS))
    cells = max(1, round(duration / total * _BAR_CELLS))
    return Text(" " * start) + Text("█" * min(cells, _BAR_CELLS - start), style="cyan")


def _waterfall(doc: dict[str, Any]) -> Table:
    total = total_ms(doc)
    table = Table(title="spans", title_justify="left", show_edge=False, pad_edge=False)
    for name, justify in (
        ("span", "left"),
        ("kind", "left"),
        ("start ms", "right"),
        ("ms", "right"),
        ("timeline", "left"),
    ):
        table.add_column(name, justify=justify, no_wrap=name != "span")  # type: ignore[arg-type]
    rows = waterfall(doc)
    for row in rows[:_SHOWN_SPANS]:
        failed = row["status"]["code"] == "ERROR"
        label = _text("  " * row["depth"] + row["label"], style="red" if failed else "")
        if row["call"] is not None:
            label += Text(f"  (call #{row['call']})", style="dim")
        table.add_row(
            label, _text(row["kind"]), Text(f"{row['start_offset_ms']:.1f}"), Text(f"{row['duration_ms']:.1f}"),
            _bar(row["start_offset_ms"], row["duration_ms"], total),
        )  # fmt: skip
    if len(rows) > _SHOWN_SPANS:
        table.caption = f"… {len(rows) - _SHOWN_SPANS} more spans (show --json has them all)"
    return table


def _calls(doc: dict[str, Any]) -> Table:
    table = Table(title="calls", title_justify="left", show_edge=False, pad_edge=False)
    for name in ("#", "call", "outcome", "start ms", "ms"):
        table.add_column(name, justify="right" if name in ("#", "start ms", "ms") else "left")
    for row in call_rows(doc):
        duration = row["duration_ms"]
        table.add_row(
            Text(str(row["index"])), _text(row["label"]),
            _text(row["outcome"], style="red" if row["failed"] else "green"),
            Text(f"{row['offset_ms']:.1f}" if row["offset_ms"] is not None else ""),
            Text(f"{duration:.1f}" if duration is not None else ""),
        )  # fmt: skip
    return table


def _error(error: dict[str, Any], event: dict[str, Any] | None = None) -> Text:
    """An exception: its type and message, and the traceback OpenTelemetry recorded with it, if any."""
    line = _text(f"error: {error.get('type')}: {error.get('message')}", style="red")
    trace = (event or {}).get("exception.stacktrace")
    return (
        line + Text("\n") + _text(str(trace).rstrip(), style="dim", multiline=True)
        if trace
        else line
    )


def _result(result: SqlResult) -> Table:
    table = Table(show_edge=False, pad_edge=False)
    for column in result.columns:
        table.add_column(_text(column))
    for row in result.rows:
        table.add_row(
            *(
                _text(cell.text) + (Text(f" {cell.type}", style="dim") if cell.type else Text(""))
                for cell in row
            )
        )
    if result.more:
        table.caption = f"… and {result.more} more rows"
    return table


def _call_view(view: CallView) -> list[Any]:
    """A non-HTTP call's statement or command, parameters, result rows and reply."""
    out: list[Any] = [Text("request", style="bold"), _shown(view.request, True)]
    if view.parameters is not None:
        out.extend([Text("parameters", style="bold"), _shown(view.parameters, True)])
    out.append(Text("response", style="bold"))
    if view.result is not None:
        out.append(_result(view.result))
    out.append(_shown(view.response, True))
    return out


def _call_payloads(doc: dict[str, Any]) -> list[Any]:
    out: list[Any] = []
    for row, call in zip(call_rows(doc), doc.get("calls", []), strict=False):
        out.append(_text(f"call #{row['index']}: {row['label']}", style="bold underline"))
        if call.get("protocol") != "http":
            out.extend(_call_view(call_view(call)))
        else:
            request = call.get("request") or {}
            out.append(
                _message(
                    "request", _text(f"{request.get('method')} {request.get('url')}"), request, None
                )
            )
            if call.get("response"):
                response = call["response"]
                out.append(
                    _message(
                        "response",
                        Text(
                            str(response.get("status")), style=_status_style(response.get("status"))
                        ),
                        response,
                        None,
                    )
                )
        if call.get("error"):
            out.append(_error(call["error"], exception_event(doc, call.get("span_id"))))
        out.append(Text(""))
    return out


def show(out: Console, doc: dict[str, Any], where: str, payloads: bool, limit: int) -> None:
    """A cassette: request, response, calls, the span waterfall; every call's payloads with ``payloads``.

    Bodies are cut at ``limit`` characters and 20 lines, unless ``payloads``.
    """
    if doc.get("scope") == "process":
        _show_process(out, doc, where, payloads)
        return
    request, response = doc["request"], doc["response"]
    target = request["path"] + (f"?{request['query']}" if request.get("query") else "")
    status = response["status"]
    head = _text(f"{request['method']} {target}", style="bold") + Text(
        f"  {status}", style=_status_style(status)
    )
    head += _text(
        f"  {doc.get('duration_ms')} ms  id={doc.get('id')}  service={doc.get('service')}  recorded {doc.get('recorded_at')}"
    )
    out.print(head)
    out.print(_text(f"cassette: {where}", style="dim"))
    if request.get("route"):
        out.print(_text(f"route: {request['route']}", style="dim"))
    if doc.get("error"):
        out.print(_error(doc["error"], exception_event(doc)))
    out.print()
    shown = None if payloads else limit
    out.print(_message("request", _text(f"{request['method']} {target}"), request, shown))
    out.print(_message("response", Text(str(status), style=_status_style(status)), response, shown))
    _calls_and_spans(out, doc, payloads)


def _show_process(out: Console, doc: dict[str, Any], where: str, payloads: bool) -> None:
    """A process cassette: the calls made outside requests, and the values drawn as the app started."""
    head = _text("calls outside requests", style="bold") + _text(
        f"  id={doc.get('id')}  service={doc.get('service')}  recorded {doc.get('recorded_at')}"
    )
    out.print(head)
    out.print(_text(f"cassette: {where}", style="dim"))
    draws = len(doc.get("draws") or [])
    dropped = doc.get("dropped_calls") or 0
    out.print(
        _text(
            f"{len(doc.get('calls') or [])} calls, {draws} values drawn as it started"
            + (f", {dropped} calls not kept" if dropped else ""),
            style="dim",
        )
    )
    out.print()
    _calls_and_spans(out, doc, payloads)


def _calls_and_spans(out: Console, doc: dict[str, Any], payloads: bool) -> None:
    """The calls table, the span waterfall, and with ``payloads`` every call's headers and bodies."""
    if doc.get("calls"):
        out.print(_calls(doc))
        out.print()
    out.print(_waterfall(doc))
    if payloads and doc.get("calls"):
        out.print()
        for part in _call_payloads(doc):
            out.print(part)


def differences(out: Console, found: Sequence[Difference], a: str, b: str) -> None:
    """The differences between cassettes ``a`` and ``b``, one line each."""
    out.print(_text(f"a: {a}\nb: {b}", style="dim", multiline=True))
    for difference in found:
        out.print(_text(difference.where, style="bold") + Text(": ") + _text(difference.change()))
    out.print(Text(f"{len(found)} difference{'s' if len(found) != 1 else ''}" if found else "no differences",
                   style="red" if found else "green"))  # fmt: skip
