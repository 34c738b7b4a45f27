"""Credentials supplied to ``timetracer replay`` for requests whose own cannot be unsealed.

Without the key that sealed a cassette (or when redaction dropped a header for good), a
recorded request's ``Authorization`` or ``Cookie`` reads ``[REDACTED]``, and the app answers
401. ``--header NAME=VALUE`` and ``--cookie NAME=VALUE`` stand in for exactly those: a header
the request carried that still reads redacted is replaced, one it did not carry is never
added, so anonymous requests stay anonymous and unsealed ones keep their recorded values.
``--credentials MODULE:FUNCTION`` names a function that chooses them per request (a token
for the user the request was made as, say): it gets a :class:`RedactedRequest` and returns
the values of the headers to send instead of the redacted ones, by name.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace

from timetracer_otel.sealing import REDACTED

from ._imports import import_object

__all__ = ["Credentials", "CredentialsHook", "RedactedRequest"]


@dataclass(frozen=True)
class RedactedRequest:
    """A recorded request some of whose headers read redacted: what a credentials hook is given."""

    method: str
    path: str
    query: str = ""
    headers: tuple[tuple[str, str], ...] = ()  # as they will be sent; redacted ones read [REDACTED]

    @property
    def redacted(self) -> tuple[str, ...]:
        """The names (lower case) of the headers that read redacted."""
        return tuple(name.lower() for name, value in self.headers if REDACTED in value)


CredentialsHook = Callable[[RedactedRequest], "Mapping[str, str] | None"]


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
    hook: CredentialsHook | None = None
    hook_name: str = ""  # MODULE:FUNCTION, for the report and errors

    @classmethod
    def parse(
        cls, headers: Sequence[str] = (), cookies: Sequence[str] = (), hook: str | None = None
    ) -> Credentials:
        """From ``NAME=VALUE`` options and a ``MODULE:FUNCTION`` hook (imported by :meth:`loaded`);
        :class:`ValueError` for an option without ``=``."""
        return cls(_pairs(headers, "--header"), _pairs(cookies, "--cookie"), hook_name=hook or "")

    def loaded(self, app_dir: str | None = None) -> Credentials:
        """These credentials with their hook imported from ``app_dir``: once the app is, since
        the hook's module may import it, and the app must first see that it replays."""
        if not self.hook_name or self.hook is not None:
            return self
        function = import_object(self.hook_name, app_dir, "credentials hook")
        if not callable(function):
            raise ValueError(f"--credentials {self.hook_name}: not a function")
        return replace(self, hook=function)

    def __bool__(self) -> bool:
        return bool(self.headers or self.cookies or self.hook_name)

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

    def apply(
        self, headers: list[tuple[str, str]], request: RedactedRequest | None = None
    ) -> tuple[list[tuple[str, str]], list[str]]:
        """``headers`` (of ``request``) with each redacted one replaced by its supplied value,
        the options' first, then the hook's, and what was supplied."""
        sent, used = [], []
        for name, value in headers:
            supplied = self._supplied(name) if REDACTED in value else None
            if supplied is not None:
                used.append(supplied[0])
                value = supplied[1]
            sent.append((name, value))
        if self.hook is None or not any(REDACTED in value for _, value in sent):
            return sent, used
        chosen = self._from_hook(replace(request or RedactedRequest("", ""), headers=tuple(sent)))
        for index, (name, value) in enumerate(sent):
            if REDACTED in value and name.lower() in chosen:
                sent[index] = (name, chosen[name.lower()])
                used.append(f"header {name.lower()} from {self.hook_name}")
        return sent, used

    def _from_hook(self, request: RedactedRequest) -> dict[str, str]:
        assert self.hook is not None
        try:
            chosen = self.hook(request) or {}
            return {str(name).lower(): str(value) for name, value in chosen.items()}
        except Exception as exc:  # the user's code: say whose it is
            raise ValueError(
                f"--credentials {self.hook_name} failed for {request.method} {request.path}: "
                f"{type(exc).__name__}: {exc}"
            ) from exc
