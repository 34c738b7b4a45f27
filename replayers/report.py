"""The replay report: which calls were answered, missed or left unused, and whether the
response equals the recorded one (status and body, ignoring configured JSON fields).

A value redacted in the recording cannot be compared: when the replayed response has a value
there (redacted the same way, or a secret drawn anew without the key), it is listed as
unverified, never counted as the same.
"""

from __future__ import annotations

import difflib
import json
from collections import Counter, deque
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from itertools import zip_longest
from typing import Any

from timetracer_otel._terminal import cut, cut_pair, printable
from timetracer_otel.cassette.body import decode_body, encode_body, header_value
from timetracer_otel.cassette.document import InboundResponse
from timetracer_otel.redaction import REDACTED, Redactor

from .matching import hash_note, hashed_otherwise, reordered, reordered_note

__all__ = [
    "RecordedResponse",
    "ReplayReport",
    "ResponseComparison",
    "compare_response",
    "recent_reports",
]

_MAX_DIFF_LINES = 20
# characters of a line of a text body's diff shown (one line may be the whole body)
_DIFF_LINE_SHOWN = 240
_SHOWN = 120  # characters of a value a difference line shows
_DIFFERENCES_SHOWN = 3  # how an unmatched call differs from the closest recorded one, in lines
_UNUSED_SHOWN = 10  # recorded calls left unused, named one per line (the report keeps them all)
# Headers set from the body (compared itself) or by the server, not by the app.
_NOT_COMPARED = frozenset({"content-length", "date", "server"})
_recent: deque[ReplayReport] = deque(maxlen=100)


@dataclass
class ReplayReport:
    """What happened when one request was replayed."""

    cassette: str | None
    method: str
    path: str
    cassette_id: str | None = None
    recorded_status: int | None = None
    status: int | None = None
    answered: list[str] = field(default_factory=list)
    unmatched: list[str] = field(default_factory=list)
    unused: list[str] = field(default_factory=list)
    # "host:port" of each connection refused (a client timetracer does not replay tried to go out)
    refused: list[str] = field(default_factory=list)
    # call by call: each call made (``library``, ``replayed``: its label) with the index of the recorded call that answered
    # it, or None and the ``closest`` recorded one with the ``differences``; then the recorded calls left unused
    calls: list[dict[str, Any]] = field(default_factory=list)
    differences: list[str] = field(default_factory=list)
    error: dict[str, str] | None = None
    # response parts redacted in the recording: not compared
    unverified: list[str] = field(default_factory=list)
    # why the cassette may not be the request's own (see selection)
    notes: list[str] = field(default_factory=list)
    # source -> draws the replayed request made beyond what was recorded (they got real values)
    extra_draws: dict[str, int] = field(default_factory=dict)
    # source -> values of draws the cassette does not hold, given as an earlier request of its recording drew them
    earlier_draws: dict[str, int] = field(default_factory=dict)
    # calls the cassette does not hold, answered from an earlier request of its recording (replayers.earlier)
    from_earlier: list[str] = field(default_factory=list)
    # credentials `timetracer replay --header/--cookie` supplied: the recorded ones could not be unsealed
    supplied_credentials: list[str] = field(default_factory=list)
    # its cassette holds secrets sealed with a key this process does not hold: the app got [REDACTED]
    sealed: bool = False

    @property
    def response_matches(self) -> bool:
        """Nothing compared differs (parts that could not be compared are in ``unverified``)."""
        return not self.differences

    @property
    def verdict(self) -> str:
        """``ok``: all compared equal and nothing unverified; ``unverified``: nothing differs but some parts
        could not be compared; ``diff``: the response differs or a call went unanswered."""
        if not self.response_matches or self.unmatched or self.refused:
            return "diff"
        return "unverified" if self.unverified else "ok"

    @property
    def ok(self) -> bool:
        """The response is as recorded in every part, and every outgoing call was answered."""
        return self.verdict == "ok"

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ReplayReport:
        """The report :meth:`to_dict` gave (another process's: ``timetracer replay --json``)."""
        return cls(**{name: data[name] for name in cls.__dataclass_fields__ if name in data})

    def to_dict(self) -> dict[str, Any]:
        return {
            **asdict(self),
            "response_matches": self.response_matches,
            "verdict": self.verdict,
            "ok": self.ok,
        }

    def console_text(self) -> str:
        verdict = self.verdict
        calls = len(self.answered) + len(self.unmatched)
        unverified = f"  unverified={len(self.unverified)}" if self.unverified else ""
        lines = [
            f"timetracer [{verdict.upper()}] replayed {self.method} {self.path}  id={self.cassette_id or '-'}  status={self.status}"
            f"  calls={len(self.answered)}/{calls}  unused={len(self.unused)}"
            f"  response={'same' if not self.differences else 'differs'}{unverified}",
            f"  cassette: {self.cassette or '(none matched this request)'}",
        ]
        details = (
            self.error,
            self.notes,
            self.supplied_credentials,
            self.unused,
            self.extra_draws,
            self.earlier_draws,
            self.from_earlier,
        )
        if verdict != "ok" or any(details):
            lines.extend(self._detail_lines())
        return "\n".join(printable(line) for line in lines)  # recorded paths and values: escaped

    def _unmatched_calls(self) -> list[dict[str, Any]]:
        """The entries of :attr:`calls` for the calls no recorded call answered, in the order made."""
        return [
            entry
            for entry in self.calls
            if entry.get("replayed") is not None
            and entry.get("recorded") is None
            and "earlier" not in entry
        ]

    def _detail_lines(self) -> list[str]:
        """The console lines after the first two: what a request replayed as recorded has none of."""
        lines = []
        if self.error:
            message = self.error.get("message", "").strip().splitlines()
            shown = f": {cut(message[0], _SHOWN)}" if message else ""
            lines.append(f"  error: the app raised {self.error.get('type')}{shown}")
        lines.extend(f"  note: {text}" for text in self.notes)
        if self.supplied_credentials:
            lines.append(
                f"  supplied credentials (the recorded ones could not be unsealed): {'; '.join(self.supplied_credentials)}"
            )
        lines.extend(f"  from an earlier request: {text}" for text in self.from_earlier)
        for text, entry in zip_longest(self.unmatched, self._unmatched_calls()):
            lines.append(f"  unmatched: {text}")
            if entry is not None and entry.get("closest") is not None:
                lines.append(f"    closest recorded call: #{entry['closest']}")
                differences = entry.get("differences") or []
                lines.extend(f"      {line}" for line in differences[:_DIFFERENCES_SHOWN])
        lines.extend(
            f"  refused connection: {target}" + (f" ({times} times)" if times > 1 else "")
            for target, times in Counter(self.refused).items()
        )
        lines.extend(f"  unused: {text}" for text in self.unused[:_UNUSED_SHOWN])
        if len(self.unused) > _UNUSED_SHOWN:
            lines.append(f"  unused: ... and {len(self.unused) - _UNUSED_SHOWN} more")
        if self.extra_draws:
            lines.append(
                f"  extra draws (not recorded, real values given): {_per_source(self.extra_draws)}"
            )
        if self.earlier_draws:
            lines.append(
                "  draws an earlier request made (the recording process drew them there): "
                + _per_source(self.earlier_draws)
            )
        lines.extend(f"  unverified: {text}" for text in self.unverified)
        lines.extend(f"  {text}" for text in self.differences)
        return lines


def _per_source(counts: dict[str, int]) -> str:
    """``clock=2 uuid=1``: draws counted per source."""
    return " ".join(f"{source}={n}" for source, n in sorted(counts.items()))


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


def _one_side(path: str, value: Any, recorded: bool) -> str:
    """The line for a member or item only one side has: the other reads ``<absent>``."""
    shown = cut(json.dumps(value), _SHOWN)
    old, new = (shown, "<absent>") if recorded else ("<absent>", shown)
    return f"{path}: recorded {old}, replayed {new}"


def _json_differences(recorded: Any, replayed: Any, path: str = "$") -> Iterable[str]:
    if isinstance(recorded, dict) and isinstance(replayed, dict):
        if list(recorded) != list(replayed) and recorded.keys() == replayed.keys():
            # the bytes differ though a parser sees the same object (members filled from a set)
            yield (
                f"{path}: members in another order: recorded {_names(recorded)}, "
                f"replayed {_names(replayed)}"
            )
        for key in list(recorded) + [k for k in replayed if k not in recorded]:
            if key not in replayed:
                yield _one_side(f"{path}.{key}", recorded[key], recorded=True)
            elif key not in recorded:
                yield _one_side(f"{path}.{key}", replayed[key], recorded=False)
            else:
                yield from _json_differences(recorded[key], replayed[key], f"{path}.{key}")
    elif isinstance(recorded, list) and isinstance(replayed, list):
        if reordered(recorded, replayed):  # one line, not one per item
            yield reordered_note(path)
            return
        if len(recorded) != len(replayed):
            yield f"{path}: recorded {len(recorded)} items, replayed {len(replayed)}"
        for index, (a, b) in enumerate(zip(recorded, replayed, strict=False)):
            yield from _json_differences(a, b, f"{path}[{index}]")
        longer, recorded_longer = (
            (recorded, True) if len(recorded) > len(replayed) else (replayed, False)
        )
        for index in range(min(len(recorded), len(replayed)), len(longer)):
            yield _one_side(f"{path}[{index}]", longer[index], recorded=recorded_longer)
    elif recorded == REDACTED:
        return  # the recording kept no value here to compare with: unverified, see below
    elif (recorded != replayed or type(recorded) is not type(replayed)) and not _fits_redacted(
        recorded, replayed
    ):
        old, new = cut_pair(json.dumps(recorded), json.dumps(replayed), _SHOWN)
        yield f"{path}: recorded {old}, replayed {new}"
        if isinstance(recorded, str) and isinstance(replayed, str):
            if hashed_otherwise(recorded, replayed):
                yield hash_note(path)


def _names(members: dict[str, Any], shown: int = 6) -> str:
    names = list(members)
    return ", ".join(names[:shown]) + (", ..." if len(names) > shown else "")


def _redacted_in_recording(recorded: Any, replayed: Any, path: str = "$") -> Iterable[str]:
    """The JSON paths both bodies have where the recorded one holds the redaction marker: whatever
    was replayed there (redacted the same way, or a secret drawn anew without the key) cannot be
    checked against it."""
    if isinstance(recorded, dict) and isinstance(replayed, dict):
        for key in (key for key in recorded if key in replayed):
            yield from _redacted_in_recording(recorded[key], replayed[key], f"{path}.{key}")
    elif isinstance(recorded, list) and isinstance(replayed, list):
        for index, (a, b) in enumerate(zip(recorded, replayed, strict=False)):
            yield from _redacted_in_recording(a, b, f"{path}[{index}]")
    elif recorded == REDACTED or (recorded != replayed and _fits_redacted(recorded, replayed)):
        yield path


def _fits_redacted(recorded: Any, replayed: Any) -> bool:
    """Whether the text ``replayed`` is the text ``recorded`` with some text standing for each
    redaction marker in it: a secret the app quoted its own way (Dagster's YAML writes the
    ``[REDACTED]`` it was given without the key as ``'[REDACTED]'``). Left to right, each part
    between markers found at its first place: no backtracking, whatever the text."""
    if not isinstance(recorded, str) or not isinstance(replayed, str) or REDACTED not in recorded:
        return False
    first, *middle, last = recorded.split(REDACTED)
    end = len(replayed) - len(last)
    if end < len(first) or not replayed.startswith(first) or not replayed.endswith(last):
        return False
    at = len(first)
    for part in middle:
        found = replayed.find(part, at, end)
        if found < 0:
            return False
        at = found + len(part)
    return True


def _redacted_headers(recorded: list, replayed: list) -> list[str]:
    """Header names whose value is redacted in the recording and in the replayed response."""
    ours = {name.lower() for name, value in replayed if value == REDACTED}
    names = [name.lower() for name, value in recorded if value == REDACTED and name.lower() in ours]
    return [f"header {name}" for name in dict.fromkeys(names)]


def _left_out(ignored: Iterable[str]) -> frozenset[str]:
    """Header names not compared: ``ignored`` ones and those the body or the server decide."""
    return _NOT_COMPARED | {name.lower() for name in ignored}


def _by_name(pairs: Iterable[Any], left_out: frozenset[str]) -> dict[str, list[str]]:
    """The compared headers' values by lower-case name, in the order sent."""
    found: dict[str, list[str]] = {}
    for name, value in pairs:
        lowered = name.lower()
        if lowered not in left_out:
            found.setdefault(lowered, []).append(value)
    return found


def _header_differences(
    recorded: list, replayed: list, ignored: frozenset[str]
) -> Iterable[tuple[str, str]]:
    """``(name, "header <name>: recorded ..., replayed ...")`` for each header the app sent
    otherwise (names in ``ignored`` and those the body or the server decide left out)."""
    left_out = _left_out(ignored)
    old, new = _by_name(recorded, left_out), _by_name(replayed, left_out)
    for name in sorted(old.keys() | new.keys()):
        if old.get(name) != new.get(name):
            shown = [
                cut(json.dumps(", ".join(values)), _SHOWN) if values else "<absent>"
                for values in (old.get(name), new.get(name))
            ]
            yield name, f"header {name}: recorded {shown[0]}, replayed {shown[1]}"
            both = [", ".join(values or ()) for values in (old.get(name), new.get(name))]
            if hashed_otherwise(*both):
                yield name, hash_note(f"header {name}")


def _as_text(body: dict[str, Any]) -> str:
    if body.get("encoding") == "json":
        return json.dumps(body["json"], indent=2, sort_keys=True, ensure_ascii=False)
    if body.get("encoding") == "text":
        return body["text"]
    if body.get("encoding") == "base64":
        return f"<{body.get('size')} binary bytes, base64 {body['base64'][:60]}...>"
    if body.get("encoding") == "segments":
        return f"<{body.get('size')} binary bytes, secret parts redacted>"
    return ""


@dataclass
class ResponseComparison:
    """How a replayed response compares with the recorded one."""

    differences: list[str]  # empty when every compared part is equal
    unverified: list[str]  # parts redacted in the recording, which could not be compared


def _plain_bytes(recorded: dict[str, Any]) -> bytes | None:
    """The recorded body's bytes when it was kept whole and nothing in it was hidden: a replayed
    body equal to them is equal, and nothing in it unverified, without encoding and redacting it
    again. None otherwise (the full comparison says how the bodies compare)."""
    if recorded.get("truncated"):
        return None
    try:
        data = decode_body(recorded)
    except (ValueError, KeyError, TypeError):  # an odd recording
        return None
    if b"REDACTED" in data or b"SEALED" in data or recorded.get("size", len(data)) != len(data):
        return None
    return data


class RecordedResponse:
    """A cassette's response prepared once for the replays of that cassette: a replayed response
    equal to it in status, compared headers and body bytes is known to be the same without
    decoding, encoding, redacting or parsing it, which is what nearly every replayed request is."""

    __slots__ = ("status", "_headers", "_body", "_left_out")

    def __init__(self, recorded: InboundResponse, ignore_fields: Iterable[str] = ()) -> None:
        self.status = recorded.status
        left_out = _left_out(ignore_fields)
        # as the app sends them (ASGI's bytes); a name that is not ASCII is no header's
        self._left_out = frozenset(name.encode() for name in left_out if name.isascii())
        headers = _by_name(recorded.headers, left_out)
        self._headers: dict[bytes, list[bytes]] | None = None
        self._body: bytes | None = None
        if any(REDACTED in value for values in headers.values() for value in values):
            return
        try:
            self._headers = {
                name.encode("latin-1"): [value.encode("latin-1") for value in values]
                for name, values in headers.items()
            }
        except UnicodeEncodeError:  # not what a server sends: the full comparison says how
            return
        self._body = _plain_bytes(recorded.body or {"encoding": "empty"})

    def same(
        self, status: int | None, headers: Iterable[tuple[bytes, bytes]], body: bytes, size: int
    ) -> bool:
        """The replayed response is the recorded one: ``headers`` as the app sent them (ASGI),
        ``body`` as kept and ``size`` its full length."""
        if self._body is None or status != self.status or len(body) != size or body != self._body:
            return False
        sent: dict[bytes, list[bytes]] = {}
        for name, value in headers:
            lowered = bytes(name).lower()
            if lowered not in self._left_out:
                sent.setdefault(lowered, []).append(bytes(value))
        return sent == self._headers


def compare_response(
    recorded: InboundResponse,
    status: int | None,
    headers: list[tuple[str, str]],
    body: bytes,
    size: int,
    redactor: Redactor | None,
    ignore_fields: Iterable[str] = (),
    limit: int = 1024 * 1024,
    negotiated: Iterable[str] = (),
) -> ResponseComparison:
    """Compare the replayed response with the recorded one: status, the headers the app sent, and body.

    ``body`` is the replayed body as kept (at most ``limit`` bytes), ``size`` its full length.
    The replayed response is redacted as the recording was first, so a redacted value equals
    the marker on both sides: it is reported as unverified, not as equal. ``negotiated``: the
    headers the request asked otherwise than the recorded one (``content-encoding``), whose
    differences are noted, not counted; bodies are compared decoded.
    """
    differences: list[str] = []
    replayed_headers = [list(h) for h in headers]
    if redactor is not None:
        replayed_headers = redactor.headers(replayed_headers) or []
    unverified = _redacted_headers(recorded.headers, replayed_headers)
    ignored = frozenset(ignore_fields)
    if status != recorded.status:
        differences.append(f"status: recorded {recorded.status}, replayed {status}")
    asked_otherwise = frozenset(negotiated)
    for name, line in _header_differences(recorded.headers, replayed_headers, ignored):
        if name in asked_otherwise:
            unverified.append(
                f"{line} (the request asked for another encoding than the recorded one)"
            )
        else:
            differences.append(line)
    recorded_body = recorded.body or {"encoding": "empty"}
    if len(body) == size and body == _plain_bytes(recorded_body):
        return ResponseComparison(differences, unverified)
    if recorded_body.get("complete") is False:  # the recorded error says why
        differences.append(
            f"body: the recording broke off after {recorded_body.get('size', 0)} bytes, replayed {size} bytes"
        )
        return ResponseComparison(differences, unverified)
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
            differences.append(
                f"body size: recorded {recorded_body.get('size')}, replayed {replayed_body.get('size')}"
            )
        else:
            unverified.append(
                f"body after byte {limit} (cut in the recording: only the sizes were compared)"
            )
        return ResponseComparison(differences, unverified)
    if recorded_body.get("encoding") == "json" and replayed_body.get("encoding") == "json":
        recorded_json, replayed_json = (
            _without(recorded_body["json"], ignored),
            _without(replayed_body["json"], ignored),
        )
        found = list(_json_differences(recorded_json, replayed_json))
        written = (recorded_body.get("json_format"), replayed_body.get("json_format"))
        if not found and written[0] != written[1]:
            found.append(
                f"the same JSON written another way: recorded {written[0]}, replayed {written[1]}"
            )
        differences.extend(f"body {line}" for line in found[:_MAX_DIFF_LINES])
        unverified.extend(
            f"body {path}" for path in _redacted_in_recording(recorded_json, replayed_json)
        )
        return ResponseComparison(differences, unverified)
    if _content(recorded_body) != _content(replayed_body) and not _fits_redacted(
        _as_text(recorded_body), _as_text(replayed_body)
    ):
        diff = difflib.unified_diff(
            _as_text(recorded_body).splitlines(),
            _as_text(replayed_body).splitlines(),
            "recorded",
            "replayed",
            lineterm="",
        )
        differences.append("body differs:")
        differences.extend(f"  {line}" for line in _bounded(list(diff)[:_MAX_DIFF_LINES]))
    elif REDACTED in _as_text(recorded_body):
        unverified.append("body (its redacted parts)")
    return ResponseComparison(differences, unverified)


def _content(body: dict[str, Any]) -> dict[str, Any]:
    """What a body holds, decoded: not its size, nor the encoding it was sent in (a header,
    compared as one)."""
    return {k: v for k, v in body.items() if k not in ("size", "content_encoding")}


def _bounded(diff: list[str]) -> list[str]:
    """A unified diff's lines cut to :data:`_DIFF_LINE_SHOWN` characters, a removed line and the
    added line after it around where they first differ: a text body of one long line that
    differs near its end printed both copies whole (a megabyte in one log line)."""
    lines: list[str] = []
    i = 0
    while i < len(diff):
        line, after = diff[i], diff[i + 1] if i + 1 < len(diff) else ""
        if line[:1] == "-" and after[:1] == "+" and not line.startswith("---"):
            removed, added = cut_pair(line[1:], after[1:], _DIFF_LINE_SHOWN)
            lines += [f"-{removed}", f"+{added}"]
            i += 2
        else:
            lines.append(line[:1] + cut(line[1:], _DIFF_LINE_SHOWN))
            i += 1
    return lines
