"""The replay report: which calls were answered, missed or left unused, and whether the
response equals the recorded one (status and body, ignoring configured JSON fields)."""

from __future__ import annotations

import difflib
import json
from collections import deque
from dataclasses import asdict, dataclass, field
from typing import Any, Iterable, Optional

from timetracer_otel.cassette.body import encode_body, header_value
from timetracer_otel.redaction import Redactor

__all__ = ["ReplayReport", "compare_response", "recent_reports"]

_MAX_DIFF_LINES = 20
_recent: deque["ReplayReport"] = deque(maxlen=100)


@dataclass
class ReplayReport:
    """What happened when one request was replayed."""

    cassette: Optional[str]
    method: str
    path: str
    cassette_id: Optional[str] = None
    recorded_status: Optional[int] = None
    status: Optional[int] = None
    answered: list[str] = field(default_factory=list)
    unmatched: list[str] = field(default_factory=list)
    unused: list[str] = field(default_factory=list)
    differences: list[str] = field(default_factory=list)
    error: Optional[dict[str, str]] = None
    # source -> draws the replayed request made beyond what was recorded (they got real values)
    extra_draws: dict[str, int] = field(default_factory=dict)

    @property
    def response_matches(self) -> bool:
        return not self.differences

    @property
    def ok(self) -> bool:
        """The response is as recorded and every outgoing call was answered."""
        return self.response_matches and not self.unmatched

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "response_matches": self.response_matches, "ok": self.ok}

    def console_text(self) -> str:
        tag = "[OK]" if self.ok else "[DIFF]"
        calls = len(self.answered) + len(self.unmatched)
        lines = [
            f"timetracer {tag} replayed {self.method} {self.path}  id={self.cassette_id or '-'}  status={self.status}"
            f"  calls={len(self.answered)}/{calls}  unused={len(self.unused)}"
            f"  response={'same' if self.response_matches else 'differs'}",
            f"  cassette: {self.cassette or '(none matched this request)'}",
        ]
        lines.extend(f"  unmatched: {text}" for text in self.unmatched)
        lines.extend(f"  unused: {text}" for text in self.unused)
        if self.extra_draws:
            counts = " ".join(f"{source}={n}" for source, n in sorted(self.extra_draws.items()))
            lines.append(f"  extra draws (not recorded, real values given): {counts}")
        lines.extend(f"  {text}" for text in self.differences)
        return "\n".join(lines)


def remember(report: ReplayReport) -> None:
    _recent.append(report)


def recent_reports() -> list[ReplayReport]:
    """The reports of the most recent replayed requests in this process (up to 100), oldest first."""
    return list(_recent)


def _without(value: Any, ignored: frozenset[str]) -> Any:
    if isinstance(value, dict):
        return {k: _without(v, ignored) for k, v in value.items() if k not in ignored}
    if isinstance(value, list):
        return [_without(v, ignored) for v in value]
    return value


def _json_differences(recorded: Any, replayed: Any, path: str = "$") -> Iterable[str]:
    if isinstance(recorded, dict) and isinstance(replayed, dict):
        for key in list(recorded) + [k for k in replayed if k not in recorded]:
            if key not in replayed:
                yield f"{path}.{key}: recorded {json.dumps(recorded[key])[:120]}, replayed <absent>"
            elif key not in recorded:
                yield f"{path}.{key}: recorded <absent>, replayed {json.dumps(replayed[key])[:120]}"
            else:
                yield from _json_differences(recorded[key], replayed[key], f"{path}.{key}")
    elif isinstance(recorded, list) and isinstance(replayed, list) and len(recorded) == len(replayed):
        for index, (a, b) in enumerate(zip(recorded, replayed)):
            yield from _json_differences(a, b, f"{path}[{index}]")
    elif recorded != replayed or type(recorded) is not type(replayed):
        yield f"{path}: recorded {json.dumps(recorded)[:120]}, replayed {json.dumps(replayed)[:120]}"


def _as_text(body: dict[str, Any]) -> str:
    if body.get("encoding") == "json":
        return json.dumps(body["json"], indent=2, sort_keys=True, ensure_ascii=False)
    if body.get("encoding") == "text":
        return body["text"]
    if body.get("encoding") == "base64":
        return f"<{body.get('size')} binary bytes, base64 {body['base64'][:60]}...>"
    return ""


def compare_response(
    recorded: dict[str, Any],
    status: Optional[int],
    headers: list[tuple[str, str]],
    body: bytes,
    size: int,
    redactor: Optional[Redactor],
    ignore_fields: Iterable[str] = (),
    limit: int = 1024 * 1024,
) -> list[str]:
    """Differences between the recorded response and the replayed one; empty when equal.

    ``body`` is the replayed body as kept (at most ``limit`` bytes), ``size`` its full length.
    """
    differences: list[str] = []
    if status != recorded.get("status"):
        differences.append(f"status: recorded {recorded.get('status')}, replayed {status}")
    recorded_body = recorded.get("body") or {"encoding": "empty"}
    replayed_body = encode_body(
        body[:limit],
        size=size,
        truncated=size > min(len(body), limit),
        content_encoding=header_value(headers, "content-encoding"),
        limit=limit,
    )
    if redactor is not None:
        redactor.body(replayed_body, [list(h) for h in headers])
    if recorded_body.get("truncated") or replayed_body.get("truncated"):
        if recorded_body.get("size") != replayed_body.get("size"):
            differences.append(f"body size: recorded {recorded_body.get('size')}, replayed {replayed_body.get('size')}")
        return differences
    ignored = frozenset(ignore_fields)
    if recorded_body.get("encoding") == "json" and replayed_body.get("encoding") == "json":
        found = list(_json_differences(_without(recorded_body["json"], ignored), _without(replayed_body["json"], ignored)))
        differences.extend(f"body {line}" for line in found[:_MAX_DIFF_LINES])
        return differences
    if {k: v for k, v in recorded_body.items() if k != "size"} != {k: v for k, v in replayed_body.items() if k != "size"}:
        diff = difflib.unified_diff(
            _as_text(recorded_body).splitlines(), _as_text(replayed_body).splitlines(), "recorded", "replayed", lineterm=""
        )
        differences.append("body differs:")
        differences.extend(f"  {line}" for line in list(diff)[:_MAX_DIFF_LINES])
    return differences
