"""pytest-xdist workers' names in what a test recorded.

A suite run with pytest-xdist often gives each worker data of its own named after it: a
database ``app-test-gw0`` (pytest-django's ``test_app_gw0``, fief's ``fief-test-gw0``),
a Redis prefix ``test:gw1:``. The calls a test makes then carry the name of the worker
that ran it, and which worker runs a test changes from one run to the next (and is
``master``, xdist's ``worker_id`` in a run without workers). A cassette notes the worker
that recorded it (its request's ``worker``); replayed on another, it is read as if that
worker had recorded it: the recording worker's name, where it stands as a name of its own
or at the end of one, is the replaying worker's, in the calls and their answers alike.

Without workers, the name a suite gives its data is its own choice: xdist's ``worker_id``
says ``master``, ``os.getenv("PYTEST_XDIST_WORKER", "gw0")`` (a common conftest line) says
``gw0``, and pytest-django's way names none (``test_app``, ``test_app_gw0`` under xdist). A
cassette recorded so carries the name its calls do; a process replaying so learns its name
from the first call that names another worker than it was guessed to be, or that names none
where the cassette names one (see :func:`name_in_call`), and reads every cassette after as
that worker's. A worker replaying a recording that names no worker learns, from the first
call naming it at the end of a name (``test_app_gw0``), which names the recording gave
without it (``test_app``: :func:`names_in_call`), and reads every cassette after with its
name added to those.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Callable, Hashable
from pathlib import Path
from typing import Any

import pytest

from timetracer_otel.sealing import SEALED_TOKEN

__all__ = [
    "WORKER_FIELD",
    "as_worker",
    "instance_of",
    "forget_names",
    "learn_name",
    "learn_names",
    "live_name",
    "name_in_call",
    "names_in_call",
    "of_worker",
    "recorded_by",
    "xdist_worker",
]

WORKER_FIELD = (
    "worker"  # the request field of a block's cassette naming the worker that recorded it
)
_CONTROLLER = "master"  # xdist's worker_id where no worker runs the tests
# the names pytest-xdist gives (any other a cassette holds is no worker's: read as the controller's)
_WORKER_NAME = re.compile(r"gw[0-9]{1,6}|master")


def xdist_worker(config: pytest.Config) -> str | None:
    """This process's name for the suite's per-worker data, as xdist's ``worker_id`` fixture
    gives it: its worker's (``gw0``), ``master`` with pytest-xdist installed but no workers
    (even where ``PYTEST_XDIST_WORKER`` was inherited from an outer run), else None."""
    worker = getattr(config, "workerinput", {}).get("workerid")
    if worker:
        return str(worker)
    return _CONTROLLER if config.pluginmanager.hasplugin("xdist") else None


def recorded_by(document: dict[str, Any]) -> str:
    """The process that recorded a block's cassette: its pytest-xdist worker (``gw0``), or
    ``master`` for a run without workers, as for a cassette that names none (recorded where
    pytest-xdist was not loaded, by a single process too)."""
    request = document.get("request")
    worker = request.get(WORKER_FIELD) if isinstance(request, dict) else None
    return worker if isinstance(worker, str) and _WORKER_NAME.fullmatch(worker) else _CONTROLLER


def of_worker(path: Path, worker: str | None) -> Path:
    """The cassette ``path`` as pytest-xdist worker ``worker`` keeps its own (``user@gw1.json``);
    ``path`` itself for a run without workers."""
    if worker is None or worker == _CONTROLLER:
        return path
    return path.with_name(f"{path.name.removesuffix('.json')}@{worker}.json")


_WORKER_SUFFIX = re.compile(r"@gw[0-9]{1,6}(?=\.json$)")


def instance_of(path: str) -> str:
    """The cassette ``path`` whichever worker kept it (``user@gw1.json``: ``user.json``), as
    :func:`of_worker` named it."""
    return _WORKER_SUFFIX.sub("", path)


_NO_NAME = ""  # a suite that names its data after no worker without workers (pytest-django)


# ``master`` where it names a worker: ending a name (``fief-test-master``, ``test_master``), as the
# word is common; not SQLite's own tables (``sqlite_master``) nor a path's (``refs/heads/master``)
_MASTER = r"(?<=[-_.:])(?<!sqlite_)(?<!sqlite_temp_)master(?![A-Za-z0-9])"


def _name_pattern(worker: str, separator: bool = False) -> str:
    """Where ``worker`` stands as a name: ``gw1`` alone or ending a name (``db-gw1``, not
    ``gw12``); ``master`` as :data:`_MASTER` finds it. With ``separator``, the ``-``, ``_``,
    ``.``, ``:`` or ``/`` before it too (to take the name off)."""
    name = (
        _MASTER if worker == _CONTROLLER else f"(?<![A-Za-z0-9]){re.escape(worker)}(?![A-Za-z0-9])"
    )
    return f"(?:[-_.:/]{name}|{name})" if separator else name


# a worker's name where it names something: as :func:`_name_pattern` finds either kind
_NAMED_WORKER = re.compile(rf"(?<![A-Za-z0-9])gw[0-9]{{1,6}}(?![A-Za-z0-9])|{_MASTER}")
_learnt: list[str] = []  # the name this process's suite gives its data, once a call showed it


def _named_workers(document: dict[str, Any]) -> set[str]:
    """The worker names ``document``'s calls carry (``master`` included)."""
    return set(_NAMED_WORKER.findall(json.dumps(document.get("calls"))))


def _carried_name(recorded: str, named: set[str]) -> str:
    """The worker name a cassette's calls carry, given the names they carry (``named``):
    ``recorded``'s, or for a run without workers the one ``gwN`` they name where they name no
    ``master`` (the suite's own default)."""
    if recorded != _CONTROLLER or len(named) != 1:
        return recorded
    return next(iter(named))


def live_name(worker: str | None) -> str | None:
    """The name this process's suite gives its data: xdist's ``worker`` unless a call showed
    another (:func:`learn_name`)."""
    return _learnt[-1] if _learnt else worker


def learn_name(name: str) -> None:
    """Read every cassette opened from now on as if ``name`` had recorded it."""
    _learnt.append(name)


def name_in_call(key: Hashable, worker: str | None) -> str | None:
    """The worker name a live call (its view's ``key``) carries other than the one this process
    goes by (:func:`live_name`), when xdist's ``worker`` for it is a guess (no pytest-xdist
    worker runs it, so the suite names its data as it chooses, from a ``PYTEST_XDIST_WORKER``
    an outer run left too) and the call carries exactly one such name; ``""`` when it carries
    none (the suite may name no worker: tried against the cassette); else None."""
    if worker not in (None, _CONTROLLER):
        return None
    named = set(_NAMED_WORKER.findall(repr(key)))
    if not named:
        return None if live_name(worker) == _NO_NAME else _NO_NAME
    named -= {live_name(worker)}
    return named.pop() if len(named) == 1 else None


# a name ending with a worker's (``test_app_gw0``, ``cache:gw1``): the name, and what joins them
_BEFORE_WORKER = (
    r"(?<![A-Za-z0-9_.-])([A-Za-z0-9]+(?:[-_.][A-Za-z0-9]+)*)([-_.:]){worker}(?![A-Za-z0-9])"
)
_suffixed: dict[str, str] = {}  # names a recording gave without the worker -> this worker's


def names_in_call(key: Hashable, worker: str | None, document: dict[str, Any]) -> dict[str, str]:
    """For pytest-xdist worker ``worker`` replaying ``document``, recorded without workers by a
    suite that named its data after none (pytest-django's way): the names the live call (its
    view's ``key``) gives with the worker's added (``{"test_app": "test_app_gw0"}``); empty
    for any other pair."""
    if worker is None or worker == _CONTROLLER:
        return {}
    request = document.get("request")
    recorded = request.get(WORKER_FIELD) if isinstance(request, dict) else None
    if recorded != _CONTROLLER or _named_workers(document):
        return {}
    found = re.findall(_BEFORE_WORKER.format(worker=re.escape(worker)), repr(key))
    return {name: f"{name}{joint}{worker}" for name, joint in found if name not in _suffixed}


def learn_names(names: dict[str, str]) -> None:
    """Read every cassette opened from now on with ``names`` (:func:`names_in_call`) given as this
    worker's."""
    _suffixed.update(names)


def forget_names(names: dict[str, str]) -> None:
    """Take back :func:`learn_names` (the cassette read so did not answer the call either)."""
    for name in names:
        _suffixed.pop(name, None)


def as_worker(document: dict[str, Any], worker: str | None) -> dict[str, Any]:
    """``document`` as ``worker`` would have recorded it (itself when the same worker did, or
    either is unknown). Sealed values are left as they are (their data is not text to change);
    stored bytes are changed as bytes."""
    request = document.get("request")
    recorded = request.get(WORKER_FIELD) if isinstance(request, dict) else None
    if (
        worker is None
        or not isinstance(recorded, str)
        or not _WORKER_NAME.fullmatch(recorded)  # names no worker (a hand-made file)
        or recorded == worker
    ):
        return document
    carried = _named_workers(document) if recorded == _CONTROLLER else set()
    recorded = _carried_name(recorded, carried)
    if recorded == worker:
        return document
    if recorded == _CONTROLLER and worker != _NO_NAME and _suffixed and not carried:
        names = "|".join(re.escape(name) for name in sorted(_suffixed, key=len, reverse=True))
        named = f"(?<![A-Za-z0-9_-])(?:{names})(?![A-Za-z0-9_-])"
        return _rewritten(document, named, lambda found: _suffixed[found])
    named = _name_pattern(recorded, separator=worker == _NO_NAME)
    return _rewritten(document, named, lambda found: worker)


def _rewritten(document: dict[str, Any], named: str, given: Callable[[str], str]) -> dict[str, Any]:
    """``document`` with each text ``named`` matches (a pattern of ASCII) written as ``given`` says, in every string, key and stored body, sealed values left as they are."""
    pattern = re.compile(f"(?P<sealed>{SEALED_TOKEN.pattern})|{named}")
    in_bytes = re.compile(named.encode("ascii"))

    def text(value: str) -> str:
        return pattern.sub(lambda m: m.group(0) if m.group("sealed") else given(m.group(0)), value)

    def stored(encoded: str) -> str:
        try:
            data = base64.b64decode(encoded, validate=True)
        except (binascii.Error, ValueError):
            return encoded
        changed = in_bytes.sub(lambda m: given(m.group(0).decode("ascii")).encode("utf-8"), data)
        return encoded if changed == data else base64.b64encode(changed).decode("ascii")

    holder: list[Any] = [document]
    pending: list[tuple[Any, Any, Any]] = [(holder, 0, document)]
    while pending:
        parent, key, item = pending.pop()
        if isinstance(item, str):
            parent[key] = text(item)
        elif isinstance(item, dict):
            parent[key] = copy = {}
            for name, child in item.items():
                name = text(name)
                if name == "base64" and isinstance(child, str):
                    copy[name] = stored(child)
                else:
                    copy[name] = child
                    pending.append((copy, name, child))
        elif isinstance(item, list):
            parent[key] = items = list(item)
            pending.extend((items, index, child) for index, child in enumerate(item))
    return holder[0]
