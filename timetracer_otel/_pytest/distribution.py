"""Replaying under pytest-xdist, each worker's tests together, in the order they were recorded.

A test can depend on the tests that ran before it in the same process: a module-level ORM
object an earlier test changed, a log sink one test installed for the rest of its worker, a
client that fetched its settings once. Such a test sends other calls, and its cassette
cannot answer them, when xdist's ``load`` distribution (the one ``-n`` chooses) gives it
another worker than the recording run did. So a replaying run that distributes with
``load`` gives each worker the tests one recording process ran, whole and in collection
order (the order that process ran them): a suite recorded serially replays on one worker,
one recorded with ``-n 2`` on two. Tests without a cassette (not opted in, or to be recorded
now) are distributed freely.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

from .naming import cassette_of_test
from .workers import recorded_by

__all__ = ["recorded_worker", "recorded_order_scheduler"]

# A scope name no node id can be: node ids are paths and names, never a NUL.
_GROUP_PREFIX = "\0recorded by "


def recorded_worker(path: Path) -> str | None:
    """The process that recorded the test cassette at ``path`` (see :func:`.workers.recorded_by`);
    None when there is no such cassette."""
    try:
        document = orjson.loads(path.read_bytes())
    except (OSError, orjson.JSONDecodeError):
        return None
    return recorded_by(document) if isinstance(document, dict) else None


def recorded_order_scheduler(config: Any, log: Any, directory: Path) -> Any | None:
    """pytest-xdist's scheduler of scopes, each scope the tests one recording process ran; None
    where no test's cassette is recorded yet (a first run records every test: xdist's ``load``
    sends them in larger batches than a scope a test). The run's own files (``@fixtures/``,
    ``@collection-calls.json``), written before the scheduler is made, are no test's."""
    if not any(
        not path.relative_to(directory).parts[0].startswith("@")
        for path in directory.rglob("*.json")
    ):
        return None
    from xdist.scheduler import LoadScopeScheduling

    class _RecordedOrder(LoadScopeScheduling):
        """Whole scopes go to one worker each, in collection order: here a scope is the tests one
        recording process ran, or a test alone where no cassette says which process ran it."""

        def __init__(self, worker_of: Callable[[str], str | None]) -> None:
            super().__init__(config, log)
            self._worker_of = worker_of
            self._scopes: dict[str, str] = {}

        def _split_scope(self, nodeid: str) -> str:
            """Worked out once: xdist asks again when the test is done, and by then a test that
            had no cassette has recorded one (xdist then looked for another scope, and failed)."""
            scope = self._scopes.get(nodeid)
            if scope is None:
                worker = self._worker_of(nodeid)
                scope = nodeid if worker is None else _GROUP_PREFIX + worker
                self._scopes[nodeid] = scope
            return scope

    return _RecordedOrder(lambda nodeid: recorded_worker(cassette_of_test(directory, nodeid)))
