"""Cassettes written by a separate process: the application's process only freezes and hands over.

A writer thread in the application's process shares its GIL: under load, every
millisecond it spent writing cost the event loop about another millisecond
(docs/performance.md). Here the request path freezes the finished recording, pickles it
and writes it to a pipe without ever blocking; a writer process builds, redacts and writes
the cassette, and reports back counters, log lines (the console line among them) and
flush answers. One helper thread in the application's process reads those reports (at
most about ten a second) and finishes writes the full pipe could not take.

Where the writer process cannot serve, :class:`~.writer.CassetteWriter` (a thread) does:
for a config with a ``redact_hook`` (it must run in the application's process), where no
child process can be started, and after the writer process died (what it had been handed
and not yet written is handed to the thread).
"""

from __future__ import annotations

import dataclasses
import itertools
import multiprocessing.spawn
import os
import select
import subprocess
import sys
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable

from timetracer_otel import _diagnostics
from timetracer_otel._diagnostics import console, counters, guarded, report_failure
from timetracer_otel._recording import TraceRecording
from timetracer_otel.cassette.location import is_url
from timetracer_otel.config import TraceConfig

from ._frames import FrameReader, frame, unframe
from ._messages import ConfigMessage, FlushMessage, Message, RecordMessage, Report
from .frozen import freeze, thaw
from .writer import CassetteWriter, count_drop

__all__ = ["ProcessWriter"]

DEFAULT_MAX_PENDING_BYTES = 16 * 1024 * 1024
_PIPE_BYTES = 1024 * 1024  # Linux lets any process grow a pipe to this size
_READ_BYTES = 1 << 16


def _shipped(config: TraceConfig) -> TraceConfig:
    """``config`` as the writer process gets it: its directories made absolute."""
    absolute = {
        name: os.path.abspath(value)
        for name in ("cassette_dir", "cassette_path")
        if (value := getattr(config, name)) is not None and not is_url(value)
    }
    return dataclasses.replace(config, **absolute)


def _is_auto_instrumentation(entry: str) -> bool:
    """``opentelemetry-instrument`` puts its ``sitecustomize`` on the path: the writer must not instrument itself."""
    return os.path.normpath(entry).endswith(
        os.path.join("opentelemetry", "instrumentation", "auto_instrumentation")
    )


def _start_process(urgent: int) -> subprocess.Popen:
    """The writer process, importing timetracer_otel from where this process does.

    Its interpreter is the one ``multiprocessing`` would start: where Python is embedded
    (``sys.executable`` is then the host program), ``multiprocessing.set_executable()``
    names the real one, as for any child process. ``urgent``: the read end of the pipe that
    wakes it for a flush.
    """
    path = [entry or os.getcwd() for entry in sys.path if not _is_auto_instrumentation(entry)]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(path)}
    return subprocess.Popen(
        [
            multiprocessing.spawn.get_executable(),
            "-m",
            "timetracer_otel.exporters._writer_main",
            str(urgent),
        ],
        pass_fds=[urgent],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        env=env,
        start_new_session=True,  # a Ctrl-C meant for the application does not cut its last cassettes short
    )


class _Channel:
    """The pipe to one writer process, its reports, and the helper thread serving both."""

    def __init__(
        self,
        max_pending: int,
        on_exit: weakref.WeakMethod[Callable[[list[bytes]], None]],
    ) -> None:
        self._poller = select.poll()  # first: where there is none (Windows), the thread writes
        urgent_read, self._urgent = os.pipe()
        try:
            self.process = _start_process(urgent_read)
        except BaseException:
            os.close(self._urgent)
            raise
        finally:
            os.close(urgent_read)
        os.set_blocking(self._urgent, False)
        assert self.process.stdin is not None and self.process.stdout is not None
        self._stdin = self.process.stdin
        self._commands = self._stdin.fileno()
        self._reports = self.process.stdout.fileno()
        os.set_blocking(self._commands, False)
        try:
            import fcntl

            fcntl.fcntl(self._commands, fcntl.F_SETPIPE_SZ, _PIPE_BYTES)
        # not Linux, or a lower system limit: the default size
        except (
            ImportError,
            AttributeError,
            OSError,
        ):
            pass
        self._wake_read, self._wake_write = os.pipe()
        os.set_blocking(self._wake_write, False)
        self._max_pending = max_pending
        self._on_exit = on_exit
        self._lock = threading.Lock()
        self._pending = bytearray()  # what the full pipe did not take yet, in order
        self._acks: dict[int, threading.Event] = {}
        self._flush_ids = itertools.count()
        # frames of recordings sent and not yet reported handled
        self._unhandled: deque[bytes] = deque()
        self._handled = 0  # recordings handled by the process, as last reported
        self.alive = True
        self._closing = False
        self._ended = False  # the process exited and what it had not written was handed over
        threading.Thread(target=self._serve, name="timetracer-writer-reports", daemon=True).start()

    def send(self, message: Message, *, force: bool = False, urgent: bool = False) -> bool:
        """Hand ``message`` over without blocking; False when it was not (the process is gone or far behind).

        ``urgent``: wake the process to read it now, where it may be letting recordings gather.
        """
        data = frame(message, encode_foreign=isinstance(message, RecordMessage))
        with self._lock:
            if not self.alive or self._closing:
                return False
            if self._pending:
                if len(self._pending) + len(data) > self._max_pending and not force:
                    return False
                self._pending += data
            else:
                try:
                    written = os.write(self._commands, data)
                except BlockingIOError:
                    written = 0
                # it exited; the helper thread learns it when its reports end
                except BrokenPipeError:
                    self.alive = False
                    return False
                if written < len(data):
                    self._pending += data[written:]
                    self._wake_locked()
            if isinstance(message, RecordMessage):
                self._unhandled.append(data)
            if urgent:
                try:
                    os.write(self._urgent, b"!")
                except (BlockingIOError, BrokenPipeError):  # woken already, or gone
                    pass
        return True

    def flush(self, timeout: float | None) -> bool:
        """Wait until the process has handled everything sent before, or (it exited) handed it to the thread."""
        flush_id = next(self._flush_ids)
        done = threading.Event()
        with self._lock:
            if self._ended:
                return True
            self._acks[flush_id] = done
        # if the process is gone, its end sets ``done``
        self.send(FlushMessage(flush_id), force=True, urgent=True)
        return done.wait(timeout)

    def unhandled(self) -> int:
        """Recordings sent (or waiting for room in the pipe) that the process has not reported handled."""
        with self._lock:
            return len(self._unhandled)

    def close(self) -> None:
        """Let the process go: it writes what it has, then exits."""
        with self._lock:
            self._closing = True
            self._wake_locked()

    @property
    def closing(self) -> bool:
        """Told to exit (the writer was collected, the interpreter exits): it takes nothing more."""
        return self._closing

    @property
    def pid(self) -> int:
        return self.process.pid

    def _wake_locked(self) -> None:
        """Make the helper thread look again (pending bytes, closing); called holding the lock."""
        if not self.alive:
            return
        try:
            os.write(self._wake_write, b"!")
        except BlockingIOError:  # it has many wake-ups waiting already
            pass

    def _serve(self) -> None:
        poller = self._poller
        poller.register(self._reports, select.POLLIN)
        poller.register(self._wake_read, select.POLLIN)
        reports = FrameReader()
        watching_commands = False
        while True:
            with self._lock:
                if self._closing and not self._pending and not self._stdin.closed:
                    self._stdin.close()
                want_write = bool(self._pending) and not self._stdin.closed
            if want_write != watching_commands:
                if want_write:
                    poller.register(self._commands, select.POLLOUT)
                else:
                    poller.unregister(self._commands)
                watching_commands = want_write
            for fd, _ in poller.poll():
                if fd == self._wake_read:
                    os.read(self._wake_read, 4096)
                elif fd == self._commands:
                    self._drain()
                elif fd == self._reports:
                    data = os.read(self._reports, _READ_BYTES)
                    if not data:
                        self._exited()
                        return
                    for report in reports.feed(data):
                        # an application's log handler that fails stops nothing here
                        with guarded("write.report"):
                            self._apply(report)

    def _drain(self) -> None:
        with self._lock:
            try:
                written = os.write(self._commands, self._pending)
            except BlockingIOError:
                return
            except BrokenPipeError:  # it exited: its reports end next
                self.alive = False
                self._pending.clear()
                return
            del self._pending[:written]

    def _apply(self, report: Report) -> None:
        for name, amount in report.counters.items():
            counters.add(name, amount)
        for level, text in report.logs:
            console(text, level)
        for kind, message, details in report.errors:
            _diagnostics.errors.error(
                kind, message if details is None else f"{message}\n{details.rstrip()}"
            )
        with self._lock:
            for _ in range(report.handled - self._handled):
                self._unhandled.popleft()
            self._handled = report.handled
            acked = [self._acks.pop(flush_id) for flush_id in report.acks if flush_id in self._acks]
        for done in acked:
            done.set()

    def _exited(self) -> None:
        with self._lock:
            self.alive = False
            unhandled = list(self._unhandled)
            self._unhandled.clear()
            self._pending.clear()
            closing = self._closing
            os.close(self._wake_read)
            os.close(self._wake_write)
            os.close(self._urgent)
        code = self.process.wait()
        for stream in (self.process.stdin, self.process.stdout):
            if stream is not None:
                stream.close()
        if not closing:
            _diagnostics.errors.error(
                "writer_exited",
                f"the cassette writer process exited (code {code}); a thread of this process writes"
                f" cassettes from now on, beginning with the {len(unhandled)} it had not written",
            )
        on_exit = self._on_exit()
        if on_exit is not None:
            with guarded("write.handover"):
                on_exit(unhandled)
        # only after the hand-over: a flush answered now goes on to wait for the thread
        with self._lock:
            self._ended = True
            waiting, self._acks = list(self._acks.values()), {}
        for done in waiting:
            done.set()


class ProcessWriter:
    """Hands finished recordings to a writer process; a :class:`~timetracer_otel._recording.RecordingWriter`.

    The process starts with the first recording. When it is far behind (``max_pending_bytes``
    not yet taken by it), recordings are dropped and counted, as with a full queue.
    """

    def __init__(self, max_pending_bytes: int = DEFAULT_MAX_PENDING_BYTES) -> None:
        self._max_pending = max_pending_bytes
        self._lock = threading.Lock()
        self._fallback = CassetteWriter()
        self._channel: _Channel | None = None
        self._unavailable = False  # no process could be started, or it died: the thread writes
        self._pid = os.getpid()
        self._config_ids: dict[
            int, tuple[TraceConfig, int]
        ] = {}  # id(config) -> (config, the id it was sent with)
        self._next_config_id = itertools.count()

    @property
    def process_id(self) -> int | None:
        """The writer process's pid, None while there is none."""
        channel = self._channel
        return channel.pid if channel is not None and channel.alive else None

    def submit(self, recording: TraceRecording) -> bool:
        """Hand ``recording`` over to be written; False when it was dropped."""
        channel = None if recording.config.redact_hook is not None else self._current_channel()
        if channel is None:  # the hook, a callable, must run in this process
            return self._fallback.submit(recording)
        try:
            config_id = self._config_id(channel, recording.config)
            if config_id is None:
                return self._fallback.submit(recording)
            sent = channel.send(RecordMessage(config_id, freeze(recording)))
        except Exception as exc:  # noqa: BLE001 - never into the application's request
            report_failure("handover", exc)
            return False
        if sent:
            return True
        if not channel.alive or channel.closing:  # gone, or told to exit: this process writes it
            return self._fallback.submit(recording)
        count_drop()
        return False

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until everything submitted before this call is written."""
        deadline = None if timeout is None else time.monotonic() + timeout
        channel = self._channel
        done = True
        # Also when the process just exited: its flush returns once what it had not written was
        # handed to the thread, so the thread's flush below covers those recordings too.
        if channel is not None and self._pid == os.getpid():
            done = channel.flush(timeout)
        remaining = None if deadline is None else max(deadline - time.monotonic(), 0.0)
        return self._fallback.flush(remaining) and done

    def unwritten(self) -> int:
        channel = self._channel
        handed = channel.unhandled() if channel is not None and self._pid == os.getpid() else 0
        return handed + self._fallback.unwritten()

    def _current_channel(self) -> _Channel | None:
        channel = self._channel
        if channel is not None and channel.alive and self._pid == os.getpid():
            return channel
        if self._unavailable and self._pid == os.getpid():
            return None
        with self._lock:
            if self._pid != os.getpid():  # forked: the parent's process and pipe are the parent's
                self._pid, self._channel, self._unavailable, self._config_ids = (
                    os.getpid(),
                    None,
                    False,
                    {},
                )
            if self._channel is None and not self._unavailable:
                try:
                    self._channel = _Channel(self._max_pending, weakref.WeakMethod(self._on_exit))
                except Exception as exc:  # noqa: BLE001 - no child process here: the thread writes
                    self._unavailable = True
                    _diagnostics.errors.error(
                        "writer_process",
                        f"cannot start the cassette writer process ({exc}); a thread writes cassettes",
                        exc,
                    )
                else:
                    weakref.finalize(self, self._channel.close)
            return self._channel if self._channel is not None and self._channel.alive else None

    def _config_id(self, channel: _Channel, config: TraceConfig) -> int | None:
        """The id the writer process knows ``config`` by, sending it first; None if it could not be sent."""
        known = self._config_ids.get(id(config))
        if known is not None and known[0] is config:
            return known[1]
        config_id = next(self._next_config_id)
        if not channel.send(
            ConfigMessage(config_id, _shipped(config), dict(os.environ)), force=True
        ):
            return None
        self._config_ids[id(config)] = (config, config_id)
        return config_id

    def _on_exit(self, unhandled: list[bytes]) -> None:
        """The process is gone: the thread writes from now on, first what the process had not."""
        self._unavailable = True
        configs = {config_id: config for config, config_id in self._config_ids.values()}
        for data in unhandled:
            message: RecordMessage = unframe(data)
            self._fallback.submit_frozen(thaw(message.recording), configs[message.config_id])
