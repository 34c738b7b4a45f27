"""Client plugins: the standard OpenTelemetry instrumentor plus timetracer's capture, per library.

``enable_httpx()`` (and friends) instrument the library with OpenTelemetry, unless the
application already did, and put timetracer's capture under the instrumentor's wrapper.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import importlib.util
import sys
import threading
from collections.abc import Callable, Iterable, Iterator
from types import ModuleType
from typing import Any

from wrapt import register_post_import_hook

from timetracer_otel._diagnostics import guarded
from timetracer_otel.libraries import LIBRARIES, Library

__all__ = [
    "PLUGINS",
    "enable",
    "enable_installed",
    "disable",
    "check_plugin_names",
    "enable_httpx",
    "disable_httpx",
    "enable_httpx2",
    "disable_httpx2",
    "enable_requests",
    "disable_requests",
    "enable_aiohttp",
    "disable_aiohttp",
    "enable_urllib3",
    "disable_urllib3",
    "enable_sqlalchemy",
    "disable_sqlalchemy",
    "enable_asyncpg",
    "disable_asyncpg",
    "enable_psycopg",
    "disable_psycopg",
    "enable_psycopg2",
    "disable_psycopg2",
    "enable_pymysql",
    "disable_pymysql",
    "enable_aiomysql",
    "disable_aiomysql",
    "enable_asyncmy",
    "disable_asyncmy",
    "enable_sqlite3",
    "disable_sqlite3",
    "enable_aiosqlite",
    "disable_aiosqlite",
    "enable_redis",
    "disable_redis",
    "enable_pymongo",
    "disable_pymongo",
    "enable_motor",
    "disable_motor",
    "enable_grpc",
    "disable_grpc",
    "enable_smtplib",
    "disable_smtplib",
    "enable_aiosmtplib",
    "disable_aiosmtplib",
    "enable_amqp",
    "disable_amqp",
    "enable_aio_pika",
    "disable_aio_pika",
]


# plugin name -> its declaration (timetracer_otel.libraries)
PLUGINS: dict[str, Library] = LIBRARIES

# reentrant: a capture importing its library may set off another library's early capture
_lock = threading.RLock()
# (plugin name, instrumentor class) for each instrumentation timetracer turned on
_instrumented_by_us: set[tuple[str, type]] = set()
_enabled: set[str] = set()  # the plugins enabled and not disabled since
_awaited: set[str] = set()  # enable_installed's plugins whose library is not imported yet
# plugins whose modules are being imported (by enable() or an early capture): importing their
# library sets off its own hooks, and those of plugins it imports in turn (aiosqlite: sqlite3's,
# and httpx's and httpx2's each other's: they share one instrumentor module, which imports both)
_setting_up: set[str] = set()
_deferred: set[str] = set()  # plugins to enable once no set-up is under way
# libraries captured before the app named its plugins (capture_early), until end_early_capture
_early: set[str] = set()
_early_ended = False


def check_plugin_names(names: Iterable[str]) -> list[str]:
    """The names as a list, or ``ValueError`` naming the unknown ones and the known ones."""
    names = list(names)
    unknown = [name for name in names if name not in PLUGINS]
    if unknown:
        raise ValueError(
            f"unknown timetracer plugin(s): {', '.join(map(repr, unknown))}; known plugins: {', '.join(PLUGINS)}"
        )
    return names


@contextlib.contextmanager
def _needs_extra(plugin: Library) -> Iterator[None]:
    """An ImportError inside names the pip extra that brings what is missing."""
    try:
        yield
    except ImportError as exc:
        if not plugin.extra:  # nothing to install: the error as it is
            raise
        raise ImportError(
            f"timetracer plugin {plugin.name!r} needs {exc.name}: pip install 'timetracer-otel[{plugin.extra}]'"
        ) from exc


def _instrumentors(plugin: Library) -> list[Any]:
    with _needs_extra(plugin):
        return [
            getattr(importlib.import_module(module_name), class_name)()
            for module_name, _, class_name in (i.partition(":") for i in plugin.instrumentors)
        ]


def enable(name: str) -> None:
    """Record calls made with library ``name`` (one of :data:`PLUGINS`), and with its
    companions that are installed (``asyncpg``: SQLAlchemy, which drives it). Idempotent."""
    (name,) = check_plugin_names([name])
    plugin = PLUGINS[name]
    with _lock:
        with _set_up(name):
            instrumentors = _instrumentors(plugin)
            with _needs_extra(plugin):  # a capture imports its library when installed
                importlib.import_module(plugin.capture).install()
            for instrumentor in instrumentors:
                if not instrumentor.is_instrumented_by_opentelemetry:
                    instrumentor.instrument(skip_dep_check=plugin.skip_dep_check)
                    _instrumented_by_us.add((name, type(instrumentor)))
            _enabled.add(name)
        for companion in plugin.companions:
            if _setting_up:
                _deferred.add(companion)
            elif companion not in _enabled and importlib.util.find_spec(companion) is not None:
                enable(companion)


@contextlib.contextmanager
def _set_up(name: str) -> Iterator[None]:
    """Mark plugin ``name``'s modules as being imported: a hook that an import sets off
    meanwhile enables its plugin once every set-up under way is done, unless one enabled it
    already (enabled from the hook, it met modules half made: its own, or the instrumentor
    module it shares with the plugin being set up)."""
    outermost = name not in _setting_up
    _setting_up.add(name)
    try:
        yield
    finally:
        if outermost:
            _setting_up.discard(name)
            while _deferred and not _setting_up:
                deferred = _deferred.pop()
                if deferred not in _enabled:
                    with guarded("plugins.enable"):
                        _enable_imported(deferred)


def _aliased(name: str) -> bool:
    """``name`` is another library's module (``httpx2.alias_httpx()`` makes ``httpx`` httpx2):
    that library's plugin records it, and a second instrumentor would add a second span."""
    module = sys.modules.get(name)
    return module is not None and module.__name__ != name


def enable_installed() -> list[str]:
    """Enable every plugin whose library is installed (as ``opentelemetry-instrument`` does);
    the names enabled, or to be. A library not imported yet is enabled as it is imported (a
    post-import hook), before the app can use it: importing every installed library and its
    instrumentor up front took seconds (gRPC's, PyMongo's) for libraries the app may never
    use. An imported library whose OpenTelemetry instrumentor is missing is left out; one
    imported later is left out when it is imported."""
    enabled = []
    for name in PLUGINS:
        if name in sys.modules:
            if _enable_imported(name):
                enabled.append(name)
        elif name in _awaited or importlib.util.find_spec(name) is not None:
            with _lock:
                hook = name not in _awaited
                _awaited.add(name)
            if hook:
                register_post_import_hook(
                    functools.partial(_on_import, _enable_awaited, name), name
                )
            enabled.append(name)
    return enabled


def _enable_imported(name: str) -> bool:
    """Whether plugin ``name``, its library imported, is enabled (not aliased, its instrumentor installed)."""
    if _aliased(name):
        return False
    try:
        enable(name)
    except ImportError:  # the library is here, its instrumentor is not
        return False
    return True


def _enable_awaited(name: str) -> None:
    """The library of ``name`` was imported: enable it unless disabled since it was awaited."""
    with _lock, guarded("plugins.enable"):
        if name in _awaited:
            _awaited.discard(name)
            if _setting_up:
                _deferred.add(name)
            else:
                _enable_imported(name)


def disable(name: str) -> None:
    """Stop recording library ``name``; undo the instrumentation only if timetracer did it."""
    (name,) = check_plugin_names([name])
    plugin = PLUGINS[name]
    with _lock:
        _enabled.discard(name)
        _awaited.discard(name)
        importlib.import_module(plugin.capture).uninstall()
        for instrumentor in _instrumentors(plugin):
            if (name, type(instrumentor)) in _instrumented_by_us:
                instrumentor.uninstrument()
                _instrumented_by_us.discard((name, type(instrumentor)))


def capture_early() -> None:
    """Record the calls of every installed library from now on, before the app names its
    plugins (its modules being imported: an engine checking the server as it is built); a
    library imported later is captured as it is imported. OpenTelemetry's instrumentors come
    with :func:`enable`; :func:`end_early_capture` stops the libraries no plugin was enabled for."""
    _each_installed(_capture_early)


def install_captures() -> None:
    """Record the calls of every installed library from now on, as it is imported if it is not
    yet, without OpenTelemetry's instrumentors (pytest collecting the suite, before the app's
    own instrumentation is set up): blocks enable the plugins whole later."""
    _each_installed(_install_capture)


def _each_installed(install: Callable[[str], object]) -> None:
    for name in PLUGINS:
        if name in sys.modules:
            install(name)
        elif importlib.util.find_spec(name) is not None:
            register_post_import_hook(functools.partial(_on_import, install, name), name)


def _on_import(install: Callable[[str], object], name: str, _module: ModuleType) -> None:
    install(name)


def _install_capture(name: str) -> bool:
    """Whether the capture of ``name`` is installed now (not where what it needs is missing)."""
    with _lock, guarded("capture_early"), _set_up(name):
        if _aliased(name):
            return False
        try:
            importlib.import_module(PLUGINS[name].capture).install()
        except ImportError:
            return False
        return True
    return False  # it raised: counted and logged by guarded


def _capture_early(name: str) -> None:
    with _lock:
        if not _early_ended and name not in _early and _install_capture(name):
            _early.add(name)


def end_early_capture() -> None:
    """The app is set up: libraries captured early that no plugin was enabled for are recorded no more."""
    global _early_ended
    with _lock, guarded("capture_early"):
        _early_ended = True
        for name in _early - _enabled:
            importlib.import_module(PLUGINS[name].capture).uninstall()
        _early.clear()


def _pair(name: str) -> tuple[Callable[[], None], Callable[[], None]]:
    def enable_plugin() -> None:
        enable(name)

    def disable_plugin() -> None:
        disable(name)

    enable_plugin.__name__, enable_plugin.__qualname__ = f"enable_{name}", f"enable_{name}"
    disable_plugin.__name__, disable_plugin.__qualname__ = f"disable_{name}", f"disable_{name}"
    enable_plugin.__doc__ = (
        f"Record {name} calls: OpenTelemetry {name} instrumentation plus payload capture."
    )
    disable_plugin.__doc__ = f"Stop recording {name} calls."
    return enable_plugin, disable_plugin


enable_httpx, disable_httpx = _pair("httpx")
enable_httpx2, disable_httpx2 = _pair("httpx2")
enable_requests, disable_requests = _pair("requests")
enable_aiohttp, disable_aiohttp = _pair("aiohttp")
enable_urllib3, disable_urllib3 = _pair("urllib3")
enable_sqlalchemy, disable_sqlalchemy = _pair("sqlalchemy")
enable_asyncpg, disable_asyncpg = _pair("asyncpg")
enable_psycopg, disable_psycopg = _pair("psycopg")
enable_psycopg2, disable_psycopg2 = _pair("psycopg2")
enable_pymysql, disable_pymysql = _pair("pymysql")
enable_aiomysql, disable_aiomysql = _pair("aiomysql")
enable_asyncmy, disable_asyncmy = _pair("asyncmy")
enable_sqlite3, disable_sqlite3 = _pair("sqlite3")
enable_aiosqlite, disable_aiosqlite = _pair("aiosqlite")
enable_redis, disable_redis = _pair("redis")
enable_pymongo, disable_pymongo = _pair("pymongo")
enable_motor, disable_motor = _pair("motor")
enable_grpc, disable_grpc = _pair("grpc")
enable_smtplib, disable_smtplib = _pair("smtplib")
enable_aiosmtplib, disable_aiosmtplib = _pair("aiosmtplib")
enable_amqp, disable_amqp = _pair("amqp")
enable_aio_pika, disable_aio_pika = _pair("aio_pika")
