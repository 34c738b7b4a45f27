"""Timetracer's own secret key: where it comes from, and its id.

One key serves everything timetracer keys (the request fingerprints today), so it is found
in one place: ``TIMETRACER_SECRET_KEY`` when set, else a key file kept outside every
cassette directory (``TIMETRACER_KEY_FILE``, by default ``$XDG_CONFIG_HOME/timetracer/key``
or ``~/.config/timetracer/key``). Recording makes the file on first use (32 random bytes,
hex, mode 0600, created atomically so concurrent processes agree on one key, its location
logged by the process that made it); replay only reads it. The key id, a short keyed hash, is stored beside what the key produced, so a
process holding another key knows its results cannot be compared.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import os
import secrets
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from timetracer_otel._diagnostics import logger

if TYPE_CHECKING:
    from timetracer_otel.config import TraceConfig

__all__ = ["Key", "key_for", "default_key_file"]

_KEY_BYTES = 32


@dataclass(frozen=True)
class Key:
    """Key material (never shown), its id, and where it came from (a variable name or a file path)."""

    material: bytes = field(repr=False)
    source: str

    @functools.cached_property
    def key_id(self) -> str:
        """8 hex digits naming the key without revealing it: an HMAC of a fixed text, not a hash of the key."""
        return hmac.new(self.material, b"timetracer key id", hashlib.sha256).hexdigest()[:8]


def key_file_of(config: TraceConfig) -> str | None:
    """The key file ``config`` takes its key from (its own, or the default one); None when
    ``secret_key`` gives the key."""
    return None if config.secret_key else _key_path(config)


def _key_path(config: TraceConfig) -> str:
    return config.key_file or _default_key_path()


def default_key_file() -> Path:
    """``$XDG_CONFIG_HOME/timetracer/key``, or ``~/.config/timetracer/key``."""
    return Path(_default_key_path())


def _default_key_path() -> str:
    """:func:`default_key_file` as text, worked out once per value of the variables it depends on:
    replay looks for the key at every request."""
    return _key_path_for(os.environ.get("XDG_CONFIG_HOME", ""), os.environ.get("HOME"))


@functools.lru_cache(maxsize=8)
def _key_path_for(config_home: str, home: str | None) -> str:
    base = config_home.strip() or os.path.join(os.path.expanduser("~"), ".config")
    return os.path.join(base, "timetracer", "key")


def _create(path: Path) -> bool:
    """Write a new random key at ``path`` unless one is there (False then); a concurrent creator's key wins, whole."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    temp = path.with_name(f".{path.name}-{os.getpid()}-{secrets.token_hex(4)}")
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o600)
    try:
        with os.fdopen(fd, "w", encoding="ascii") as out:
            out.write(secrets.token_hex(_KEY_BYTES) + "\n")
            out.flush()
            os.fsync(out.fileno())
        os.link(temp, path)  # atomic, and never replaces a key another process made
    except FileExistsError:
        return False
    finally:
        os.unlink(temp)
    return True


_found: dict[tuple[str | None, str, bool], Key | None] = {}
_found_lock = threading.Lock()


class _Absent(Exception):
    """No key file yet: asked again next time, as recording may make one meanwhile."""


def _load(secret_key: str | None, key_file: str, create: bool) -> Key | None:
    if secret_key:
        return Key(secret_key.encode("utf-8"), "TIMETRACER_SECRET_KEY")
    path = Path(key_file)
    created = False
    try:
        if create and not path.exists():
            created = _create(path)
        text = path.read_text("ascii").strip()
    except FileNotFoundError:
        raise _Absent() from None
    except (OSError, UnicodeDecodeError) as exc:
        logger.warning(
            "timetracer: the secret key file %s cannot be used (%s): requests are not fingerprinted",
            path,
            exc,
        )
        return None
    if not text:
        logger.warning(
            "timetracer: the secret key file %s is empty: requests are not fingerprinted", path
        )
        return None
    if created:
        logger.info(
            "timetracer: created the secret key %s (keep it: replay needs it to open sealed secrets and tell requests apart by them)",
            path,
        )
    return Key(text.encode("utf-8"), str(path))


def key_for(config: TraceConfig, create: bool = False) -> Key | None:
    """The key ``config`` names, or None when there is none; ``create``: make the key file if missing (recording).

    Found once per process and setting (a key file that does not exist yet is looked for
    again); problems are logged once, never raised.
    """
    setting = (config.secret_key, _key_path(config), create)
    with _found_lock:
        if setting in _found:
            return _found[setting]
        try:
            key = _found[setting] = _load(*setting)
        except _Absent:
            return None
        return key
