"""Configuration: defaults < ``TIMETRACER_*`` environment < explicit arguments.

Every field can be given to :class:`TraceConfig` directly; a field left out is read
from its environment variable, and from the built-in default when that is unset
or empty (as in the OpenTelemetry SDK).
"""

from __future__ import annotations

import difflib
import functools
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Any
from urllib.parse import urlsplit, urlunsplit

__all__ = [
    "TraceConfig",
    "ReadLimits",
    "MODES",
    "COMPRESSIONS",
    "DEFAULT_MAX_BODY_BYTES",
    "DEFAULT_DRAW_SOURCES",
    "DRAW_SOURCES",
    "process_mode",
]

MODES = ("off", "record", "replay")
COMPRESSIONS = ("none", "gzip")
DEFAULT_MAX_BODY_BYTES = 1024 * 1024
# Where the app's non-determinism comes from; each can be left out of recording and replay.
DRAW_SOURCES = ("clock", "uuid", "random", "urandom", "secrets", "logs")
# drawn unless told otherwise: not ``logs`` (a log line's time is the real one)
DEFAULT_DRAW_SOURCES = DRAW_SOURCES[:-1]
# orjson refuses documents nested deeper than this; the standard parser's recursion gives out about there too.
_MOST_DEPTH = 1024

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


class _Unset:
    def __repr__(self) -> str:
        return "<unset>"


_UNSET: Any = _Unset()


def _parse_mode(value: Any) -> str:
    mode = str(value).strip().lower()
    if mode not in MODES:
        raise ValueError(f"invalid mode {value!r}; allowed values: {', '.join(MODES)}")
    return mode


def _parse_compression(value: Any) -> str:
    compression = str(value).strip().lower()
    if compression not in COMPRESSIONS:
        raise ValueError(
            f"invalid compression {value!r}; allowed values: {', '.join(COMPRESSIONS)}"
        )
    return compression


def _parse_rate(value: Any) -> float:
    error = ValueError(f"invalid sample rate {value!r}; allowed values: a number from 0.0 to 1.0")
    if isinstance(value, bool):
        raise error
    try:
        rate = float(value)
    except (TypeError, ValueError):
        raise error from None
    if not 0.0 <= rate <= 1.0:  # also rejects NaN
        raise error
    return rate


def _parse_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise ValueError(
        f"invalid boolean {value!r}; allowed values: true, false, 1, 0, yes, no, on, off"
    )


def _parse_whole(
    noun: str, lowest: int, highest: int | None = None, unit: str = ""
) -> Callable[[Any], int]:
    """A parser of whole numbers from ``lowest`` to ``highest`` (unbounded when None), named ``noun`` in its error."""
    allowed = "a whole number" + (f" of {unit}" if unit else "")
    allowed += f" from {lowest} to {highest}" if highest is not None else f" >= {lowest}"

    def parse(value: Any) -> int:
        error = ValueError(f"invalid {noun} {value!r}; allowed values: {allowed}")
        if isinstance(value, (bool, float)):  # int(1.5) would silently give 1
            raise error
        try:
            number = int(value)
        except (TypeError, ValueError):
            raise error from None
        if number < lowest or (highest is not None and number > highest):
            raise error
        return number

    return parse


_parse_size = _parse_whole("size", 0, unit="bytes")


def _parse_names(value: Any) -> tuple[str, ...]:
    if isinstance(value, str):
        items: Sequence[Any] = value.split(",")
    elif isinstance(value, (list, tuple, set, frozenset)):
        items = list(value)
    else:
        raise ValueError(
            f"invalid list {value!r}; allowed values: a comma-separated string or a list of strings"
        )
    return tuple(str(item).strip() for item in items if str(item).strip())


def _parse_draws(value: Any) -> tuple[str, ...]:
    """The sources whose draws are recorded and replayed; ``none`` for none of them."""
    names = _parse_names(value)
    if names == ("none",):
        return ()
    unknown = [name for name in names if name not in DRAW_SOURCES]
    if unknown:
        raise ValueError(
            f"invalid draw source {unknown[0]!r}; allowed values: {', '.join(DRAW_SOURCES)}, or none"
        )
    return tuple(dict.fromkeys(names))


def _parse_optional_str(value: Any) -> str | None:
    if value is None:
        return None
    text = os.fspath(value) if isinstance(value, os.PathLike) else str(value)
    return text or None


def _parse_str(value: Any) -> str:
    return os.fspath(value) if isinstance(value, os.PathLike) else str(value)


def _parse_endpoint(value: Any) -> str | None:
    """An OTLP/HTTP traces URL; a collector address with no path gets the standard ``/v1/traces``."""
    text = _parse_optional_str(value)
    if text is None:
        return None
    parts = urlsplit(text.strip())
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(
            f"invalid OTLP endpoint {value!r}; allowed values: an http:// or https:// URL"
        )
    return (
        urlunsplit(parts._replace(path="/v1/traces")) if parts.path in ("", "/") else parts.geturl()
    )


def _traces_url(base: str) -> str:
    """``OTEL_EXPORTER_OTLP_ENDPOINT`` is a base URL: the traces path is always appended to it."""
    return base.strip() + ("v1/traces" if base.strip().endswith("/") else "/v1/traces")


_MIN_KEY_CHARS = 16


def _parse_secret(value: Any) -> str | None:
    """A secret key: at least 16 characters. The message never quotes the value."""
    text = _parse_optional_str(value)
    if text is not None and len(text) < _MIN_KEY_CHARS:
        raise ValueError(
            f"the secret key is too short ({len(text)} characters, at least {_MIN_KEY_CHARS}); "
            "make one with: python -c 'import secrets; print(secrets.token_hex(32))'"
        )
    return text


def _parse_callable(value: Any) -> Callable[[dict], dict | None] | None:
    if value is not None and not callable(value):
        raise ValueError(f"invalid redact_hook {value!r}; allowed values: a callable or None")
    return value


# Environment variables whose value is adapted before parsing.
_ENV_ADAPTERS: dict[str, Callable[[str], str]] = {"OTEL_EXPORTER_OTLP_ENDPOINT": _traces_url}

# field name -> (environment variable(s), the first set one wins, or None; parser; default)
_SPEC: dict[str, tuple[None | str | tuple[str, ...], Callable[[Any], Any], Any]] = {
    "mode": ("TIMETRACER_MODE", _parse_mode, "off"),
    "cassette_dir": ("TIMETRACER_DIR", _parse_str, "./cassettes"),
    "cassette_path": ("TIMETRACER_CASSETTE", _parse_optional_str, None),
    "sample_rate": ("TIMETRACER_SAMPLE_RATE", _parse_rate, 1.0),
    "errors_only": ("TIMETRACER_ERRORS_ONLY", _parse_bool, False),
    "exclude_paths": ("TIMETRACER_EXCLUDE_PATHS", _parse_names, ()),
    "max_body_bytes": ("TIMETRACER_MAX_BODY_BYTES", _parse_size, DEFAULT_MAX_BODY_BYTES),
    "redact": ("TIMETRACER_REDACT", _parse_bool, True),
    "redact_headers": ("TIMETRACER_REDACT_HEADERS", _parse_names, ()),
    "redact_fields": ("TIMETRACER_REDACT_FIELDS", _parse_names, ()),
    "redact_exempt": ("TIMETRACER_REDACT_EXEMPT", _parse_names, ()),
    "redact_hook": (None, _parse_callable, None),
    "service_name": ("TIMETRACER_SERVICE", _parse_optional_str, None),
    "live_plugins": ("TIMETRACER_LIVE_PLUGINS", _parse_names, ()),
    "allowed_hosts": ("TIMETRACER_ALLOWED_HOSTS", _parse_names, ()),
    "replay_ignore_fields": ("TIMETRACER_REPLAY_IGNORE_FIELDS", _parse_names, ()),
    "draws": ("TIMETRACER_DRAWS", _parse_draws, DEFAULT_DRAW_SOURCES),
    # The standard OpenTelemetry variables, so one setting serves timetracer and any other OTel code.
    "otlp_endpoint": (
        ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT"),
        _parse_endpoint,
        None,
    ),
    "export_payloads": ("TIMETRACER_EXPORT_PAYLOADS", _parse_bool, False),
    "compression": ("TIMETRACER_COMPRESSION", _parse_compression, "none"),
    "fsync": ("TIMETRACER_FSYNC", _parse_bool, False),
    "secret_key": ("TIMETRACER_SECRET_KEY", _parse_secret, None),
    "key_file": ("TIMETRACER_KEY_FILE", _parse_optional_str, None),
    # Bounds on reading one cassette (every reader: replay, the CLI, the dashboard, import).
    "read_max_bytes": (
        "TIMETRACER_READ_MAX_BYTES",
        _parse_whole("size", 1, unit="bytes"),
        64 * 1024 * 1024,
    ),
    "read_max_depth": ("TIMETRACER_READ_MAX_DEPTH", _parse_whole("depth", 1, _MOST_DEPTH), 256),
    "read_max_digits": ("TIMETRACER_READ_MAX_DIGITS", _parse_whole("number of digits", 20), 4300),
    "show_max_body_bytes": (
        "TIMETRACER_SHOW_MAX_BODY_BYTES",
        _parse_whole("size", 1, unit="bytes"),
        256 * 1024,
    ),
}


_KNOWN_VARIABLES = frozenset(
    name
    for names, _, _ in _SPEC.values()
    for name in ((names,) if isinstance(names, str) else names or ())
    if name.startswith("TIMETRACER_")
)


@functools.cache
def _warn_unknown(names: frozenset[str]) -> None:
    """A ``TIMETRACER_*`` variable no setting reads is a misspelt one (``TIMETRACER_CASSETTE_DIR``):
    said once per process, with the closest setting, as it silently changes nothing."""
    from ._diagnostics import logger

    for name in sorted(names):
        close = difflib.get_close_matches(name, sorted(_KNOWN_VARIABLES), n=2, cutoff=0.6)
        hint = f" (did you mean {' or '.join(close)}?)" if close else ""
        logger.warning("timetracer: %s is not a timetracer setting%s; it is ignored", name, hint)


def process_mode() -> str:
    """The mode the process was started in (``TIMETRACER_MODE``), ``""`` when unset.

    Calls outside every request are recorded or replayed only in a process started so: in
    a process that merely hosts a recording app (a test run), they are the host's own.
    """
    return os.environ.get("TIMETRACER_MODE", "").strip().lower()


def _from_environ(
    names: None | str | tuple[str, ...], environ: Mapping[str, str]
) -> tuple[str, str] | None:
    """(variable, value) of the first of ``names`` that is set and not empty (empty = unset, as in OTel)."""
    for name in (names,) if isinstance(names, str) else names or ():
        value = environ.get(name, "")
        if value.strip():
            return name, _ENV_ADAPTERS.get(name, str)(value)
    return None


def _setting(name: str, given: Any, environ: Mapping[str, str]) -> Any:
    """The value of field ``name``: ``given`` unless unset, else its environment variable, else its default."""
    env_name, parse, default = _SPEC[name]
    if given is not _UNSET:
        try:
            return parse(given)
        except ValueError as exc:
            raise ValueError(f"TraceConfig({name}=...): {exc}") from None
    found = _from_environ(env_name, environ)
    if found is None:
        return default
    variable, text = found
    try:
        return parse(text)
    except ValueError as exc:
        raise ValueError(f"{variable}: {exc}") from None


@dataclass(frozen=True)
class ReadLimits:
    """How much one cassette may cost its readers, so that a hostile or broken file costs no more.

    ``max_bytes``: the largest file read, and what a ``.json.gz`` (or a compressed body
    replay hands over) may expand to;
    ``max_depth``: how deeply its JSON may nest; ``max_digits``: the longest number in it;
    ``show_body_bytes``: how much of a body ``timetracer show`` and the dashboard print
    (the rest is a download, or ``show --payloads``).
    """

    max_bytes: int
    max_depth: int
    max_digits: int
    show_body_bytes: int

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> ReadLimits:
        """The limits set by ``TIMETRACER_READ_MAX_*`` and ``TIMETRACER_SHOW_MAX_BODY_BYTES`` (default ``os.environ``)."""
        names = ("read_max_bytes", "read_max_depth", "read_max_digits", "show_max_body_bytes")
        return cls(
            *(_setting(name, _UNSET, os.environ if environ is None else environ) for name in names)
        )


@dataclass(frozen=True)
class TraceConfig:
    """What timetracer does: mode, where cassettes go, what is recorded and what is hidden.

    ``redact_headers`` and ``redact_fields`` add names or glob patterns to the built-in
    secret ones (``*password*``, ``*token*``, ...); ``redact_exempt`` names (or patterns)
    that stay in clear even though a pattern matches them (``page_token``; OAuth's ``token_type``
    always does);
    ``redact_hook`` receives each cassette document after built-in redaction and may
    change it in place or return a replacement. ``redact=False`` turns the built-in
    redaction off (the hook still runs). In replay, ``live_plugins`` names the client
    libraries whose calls really go out (any other connection a replayed request opens is
    refused, except to ``allowed_hosts``: ``host`` or ``host:port``), and ``replay_ignore_fields`` the JSON fields
    (timestamps, request ids) left out when the replayed response is compared with the
    recorded one. ``draws`` names the sources of non-determinism whose values a request
    draws are recorded and handed back in replay (``DRAW_SOURCES``: ``clock``; ``uuid``;
    ``random``, the ``random`` module's generator; ``urandom``, ``os.urandom`` called
    directly; ``secrets``, the ``secrets`` module and ``random.SystemRandom``; ``logs``, the
    times of log lines, not drawn by default: ``DEFAULT_DRAW_SOURCES``). ``otlp_endpoint`` (default: the standard ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``
    or ``OTEL_EXPORTER_OTLP_ENDPOINT``) sends the same spans to a collector over OTLP/HTTP,
    redacted like cassettes and without payload attributes unless ``export_payloads``.
    ``cassette_dir`` and ``cassette_path`` may be ``s3://bucket/prefix`` URLs;
    ``compression="gzip"`` writes ``.json.gz`` cassettes, which every reader accepts.
    A cassette file is whole or absent even if the process is killed; ``fsync=True``
    makes it survive a power cut too, at about half a millisecond of disk time each.
    ``secret_key`` (never shown by ``repr``) keys the fingerprint of the secrets redaction
    removes from a request; without it, the key in ``key_file`` (default
    ``~/.config/timetracer/key``, made on first record) does. ``read_max_*`` bound what
    reading one cassette may cost (see :class:`ReadLimits`).
    """

    mode: str = _UNSET
    cassette_dir: str = _UNSET
    cassette_path: str | None = _UNSET
    sample_rate: float = _UNSET
    errors_only: bool = _UNSET
    exclude_paths: Sequence[str] = _UNSET
    max_body_bytes: int = _UNSET
    redact: bool = _UNSET
    redact_headers: Sequence[str] = _UNSET
    redact_fields: Sequence[str] = _UNSET
    redact_exempt: Sequence[str] = _UNSET
    redact_hook: Callable[[dict], dict | None] | None = field(default=_UNSET, compare=False)
    service_name: str | None = _UNSET
    live_plugins: Sequence[str] = _UNSET
    allowed_hosts: Sequence[str] = _UNSET
    replay_ignore_fields: Sequence[str] = _UNSET
    draws: Sequence[str] = _UNSET
    otlp_endpoint: str | None = _UNSET
    export_payloads: bool = _UNSET
    compression: str = _UNSET
    fsync: bool = _UNSET
    secret_key: str | None = field(default=_UNSET, repr=False)
    key_file: str | None = _UNSET
    read_max_bytes: int = _UNSET
    read_max_depth: int = _UNSET
    read_max_digits: int = _UNSET
    show_max_body_bytes: int = _UNSET

    def __post_init__(self) -> None:
        self._resolve(os.environ)

    def _resolve(self, environ: Mapping[str, str]) -> None:
        for f in fields(self):
            object.__setattr__(self, f.name, _setting(f.name, getattr(self, f.name), environ))
        unknown = (
            frozenset(name for name in environ if name.startswith("TIMETRACER_")) - _KNOWN_VARIABLES
        )
        if unknown:
            _warn_unknown(unknown)

    @property
    def read_limits(self) -> ReadLimits:
        """The bounds on reading and showing cassettes this config sets."""
        return ReadLimits(
            self.read_max_bytes, self.read_max_depth, self.read_max_digits, self.show_max_body_bytes
        )

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> TraceConfig:
        """Build a config from ``environ`` (default ``os.environ``), then ``overrides``."""
        config = object.__new__(cls)
        for f in fields(cls):
            object.__setattr__(config, f.name, overrides.get(f.name, _UNSET))
        unknown = set(overrides) - set(_SPEC)
        if unknown:
            raise TypeError(f"unknown TraceConfig field(s): {', '.join(sorted(unknown))}")
        config._resolve(os.environ if environ is None else environ)
        return config

    def is_excluded(self, path: str) -> bool:
        """True when ``path`` is one of ``exclude_paths`` or below one of them (``/`` is the root only)."""
        for excluded in self.exclude_paths:
            base = excluded.rstrip("/")
            if path == excluded or (base and (path == base or path.startswith(base + "/"))):
                return True
        return False
