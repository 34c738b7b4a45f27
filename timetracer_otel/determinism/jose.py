"""RSA signatures and encryption whose randomness OpenSSL draws, drawn where JOSE libraries make them.

An RSA-PSS signature (a PS256 token) carries a random salt, and RSA encryption (a JWE
token's encrypted key, RSA-OAEP or RSA1_5) random padding, both made inside OpenSSL, whose
key classes cannot be wrapped: the same claims give another token in replay, and a call
that carries it (or its digest, a session key) would not match. So the output is drawn
(source ``secrets``) where PyJWT, jwcrypto, joserfc and Authlib make it, kept behind a
digest of the public key and the signed or encrypted bytes: replay hands it back for the
same key and input only, and makes a new one for any other. RSA PKCS#1 v1.5 signatures
(RS256) are deterministic and stay as they are.
"""

from __future__ import annotations

import hashlib
import sys
import types
from collections.abc import Callable
from typing import Any

from . import state
from .sources import _draw

__all__ = ["INSTALLERS"]

_TAG_SIZE = 16  # bytes of the digest of key and input kept before the output


def _drawn_output(
    kind: str, key: Callable[[], Any], data: bytes, make: Callable[[], bytes]
) -> bytes:
    """``make()``, drawn: the recorded output in replay when it was made with the same public
    key (of ``key()``) over the same ``data``, else a new one."""
    draws = state.current()
    if draws is None or "secrets" not in draws.sources:
        return make()
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    try:
        public = key()
        public = public.public_key() if hasattr(public, "public_key") else public
        der = public.public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
        tag = hashlib.sha256(der + b"\0" + bytes(data)).digest()[:_TAG_SIZE]
    except Exception:  # no key we can read: the library's own call says what is wrong
        return make()
    drawn = _draw(
        draws, kind, sys._getframe(1), lambda: tag + make(),
        lambda value: type(value) is bytes and value[:_TAG_SIZE] == tag,
    )  # fmt: skip
    return bytes(drawn[_TAG_SIZE:])


def _is_pss(padding: Any) -> bool:
    from cryptography.hazmat.primitives.asymmetric.padding import PSS

    return isinstance(padding, PSS)


def _replace(owner: Any, name: str, wrap: Callable[[Any], Callable[..., Any]]) -> None:
    """``owner.name = wrap(owner.name)``, once, where the library has it."""
    real = getattr(owner, name, None) if owner is not None else None
    if real is not None and getattr(real, "__module__", None) != __name__:
        setattr(owner, name, wrap(real))


def _signer(
    key_of: Callable[[Any], Any], randomised: Callable[[Any], bool]
) -> Callable[[Any], Callable[..., Any]]:
    """``sign(self, msg, key)`` (PyJWT, joserfc, Authlib), drawn where ``randomised(self)``;
    ``key_of(key)`` is the cryptography key it signs with."""

    def wrap(real: Callable[..., bytes]) -> Callable[..., bytes]:
        def sign(self: Any, msg: bytes, key: Any) -> bytes:
            if not randomised(self):
                return real(self, msg, key)
            return _drawn_output(
                "signature", lambda: key_of(key), msg, lambda: real(self, msg, key)
            )

        return sign

    return wrap


def _op_key(key: Any) -> Any:
    """The cryptography key of a joserfc or Authlib key, for signing."""
    return key.get_op_key("sign")


def _key_wrapper(op_key: Callable[..., Any]) -> Callable[[Any], Callable[..., Any]]:
    """``wrap(self, ...)`` returning ``{"cek": ..., "ek": ...}`` (jwcrypto, Authlib): the
    encrypted key ``ek`` drawn; ``op_key(*args)`` is the public key it was encrypted with."""

    def wrap(real: Callable[..., dict[str, Any]]) -> Callable[..., dict[str, Any]]:
        def key_wrap(self: Any, *args: Any, **kwargs: Any) -> dict[str, Any]:
            wrapped = real(self, *args, **kwargs)
            made = wrapped["ek"]
            wrapped["ek"] = _drawn_output(
                "encryption", lambda: op_key(*args, **kwargs), wrapped["cek"], lambda: made
            )
            return wrapped

        return key_wrap

    return wrap


def _install_pyjwt(algorithms: types.ModuleType) -> None:
    _replace(
        getattr(algorithms, "RSAPSSAlgorithm", None),
        "sign",
        _signer(lambda key: key, lambda self: True),
    )


def _install_jwcrypto(jwa: types.ModuleType) -> None:
    def wrap_sign(real: Callable[..., bytes]) -> Callable[..., bytes]:
        def sign(self: Any, key: Any, payload: bytes) -> bytes:
            if not _is_pss(getattr(self, "padfn", None)):
                return real(self, key, payload)
            return _drawn_output(
                "signature",
                lambda: key.get_op_key("sign"),
                payload,
                lambda: real(self, key, payload),
            )

        return sign

    _replace(getattr(jwa, "_RawRSA", None), "sign", wrap_sign)
    # wrap(self, key, bitsize, cek, headers)
    _replace(
        getattr(jwa, "_RSA", None),
        "wrap",
        _key_wrapper(lambda key, *_: key.get_op_key("wrapKey")),
    )


def _install_joserfc_jws(jws_algs: types.ModuleType) -> None:
    _replace(
        getattr(jws_algs, "_RSAAlgModel", None),
        "sign",
        _signer(_op_key, lambda self: _is_pss(getattr(self, "padding", None))),
    )


def _install_joserfc_jwe(jwe_algs: types.ModuleType) -> None:
    def wrap(real: Callable[..., bytes]) -> Callable[..., bytes]:
        def encrypt_cek(self: Any, cek: bytes, recipient: Any) -> bytes:
            return _drawn_output(
                "encryption",
                lambda: recipient.recipient_key.get_op_key("encrypt"),
                cek,
                lambda: real(self, cek, recipient),
            )

        return encrypt_cek

    _replace(getattr(jwe_algs, "RSAAlgKeyEncryption", None), "encrypt_cek", wrap)


def _install_authlib_jws(jws_algs: types.ModuleType) -> None:
    _replace(
        getattr(jws_algs, "RSAPSSAlgorithm", None), "sign", _signer(_op_key, lambda self: True)
    )


def _install_authlib_jwe(jwe_algs: types.ModuleType) -> None:
    # wrap(self, enc_alg, headers, key, preset=None)
    _replace(
        getattr(jwe_algs, "RSAAlgorithm", None),
        "wrap",
        _key_wrapper(lambda enc_alg, headers, key, *_, **__: key.get_op_key("wrapKey")),
    )


# module -> what replaces its randomised signing or encryption, once it is imported
INSTALLERS: dict[str, Callable[[types.ModuleType], None]] = {
    "jwt.algorithms": _install_pyjwt,  # PS256/PS384/PS512
    "jwcrypto.jwa": _install_jwcrypto,  # PS*, RSA key wrapping
    "joserfc._rfc7518.jws_algs": _install_joserfc_jws,
    "joserfc._rfc7518.jwe_algs": _install_joserfc_jwe,
    "authlib.jose.rfc7518.jws_algs": _install_authlib_jws,
    "authlib.jose.rfc7518.jwe_algs": _install_authlib_jwe,
}
