"""Console lines reach stderr once, and logging's configuration still decides where they go."""

from __future__ import annotations

import logging
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

from timetracer_otel._diagnostics import console, logger

_LINE = "timetracer [OK] replayed GET /  id=0000abcd  status=200\n  cassette: a.json"


def _unconfigure(monkeypatch: pytest.MonkeyPatch) -> None:
    """Logging as an application that never configured it has it: pytest's handlers off the root
    (pytest adds them as each phase of a test starts, so this runs in the test itself)."""
    monkeypatch.setattr(logging.getLogger(), "handlers", [])


def test_a_line_is_written_to_stderr_once_when_logging_is_not_configured(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    _unconfigure(monkeypatch)
    console(_LINE)
    assert capsys.readouterr().err == _LINE + "\n"


def test_a_filter_on_the_timetracer_logger_still_applies(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    _unconfigure(monkeypatch)
    monkeypatch.setattr(logger, "filters", [lambda record: "replayed" not in record.getMessage()])
    console(_LINE)
    console("timetracer [OK] recorded GET /")
    assert capsys.readouterr().err == "timetracer [OK] recorded GET /\n"


def test_a_level_above_info_silences_the_line(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    _unconfigure(monkeypatch)
    monkeypatch.setattr(logger, "level", logging.WARNING)
    logging.getLogger().manager._clear_cache()  # noqa: SLF001 - the levels cached by isEnabledFor
    try:
        console(_LINE)
        console("timetracer: a warning", logging.WARNING)
    finally:
        monkeypatch.undo()
        logging.getLogger().manager._clear_cache()  # noqa: SLF001
    assert capsys.readouterr().err == "timetracer: a warning\n"


def test_a_configured_root_logger_gets_the_line_instead_of_stderr(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    _unconfigure(monkeypatch)
    seen: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            seen.append(record.getMessage())

    logging.getLogger().handlers.append(Keep())
    console(_LINE)
    assert seen == [_LINE]
    assert capsys.readouterr().err == ""


def test_a_root_logger_that_only_exports_or_drops_records_leaves_the_line_on_stderr(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The FastAPI template's OpenTelemetry set-up puts OpenTelemetry's ``LoggingHandler`` on the
    root logger: it exports records, shows none, and every console line went nowhere. The
    exporter still gets the line."""
    from opentelemetry.sdk._logs import LoggerProvider, LoggingHandler
    from opentelemetry.sdk._logs.export import InMemoryLogRecordExporter, SimpleLogRecordProcessor

    _unconfigure(monkeypatch)
    exported = InMemoryLogRecordExporter()
    provider = LoggerProvider()
    provider.add_log_record_processor(SimpleLogRecordProcessor(exported))
    with warnings.catch_warnings():  # the SDK's handler, as the template uses it, is deprecated
        warnings.simplefilter("ignore", DeprecationWarning)
        exporting = LoggingHandler(logger_provider=provider)
    logging.getLogger().handlers.extend([logging.NullHandler(), exporting])
    console(_LINE)
    assert capsys.readouterr().err == _LINE + "\n"
    assert [record.log_record.body for record in exported.get_finished_logs()] == [_LINE]


# alembic's generated alembic.ini, as env.py hands it to logging.config.fileConfig
_ALEMBIC_INI = """
[loggers]
keys = root,sqlalchemy,alembic

[handlers]
keys = console

[formatters]
keys = generic

[logger_root]
level = WARN
handlers = console
qualname =

[logger_sqlalchemy]
level = WARN
handlers =
qualname = sqlalchemy.engine

[logger_alembic]
level = INFO
handlers =
qualname = alembic

[handler_console]
class = StreamHandler
args = (sys.stderr,)
level = NOTSET
formatter = generic

[formatter_generic]
format = %(levelname)-5.5s [%(name)s] %(message)s
"""

_AFTER_FILE_CONFIG = """
import logging.config, sys
from timetracer_otel._diagnostics import console, report_failure
logging.config.fileConfig(sys.argv[1])  # as alembic's env.py, in a test suite's set-up
console("timetracer [OK] recorded GET /items")
report_failure("write", TypeError("Integer exceeds 64-bit range"))
"""


def test_logging_file_config_does_not_silence_lines_or_errors(tmp_path: Path) -> None:
    """``fileConfig`` disables every logger it does not name: timetracer's stays heard, through
    the handlers the configuration set up."""
    ini = tmp_path / "alembic.ini"
    ini.write_text(_ALEMBIC_INI)
    ran = subprocess.run(
        [sys.executable, "-c", _AFTER_FILE_CONFIG, str(ini)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert "INFO  [timetracer] timetracer [OK] recorded GET /items" in ran.stderr
    assert (
        "ERROR [timetracer] timetracer: write failed: TypeError: Integer exceeds 64-bit range"
        in (ran.stderr)
    )
