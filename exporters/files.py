"""Turning a frozen recording into a cassette file: build, redact, serialise, write, announce.

The same code runs in the writer process and, where that process cannot serve (a
``redact_hook`` that cannot leave the application's process), on the writer thread.
"""

from __future__ import annotations

import json
import threading
from collections import OrderedDict
from collections.abc import Callable
from typing import Any, NamedTuple

import orjson

from timetracer_otel._diagnostics import counters, logger
from timetracer_otel._keys import Key, key_for
from timetracer_otel.cassette.document import Cassette
from timetracer_otel.cassette.location import CassetteFile, join
from timetracer_otel.cassette.naming import cassette_relpath
from timetracer_otel.cassette.reader import CassetteError, load_cassette
from timetracer_otel.cassette.storage import encode, replace, write_new
from timetracer_otel.config import TraceConfig
from timetracer_otel.redaction import Redactor, redactor_for
from timetracer_otel.sealing import Sealer
from timetracer_otel.secret_columns import SecretColumns
from timetracer_otel.secret_values import RecentSecrets, chosen_codes

from .builder import build_document
from .console import process_line, record_line
from .frozen import FrozenRecording

__all__ = ["CassetteFiles", "given_secrets", "prepare_document", "serialise", "store"]

# Late spans arrive within seconds of their request: this many recent cassettes are enough to find.
_REMEMBERED_PATHS = 4096


class _Redaction(NamedTuple):
    """What redaction needs for one config, found once: looking up the key and deriving the sealing
    key for every cassette cost more than redacting a small one."""

    by_name: Redactor | None
    key: Key | None
    sealing: Redactor | None  # ``by_name`` sealing with ``key``


# What the cassettes this process wrote showed: the secrets of the last ones, and the SQL
# columns that held secrets. One memory for every config: each pytest test and fixture
# records with a config of its own, and a memory per config forgot all between two tests.
_recent = RecentSecrets()
_columns = SecretColumns()

_redactions: dict[int, tuple[Any, _Redaction]] = {}  # id(config) -> (config, its redaction)
_redactions_lock = threading.Lock()
_MAX_REDACTIONS = 64


def _redaction(config: TraceConfig) -> _Redaction:
    """The redaction ``config`` asks for; kept once its key is found (a key file may appear later)."""
    known = _redactions.get(id(config))
    if known is not None and known[0] is config:
        return known[1]
    by_name = redactor_for(config)
    key = key_for(config, create=True) if by_name is not None else None
    found = _Redaction(
        by_name,
        key,
        by_name.sealing(Sealer(key)) if by_name and key else None,
    )
    if by_name is None or key is not None:
        with _redactions_lock:
            if len(_redactions) >= _MAX_REDACTIONS:
                _redactions.clear()
            _redactions[id(config)] = (config, found)
    return found


def given_secrets(recording: FrozenRecording, doc: dict[str, Any]) -> frozenset[str]:
    """The secrets ``recording`` was given, and the codes its ``secrets.choice`` picks made in
    ``doc`` (built, not yet redacted): hidden in it by value."""
    if not recording.chosen:
        return recording.given_secrets
    return recording.given_secrets | chosen_codes(recording.chosen, doc)


def prepare_document(recording: FrozenRecording, config: TraceConfig) -> dict[str, Any]:
    """Build the cassette document and redact it as ``config`` says.

    With timetracer's key, the request first gets the fingerprint of what redaction removes
    from it (replay tells apart requests that differ only in their secrets), and the values
    redaction removes are sealed with the key rather than dropped.
    """
    doc = build_document(recording, config.max_body_bytes)
    redaction = _redaction(config)
    if redaction.by_name is not None:
        (redaction.sealing or redaction.by_name).document(
            doc, redaction.key, _recent, given_secrets(recording, doc), _columns
        )
    if config.redact_hook is not None:
        replaced = config.redact_hook(doc)
        if replaced is not None:
            doc = replaced
    return doc


def serialise(doc: dict[str, Any]) -> bytes:
    """The cassette file's bytes: UTF-8 JSON indented by two spaces.

    orjson where it can: the standard library encodes indented JSON in pure Python, which
    was two thirds of the writer's time per cassette. The standard library for what
    orjson refuses (integers beyond 64 bits).
    """
    try:
        return orjson.dumps(doc, option=orjson.OPT_INDENT_2 | orjson.OPT_APPEND_NEWLINE)
    except orjson.JSONEncodeError:
        return json.dumps(doc, ensure_ascii=False, indent=2).encode("utf-8") + b"\n"


def store(
    doc: dict[str, Any],
    root: str,
    compression: str = "none",
    skip_identical: bool = False,
    durable: bool = False,
) -> CassetteFile | None:
    """Write ``doc`` as a new cassette under ``root`` (a directory or ``s3://`` URL), named as the format says.

    ``skip_identical``: write nothing (and return None) when that name already holds this very
    cassette, so importing the same file twice adds nothing.
    """
    cassette = Cassette(doc)
    request = cassette.request
    relpath = cassette_relpath(
        request.method,
        request.route or request.path,
        str(cassette.id),
        cassette.recorded_at,
        ".json.gz" if compression == "gzip" else ".json",
    )
    if skip_identical and _holds(join(root, relpath), doc):
        return None
    return write_new(root, relpath, encode(serialise(doc), relpath), durable)


def _holds(file: CassetteFile, doc: dict[str, Any]) -> bool:
    try:
        return load_cassette(file) == doc
    except CassetteError:
        return False


class CassetteFiles:
    """Writes cassettes and remembers where the recent ones went, so late spans rewrite the same file."""

    def __init__(self, announce: Callable[[str], None] = logger.info) -> None:
        # by recording: where its cassette went, and how many calls and whether an error it had
        self._paths: OrderedDict[int, tuple[str, int, bool]] = OrderedDict()
        self._announce = announce  # the console line of a new cassette

    def write(self, recording: FrozenRecording, config: TraceConfig) -> None:
        """Write (or rewrite) ``recording``'s cassette; count it, and log the console line for a new one."""
        doc = prepare_document(recording, config)
        written = self._paths.get(recording.serial)
        target = written[0] if written else recording.fixed_path
        calls, error = len(doc.get("calls") or ()), doc.get("error") is not None
        if target is not None:  # a rewrite for late spans, or a path chosen up front
            replace(target, encode(serialise(doc), target), config.fsync)
            counters.add("rewritten" if written else "recorded")
            is_process = Cassette(doc).is_process
            if not written and is_process:
                self._announce(process_line(doc, target))
            elif written and not is_process and (calls, error) > written[1:]:
                # a background task called out, or raised, after the response: the line said less
                self._announce(record_line(doc, target, updated=True))
        else:
            target = str(store(doc, config.cassette_dir, config.compression, durable=config.fsync))
            counters.add("recorded")
            self._announce(record_line(doc, target))
        self._paths[recording.serial] = (target, calls, error)
        self._paths.move_to_end(recording.serial)
        while len(self._paths) > _REMEMBERED_PATHS:
            self._paths.popitem(last=False)
