"""The writer process: reads frozen recordings from stdin, writes their cassettes, reports on stdout.

Started by :class:`~timetracer_otel.exporters.process_writer.ProcessWriter`, with the file
descriptor of a pipe that wakes it for a flush as its argument. It reads the messages of
:mod:`._messages` and sends a :class:`~._messages.Report` at most every ``_REPORT_SECONDS``
unless a flush asks for one now. It runs until its stdin closes (the application exited
or let it go), after writing what it was sent.
"""

from __future__ import annotations

import gc
import logging
import os
import select
import sys
import time
from typing import BinaryIO

from timetracer_otel._diagnostics import counters, errors, guarded, logger
from timetracer_otel.config import TraceConfig

from ._frames import FrameReader, frame
from ._messages import ConfigMessage, FlushMessage, Message, RecordMessage, Report
from .files import CassetteFiles
from .frozen import thaw

_REPORT_SECONDS = 0.1
# Cassettes are background work: where the CPUs are busy, the application's requests go first
# (measured on /dep with 2 CPUs saturated: +28% over plain OpenTelemetry at the same priority,
# +10% at this one, every cassette still written). A writer starved for good falls behind and
# the application drops recordings, counted, instead of slowing down.
_NICENESS = 10
_READ_BYTES = 1 << 20
# Waking up costs more CPU than writing a small cassette (the caches are cold after a sleep): after a
# batch the writer lets the next recordings gather for this long, unless a flush wakes it (its
# second pipe). They wait in the pipe meanwhile, so they are written even if the application is killed.
_GATHER_SECONDS = 0.02
_GC_THRESHOLD = (
    20_000  # allocations between collections of the youngest generation (Python's default: 700)
)


class _Collect(logging.Handler):
    """Keeps log lines for the next report: the application's process shows them its own way."""

    def __init__(self) -> None:
        super().__init__()
        self.lines: list[tuple[int, str]] = []
        self._exceptions = logging.Formatter()

    def emit(self, record: logging.LogRecord) -> None:
        text = record.getMessage()
        if record.exc_info:
            text += "\n" + self._exceptions.formatException(record.exc_info)
        self.lines.append((record.levelno, text))

    def info(self, text: str) -> None:
        """A line at INFO without a log record: the application's process logs it (the console line)."""
        self.lines.append((logging.INFO, text))


class _Writer:
    def __init__(self, reports: BinaryIO) -> None:
        self._reports: BinaryIO | None = reports  # None once the application is gone
        self._log = _Collect()
        self._files = CassetteFiles(announce=self._log.info)
        self._configs: dict[
            int, tuple[TraceConfig, dict[str, str]]
        ] = {}  # id -> (config, the app's environment)
        logger.handlers[:] = [self._log]
        logger.propagate = False
        self._errors: list[tuple[str, str, str | None]] = []
        # rate-limited where they are shown
        errors.forward = lambda *error: self._errors.append(error)
        self._environment: int | None = None  # the config whose environment os.environ holds
        self._reported_counters: dict[str, int] = {}
        self._handled = 0
        self._acks: list[int] = []
        self._dirty = False
        self._last_report = 0.0

    def handle(self, message: Message) -> None:
        if isinstance(message, RecordMessage):
            self._record(message)
        elif isinstance(message, ConfigMessage):
            self._configs[message.config_id] = (message.config, message.environment)
        elif isinstance(message, FlushMessage):
            self._acks.append(message.flush_id)
        self._dirty = True

    def _record(self, message: RecordMessage) -> None:
        config, environment = self._configs[message.config_id]
        # the app's environment when it first used this config (AWS settings for S3)
        if self._environment != message.config_id:
            os.environ.clear()
            os.environ.update(environment)
            self._environment = message.config_id
        with guarded("write"):
            self._files.write(thaw(message.recording), config)
        self._handled += 1

    def report_due(self) -> float | None:
        """Seconds until a report is due (0: now), or None when there is nothing to report."""
        if self._acks:
            return 0.0
        if not self._dirty:
            return None
        return max(self._last_report + _REPORT_SECONDS - time.monotonic(), 0.0)

    def report(self) -> None:
        now = counters.snapshot()
        added = {name: value - self._reported_counters.get(name, 0) for name, value in now.items()}
        report = Report(
            counters={name: value for name, value in added.items() if value},
            logs=self._log.lines,
            errors=self._errors,
            handled=self._handled,
            acks=self._acks,
        )
        if self._reports is not None:
            try:
                self._reports.write(frame(report))
            except BrokenPipeError:
                # the application is gone (killed right after its last requests): what it
                # handed over is still written, and reported to nobody
                self._reports = None
        self._reported_counters = now
        self._log.lines, self._errors, self._acks, self._dirty = [], [], [], False
        self._last_report = time.monotonic()


def main() -> None:
    if hasattr(os, "nice"):
        os.nice(_NICENESS)
    reports = os.fdopen(os.dup(1), "wb", buffering=0)
    os.dup2(2, 1)  # a stray print goes to stderr, never into the reports
    writer = _Writer(reports)
    # Cassette documents are trees that reference counting frees; the collector would only walk
    # the modules loaded by now, again and again: they are set aside, and it runs less often.
    gc.collect()
    gc.freeze()
    gc.set_threshold(_GC_THRESHOLD)
    frames = FrameReader()
    poller = select.poll()
    poller.register(0, select.POLLIN)
    urgent_fd = int(sys.argv[1]) if len(sys.argv) > 1 else None
    urgent = select.poll()
    if urgent_fd is not None:
        urgent.register(urgent_fd, select.POLLIN)
    while True:
        due = writer.report_due()
        if due is not None and (due == 0 or not poller.poll(due * 1000)):
            writer.report()  # due, and nothing more came in meanwhile
            continue
        data = os.read(0, _READ_BYTES)
        if not data:
            break
        for message in frames.feed(data):
            with guarded("write.message"):
                writer.handle(message)
            if writer.report_due() == 0:  # also while a long backlog is being written
                writer.report()
        if urgent_fd is not None and urgent.poll(_GATHER_SECONDS * 1000):
            os.read(urgent_fd, 4096)  # a flush: read now
    if writer.report_due() is not None:
        writer.report()


if __name__ == "__main__":
    main()
