"""What a person reads of a cassette: the span waterfall, one line per call, bodies as text.

``timetracer show`` and the dashboard's detail page render the same rows.
"""

from __future__ import annotations

import json
from typing import Any, NamedTuple

from timetracer_otel.cassette.body import decode_body

from .labels import call_label, span_label

__all__ = [
    "Shown",
    "waterfall",
    "call_rows",
    "body_text",
    "total_ms",
    "value_text",
    "exception_event",
]


def total_ms(doc: dict[str, Any]) -> float:
    """The time the waterfall spans: the request, or longer when a late span ended after it."""
    ends = [s["start_offset_ms"] + s["duration_ms"] for s in doc.get("spans", ())]
    return max([doc.get("duration_ms") or 0.0, *ends]) or 1.0


def waterfall(doc: dict[str, Any]) -> list[dict[str, Any]]:
    """The spans as a tree in start order: each with its ``depth``, its ``label`` and the index of its call, if any."""
    spans = doc.get("spans", [])
    known = {s["span_id"] for s in spans}
    children: dict[str | None, list[dict[str, Any]]] = {}
    for span in sorted(spans, key=lambda s: s["start_offset_ms"]):
        parent = span["parent_id"] if span["parent_id"] in known else None
        children.setdefault(parent, []).append(span)
    calls = doc.get("calls", [])
    call_of = {c.get("span_id"): i for i, c in enumerate(calls) if c.get("span_id")}
    rows: list[dict[str, Any]] = []
    stack = [(span, 0) for span in reversed(children.get(None, []))]
    while stack:  # iterative: a deep chain of spans cannot exhaust the recursion limit
        span, depth = stack.pop()
        call = call_of.get(span["span_id"])
        rows.append(
            {
                **span,
                "depth": depth,
                "call": call,
                "label": span_label(span, None if call is None else calls[call], doc),
            }
        )
        stack.extend((child, depth + 1) for child in reversed(children.get(span["span_id"], [])))
    return rows


def call_rows(doc: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per outgoing call: label, outcome, when it started and how long its span took."""
    durations = {s["span_id"]: s["duration_ms"] for s in doc.get("spans", ())}
    rows = []
    for index, call in enumerate(doc.get("calls", [])):
        response, error = call.get("response"), call.get("error")
        # an HTTP status, or an SQL driver's command tag ("BEGIN", "INSERT 0 1")
        status = response.get("status") if isinstance(response, dict) else None
        if error:
            outcome = error.get("type", "error")
        elif isinstance(status, (int, str)) and not isinstance(status, bool):
            outcome = str(status)
        else:
            outcome = "ok" if response is not None else "-"
        rows.append(
            {
                "index": index,
                "protocol": call.get("protocol"),
                "library": call.get("library"),
                "label": call_label(call),
                "outcome": outcome,
                "failed": bool(error) or (type(status) is int and status >= 400),
                "offset_ms": call.get("start_offset_ms"),
                "duration_ms": durations.get(call.get("span_id")),
            }
        )
    return rows


class Shown(NamedTuple):
    """Text to show, and whether it was cut at the limit asked for (the rest is a download, or ``--payloads``)."""

    text: str
    cut: bool


def _within(text: str, limit: int | None) -> Shown:
    return Shown(text, False) if limit is None or len(text) <= limit else Shown(text[:limit], True)


def _json_text(value: Any, limit: int | None, indent: int | None = 2) -> Shown:
    """``value`` as JSON (indented, or compact with ``indent=None``), made only as far as ``limit``
    characters: a huge value costs no more than a small one."""
    encoder = json.JSONEncoder(
        indent=indent, separators=None if indent else (",", ":"), ensure_ascii=False, default=str
    )
    if limit is None:
        return Shown(encoder.encode(value), False)
    chunks, size = [], 0
    # made piece by piece (the one-shot encoder makes it all)
    for chunk in encoder.iterencode(value):
        chunks.append(chunk)
        size += len(chunk)
        if size > limit:
            break
    return _within("".join(chunks), limit)


def body_text(body: dict[str, Any] | None, limit: int | None = None) -> Shown:
    """A body as a person reads it: JSON indented, text as is, binary as a hex preview; cut at ``limit`` characters."""
    if not body:
        return Shown("", False)
    notes = []
    if body.get("content_encoding"):
        notes.append(f"(stored decoded from Content-Encoding: {body['content_encoding']})")
    if body.get("truncated"):
        notes.append(f"(truncated: {body.get('size')} bytes in all)")
    if body.get("complete") is False:
        notes.append("(not read to its end)")
    encoding = body.get("encoding")
    if encoding == "empty":  # nothing to show but whether it ended
        return Shown("\n".join(notes), False)
    if encoding == "json":
        shown = _json_text(body["json"], limit)
    elif encoding == "text":
        shown = _within(body["text"], limit)
    elif encoding in ("base64", "segments"):
        data = decode_body(body)
        shown = Shown(
            f"<{body.get('size', len(data))} bytes of binary> {data[:48].hex(' ')}{' …' if len(data) > 48 else ''}",
            False,
        )
    else:
        shown = _json_text(body, limit)
    return Shown("\n".join([*notes, shown.text]), shown.cut)


def value_text(value: Any, limit: int | None = None) -> Shown:
    """A non-HTTP call's request or response (typed values) as indented JSON, cut at ``limit`` characters."""
    return _json_text(value, limit)


def exception_event(doc: dict[str, Any], span_id: str | None = None) -> dict[str, Any] | None:
    """The attributes of the first ``exception`` event (type, message, stacktrace) OpenTelemetry recorded
    on span ``span_id``, or on any span of the request when None; None when there is none."""
    for span in doc.get("spans", ()):
        if span_id is not None and span["span_id"] != span_id:
            continue
        for event in span.get("events") or ():
            attributes = event.get("attributes") if isinstance(event, dict) else None
            if isinstance(attributes, dict) and event.get("name") == "exception":
                return attributes
    return None
