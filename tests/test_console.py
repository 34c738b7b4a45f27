"""Console lines reach stderr once, and logging's configuration still decides where they go."""

from __future__ import annotations

import logging

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
