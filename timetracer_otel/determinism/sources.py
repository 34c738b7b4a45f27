"""Where the app's draws are intercepted, so that names it imported directly are reached too.

- The clock: time-machine swaps the C functions behind ``time.time``, ``time.time_ns``,
  ``datetime.datetime.now/utcnow/today``, ``datetime.date.today``, ``time.localtime``,
  ``gmtime`` and ``strftime`` (no argument) and ``clock_gettime(CLOCK_REALTIME)``; each
  asks the top traveller of its stack for the time. Ours sits at the bottom of that stack
  (a user's own ``time_machine.travel`` still wins) and answers with the real time outside
  recorded and replayed requests.
- The counters: ``time.perf_counter``, ``time.monotonic`` and their ``_ns`` twins are replaced
  in the module and where they were imported by name (``timeit.default_timer``): a duration
  the app measures and sends (FastAPI's ``X-Process-Time`` middleware, written with either)
  is the recorded one. Only the app's own modules' reads are drawn: the event loop schedules
  its timers with ``time.monotonic``, and the standard library and installed packages keep
  reading the real counters (:func:`.callers.library_timer`).
- UUIDs: ``uuid.uuid1`` and ``uuid.uuid4`` get a new code object, so every reference to
  them (``from uuid import uuid4``, ``Field(default_factory=uuid.uuid4)``) draws through us.
- Randomness: ``random.Random.random`` and ``getrandbits`` on the class (every function
  of the ``random`` module and every ``Random`` instance draws through them),
  ``os.urandom`` (``secrets``, ``SystemRandom``, salts, tokens). The module-level
  ``random.random``/``getrandbits`` and ``os.urandom`` are bound objects: they are
  replaced in the module and in every module that imported them by name.
- Compiled libraries that read the operating system's entropy themselves: ``bcrypt.gensalt``
  (Rust since bcrypt 4.1, so its salts never pass through ``os.urandom``) is replaced when
  bcrypt is imported, in the module and where it was imported by name.
- Private keys made with ``cryptography`` (``rsa`` and ``ec.generate_private_key``,
  ``Ed25519PrivateKey.generate()``): OpenSSL draws their randomness itself. Each new key
  is one draw of the ``secrets`` source, kept as PKCS#8 PEM (sealed, as every secret is),
  so a signing key made in a request (a new tenant's) or at start is the recorded one in
  replay.
- Fernet tokens: cryptography 51 draws their IV in OpenSSL; its classes are replaced by ones
  that draw it with ``os.urandom`` (:mod:`.fernet`).
- ECDSA signatures (``ec.ECDSA``: ES256 JWTs): OpenSSL draws their nonce itself. Made in
  recorded and replayed requests (and at start), they use RFC 6979's deterministic nonce:
  the same key and message give the same valid signature, with nothing to keep.
- Generators of time-ordered ids: uuid-utils (``uuid_utils.uuid7()``) reads the clock and
  the system's entropy in Rust; uuid6 (``uuid6.uuid7()``) and python-ulid (``ULID()``) are
  Python but keep the last id's timestamp and make the next one from it, and so does the
  uuid7 package (``uuid_extensions.uuid7()``). Their generators (uuid-utils' ``uuid1``,
  ``uuid4``, ``uuid6``, ``uuid7``, also in ``uuid_utils.compat``; uuid6's ``uuid6``,
  ``uuid7``, ``uuid8``, in a copy of it inside an app too; ``uuid_extensions.uuid7``;
  python-ulid's ``ULIDGenerator.generate``) are replaced when they are imported, in the
  module and where they were imported by name; each new id is one draw of the ``uuid``
  source.
- BSON's ``ObjectId()``: its random part is drawn once per process, at import, so only its
  timestamp would be a draw; ``ObjectId.__init__`` is replaced when bson is imported and a
  new id is one draw of the ``uuid`` source.

OpenTelemetry's SDK reads the clock twice per span and draws each span's ids: never the app's
draws (see :mod:`.callers`), and the most frequent ones. Its modules get the functions as they
were, so these reads skip the trip through Python every intercepted one takes.
"""

from __future__ import annotations

import base64
import functools
import importlib.abc
import inspect
import os
import random
import sys
import threading
import time
import types
import uuid
from collections.abc import Callable, Sequence
from typing import Any

from wrapt import register_post_import_hook

from timetracer_otel._diagnostics import logger

from . import state
from .callers import LOG_HELPER, attribute, library_timer
from .state import NO_DRAWS, DrawRecorder, DrawReplayer, Fits, Seeded, activate, deactivate

__all__ = ["install", "real_time_ns", "real_urandom"]

_lock = threading.Lock()
_installed = False
_real_time_ns: Callable[[], int] = time.time_ns  # time-machine's original once installed


# kind -> its source; os.urandom's depends on the helper it was reached through
_SOURCE_OF_KIND = {
    "time": "clock",
    "perf_counter": "clock",
    "monotonic": "clock",
    "uuid1": "uuid",
    "uuid4": "uuid",
    "objectid": "uuid",
    "uuid6": "uuid",
    "uuid7": "uuid",
    "uuid8": "uuid",
    "ulid": "uuid",
    "oid": "uuid",
    "random": "random",
    "getrandbits": "random",
    "private_key": "secrets",
    "signature": "secrets",  # see .jose
    "encryption": "secrets",
}
# random: SystemRandom
_URANDOM_SOURCE_BY_HELPER = {
    "uuid": "uuid",
    "secrets": "secrets",
    "random": "secrets",
}


def _draw(
    draws: DrawRecorder | DrawReplayer,
    kind: str,
    frame: Any,
    real: Callable[[], Any],
    fits: Fits | None,
    seeded: Seeded | None = None,
) -> Any:
    if not draws.sources:
        return real()
    caller, helper = attribute(frame)
    if caller is None:
        return real()
    source = (
        "logs"
        if helper == LOG_HELPER
        else _SOURCE_OF_KIND.get(kind) or _URANDOM_SOURCE_BY_HELPER.get(helper or "", "urandom")
    )
    if source not in draws.sources or (kind in _COUNTERS and library_timer(caller)):
        return real()
    return draws.draw(source, kind, caller, real, fits, seeded)


def _bare(real: Callable[..., Any], args: tuple) -> Callable[[], Any]:
    """``real(*args)`` run with no draw state: its inner draws (uuid4's urandom) are its own business."""

    def call() -> Any:
        token = activate(NO_DRAWS)
        try:
            return real(*args)
        finally:
            deactivate(token)

    return call


# --------------------------------------------------------------------------- clock
class _Clock:
    """A time-machine traveller: the real time, except for draws in recorded or replayed requests."""

    def time_ns(self) -> int:
        draws = state.current()
        if draws is None:
            return _real_time_ns()
        return _draw(draws, "time", sys._getframe(1), _real_time_ns, _is_int)


def _counter(kind: str, real: Callable[[], float], real_ns: Callable[[], int]) -> tuple[Any, Any]:
    """A counter the app times itself with (``time.perf_counter``, ``time.monotonic``) and its
    ``_ns`` twin, drawn as ``kind`` in nanoseconds when the app's own modules read them."""

    @functools.wraps(real_ns)
    def counter_ns() -> int:
        draws = state.current()
        if draws is None:
            return real_ns()
        return _draw(draws, kind, sys._getframe(1), real_ns, _is_int)

    @functools.wraps(real)
    def counter() -> float:
        """The drawn nanoseconds in seconds, as CPython converts them (this frame is
        timetracer's, looked through to find who drew)."""
        if state.current() is None:
            return real()
        return counter_ns() / 1e9

    return counter, counter_ns


# kind -> the ``time`` functions in seconds and in nanoseconds
_COUNTERS = {
    "perf_counter": ("perf_counter", "perf_counter_ns"),
    "monotonic": ("monotonic", "monotonic_ns"),
}


def _install_counters() -> dict[int, tuple[Any, Any]]:
    """Patch ``time``'s counters; returns {id(old): (old, new)} for the names bound elsewhere
    (``timeit.default_timer``, ``from time import monotonic``)."""
    replaced: dict[int, tuple[Any, Any]] = {}
    for kind, names in _COUNTERS.items():
        reals = [getattr(time, name) for name in names]
        for name, real, patched in zip(names, reals, _counter(kind, *reals), strict=True):
            setattr(time, name, patched)
            replaced[id(real)] = (real, patched)
    return replaced


def real_time_ns() -> int:
    """The real time, whatever travels: for the clock that replay continues after its last recorded value."""
    return _real_time_ns()


def _is_int(value: Any) -> bool:
    return type(value) is int


def _install_clock() -> None:
    global _real_time_ns
    import _time_machine

    time_machine = _time_machine_without_pytest()

    if not time_machine.traveller_stack:
        _time_machine.patch()
    _real_time_ns = _time_machine.original_time_ns
    # in place of time-machine's own Traveller: its C clock patch asks the one on top only for time_ns()
    time_machine.traveller_stack.insert(0, _Clock())


def _time_machine_without_pytest() -> Any:
    """``time_machine``, imported without pytest where pytest is not imported yet: it imports
    pytest to offer its fixture when pytest is installed, and a service started to record or
    replay spent a third of a second importing it (a pytest run imports pytest first, and
    time-machine's fixture is there)."""
    if "pytest" in sys.modules or "time_machine" in sys.modules:
        import time_machine

        return time_machine
    sys.modules["pytest"] = None  # type: ignore[assignment]  # ``import pytest`` fails at once
    try:
        import time_machine
    finally:
        del sys.modules["pytest"]
    return time_machine


# --------------------------------------------------------------------------- randomness
_c_random = random.Random.random  # the C methods, inherited from _random.Random
_c_getrandbits = random.Random.getrandbits
_real_urandom = os.urandom


def _random(self: random.Random) -> float:
    draws = state.current()
    if draws is None:
        return _c_random(self)
    return _draw(draws, "random", sys._getframe(1), lambda: _c_random(self), _is_float, _c_random)


def _getrandbits(self: random.Random, k: int, /) -> int:
    draws = state.current()
    if draws is None:
        return _c_getrandbits(self, k)
    return _draw(
        draws, "getrandbits", sys._getframe(1), lambda: _c_getrandbits(self, k),
        lambda value: type(value) is int and 0 <= value and value.bit_length() <= k,
        lambda seeded: _c_getrandbits(seeded, k),
    )  # fmt: skip


def _urandom(size: int, /) -> bytes:
    draws = state.current()
    if draws is None:
        return _real_urandom(size)
    return _draw(
        draws, "urandom", sys._getframe(1), lambda: _real_urandom(size),
        lambda value: type(value) is bytes and len(value) == size,
        lambda seeded: _c_getrandbits(seeded, size * 8).to_bytes(size, "little") if size else b"",
    )  # fmt: skip


_real_choice = random.SystemRandom.choice


def _choice(self: random.SystemRandom, seq: Any) -> Any:
    """``SystemRandom.choice`` (``secrets.choice``): a character it picks while a request is
    recorded is noted, as a code, a recovery code or a one-time password is made of them and
    no draw shows it (each draw is a byte that picks one); its drawing is unchanged."""
    chosen = _real_choice(self, seq)
    draws = state.current()
    if isinstance(draws, DrawRecorder) and type(chosen) is str and len(chosen) == 1:
        draws.chose(chosen)
    return chosen


def _install_choice(secrets_module: Any) -> None:
    """Patch ``SystemRandom.choice``, and bind ``secrets.choice`` (a method bound when ``secrets``
    was imported) and the names imported from it again."""
    random.SystemRandom.choice = _choice  # type: ignore[method-assign, assignment]
    bound = getattr(secrets_module, "choice", None)
    sysrand = getattr(secrets_module, "_sysrand", None)
    if (
        isinstance(sysrand, random.SystemRandom)
        and getattr(bound, "__func__", None) is _real_choice
    ):
        _rebind({id(bound): (bound, sysrand.choice)})


def real_urandom(size: int) -> bytes:
    """Real random bytes, whatever the app is drawing: for timetracer's own ids."""
    return _real_urandom(size)


def _is_float(value: Any) -> bool:
    return type(value) is float


def _install_randomness() -> dict[int, tuple[Any, Any]]:
    """Patch the classes and modules; returns {id(old): (old, new)} for the names bound elsewhere."""
    old_random, old_getrandbits = random.random, random.getrandbits
    # Typed on _random.Random, which declares them; replaced on this subclass only.
    random.Random.random = _random  # type: ignore[method-assign, assignment]
    random.Random.getrandbits = _getrandbits  # type: ignore[method-assign, assignment]
    random.random, random.getrandbits = random._inst.random, random._inst.getrandbits
    os.urandom = _urandom
    return {
        id(old_random): (old_random, random.random),
        id(old_getrandbits): (old_getrandbits, random.getrandbits),
        id(_real_urandom): (_real_urandom, _urandom),
    }


# --------------------------------------------------------------------------- uuid
_real_uuids: dict[str, Callable[..., uuid.UUID]] = {}
_UUID_CODE = {  # the new bodies; they run with the uuid module's globals
    "uuid1": (
        "(node=None, clock_seq=None)",
        "def uuid1(node=None, clock_seq=None):\n    return _timetracer_uuid('uuid1', node, clock_seq)\n",
    ),
    "uuid4": ("()", "def uuid4():\n    return _timetracer_uuid('uuid4')\n"),
}


def _is_uuid(value: Any) -> bool:
    return isinstance(value, uuid.UUID)


def _seeded_uuid4(rng: random.Random) -> uuid.UUID:
    """A version 4 UUID from a seeded generator (a reproducible draw, see state.DrawRecorder)."""
    return uuid.UUID(int=_c_getrandbits(rng, 128), version=4)


def _uuid(kind: str, *args: Any) -> uuid.UUID:
    real = _real_uuids[kind]
    draws = state.current()
    if draws is None:
        return real(*args)
    seeded = _seeded_uuid4 if kind == "uuid4" else None
    return _draw(
        draws,
        kind,
        sys._getframe(1),
        _bare(real, args),
        _is_uuid,
        seeded,
    )


def _install_uuids() -> None:
    uuid.__dict__["_timetracer_uuid"] = _uuid
    for name, (signature, source) in _UUID_CODE.items():
        function = getattr(uuid, name)
        if (
            not isinstance(function, types.FunctionType)
            or str(inspect.signature(function)) != signature
        ):
            logger.warning(
                "timetracer: uuid.%s is not the function expected; its values are not recorded",
                name,
            )
            continue
        real = types.FunctionType(
            function.__code__,
            function.__globals__,
            name,
            function.__defaults__,
            function.__closure__,
        )
        namespace: dict[str, Any] = {}
        exec(compile(source, f"<timetracer uuid.{name}>", "exec"), namespace)
        _real_uuids[name] = real
        function.__code__ = namespace[name].__code__


# --------------------------------------------------------------------------- compiled libraries
_BCRYPT_ALPHABET = bytes.maketrans(
    b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/",
    b"./ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789",
)


def _install_bcrypt(bcrypt: types.ModuleType) -> None:
    """Route ``bcrypt.gensalt`` through the draws: a salt is 16 bytes of the system's entropy
    that the Rust extension reads itself, and a password hash stored with another salt
    would not match its recorded SQL parameter."""
    real = getattr(bcrypt, "gensalt", None)
    if real is None or getattr(real, "__module__", None) == __name__:
        return

    def gensalt(rounds: int = 12, prefix: bytes = b"2b") -> bytes:
        draws = state.current()
        if draws is None:
            return real(rounds, prefix)
        head = b"$%s$%02d$" % (bytes(prefix), rounds)

        def seeded(rng: random.Random) -> bytes:
            salt = _c_getrandbits(rng, 128).to_bytes(16, "little")
            return head + base64.b64encode(salt).translate(_BCRYPT_ALPHABET)[:22]

        return _draw(
            draws, "gensalt", sys._getframe(1), _bare(real, (rounds, prefix)),
            lambda value: type(value) is bytes and value.startswith(head) and len(value) == len(head) + 22,
            seeded,
        )  # fmt: skip

    vars(bcrypt)["gensalt"] = gensalt
    _rebind({id(real): (real, gensalt)})


_PEM_KEY = b"-----BEGIN PRIVATE KEY-----"


def _drawn_key(make: Callable[[], Any], same: Callable[[Any], bool]) -> Any:
    """A new private key from ``make``, drawn (as PKCS#8 PEM): the recorded one in replay when
    it is the kind of key asked for (``same``: its type, size or curve), else a new one."""
    from cryptography.hazmat.primitives import serialization

    draws = state.current()
    if draws is None:
        return make()
    keys: dict[bytes, Any] = {}  # each key made or read here, by its PEM: none is parsed twice

    def pem() -> bytes:
        key = make()
        data = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        keys[data] = key
        return data

    def fits(value: Any) -> bool:
        if type(value) is not bytes or not value.startswith(_PEM_KEY):
            return False
        try:
            keys[value] = serialization.load_pem_private_key(value, password=None)
        except ValueError:
            return False
        return same(keys[value])

    drawn = _draw(draws, "private_key", sys._getframe(2), pem, fits)
    return keys.get(drawn) or serialization.load_pem_private_key(drawn, password=None)


def _install_private_keys(asymmetric: types.ModuleType) -> None:
    """Route the private keys ``cryptography`` makes through the draws: OpenSSL draws their
    randomness itself, and a JWT signing key made when a tenant is created (fief) or at start
    would sign every token differently in replay."""
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

    real_rsa, real_ec = rsa.generate_private_key, ec.generate_private_key
    if getattr(real_rsa, "__module__", None) == __name__:
        return
    real_ed25519 = ed25519.Ed25519PrivateKey.generate

    def generate_rsa(public_exponent: int, key_size: int, backend: Any = None) -> Any:
        return _drawn_key(
            lambda: real_rsa(public_exponent, key_size),
            lambda key: isinstance(key, rsa.RSAPrivateKey) and key.key_size == key_size,
        )

    def generate_ec(curve: Any, backend: Any = None) -> Any:
        return _drawn_key(
            lambda: real_ec(curve),
            lambda key: (
                isinstance(key, ec.EllipticCurvePrivateKey) and key.curve.name == curve.name
            ),
        )

    def generate_ed25519() -> Any:
        return _drawn_key(real_ed25519, lambda key: isinstance(key, ed25519.Ed25519PrivateKey))

    vars(rsa)["generate_private_key"] = generate_rsa
    vars(ec)["generate_private_key"] = generate_ec
    ed25519.Ed25519PrivateKey.generate = staticmethod(generate_ed25519)  # type: ignore[method-assign]
    _rebind({id(real_rsa): (real_rsa, generate_rsa), id(real_ec): (real_ec, generate_ec)})


def _install_deterministic_ecdsa(ec: types.ModuleType) -> None:
    """Make ECDSA signatures deterministic (RFC 6979) where the ``secrets`` source is drawn: an
    ES256 token signed in a request would differ in replay, and so would every response
    carrying it. Needs cryptography 43 or later on an OpenSSL that supports it."""
    from cryptography.hazmat.backends.openssl.backend import backend

    real_init = ec.ECDSA.__init__
    supported = getattr(backend, "ecdsa_deterministic_supported", None)
    if getattr(real_init, "__module__", None) == __name__ or supported is None or not supported():
        return

    def __init__(self: Any, algorithm: Any, deterministic_signing: bool = False) -> None:
        if not deterministic_signing:
            draws = state.current()
            deterministic_signing = draws is not None and "secrets" in draws.sources
        real_init(self, algorithm, deterministic_signing)

    ec.ECDSA.__init__ = __init__


# Generators of new ids replaced when their module is imported, in it and where they were
# imported by name, so that each id is one draw of the ``uuid`` source. uuid-utils reads the
# clock and the system's entropy in Rust; uuid6 is Python but keeps the last timestamp it
# gave, and makes the next id from it when the clock is not past it (a request replayed twice
# by one process got other ids the second time); so does the uuid7 package
# (``uuid_extensions``), with a counter. uuid3, uuid5, uuid8 of uuid-utils: from their
# arguments. A copy of uuid6 inside an app (``app/utils/uuid6.py``, as a widely forked
# template ships it) is replaced as the package is.
_UUID_GENERATORS = {
    "uuid_utils": ("uuid1", "uuid4", "uuid6", "uuid7"),
    "uuid_utils.compat": ("uuid1", "uuid4", "uuid6", "uuid7"),
    "uuid6": ("uuid6", "uuid7", "uuid8"),
    "uuid_extensions": ("uuid7",),
    "fastuuid": ("uuid1", "uuid4", "uuid7"),  # Rust (LiteLLM's call ids)
}
_VENDORED = "uuid6"  # the last part of the name of a module copied into apps


def _vendored(name: str) -> bool:
    """Whether the module named ``name`` is a copy of uuid6 inside a package of an app's."""
    return "." in name and name.rpartition(".")[2] == _VENDORED


def _generators_of(name: str) -> tuple[str, ...]:
    """The generators to replace in the module named ``name`` (a vendored uuid6's too)."""
    return _UUID_GENERATORS.get(name) or (_UUID_GENERATORS[_VENDORED] if _vendored(name) else ())


def _install_uuid_generators(module: types.ModuleType) -> None:
    """Route ``module``'s generators (see :data:`_UUID_GENERATORS`) through the draws. A drawn
    id is kept as a standard ``uuid.UUID`` and given back as the generator gives it
    (``uuid_utils.UUID``, ``uuid6.UUID``, ``fastuuid.UUID``, the standard one in
    ``uuid_utils.compat``; the type ``uuid_extensions.uuid7``'s ``as_type`` names)."""
    returns = getattr(module, "UUID", uuid.UUID)
    given: Callable[[uuid.UUID, tuple, dict], Any] = (
        (lambda drawn, args, kwargs: drawn)
        if not isinstance(returns, type) or returns is uuid.UUID
        else (lambda drawn, args, kwargs: returns(int=drawn.int))
    )
    if module.__name__ == "uuid_extensions":
        given = _as_type
    replacements: dict[int, tuple[Any, Any]] = {}
    for kind in _generators_of(module.__name__):
        real = getattr(module, kind, None)
        if not callable(real) or getattr(real, "__module__", None) == __name__:
            continue
        generator = _drawn_id(kind, real, given)
        vars(module)[kind] = generator
        replacements[id(real)] = (real, generator)
    _rebind(replacements)


def _as_type(drawn: uuid.UUID, args: tuple, kwargs: dict) -> Any:
    """``drawn`` as ``uuid_extensions.uuid7(ns, as_type)`` gives it."""
    as_type = kwargs.get("as_type", args[1] if len(args) > 1 else None)
    converted: dict[Any, Callable[[uuid.UUID], Any]] = {
        "str": str, "int": int, "hex": lambda u: u.hex, "bytes": lambda u: u.bytes,
    }  # fmt: skip
    return converted.get(as_type, lambda u: u)(drawn)


def _as_uuid(value: Any) -> uuid.UUID:
    """A generator's id as a standard UUID, whatever type it gave it in."""
    if isinstance(value, bytes):
        return uuid.UUID(bytes=value)
    if isinstance(value, str):
        return uuid.UUID(value)
    return uuid.UUID(int=int(value))


def _drawn_id(
    kind: str, real: Callable[..., Any], given: Callable[[uuid.UUID, tuple, dict], Any]
) -> Callable[..., Any]:
    """``real`` (a generator of new ids, or a method making one) with each id one draw of the
    ``uuid`` source: kept as a standard ``uuid.UUID`` of its 128 bits, handed back by ``given``."""

    def generate(*args: Any, **kwargs: Any) -> Any:
        draws = state.current()
        if draws is None:
            return real(*args, **kwargs)
        drawn = _draw(
            draws, kind, sys._getframe(1), _bare(lambda: _as_uuid(real(*args, **kwargs)), ()),
            _is_uuid,
            _seeded_uuid4 if kind == "uuid4" else None,
        )  # fmt: skip
        return given(drawn, args, kwargs)

    generate.__name__ = getattr(real, "__name__", kind)
    generate.__qualname__ = getattr(real, "__qualname__", kind)
    generate.__doc__ = real.__doc__
    return generate


class _VendoredGenerators(importlib.abc.MetaPathFinder):
    """Finds nothing itself: a module copied into an app under uuid6's name is replaced as it is
    loaded (see :func:`_generators_of`), as wrapt's hooks replace the package's."""

    def find_spec(self, fullname: str, path: Any, target: Any = None) -> Any:
        if not _vendored(fullname):
            return None
        for finder in sys.meta_path:
            find = getattr(finder, "find_spec", None)
            spec = find(fullname, path, target) if finder is not self and find else None
            if spec is not None:
                break
        else:
            return None
        loader = spec.loader
        if loader is not None and hasattr(loader, "exec_module"):
            real_exec = loader.exec_module

            def exec_module(module: types.ModuleType) -> None:
                real_exec(module)
                _install_uuid_generators(module)

            loader.exec_module = exec_module
        return spec


def _install_vendored_generators() -> None:
    """Replace the generators of the copies loaded already, and of those loaded from now on."""
    for name, module in list(sys.modules.items()):
        if _vendored(name) and module is not None:
            _install_uuid_generators(module)
    sys.meta_path.insert(0, _VendoredGenerators())


def _install_ulid(ulid: types.ModuleType) -> None:
    """Route python-ulid's ``ULIDGenerator.generate`` (``ULID()``, ``ULID.from_timestamp``) through
    the draws: it keeps the last timestamp and randomness it gave, and within the same
    millisecond makes the next id from them rather than from new entropy. (Before its 4.0,
    python-ulid had no such state: its clock and entropy reads are drawn.)"""
    generator = getattr(ulid, "ULIDGenerator", None)
    real = getattr(generator, "generate", None)
    if real is None or getattr(real, "__module__", None) == __name__:
        return
    generator.generate = _drawn_id(  # type: ignore[union-attr]
        "ulid", real, lambda drawn, args, kwargs: ulid.ULID.from_int(drawn.int)
    )


def _install_kombu_oid(common: types.ModuleType) -> None:
    """Route kombu's ``generate_oid`` (what ``oid_from`` returns: Celery's ``app.oid`` and
    ``thread_oid``, the name of the reply queue of its ``rpc://`` result backend and every
    task's ``reply_to``) through the draws: it is a UUID made of the machine's node, the process
    id, the thread and an object's address, another in each process."""
    real = getattr(common, "generate_oid", None)
    if real is None or getattr(real, "__module__", None) == __name__:
        return
    vars(common)["generate_oid"] = _drawn_id("oid", real, lambda drawn, args, kwargs: str(drawn))


def _install_objectid(bson: types.ModuleType) -> None:
    """Route ``ObjectId()`` (a new id: Beanie's ``default_factory``, pymongo's insert ``_id``)
    through the draws; an id given (``ObjectId(text)``) is built as before."""
    from bson.objectid import ObjectId

    real_init = ObjectId.__init__
    if getattr(real_init, "__module__", None) == __name__:
        return

    def __init__(self: ObjectId, oid: Any = None) -> None:
        if oid is None:
            draws = state.current()
            if draws is not None and draws.sources:  # not inside _bare's own ObjectId()
                oid = _draw(
                    draws, "objectid", sys._getframe(1), _bare(ObjectId, ()),
                    lambda value: isinstance(value, ObjectId),
                )  # fmt: skip
        real_init(self, oid)

    ObjectId.__init__ = __init__  # type: ignore[method-assign]


# --------------------------------------------------------------------------- OpenTelemetry's own draws
# modules of the SDK that call ``time_ns`` imported by name: span start and end, events, log records
_OPENTELEMETRY_CLOCK_READERS = (
    "opentelemetry.sdk.trace",
    "opentelemetry.sdk._logs._internal",
    "opentelemetry.sdk.metrics._internal",
    "opentelemetry.sdk.metrics._internal._view_instrument_match",
    "opentelemetry.sdk.metrics._internal.measurement_consumer",
)


def _unhook_opentelemetry_clock(module: types.ModuleType) -> None:
    if getattr(module, "time_ns", None) is time.time_ns:
        module.time_ns = _real_time_ns  # type: ignore[attr-defined]


def _unhook_opentelemetry_ids(module: types.ModuleType) -> None:
    """``RandomIdGenerator`` calls ``random.getrandbits``: the module's own generator (reseeded
    in a forked child, seeded by ``random.seed``), reached without the hook."""
    if getattr(module, "random", None) is random:
        module.random = types.SimpleNamespace(  # type: ignore[attr-defined]
            getrandbits=functools.partial(_c_getrandbits, random._inst)
        )


# --------------------------------------------------------------------------- names imported directly
def _rebind(replacements: dict[int, tuple[Any, Any]]) -> None:
    """Replace, in every loaded module but this one, the names bound to a replaced object (``from os import urandom``)."""
    for module in list(sys.modules.values()):
        if module is sys.modules[__name__]:
            continue
        try:
            namespace = vars(module)
        except TypeError:
            continue
        if not isinstance(namespace, dict):
            continue
        for name, value in list(namespace.items()):
            hit = replacements.get(id(value))
            if hit is not None and hit[0] is value:
                namespace[name] = hit[1]


def install(sources: Sequence[str]) -> None:
    """Intercept the clock, UUIDs and randomness, once per process, if any of ``sources`` is on.

    Outside recorded and replayed requests every function keeps returning real values.
    """
    global _installed
    with _lock:
        if _installed or not sources:
            return
        _installed = True
        _install_clock()
        _install_uuids()
        _rebind({**_install_randomness(), **_install_counters()})
        register_post_import_hook(_install_choice, "secrets")
        register_post_import_hook(_install_bcrypt, "bcrypt")
        register_post_import_hook(_install_objectid, "bson")
        for module in _UUID_GENERATORS:
            register_post_import_hook(_install_uuid_generators, module)
        _install_vendored_generators()
        register_post_import_hook(_install_ulid, "ulid")
        register_post_import_hook(_install_kombu_oid, "kombu.common")
        for module in _OPENTELEMETRY_CLOCK_READERS:
            register_post_import_hook(_unhook_opentelemetry_clock, module)
        register_post_import_hook(_unhook_opentelemetry_ids, "opentelemetry.sdk.trace.id_generator")
        register_post_import_hook(
            _install_private_keys, "cryptography.hazmat.primitives.asymmetric"
        )
        register_post_import_hook(
            _install_deterministic_ecdsa, "cryptography.hazmat.primitives.asymmetric.ec"
        )
        from . import fernet
        from .jose import INSTALLERS

        register_post_import_hook(fernet.install, "cryptography.fernet")

        for module, installer in INSTALLERS.items():
            register_post_import_hook(installer, module)
