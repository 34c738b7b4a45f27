"""Credentials supplied to ``timetracer replay`` for requests whose own cannot be unsealed.

Without the key that sealed a cassette (or when redaction dropped a header for good), a
recorded request's ``Authorization`` or ``Cookie`` reads ``[REDACTED]``, and the app answers
401. ``--header NAME=VALUE`` and ``--cookie NAME=VALUE`` stand in for exactly those: a header
the request carried that still reads redacted is replaced, one it did not carry is never
added, so anonymous requests stay anonymous and unsealed ones keep their recorded values.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from timetracer_otel.sealing import REDACTED

__all__ = ["Credentials"]


def _pairs(values: Sequence[str], option: str) -> tuple[tuple[str, str], ...]:
    pairs = []
    for value in values:
        name, equals, content = value.partition("=")
        if not equals or not name.strip():
            raise ValueError(f"{option} {value!r}: use NAME=VALUE")
        pairs.append((name.strip(), content))
    return tuple(pairs)


@dataclass(frozen=True)
class Credentials:
    headers: tuple[tuple[str, str], ...] = ()
    cookies: tuple[tuple[str, str], ...] = ()

    @classmethod
    def parse(cls, headers: Sequence[str] = (), cookies: Sequence[str] = ()) -> Credentials:
        """From ``NAME=VALUE`` options; :class:`ValueError` for one without ``=``."""
        return cls(_pairs(headers, "--header"), _pairs(cookies, "--cookie"))

    def __bool__(self) -> bool:
        return bool(self.headers or self.cookies)

    def _supplied(self, name: str) -> tuple[str, str] | None:
        """(what it is called in the report, the value to send) for a header that reads redacted."""
        for supplied, value in self.headers:
            if supplied.lower() == name.lower():
                return f"header {name.lower()}", value
        if name.lower() == "cookie" and self.cookies:
            return f"cookie {', '.join(n for n, _ in self.cookies)}", "; ".join(
                f"{n}={v}" for n, v in self.cookies
            )
        return None

    def apply(self, headers: list[tuple[str, str]]) -> tuple[list[tuple[str, str]], list[str]]:
        """``headers`` with each redacted one replaced by its supplied value, and what was supplied."""
        sent, used = [], []
        for name, value in headers:
            supplied = self._supplied(name) if REDACTED in value else None
            if supplied is not None:
                used.append(supplied[0])
                value = supplied[1]
            sent.append((name, value))
        return sent, used
