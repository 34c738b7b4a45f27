"""TraceConfig: defaults < TIMETRACER_* environment < explicit arguments, and clear errors."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from timetracer_otel.config import DEFAULT_MAX_BODY_BYTES, ReadLimits, TraceConfig

# Both entry points must read the environment the same way.
BUILDERS: dict[str, Callable[..., TraceConfig]] = {
    "TraceConfig()": TraceConfig,
    "from_env()": TraceConfig.from_env,
}

# environment variable, value, field, parsed value
ENVIRONMENT = [
    ("TIMETRACER_MODE", " Record ", "mode", "record"),
    ("TIMETRACER_DIR", "/srv/cassettes", "cassette_dir", "/srv/cassettes"),
    (
        "TIMETRACER_CASSETTE",
        "cassettes/GET____a7f2.json",
        "cassette_path",
        "cassettes/GET____a7f2.json",
    ),
    ("TIMETRACER_SAMPLE_RATE", "0.25", "sample_rate", 0.25),
    ("TIMETRACER_ERRORS_ONLY", "true", "errors_only", True),
    ("TIMETRACER_ERRORS_ONLY", "0", "errors_only", False),
    ("TIMETRACER_FSYNC", "yes", "fsync", True),
    ("TIMETRACER_EXCLUDE_PATHS", "/health, /metrics,,", "exclude_paths", ("/health", "/metrics")),
    ("TIMETRACER_MAX_BODY_BYTES", "2048", "max_body_bytes", 2048),
    ("TIMETRACER_REDACT", "off", "redact", False),
    (
        "TIMETRACER_REDACT_HEADERS",
        "X-Session,X-Tenant-Key",
        "redact_headers",
        ("X-Session", "X-Tenant-Key"),
    ),
    ("TIMETRACER_REDACT_FIELDS", "ssn, card_number", "redact_fields", ("ssn", "card_number")),
    ("TIMETRACER_SERVICE", "checkout", "service_name", "checkout"),
    ("TIMETRACER_READ_MAX_BYTES", "1048576", "read_max_bytes", 1048576),
    ("TIMETRACER_READ_MAX_DEPTH", "64", "read_max_depth", 64),
    ("TIMETRACER_READ_MAX_DIGITS", "100", "read_max_digits", 100),
    ("TIMETRACER_SHOW_MAX_BODY_BYTES", "4096", "show_max_body_bytes", 4096),
]

_RATE = "allowed values: a number from 0.0 to 1.0"
_BOOLEAN = "allowed values: true, false, 1, 0, yes, no, on, off"
_SIZE = "allowed values: a whole number of bytes >= 0"

# environment variable, bad value, the exact error message
INVALID_ENVIRONMENT = [
    (
        "TIMETRACER_MODE",
        "recrod",
        "TIMETRACER_MODE: invalid mode 'recrod'; allowed values: off, record, replay",
    ),
    (
        "TIMETRACER_SAMPLE_RATE",
        "1.5",
        f"TIMETRACER_SAMPLE_RATE: invalid sample rate '1.5'; {_RATE}",
    ),
    (
        "TIMETRACER_SAMPLE_RATE",
        "abc",
        f"TIMETRACER_SAMPLE_RATE: invalid sample rate 'abc'; {_RATE}",
    ),
    (
        "TIMETRACER_SAMPLE_RATE",
        "nan",
        f"TIMETRACER_SAMPLE_RATE: invalid sample rate 'nan'; {_RATE}",
    ),
    (
        "TIMETRACER_ERRORS_ONLY",
        "maybe",
        f"TIMETRACER_ERRORS_ONLY: invalid boolean 'maybe'; {_BOOLEAN}",
    ),
    (
        "TIMETRACER_REDACT",
        "sometimes",
        f"TIMETRACER_REDACT: invalid boolean 'sometimes'; {_BOOLEAN}",
    ),
    ("TIMETRACER_MAX_BODY_BYTES", "1MB", f"TIMETRACER_MAX_BODY_BYTES: invalid size '1MB'; {_SIZE}"),
    ("TIMETRACER_MAX_BODY_BYTES", "-1", f"TIMETRACER_MAX_BODY_BYTES: invalid size '-1'; {_SIZE}"),
    # orjson refuses deeper nesting, and Python's recursion gives out near it: no limit beyond
    (
        "TIMETRACER_READ_MAX_DEPTH",
        "2000",
        "TIMETRACER_READ_MAX_DEPTH: invalid depth '2000'; allowed values: a whole number from 1 to 1024",
    ),
    (
        "TIMETRACER_READ_MAX_BYTES",
        "0",
        "TIMETRACER_READ_MAX_BYTES: invalid size '0'; allowed values: a whole number of bytes >= 1",
    ),
    (
        "TIMETRACER_READ_MAX_DIGITS",
        "5",
        "TIMETRACER_READ_MAX_DIGITS: invalid number of digits '5'; allowed values: a whole number >= 20",
    ),
]


@pytest.mark.parametrize("build", BUILDERS.values(), ids=BUILDERS.keys())
def test_defaults_when_nothing_is_set(build: Callable[..., TraceConfig]) -> None:
    config = build()
    assert (config.mode, config.cassette_dir, config.cassette_path) == ("off", "./cassettes", None)
    assert (config.sample_rate, config.errors_only, tuple(config.exclude_paths)) == (1.0, False, ())
    assert config.max_body_bytes == DEFAULT_MAX_BODY_BYTES == 1024 * 1024
    assert (config.redact, tuple(config.redact_headers), tuple(config.redact_fields)) == (
        True,
        (),
        (),
    )
    assert (config.redact_hook, config.service_name) == (None, None)


def test_the_spec_programmatic_example() -> None:
    config = TraceConfig(
        mode="record",
        cassette_dir="./my-cassettes",
        sample_rate=0.5,
        errors_only=False,
        exclude_paths=["/health", "/metrics"],
    )
    assert (config.mode, config.cassette_dir, config.sample_rate, config.errors_only) == (
        "record",
        "./my-cassettes",
        0.5,
        False,
    )
    assert tuple(config.exclude_paths) == ("/health", "/metrics")


@pytest.mark.parametrize("build", BUILDERS.values(), ids=BUILDERS.keys())
@pytest.mark.parametrize(("variable", "value", "name", "expected"), ENVIRONMENT)
def test_each_variable_is_read(
    monkeypatch: pytest.MonkeyPatch,
    build: Callable[..., TraceConfig],
    variable: str,
    value: str,
    name: str,
    expected: Any,
) -> None:
    monkeypatch.setenv(variable, value)
    assert getattr(build(), name) == expected


@pytest.mark.parametrize("build", BUILDERS.values(), ids=BUILDERS.keys())
def test_explicit_arguments_beat_the_environment(
    monkeypatch: pytest.MonkeyPatch, build: Callable[..., TraceConfig]
) -> None:
    for variable, value, _, _ in ENVIRONMENT:
        monkeypatch.setenv(variable, value)
    config = build(
        mode="off",
        sample_rate=1,
        errors_only=True,
        exclude_paths=["/ping"],
        cassette_dir=Path("/tmp/x"),
    )
    assert (config.mode, config.sample_rate, config.errors_only) == ("off", 1.0, True)
    assert tuple(config.exclude_paths) == ("/ping",)
    assert config.cassette_dir == "/tmp/x"
    # not given: still the environment
    assert config.max_body_bytes == 2048 and config.service_name == "checkout"


def test_from_env_reads_the_mapping_it_is_given(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TIMETRACER_MODE", "replay")
    config = TraceConfig.from_env({"TIMETRACER_MODE": "record", "TIMETRACER_SAMPLE_RATE": "0"})
    assert (config.mode, config.sample_rate) == ("record", 0.0)


def test_a_misspelt_variable_is_named_once_with_the_settings_it_resembles(
    caplog: pytest.LogCaptureFixture,
) -> None:
    environ = {"TIMETRACER_CASSETTE_DIR": "/srv/cassettes", "TIMETRACER_MDOE": "record"}
    with caplog.at_level("WARNING", logger="timetracer"):
        config = TraceConfig.from_env(environ)
        TraceConfig.from_env(environ)
    assert (config.mode, config.cassette_dir) == ("off", "./cassettes")
    assert [record.getMessage() for record in caplog.records] == [
        "timetracer: TIMETRACER_CASSETTE_DIR is not a timetracer setting (did you mean"
        " TIMETRACER_CASSETTE or TIMETRACER_DIR?); it is ignored",
        "timetracer: TIMETRACER_MDOE is not a timetracer setting (did you mean"
        " TIMETRACER_MODE or TIMETRACER_DIR?); it is ignored",
    ]


def test_from_env_rejects_unknown_fields() -> None:
    with pytest.raises(TypeError, match="unknown TraceConfig field\\(s\\): sample"):
        TraceConfig.from_env(sample=0.5)


@pytest.mark.parametrize(
    "variable", ["TIMETRACER_MODE", "TIMETRACER_SAMPLE_RATE", "TIMETRACER_ERRORS_ONLY"]
)
def test_an_empty_variable_counts_as_unset(monkeypatch: pytest.MonkeyPatch, variable: str) -> None:
    """As in the OpenTelemetry SDK: ``TIMETRACER_MODE=`` in a compose file means "not set"."""
    monkeypatch.delenv("TIMETRACER_KEY_FILE")  # the tests' own key: nothing else is set here
    monkeypatch.setenv(variable, "  ")
    assert TraceConfig() == TraceConfig.from_env({})


@pytest.mark.parametrize("build", BUILDERS.values(), ids=BUILDERS.keys())
@pytest.mark.parametrize(("variable", "value", "message"), INVALID_ENVIRONMENT)
def test_invalid_environment_values_name_the_variable_and_the_allowed_values(
    monkeypatch: pytest.MonkeyPatch,
    build: Callable[..., TraceConfig],
    variable: str,
    value: str,
    message: str,
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        build()


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (
            {"mode": "recrod"},
            "TraceConfig(mode=...): invalid mode 'recrod'; allowed values: off, record, replay",
        ),
        ({"sample_rate": 1.5}, f"TraceConfig(sample_rate=...): invalid sample rate 1.5; {_RATE}"),
        ({"sample_rate": True}, f"TraceConfig(sample_rate=...): invalid sample rate True; {_RATE}"),
        ({"max_body_bytes": 1.5}, f"TraceConfig(max_body_bytes=...): invalid size 1.5; {_SIZE}"),
        (
            {"errors_only": "maybe"},
            f"TraceConfig(errors_only=...): invalid boolean 'maybe'; {_BOOLEAN}",
        ),
        (
            {"redact_hook": "strip"},
            "TraceConfig(redact_hook=...): invalid redact_hook 'strip'; allowed values: a callable or None",
        ),
    ],
)
def test_invalid_arguments_name_the_field_and_the_allowed_values(
    arguments: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        TraceConfig(**arguments)


@pytest.mark.parametrize(
    ("path", "excluded"),
    [
        ("/health", True),
        ("/health/live", True),
        ("/metrics", True),
        ("/healthz", False),
        ("/", False),
        ("/users/health", False),
    ],
)
def test_excluded_paths_match_whole_segments(path: str, excluded: bool) -> None:
    assert TraceConfig(exclude_paths=["/health", "/metrics/"]).is_excluded(path) is excluded


def test_the_secret_key_is_never_shown(monkeypatch: pytest.MonkeyPatch) -> None:
    """Not by repr, nor by the error for a key too short to be one."""
    secret = "a-secret-of-32-characters-000000"
    config = TraceConfig(secret_key=secret)
    assert config.secret_key == secret and secret not in repr(config)
    monkeypatch.setenv("TIMETRACER_SECRET_KEY", "short-one")
    with pytest.raises(ValueError) as raised:
        TraceConfig()
    assert str(raised.value).startswith(
        "TIMETRACER_SECRET_KEY: the secret key is too short (9 characters, at least 16)"
    )
    assert "short-one" not in str(raised.value)


def test_the_read_limits_are_read_alone_as_the_config_reads_them(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The CLI and the dashboard read only these: an unrelated bad variable does not stop them."""
    assert (
        ReadLimits.from_env({})
        == TraceConfig.from_env({}).read_limits
        == ReadLimits(64 * 1024 * 1024, 256, 4300, 256 * 1024)
    )
    monkeypatch.setenv("TIMETRACER_READ_MAX_DEPTH", "32")
    monkeypatch.setenv("TIMETRACER_MODE", "recrod")
    assert ReadLimits.from_env().max_depth == 32
    assert TraceConfig(mode="off").read_limits.max_depth == 32
