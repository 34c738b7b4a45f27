"""Which names hold secrets: one decision for every place a value is found by its name.

Headers, JSON and form fields, query parameters, multipart parts, SQL parameters and
columns, Redis hash fields and Mongo document fields all ask :class:`SecretNames`, so
redaction, the fingerprint of a request's secrets and replay's live views never
disagree. Names are compared case-insensitively with ``_`` and ``-`` ignored
(``API-Key`` is ``api_key``) against glob patterns (``*password*`` catches
``new_password`` and ``hashed_password``). Exempt names win over patterns: a pattern
as wide as ``*token*`` also catches ``page_token``, which an application may need to
see in clear; exempting it keeps it.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Iterable, Iterator
from functools import lru_cache
from re import Pattern
from urllib.parse import unquote_plus

__all__ = [
    "SecretNames", "DEFAULT_HEADERS", "DEFAULT_FIELDS", "DEFAULT_EXEMPT", "PAIR_LABELS", "PAIR_VALUES",
]  # fmt: skip

DEFAULT_FIELDS = (
    "*password*",
    "*passwd*",
    "*secret*",
    "*token*",
    "*api_key*",
    "*apikey*",
    "*private_key*",
    "authorization",
    "code_verifier",
    "device_code",
    # two-factor logins: the codes, the recovery codes, and the QR code that enrols an
    # authenticator app (a picture of its secret)
    "otp",
    "totp",
    "*otp_code*",
    "*mfa_code*",
    "*recovery_code*",
    "*backup_code*",
    "*qr_code*",
)
DEFAULT_HEADERS = (
    *DEFAULT_FIELDS,
    "cookie",
    "set-cookie",
    "proxy-authorization",
    "x-*-token",
    "x-*auth",  # X-Auth, X-Sentry-Auth (Sentry's DSN key)
)
# Names that ``*token*`` catches but whose values are no secret: OAuth 2.0's fixed vocabulary
# (``"token_type": "bearer"``: sealed, "bearer" would be taken out of every text that says it),
# and the token counts of LLM APIs (OpenAI's, Anthropic's usage and limits: hidden, a count
# read back as "[REDACTED]" without the key broke the app's arithmetic; OpenInference's
# ``llm.token_count.prompt``, Phoenix's ``llm_token_count_total`` columns).
DEFAULT_EXEMPT = (
    "token_type",
    "token_type_hint",
    "*token_count*",
    "prompt_tokens",
    "completion_tokens",
    "total_tokens",
    "input_tokens",
    "output_tokens",
    "cached_tokens",
    "reasoning_tokens",
    "audio_tokens",
    "text_tokens",
    "image_tokens",
    "accepted_prediction_tokens",
    "rejected_prediction_tokens",
    "cache_creation_input_tokens",
    "cache_read_input_tokens",
    "prompt_tokens_details",
    "completion_tokens_details",
    "input_tokens_details",
    "output_tokens_details",
    "max_tokens",
    "max_completion_tokens",
    "max_output_tokens",
    "max_new_tokens",
)


# An OAuth 2.0 authorization code is a credential under a name too common to be one alone (an
# error's or a country's code): in a query string or a form, it is one beside a parameter of
# the exchange that carries it (the redirect's ``state``, the token request's ``grant_type``).
_OAUTH_CODE = "code"
_OAUTH_PARAMETERS = frozenset(
    ("state", "granttype", "redirecturi", "clientid", "codeverifier", "codechallenge")
)


def normal(name: str) -> str:
    """``API-Key`` -> ``apikey``: the form names and patterns are compared in."""
    return name.lower().replace("_", "").replace("-", "")


def _compiled(patterns: Iterable[str]) -> Pattern[str]:
    """One regular expression matching any of ``patterns`` (globs, compared in :func:`normal` form)."""
    parts = [fnmatch.translate(normal(p)) for p in patterns if p.strip()]
    return re.compile("|".join(parts) or r"(?!)")


# The members (and SQL columns) naming what the ``value`` beside them is: a settings entry's
# value is a secret where its name or key is a secret's.
PAIR_LABELS = ("name", "key")
# The SQL columns holding that value (Airflow's ``variable`` table names it ``val``).
PAIR_VALUES = ("value", "val")


class SecretNames:
    """Decides whether a field or header name holds a secret."""

    def __init__(
        self, headers: Iterable[str] = (), fields: Iterable[str] = (), exempt: Iterable[str] = ()
    ) -> None:
        self._headers = _compiled((*DEFAULT_HEADERS, *headers))
        self._fields = _compiled((*DEFAULT_FIELDS, *fields))
        self._exempt = _compiled((*DEFAULT_EXEMPT, *exempt))
        # Per instance: names repeat across every call, and a method cache would keep the
        # instance alive for the life of the process.
        self.field = lru_cache(maxsize=4096)(self._field)
        self.header = lru_cache(maxsize=1024)(self._header)

    def _field(self, name: str) -> bool:
        """Whether a field (JSON, form, query, multipart, SQL, Redis hash, Mongo) named ``name`` is secret."""
        key = normal(name)
        return self._fields.match(key) is not None and self._exempt.match(key) is None

    def parameter(self, name: str, beside: Iterable[str]) -> bool:
        """Whether a query or form parameter ``name`` is secret, given the names ``beside`` it in
        the same query or form: a secret :meth:`field`, or an OAuth authorization ``code``."""
        if self.field(name):
            return True
        key = normal(name)
        return (
            key == _OAUTH_CODE
            and not _OAUTH_PARAMETERS.isdisjoint(map(normal, beside))
            and self._exempt.match(key) is None
        )

    def secret_parameters(self, pairs: list[str]) -> Iterator[tuple[int, str, str]]:
        """Of a query string or form body split at ``&``: (index, decoded name, value as
        written) of each parameter that holds a secret (:meth:`parameter`, beside the others)."""
        names = [unquote_plus(pair.partition("=")[0]) for pair in pairs]
        for index, (pair, name) in enumerate(zip(pairs, names, strict=True)):
            if pair and self.parameter(name, names):
                yield index, name, pair.partition("=")[2]

    def _header(self, name: str) -> bool:
        """Whether a header (or a span attribute naming one) called ``name`` is secret."""
        key = normal(name)
        return self._headers.match(key) is not None and self._exempt.match(key) is None
