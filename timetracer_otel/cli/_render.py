"""Terminal output of the commands. Recorded values are always wrapped in ``Text``, never
parsed as rich markup: a recorded ``[bold]`` stays the characters it was."""

from __future__ import annotations

import sys
from typing import Any, Sequence

from rich.console import Console, Group
from rich.table import Table
from rich.text import Text

from .diff import Difference
from .views import body_text, call_rows, total_ms, value_text, waterfall

__all__ = ["console", "list_lines", "show", "differences"]

_BAR_CELLS = 40
_PREVIEW_LINES = 20
_LIST_COLUMNS = ("RECORDED (UTC)", "ID", "METHOD", "PATH", "STATUS", "MS", "CALLS", "SERVICE")


def console() -> Console:
    """Rich output on a terminal; plain, 160 columns wide, when piped (no wrapping of long URLs at 80)."""
    return Console(highlight=False, width=None if sys.stdout.isatty() else 160)


def _cells(entry: dict[str, Any]) -> tuple[str, ...]:
    """The listing's columns of one summary, in :data:`_LIST_COLUMNS` order."""
    duration = entry["duration_ms"]
    return (
        (entry["recorded_at"] or "")[:19].replace("T", " "),
        entry["id"] or "",
        entry["method"],
        entry["path"] + (f"?{entry['query']}" if entry["query"] else ""),
        f"{entry['status']}{'!' if entry['error'] else ''}",
        f"{duration:.1f}" if duration is not None else "",
        str(entry["calls"]),
        entry["service"] or "",
    )


def list_lines(entries: Sequence[dict[str, Any]]) -> list[str]:
    """The listing as aligned plain columns: fast for 50,000 rows, and easy to grep or cut."""
    rows = [_cells(e) for e in entries]
    widths = [max([len(title), *(len(row[i]) for row in rows)]) for i, title in enumerate(_LIST_COLUMNS)]
    template = "  ".join(f"{{:<{width}}}" for width in widths)
    return [template.format(*row).rstrip() for row in (_LIST_COLUMNS, *rows)]


def _status_style(status: Any) -> str:
    return "red" if isinstance(status, int) and status >= 500 else "yellow" if isinstance(status, int) and status >= 400 else "green"


def _headers(pairs: Any) -> Text:
    return Text("\n".join(f"{name}: {value}" for name, value in pairs or ()) or "(no headers)", style="dim")


def _body(body: Any, full: bool) -> Text:
    text = body_text(body)
    if not text:
        return Text("(empty body)", style="dim")
    lines = text.splitlines()
    if not full and len(lines) > _PREVIEW_LINES:
        hidden = len(lines) - _PREVIEW_LINES
        return Text("\n".join(lines[:_PREVIEW_LINES])) + Text(f"\n… {hidden} more lines (--payloads shows all)", style="dim")
    return Text(text)


def _message(title: str, line: Text, message: dict[str, Any], full: bool) -> Group:
    return Group(Text(title, style="bold"), line, _headers(message.get("headers")), _body(message.get("body"), full), Text(""))


def _bar(offset: float, duration: float, total: float) -> Text:
    start = min(_BAR_CELLS - 1, int(offset / total * _BAR_CELLS))
    cells = max(1, round(duration / total * _BAR_CELLS))
    return Text(" " * start) + Text("█" * min(cells, _BAR_CELLS - start), style="cyan")


def _waterfall(doc: dict[str, Any]) -> Table:
    total = total_ms(doc)
    table = Table(title="spans", title_justify="left", show_edge=False, pad_edge=False)
    for name, justify in (("span", "left"), ("kind", "left"), ("start ms", "right"), ("ms", "right"), ("timeline", "left")):
        table.add_column(name, justify=justify, no_wrap=name != "span")  # type: ignore[arg-type]
    for row in waterfall(doc):
        failed = row["status"]["code"] == "ERROR"
        name = Text("  " * row["depth"] + row["name"], style="red" if failed else "")
        if row["call"] is not None:
            name += Text(f"  (call #{row['call']})", style="dim")
        table.add_row(
            name, Text(row["kind"]), Text(f"{row['start_offset_ms']:.1f}"), Text(f"{row['duration_ms']:.1f}"),
            _bar(row["start_offset_ms"], row["duration_ms"], total),
        )  # fmt: skip
    return table


def _calls(doc: dict[str, Any]) -> Table:
    table = Table(title="calls", title_justify="left", show_edge=False, pad_edge=False)
    for name in ("#", "library", "call", "outcome", "start ms", "ms"):
        table.add_column(name, justify="right" if name in ("#", "start ms", "ms") else "left")
    for row in call_rows(doc):
        duration = row["duration_ms"]
        table.add_row(
            Text(str(row["index"])), Text(row["library"] or ""), Text(row["label"]),
            Text(row["outcome"], style="red" if row["failed"] else "green"),
            Text(f"{row['offset_ms']:.1f}" if row["offset_ms"] is not None else ""),
            Text(f"{duration:.1f}" if duration is not None else ""),
        )  # fmt: skip
    return table


def _call_payloads(doc: dict[str, Any]) -> list[Any]:
    out: list[Any] = []
    for row, call in zip(call_rows(doc), doc.get("calls", [])):
        out.append(Text(f"call #{row['index']}: {row['label']}", style="bold underline"))
        if call.get("protocol") != "http":
            out.extend([Text("request", style="bold"), Text(value_text(call.get("request"))),
                        Text("response", style="bold"), Text(value_text(call.get("response")))])  # fmt: skip
        else:
            out.append(_message("request", Text(row["label"]), call.get("request") or {}, True))
            if call.get("response"):
                response = call["response"]
                out.append(_message("response", Text(str(response.get("status")), style=_status_style(response.get("status"))), response, True))
        if call.get("error"):
            out.append(Text(f"error: {call['error'].get('type')}: {call['error'].get('message')}", style="red"))
        out.append(Text(""))
    return out


def show(out: Console, doc: dict[str, Any], where: str, payloads: bool) -> None:
    """A cassette: request, response, calls, the span waterfall; every call's payloads with ``payloads``."""
    request, response = doc["request"], doc["response"]
    target = request["path"] + (f"?{request['query']}" if request.get("query") else "")
    status = response["status"]
    head = Text(f"{request['method']} {target}", style="bold") + Text(f"  {status}", style=_status_style(status))
    head += Text(f"  {doc.get('duration_ms')} ms  id={doc.get('id')}  service={doc.get('service')}  recorded {doc.get('recorded_at')}")
    out.print(head)
    out.print(Text(f"cassette: {where}", style="dim"))
    if request.get("route"):
        out.print(Text(f"route: {request['route']}", style="dim"))
    if doc.get("error"):
        out.print(Text(f"error: {doc['error'].get('type')}: {doc['error'].get('message')}", style="red"))
    out.print()
    out.print(_message("request", Text(f"{request['method']} {target}"), request, payloads))
    out.print(_message("response", Text(str(status), style=_status_style(status)), response, payloads))
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
    out.print(Text(f"a: {a}\nb: {b}", style="dim"))
    for difference in found:
        out.print(Text(difference.where, style="bold") + Text(": ") + Text(difference.change()))
    out.print(Text(f"{len(found)} difference{'s' if len(found) != 1 else ''}" if found else "no differences",
                   style="red" if found else "green"))  # fmt: skip
