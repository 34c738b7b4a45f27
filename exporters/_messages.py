"""The messages between the application's process and its writer process, as named types.

Each travels as one pickled frame (:mod:`._frames`): the application sends a
:class:`ConfigMessage` before the first recording that uses a config, a
:class:`RecordMessage` per recording, a :class:`FlushMessage` when it waits for what it
sent; the writer process answers with :class:`Report`.
"""

from __future__ import annotations

from typing import NamedTuple

from timetracer_otel.config import TraceConfig

from .frozen import Wire

__all__ = ["ConfigMessage", "RecordMessage", "FlushMessage", "Message", "Report"]


class ConfigMessage(NamedTuple):
    """A config the following recordings name by ``config_id``, with the application's environment
    (the writer process writes with it: AWS settings for an S3 cassette directory)."""

    config_id: int
    config: TraceConfig
    environment: dict[str, str]


class RecordMessage(NamedTuple):
    """A finished recording to build, redact and write."""

    config_id: int
    recording: Wire  # frozen.freeze's; frozen.thaw names its fields


class FlushMessage(NamedTuple):
    """Answer ``flush_id`` in a report once everything sent before is written."""

    flush_id: int


Message = ConfigMessage | RecordMessage | FlushMessage


class Report(NamedTuple):
    """What happened in the writer process since its last report."""

    counters: dict[str, int]  # added since the last report
    logs: list[tuple[int, str]]  # (level, text): logged in the application's process
    errors: list[tuple[str, str, str | None]]  # (kind, message, details): rate-limited there
    handled: int  # recordings handled so far
    acks: list[int]  # flushes answered
