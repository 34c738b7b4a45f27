"""What the captures of PEP 249 drivers used directly (sqlite3, aiosqlite, psycopg2) share: a failed statement."""

from __future__ import annotations

from types import ModuleType

from timetracer_otel._diagnostics import guarded
from timetracer_otel._recording import ProtocolCall, exception_info
from timetracer_otel.protocols.sql import error_attributes

__all__ = ["failed"]


def failed(call: ProtocolCall | None, exc: BaseException, driver: ModuleType) -> None:
    """``call``'s statement raised ``exc``: its class, message, the PEP 249 class of ``driver``
    it is (or derives from), and its attributes (``sqlite_errorcode``, ``pgcode``)."""
    if call is not None:
        with guarded(f"{driver.__name__}.error"):
            call.error = exception_info(exc)
            standard = next(
                (c.__name__ for c in type(exc).__mro__ if getattr(driver, c.__name__, None) is c),
                None,
            )
            call.response = {"dbapi_error": standard, "error_attributes": error_attributes(exc)}
