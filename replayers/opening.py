"""A cassette as replay uses it: sealed secrets opened with the key, or read as redacted.

Replay keeps two views of one document. What matching and the report's display see has
every secret as ``[REDACTED]``, as the live call is redacted before it is matched: secrets
the environment supplies (API keys, database passwords) may differ where a cassette is
replayed. What the app is answered from, and what ``timetracer replay`` sends, has the real
values when this process holds the key that sealed them.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from timetracer_otel._keys import key_for
from timetracer_otel.cassette.reader import CassetteError
from timetracer_otel.config import TraceConfig
from timetracer_otel.sealing import Sealer, SealError, redacted, unsealed

from ._opened_secrets import note_opened
from .session import RecordedViews, recorded_views

__all__ = ["Opened", "open_for_replay"]


class Opened(NamedTuple):
    answers: dict[str, Any]  # the real values where the key opened them, else as ``shown``
    shown: dict[str, Any]  # every secret as [REDACTED]
    locked: bool = (
        False  # it holds sealed secrets and this process has no key: the app gets [REDACTED]
    )
    # the values the key opened: the recording hid each wherever it appeared, named or not
    # (a token an earlier request issued, in this one's URL and SQL)
    secrets: frozenset[str] = frozenset()

    @property
    def unsealed(self) -> bool:
        return self.answers is not self.shown

    def views(self, path: str) -> RecordedViews:
        """The calls' views for matching (secrets redacted), each answering from the opened call."""
        return recorded_views(self.shown, path, self.answers)


def open_for_replay(document: dict[str, Any], path: str, config: TraceConfig) -> Opened:
    """``document`` opened with ``config``'s key; :class:`CassetteError` naming the key it needs
    when it was sealed with another one (without any key, its secrets read as redacted)."""
    shown = redacted(document)
    if shown is document:
        return Opened(document, document)
    key = key_for(config)
    if key is None:
        return Opened(shown, shown, locked=True)
    secrets: set[str] = set()
    try:
        answers = unsealed(document, Sealer(key), secrets)
    except SealError as exc:
        raise CassetteError(
            path,
            f"holds sealed secrets this process cannot open: {exc}",
        ) from None
    note_opened(secrets)
    return Opened(answers, shown, secrets=frozenset(secrets))
