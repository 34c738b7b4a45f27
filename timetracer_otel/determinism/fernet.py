"""Fernet tokens whose IV OpenSSL draws (cryptography 51 and later), drawn through ``os.urandom`` again.

A Fernet token is its time, a 16-byte IV and the ciphertext. Up to cryptography 50 the
Python class drew the IV with ``os.urandom``, which replay answers; from 51 the class is
Rust's and reads the IV from OpenSSL, so an encrypted column written in a request (fief's
OAuth client secrets, sqlalchemy-utils' ``StringEncryptedType``) got another ciphertext in
replay and its ``INSERT`` matched no recorded one. The module's ``Fernet`` becomes a
subclass that draws the IV with ``os.urandom`` and builds the token with the class's own
``_encrypt_from_parts`` (the time is ``time.time()``'s, as before), and ``MultiFernet`` a
class around Rust's that encrypts with its first ``Fernet``.

``Fernet.generate_key()`` (Rust's reads OpenSSL too; Python's ``os.urandom``) draws its 32
bytes through ``secrets``, in either version: a key an app makes in a request (Prefect's
block encryption key, stored in a settings row) is the recorded one in replay, and as a
``secrets`` draw it is sealed and hidden wherever the app stores it. Its bytes through
``os.urandom`` alone were not looked for: the key stood in clear beside what it encrypts.
"""

from __future__ import annotations

import base64
import os
import secrets
import time
import types
from typing import Any

from timetracer_otel._diagnostics import guarded

from .sources import _rebind

__all__ = ["install"]

_IV_SIZE = 16
_KEY_SIZE = 32


def install(module: types.ModuleType) -> None:
    """Replace ``cryptography.fernet``'s classes, where they are Rust's (and wherever imported by
    name), and make ``Fernet.generate_key`` draw through ``secrets``; a version this cannot
    handle keeps its own, and the failure is logged."""
    with guarded("draws.fernet"):
        _replace_classes(module)


def _generate_key(cls: Any) -> bytes:
    """A new key as cryptography makes it: 32 random bytes, URL-safe base64."""
    return base64.urlsafe_b64encode(secrets.token_bytes(_KEY_SIZE))


def _replace_classes(module: types.ModuleType) -> None:
    rust_fernet: Any = getattr(module, "Fernet", None)
    rust_multi: Any = getattr(module, "MultiFernet", None)
    if not isinstance(rust_fernet, type) or not isinstance(rust_multi, type):
        return
    if rust_fernet.__module__ == module.__name__ or not hasattr(rust_fernet, "_encrypt_from_parts"):
        # Python's class (its IV through os.urandom), or ours already
        setattr(rust_fernet, "generate_key", classmethod(_generate_key))  # noqa: B010 - a type mypy reads as plain
        return

    class Fernet(rust_fernet):
        __doc__ = rust_fernet.__doc__
        generate_key = classmethod(_generate_key)

        def encrypt(self, data: bytes) -> bytes:
            return self.encrypt_at_time(data, int(time.time()))

        def encrypt_at_time(self, data: bytes, current_time: int) -> bytes:
            return bytes(self._encrypt_from_parts(data, current_time, os.urandom(_IV_SIZE)))

    class MultiFernet:
        """Rust's, encrypting with the first of its keys (Rust's own calls it past these
        methods, and cannot be subclassed); the rest is Rust's."""

        __doc__ = rust_multi.__doc__

        def __init__(self, fernets: Any) -> None:
            fernets = list(fernets)
            self._multi = rust_multi(fernets)
            self._first = fernets[0]

        def __getattr__(self, name: str) -> Any:
            return getattr(self._multi, name)

        def encrypt(self, msg: bytes) -> bytes:
            return self.encrypt_at_time(msg, int(time.time()))

        def encrypt_at_time(self, msg: bytes, current_time: int) -> bytes:
            return bytes(self._first.encrypt_at_time(msg, current_time))

        def rotate(self, msg: bytes | str) -> bytes:
            return self.encrypt_at_time(
                self._multi.decrypt(msg), self._multi.extract_timestamp(msg)
            )

    for made in (Fernet, MultiFernet):
        made.__module__, made.__qualname__ = module.__name__, made.__name__
    _rebind({id(rust_fernet): (rust_fernet, Fernet), id(rust_multi): (rust_multi, MultiFernet)})
    module.Fernet, module.MultiFernet = Fernet, MultiFernet  # type: ignore[attr-defined]
