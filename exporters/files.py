"""Turning a frozen recording into a cassette file: build, redact, serialise, write, announce.

The same code runs in the writer process and, where that process cannot serve (a
``redact_hook`` that cannot leave the application's process), on the writer thread.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from datetime import datetime
from typing import Any

import orjson

from timetracer_otel._diagnostics import counters, logger
from timetracer_otel._fingerprint import fingerprint
from timetracer_otel._keys import key_for
from timetracer_otel.cassette.location import CassetteFile, join
from timetracer_otel.cassette.naming import cassette_relpath
from timetracer_otel.cassette.reader import CassetteError, load_cassette
from timetracer_otel.cassette.storage import encode, replace, write_new
from timetracer_otel.config import TraceConfig
from timetracer_otel.redaction import redactor_for
from timetracer_otel.sealing import Sealer

from .builder import build_document
from .console import process_line, record_line
from .frozen import FrozenRecording

__all__ = ["CassetteFiles", "prepare_document", "serialise", "store"]

# Late spans arrive within seconds of their request: this many recent cassettes are enough to find.
_REMEMBERED_PATHS = 4096


def prepare_document(recording: FrozenRecording, config: TraceConfig) -> dict[str, Any]:
    """Build the cassette document and redact it as ``config`` says.

    With timetracer's key, the request first gets the fingerprint of what redaction removes
    from it (replay tells apart requests that differ only in their secrets), and the values
    redaction removes are sealed with the key rather than dropped.
    """
    doc = build_document(recording, config.max_body_bytes)
    redactor = redactor_for(config)
    if redactor is not None:
        key = key_for(config, create=True)
        request = doc.get("request")  # a process cassette has none
        if key is not None:
            if request is not None:
                request["fingerprint"] = fingerprint(redactor.secrets(request), key)
            redactor = redactor.sealing(Sealer(key))
        redactor.document(doc)
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
    relpath = cassette_relpath(
        doc["request"]["method"],
        doc["request"]["route"] or doc["request"]["path"],
        doc["id"],
        _recorded_day(doc),
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


def _recorded_day(doc: dict[str, Any]) -> datetime:
    return datetime.fromisoformat(doc["recorded_at"].replace("Z", "+00:00"))


class CassetteFiles:
    """Writes cassettes and remembers where the recent ones went, so late spans rewrite the same file."""

    def __init__(self) -> None:
        self._paths: OrderedDict[int, str] = OrderedDict()

    def write(self, recording: FrozenRecording, config: TraceConfig) -> None:
        """Write (or rewrite) ``recording``'s cassette; count it, and log the console line for a new one."""
        doc = prepare_document(recording, config)
        written = self._paths.get(recording.serial)
        target = written or recording.fixed_path
        if target is not None:  # a rewrite for late spans, or a path chosen up front
            replace(target, encode(serialise(doc), target), config.fsync)
            counters.add("rewritten" if written else "recorded")
            if not written and doc.get("scope") == "process":
                logger.info(process_line(doc, target))
        else:
            target = str(store(doc, config.cassette_dir, config.compression, durable=config.fsync))
            counters.add("recorded")
            logger.info(record_line(doc, target))
        self._paths[recording.serial] = target
        self._paths.move_to_end(recording.serial)
        while len(self._paths) > _REMEMBERED_PATHS:
            self._paths.popitem(last=False)
