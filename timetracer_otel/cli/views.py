"""What a person reads of a cassette: the span waterfall, one line per call, bodies as text.

``timetracer show`` and the dashboard's detail page render the same rows.
"""

from __future__ import annotations

import json
from typing import Any, Optional

from timetracer_otel.cassette.body import decode_body

__all__ = ["waterfall", "call_rows", "body_text", "call_label", "total_ms", "value_text"]

_LABEL_CHARS = 160


def total_ms(doc: dict[str, Any]) -> float:
    """The time the waterfall spans: the request, or longer when a late span ended after it."""
    ends = [s["start_offset_ms"] + s["duration_ms"] for s in doc.get("spans", ())]
    return max([doc.get("duration_ms") or 0.0, *ends]) or 1.0


def waterfall(doc: dict[str, Any]) -> list[dict[str, Any]]:
    """The spans as a tree in start order: each with its ``depth`` and the index of its call, if any."""
    spans = doc.get("spans", [])
    known = {s["span_id"] for s in spans}
    children: dict[Optional[str], list[dict[str, Any]]] = {}
    for span in sorted(spans, key=lambda s: s["start_offset_ms"]):
        parent = span["parent_id"] if span["parent_id"] in known else None
        children.setdefault(parent, []).append(span)
    call_of = {c.get("span_id"): i for i, c in enumerate(doc.get("calls", [])) if c.get("span_id")}
    rows: list[dict[str, Any]] = []
    stack = [(span, 0) for span in reversed(children.get(None, []))]
    while stack:  # iterative: a deep chain of spans cannot exhaust the recursion limit
        span, depth = stack.pop()
        rows.append({**span, "depth": depth, "call": call_of.get(span["span_id"])})
        stack.extend((child, depth + 1) for child in reversed(children.get(span["span_id"], [])))
    return rows


def _cut(text: str, limit: int = _LABEL_CHARS) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def call_label(call: dict[str, Any]) -> str:
    """``GET http://host/path`` for HTTP; the protocol, library and request in brief for the rest."""
    request = call.get("request") or {}
    if call.get("protocol") == "http":
        return _cut(f"{request.get('method', '?')} {request.get('url', '?')}")
    brief = json.dumps(request, ensure_ascii=False, separators=(",", ":"), default=str)
    return _cut(f"{call.get('protocol')} {brief}")


def call_rows(doc: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per outgoing call: label, outcome, when it started and how long its span took."""
    durations = {s["span_id"]: s["duration_ms"] for s in doc.get("spans", ())}
    rows = []
    for index, call in enumerate(doc.get("calls", [])):
        response, error = call.get("response"), call.get("error")
        if error:
            outcome = error.get("type", "error")
        elif isinstance(response, dict) and "status" in response:
            outcome = str(response["status"])
        else:
            outcome = "ok" if response is not None else "-"
        rows.append(
            {
                "index": index,
                "protocol": call.get("protocol"),
                "library": call.get("library"),
                "label": call_label(call),
                "outcome": outcome,
                "failed": bool(error) or (isinstance(response, dict) and response.get("status", 0) >= 400),
                "offset_ms": call.get("start_offset_ms"),
                "duration_ms": durations.get(call.get("span_id")),
            }
        )
    return rows


def body_text(body: Optional[dict[str, Any]]) -> str:
    """A body as a person reads it: JSON indented, text as is, binary as a hex preview."""
    if not body or body.get("encoding") == "empty":
        return ""
    notes = []
    if body.get("content_encoding"):
        notes.append(f"(stored decoded from Content-Encoding: {body['content_encoding']})")
    if body.get("truncated"):
        notes.append(f"(truncated: {body.get('size')} bytes in all)")
    if body.get("complete") is False:
        notes.append("(not read to its end)")
    encoding = body.get("encoding")
    if encoding == "json":
        text = json.dumps(body["json"], indent=2, ensure_ascii=False)
    elif encoding == "text":
        text = body["text"]
    elif encoding in ("base64", "segments"):
        data = decode_body(body)
        text = f"<{body.get('size', len(data))} bytes of binary> {data[:48].hex(' ')}{' …' if len(data) > 48 else ''}"
    else:
        text = json.dumps(body, ensure_ascii=False)
    return "\n".join([*notes, text])


def value_text(value: Any) -> str:
    """A non-HTTP call's request or response (typed values) as indented JSON."""
    return json.dumps(value, indent=2, ensure_ascii=False, default=str)
