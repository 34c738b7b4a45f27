"""The session report: what the run replayed and recorded, what went unused, which cassettes are stale,
and which were replayed without their secrets (the usual reason a suite recorded elsewhere fails in CI).

Under pytest-xdist each worker keeps its own :class:`RunReport` and hands it to the
controller as plain data (:meth:`RunReport.as_data`), which merges them and reports once.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .blocks import RECORD, REPLAY, BlockOutcome, SealedSecretsError
from .naming import shown
from .workers import instance_of

__all__ = ["RunReport"]

_LOCKED = "locked"
_FAILED = "failed"  # tests that failed while recording: their cassettes were not kept
_SHOWN = 5  # calls named in the report under each heading


# what each mode does, beside its pytest-recording name (``--timetracer-mode=replay`` is ``none``)
_MEANING = {
    "once": "replay, record what is missing",
    "none": "replay only",
    "all": "record",
    "rewrite": "record, remove cassettes no test used",
    "off": "live, no cassettes",
}


@dataclass
class RunReport:
    """Outcomes of the run's blocks, and the cassettes its tests and fixtures own."""

    mode: str
    directory: str
    # _LOCKED: of those replayed, how many had sealed secrets and no key to open them
    tests: dict[str, int] = field(
        default_factory=lambda: {RECORD: 0, REPLAY: 0, _FAILED: 0, "missing": 0, _LOCKED: 0}
    )
    fixtures: dict[str, int] = field(
        default_factory=lambda: {RECORD: 0, REPLAY: 0, _FAILED: 0, _LOCKED: 0}
    )
    answered: int = 0
    # calls no cassette answered, each raised where it was made: "<cassette>: <the error's first line>"
    unmatched: list[str] = field(default_factory=list)
    # recorded calls no replayed code made: "<cassette>: <the call>"
    unused: list[str] = field(default_factory=list)
    used: set[str] = field(default_factory=set)  # cassettes read or written by this run
    # cassettes of every collected test, run or deselected
    owned: set[str] = field(default_factory=set)
    scopes: set[str] = field(default_factory=set)  # directories whose tests were all collected
    # cassettes not replayed as their sealed secrets cannot be opened here: what opening says, by path
    unopened: dict[str, str] = field(default_factory=dict)
    # calls a cassette did not hold, answered from an earlier test's: "<cassette>: <what answered it>"
    from_earlier: list[str] = field(default_factory=list)
    # failures inside timetracer (a cassette not written): kind -> [how many, the first message]
    failures: dict[str, list[Any]] = field(default_factory=dict)
    # the processes (gw0, master) that recorded the tests this process replayed
    recorded_by: set[str] = field(default_factory=set)
    # of each pytest-xdist worker that replayed the tests of several recording processes: those
    mixed: list[list[str]] = field(default_factory=list)
    # where this process looks for the key file, and the one this run's recording made (the
    # controller's to see)
    key_file: str | None = None
    created_key: str | None = None
    # the wider-scoped fixtures replayed from their cassettes for a test that failed while recording
    replayed_for_failed: set[str] = field(default_factory=set)

    def add(self, outcome: BlockOutcome, is_test: bool) -> None:
        if outcome.failed:
            (self.tests if is_test else self.fixtures)[_FAILED] += 1
        if outcome.kept:
            counts = self.tests if is_test else self.fixtures
            counts[outcome.action] += 1
            counts[_LOCKED] += outcome.locked
            self.used.add(outcome.path)
        if is_test and outcome.recorded_by is not None:
            self.recorded_by.add(outcome.recorded_by)
        self.answered += outcome.answered
        self.unmatched.extend(f"{shown(outcome.path)}: {line}" for line in outcome.unmatched)
        self.unused.extend(f"{shown(outcome.path)}: {label}" for label in outcome.unused)
        self.from_earlier.extend(
            f"{shown(outcome.path)}: {library} {label} (answered by {shown(path)})"
            for library, label, path in outcome.from_earlier
        )

    def missing(self, path: str) -> None:
        self.tests["missing"] += 1
        self.owned.add(path)

    def not_opened(self, error: SealedSecretsError) -> None:
        self.unopened[error.path] = error.problem

    def as_data(self) -> dict[str, Any]:
        return {
            "tests": self.tests,
            "fixtures": self.fixtures,
            "answered": self.answered,
            "unmatched": self.unmatched,
            "unused": self.unused,
            "used": sorted(self.used),
            "owned": sorted(self.owned),
            "scopes": sorted(self.scopes),
            "unopened": self.unopened,
            "from_earlier": self.from_earlier,
            "failures": self.failures,
            "mixed": self._mixed(),
            "replayed_for_failed": sorted(self.replayed_for_failed),
        }

    def _mixed(self) -> list[list[str]]:
        """This process's and its workers' recording processes, of each that replayed several."""
        mine = [sorted(self.recorded_by)] if len(self.recorded_by) > 1 else []
        return self.mixed + mine

    def merge(self, data: dict[str, Any]) -> None:
        for mine, theirs in ((self.tests, data["tests"]), (self.fixtures, data["fixtures"])):
            for key, count in theirs.items():
                mine[key] = mine.get(key, 0) + count
        self.answered += data["answered"]
        self.unmatched.extend(data["unmatched"])
        self.unused.extend(data["unused"])
        self.used.update(data["used"])
        self.owned.update(data["owned"])
        self.scopes.update(data["scopes"])
        self.unopened.update(data["unopened"])
        self.from_earlier.extend(data["from_earlier"])
        self.mixed.extend(data["mixed"])
        self.replayed_for_failed.update(data["replayed_for_failed"])
        for kind, (count, first) in data["failures"].items():
            self.failures.setdefault(kind, [0, first])[0] += count

    def stale(self) -> list[str]:
        """Cassettes under the directories of the collected test modules that no test or fixture
        of the run owns. Each pytest-xdist worker's instance of a fixture is owned with the one
        the run used: a run uses one (a serial replay of a suite recorded with ``-n 2``)."""
        kept = {instance_of(path) for path in self.used | self.owned}
        found: set[str] = set()
        for scope in self.scopes:
            root = Path(scope)
            if root.is_dir():
                found.update(
                    str(path) for path in _cassettes_in(root) if instance_of(str(path)) not in kept
                )
        return sorted(found)

    def lines(self) -> list[str]:
        tests, fixtures = self.tests, self.fixtures
        return [
            f"mode {self.mode} ({_MEANING.get(self.mode, self.mode)}), cassettes in {self.directory}",
            f"tests: {tests[REPLAY]} replayed, {tests[RECORD]} recorded{_failed(tests)}"
            + (f", {tests['missing']} without a cassette" if tests["missing"] else ""),
            f"fixture scopes: {fixtures[REPLAY]} replayed, {fixtures[RECORD]} recorded{_failed(fixtures)}",
            f"calls: {self.answered} answered from cassettes, {len(self.unmatched)} not answered, {len(self.unused)} recorded but not made",
            *_itemised(
                self.unmatched,
                "not answered, each raised where it was made (where the code caught the error, "
                "its test may still have passed):",
            ),
            *_itemised(
                self.unused,
                "recorded but not made (the replayed code made other calls, or fewer):",
            ),
            *_itemised(
                self.from_earlier,
                "not in its test's cassette, answered from another test's (recorded or run "
                "before it, else recorded next: the process had it from there):",
            ),
            *self._order_lines(),
            *self._replayed_fixture_lines(),
            *self._key_lines(),
            *self._locked_lines(),
            *self._unopened_lines(),
            *self._failure_lines(),
        ]

    def _replayed_fixture_lines(self) -> list[str]:
        """A test recorded while a fixture it uses was replayed (``once``, its cassette missing):
        the fixture's set-up (a database it creates, rows it seeds) did not run for real, and a
        test that needs it fails, run after run. Say which, and how to record them together."""
        if not self.replayed_for_failed:
            return []
        return [
            "  failed while recording, with these fixtures replayed from their cassettes (their "
            "set-up did not run for real):",
            *(f"    {name}" for name in sorted(self.replayed_for_failed)),
            "  record the fixtures with their tests: --timetracer-mode=all (the whole run, or "
            "the tests using them)",
        ]

    def _failure_lines(self) -> list[str]:
        """timetracer's own failures, which the code under test never sees: a cassette the
        writer could not write is a recorded test with nothing to replay."""
        if not self.failures:
            return []
        return [
            "errors inside timetracer (the log has each one's traceback):",
            *(
                f"  {count} × {kind}: {first}"
                for kind, (count, first) in sorted(self.failures.items())
            ),
        ]

    def _order_lines(self) -> list[str]:
        """A process that replayed the tests of several recording processes ran each test after
        others than its recording process had: where calls went unanswered, say so, and how to
        replay them apart (where every call was answered, the order did no harm)."""
        mixed = self._mixed()
        if not mixed or not self.unmatched:
            return []
        recorders = sorted({name for names in mixed for name in names})
        return [
            f"order: tests recorded by {len(recorders)} processes ({', '.join(recorders)}) were "
            f"replayed {'in one process' if len(mixed) == 1 else 'together'}, after others than "
            "their recording process ran: a test that depends on the tests before it may send "
            f"calls it did not record; replay with -n {len(recorders)} to give each recording "
            "process's tests a worker of their own"
        ]

    def _key_lines(self) -> list[str]:
        """The key this run made: what it sealed cannot be replayed without it (pytest shows no log line)."""
        if self.created_key is None:
            return []
        return [
            f"key: created {self.created_key} (readable by you alone): replaying the secrets this run sealed "
            "needs it; keep it out of the repository, and give it to CI as TIMETRACER_SECRET_KEY from a secret"
        ]

    def _locked_lines(self) -> list[str]:
        """Tests replayed with [REDACTED] for their secrets pass or fail for that alone: say so, and how to give the key."""
        tests, fixtures = self.tests[_LOCKED], self.fixtures[_LOCKED]
        if not tests and not fixtures:
            return []
        what = " and ".join(
            _counted(count, noun)
            for count, noun in ((tests, "test"), (fixtures, "fixture scope"))
            if count
        )
        its, cassette = ("its", "cassette") if tests + fixtures == 1 else ("their", "cassettes")
        return [
            f"secrets: {what} replayed without {its} secrets: sealed in {its} {cassette} and this process has no key, "
            "so the app got [REDACTED] in their place (credentials, password hashes, random values it drew)",
            "  to replay with the secrets, put the key file that sealed them where this process looks for it, "
            f"{self.key_file} (TIMETRACER_KEY_FILE), or set TIMETRACER_SECRET_KEY to its content; in CI, from a secret",
        ]

    def _unopened_lines(self) -> list[str]:
        """One line per reason (the key each needs), in replay's own words."""
        reasons = Counter(self.unopened.values())
        return [
            f"secrets: {_counted(count, 'cassette')} not replayed: {problem}"
            for problem, count in sorted(reasons.items())
        ]


def _itemised(calls: list[str], what: str) -> list[str]:
    """The first few ``calls``, in the order their tests ran (on each pytest-xdist worker), under
    a heading counting them all; none, no lines. The first is often the cause of the rest: a
    mismatch that rolls back an ORM session fails the tests after it in other ways."""
    if not calls:
        return []
    first = calls[:_SHOWN]
    more = len(calls) - len(first)
    return [
        f"  {_counted(len(calls), 'call')} {what}",
        *(f"    {line}" for line in first),
        *([f"    and {more} more"] if more else []),
    ]


def _counted(count: int, noun: str) -> str:
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


def _cassettes_in(root: Path) -> Iterable[Path]:
    for directory, _, names in os.walk(root):
        for name in names:
            if name.endswith((".json", ".json.gz")):
                yield Path(directory, name)


def _failed(counts: dict[str, int]) -> str:
    """What the count of blocks that failed while recording adds to its line."""
    if not counts[_FAILED]:
        return ""
    return f", {counts[_FAILED]} failed while recording (not kept: recorded again by the next run that records)"
