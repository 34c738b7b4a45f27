"""The pytest plugin: a cassette per test, per fixture scope, or per ``with`` block.

Tests opt in with ``timetracer_autouse = true`` in the pytest configuration or the
``timetracer`` marker (on a test, a class, a module through ``pytestmark``). Each such test
gets ``<dir>/<module path>/<test name>.json``, holding every call the test causes (its
body, its function-scoped fixtures, the app behind ``TestClient``) and the clock, UUID and
random values drawn meanwhile. A fixture of a wider scope gets a cassette per scope
instance, ``<scope dir>/@fixtures/<name>.json``: its set-up and teardown, recorded when it
first runs and replayed whenever it runs again. The ``timetracer_replay`` and
``timetracer_record`` fixtures give a cassette to a ``with`` block instead.

``--timetracer-mode``: ``once`` records missing cassettes and replays the others (the
default, except where the ``CI`` environment variable is set: there ``none``); ``none``
(or ``replay``) only replays and fails a test whose cassette is missing; ``all`` (or
``record``) re-records everything; ``rewrite`` re-records and removes the cassettes no
test owns any more; ``off`` runs live. While a test replays, no connection leaves the
process. A report at the end of the run counts what was replayed and recorded, what was
replayed without the key to its sealed secrets, and names stale cassettes
(``--timetracer-prune`` removes them).
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import gc
import inspect
import os
import uuid
from collections import Counter
from collections.abc import Callable, Generator, Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import pytest
from _pytest.fixtures import FixtureDef  # pytest.FixtureDef from pytest 8.1 on

from timetracer_otel import _gc_hold, _network_guard
from timetracer_otel._diagnostics import counters, failures
from timetracer_otel._keys import key_file_of
from timetracer_otel._pytest import tmp_paths
from timetracer_otel._pytest.blocks import (
    RECORD,
    REPLAY,
    BlockOutcome,
    CassetteBlock,
    SealedSecretsError,
    earlier_tests,
    running_block,
)
from timetracer_otel._pytest.collection import (
    in_project,
    recorded_instant,
    save_instant,
    seeded_while_collecting,
)
from timetracer_otel._pytest.collection_calls import CollectionCalls
from timetracer_otel._pytest.coroutines import swapped
from timetracer_otel._pytest.distribution import recorded_order_scheduler, recorded_worker
from timetracer_otel._pytest.live import install as install_live_servers
from timetracer_otel._pytest.naming import (
    NodeNames,
    cassette_of_fixture,
    cassette_of_test,
    cassettes_of_module,
    shown,
)
from timetracer_otel._pytest.report import RunReport
from timetracer_otel._pytest.shared_clock import (
    WORKERINPUT_KEY,
    first_instant,
    new_directory,
    remove_directory,
)
from timetracer_otel._pytest.workers import of_worker, xdist_worker
from timetracer_otel._terminal import printable
from timetracer_otel.cassette.errors import CassetteError
from timetracer_otel.config import TraceConfig

if TYPE_CHECKING:
    from timetracer_otel.replayers.earlier import EarlierRequests

__all__ = ["timetracer_replay", "timetracer_record"]

PathLike = str | Path

_MODES = {
    "once": "once",
    "none": "none",
    "replay": "none",
    "all": "all",
    "record": "all",
    "rewrite": "rewrite",
    "off": "off",
}
_MARKER = "timetracer"


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("timetracer")
    group.addoption(
        "--timetracer-mode",
        choices=tuple(_MODES),
        default=None,
        help="once: record missing cassettes, replay the rest (default; 'none' where CI is set); "
        "none/replay: replay only; all/record: re-record; rewrite: re-record and remove stale; off: run live",
    )
    group.addoption(
        "--timetracer-dir",
        default=None,
        help="directory of the cassettes (default: cassettes, from the rootdir)",
    )
    group.addoption(
        "--timetracer-prune",
        action="store_true",
        help="remove the stale cassettes the report names at the end of the run",
    )
    parser.addini(
        "timetracer_autouse", "give every test a cassette of its own", type="bool", default=False
    )
    parser.addini("timetracer_mode", "default --timetracer-mode", default="")
    parser.addini("timetracer_dir", "default --timetracer-dir", default="cassettes")
    parser.addini(
        "timetracer_allowed_hosts",
        "hosts a replaying test may still connect to",
        type="args",
        default=[],
    )


def _chosen_mode(config: pytest.Config) -> str:
    """The mode the options, the configuration or the ``CI`` variable choose. Read from the
    options parsed early, so that it is known while the initial conftests are imported."""
    chosen = getattr(config.known_args_namespace, "timetracer_mode", None) or config.getini(
        "timetracer_mode"
    )
    default = (
        "none"
        if os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")
        else "once"
    )
    mode = _MODES.get(str(chosen).strip().lower() or default)
    if mode is None:
        raise pytest.UsageError(f"timetracer_mode = {chosen!r}: choose one of {', '.join(_MODES)}")
    return mode


def _cassette_directory(config: pytest.Config) -> Path:
    # also from the options parsed early: the initial conftests are imported (and the kept
    # collection instant looked up) before config.option is filled in
    directory = Path(
        config.getoption("--timetracer-dir")
        or getattr(config.known_args_namespace, "timetracer_dir", None)
        or config.getini("timetracer_dir")
    )
    return directory if directory.is_absolute() else config.rootpath / directory


_INSTANT = pytest.StashKey[tuple[int | None, bool]]()
# The controller's collection instant, "<its pid>:<instant ns>", in the environment its
# pytest-xdist workers inherit: a worker imports the initial conftests (and the test data they
# import) before xdist gives it its workerinput. Not a TIMETRACER_* name: it is no setting.
_INSTANT_VARIABLE = "_TIMETRACER_COLLECTION_INSTANT"


def _controller_instant() -> int | None:
    """In a pytest-xdist worker its controller (its parent) started, the controller's collection
    instant; None elsewhere. Taken out of the environment: a pytest that one of its tests runs
    chooses its own."""
    if not os.environ.get("PYTEST_XDIST_WORKER"):
        return None
    pid, _, instant = os.environ.pop(_INSTANT_VARIABLE, "").partition(":")
    if not pid.isdigit() or int(pid) != os.getppid() or not instant.isdigit():
        return None
    return int(instant)


def _collection_instant(config: pytest.Config) -> tuple[int | None, bool]:
    """(the clock while the suite is imported and collected, whether this process keeps it):
    the instant a recording run kept, or now for a run that records; the real clock (None) for
    a replaying run with none kept. A pytest-xdist worker takes its controller's, and keeps
    none: the controller does."""
    if _INSTANT not in config.stash:
        from timetracer_otel.determinism import real_time_ns

        given = _controller_instant()
        if given is not None:
            config.stash[_INSTANT] = (given, False)
            return config.stash[_INSTANT]
        mode = _chosen_mode(config)
        kept = recorded_instant(_cassette_directory(config)) if mode in ("once", "none") else None
        instant = kept if kept is not None or mode == "none" else real_time_ns()
        config.stash[_INSTANT] = (instant, mode != "none" and kept is None)
        if instant is not None:  # for the pytest-xdist workers it starts
            os.environ[_INSTANT_VARIABLE] = f"{os.getpid()}:{instant}"
    return config.stash[_INSTANT]


_COLLECTION_CALLS = pytest.StashKey[CollectionCalls]()


@contextlib.contextmanager
def _collecting(config: pytest.Config) -> Iterator[None]:
    """When every test has a cassette: random values drawn while the suite is imported and
    collected are seeded, and the clock is the run's collection instant (see
    :mod:`timetracer_otel._pytest.collection`); the calls made meanwhile are recorded or
    answered (see :mod:`timetracer_otel._pytest.collection_calls`)."""
    mode = _chosen_mode(config)
    if not config.getini("timetracer_autouse") or mode == "off":
        yield
        return
    if _COLLECTION_CALLS not in config.stash:
        config.stash[_COLLECTION_CALLS] = CollectionCalls(
            _cassette_directory(config),
            mode,
            # certain on a worker: xdist sets it before the conftests are imported
            os.environ.get("PYTEST_XDIST_WORKER") or xdist_worker(config),
            frozenset(config.getini("timetracer_allowed_hosts")),
        )
    calls = config.stash[_COLLECTION_CALLS]
    calls.activate()
    try:
        with seeded_while_collecting(config.rootpath.resolve(), _collection_instant(config)[0]):
            yield
    finally:
        calls.deactivate()


@pytest.hookimpl(wrapper=True)
def pytest_load_initial_conftests(early_config: pytest.Config) -> Generator[None, None, None]:
    with _collecting(early_config):
        return (yield)


@pytest.hookimpl(wrapper=True)
def pytest_collection(session: pytest.Session) -> Generator[None, None, None]:
    config = session.config
    with _collecting(config):
        result = yield
    calls = config.stash.get(_COLLECTION_CALLS, None)
    if calls is not None:
        calls.close(xdist_worker(config))
    if _INSTANT in config.stash:
        instant, keeps = config.stash[_INSTANT]
        if keeps and instant is not None:
            save_instant(_cassette_directory(config), instant)
    return result


class _Run:
    """The plugin's state for one pytest run."""

    def __init__(self, config: pytest.Config) -> None:
        self.mode = _chosen_mode(config)
        self.rootpath = config.rootpath.resolve()
        self.directory = _cassette_directory(config)
        self.names = NodeNames(self.rootpath)  # what each test's and fixture's cassette is named by
        self.autouse: bool = config.getini("timetracer_autouse")
        # One id for the whole run, shared by pytest-xdist's workers.
        self.uid = str(getattr(config, "workerinput", {}).get("testrunuid") or uuid.uuid4().hex)
        self.allowed_hosts = frozenset(config.getini("timetracer_allowed_hosts"))
        self.worker = xdist_worker(config)
        self.replayed: list[str] = []  # the cassettes of the tests and fixtures replayed, in order
        # a pytest-xdist worker's: where the fixtures' first instants are kept (see ._pytest.shared_clock)
        self.fixture_clocks: str | None = getattr(config, "workerinput", {}).get(WORKERINPUT_KEY)
        self._clocks_for_workers: str | None = None  # the controller's, made for its workers
        self.report = RunReport(self.mode, shown(self.directory))
        self.counted_before = counters.snapshot()  # timetracer's failures are this run's from here
        self.fixture_blocks: dict[
            Any, CassetteBlock
        ] = {}  # by the fixturedef whose scope instance it records
        self.fixture_paths: Counter[Path] = Counter()
        self.froze_imports = False  # see _freeze_what_was_imported
        # where the blocks' config looks for the key; while the file does not exist, recording
        # makes it (in its writer process)
        self.key_file: str | None = None
        if self.mode != "off":
            with contextlib.suppress(ValueError):  # a bad setting: each block reports it
                self.key_file = key_file_of(TraceConfig(mode="replay"))
        self._key_was_missing = self.key_file is not None and not os.path.exists(self.key_file)

    def created_key(self) -> str | None:
        """The key file this run made: it did not exist when the run began, and does now."""
        made = self.key_file if self._key_was_missing else None
        return made if made is not None and os.path.exists(made) else None

    def action(self, path: Path) -> str | None:
        """RECORD or REPLAY for the cassette at ``path``; None when it is missing and this mode only replays."""
        if self.mode in ("all", "rewrite"):
            return RECORD
        # a link to nothing is a cassette that cannot be read, not one to record
        if path.exists() or path.is_symlink():
            return REPLAY
        return RECORD if self.mode == "once" else None

    def fixture_cassette(self, path: Path, item: pytest.Item) -> Path:
        """Where an instance of a wider-scoped fixture is kept. Each pytest-xdist worker sets up
        its own, and what a shared database made for it (a row id from one sequence) is its own:
        recorded by a worker, it is named for it (``user@gw1.json``); replayed, the instance the
        worker that recorded ``item`` made answers, else the one recorded without workers."""
        own = of_worker(path, self.worker)
        if self.mode in ("all", "rewrite"):
            return own
        recorder = recorded_worker(cassette_of_test(self.directory, self.names.of(item)))
        return next(
            (found for found in (of_worker(path, recorder), path) if found.exists()),
            own,
        )

    def block(self, path: Path, label: str, action: str, **options: Any) -> CassetteBlock:
        """A test's or fixture's cassette; from the first one on, apps served by uvicorn in this process are apps under test."""
        install_live_servers()
        if action == REPLAY:
            options["earlier"] = self.earlier
            self.replayed.append(str(path))
        try:
            return CassetteBlock(
                path,
                label,
                action,
                allowed_hosts=self.allowed_hosts,
                worker=self.worker,
                root=self.directory if path.is_relative_to(self.directory) else None,
                **options,
            )
        except SealedSecretsError as exc:  # still fails; the report names the key
            self.report.not_opened(exc)
            raise

    @functools.cached_property
    def earlier(self) -> EarlierRequests:
        """Answers and draws from earlier tests' cassettes (made when a replayed test first needs one)."""
        return earlier_tests(self.directory, self.worker, lambda: self.replayed)

    def opted_in(self, item: pytest.Item) -> bool:
        return self.mode != "off" and (self.autouse or item.get_closest_marker(_MARKER) is not None)

    def fixture_clocks_for_workers(self) -> str:
        """The controller's directory of its workers' fixture instants, made when the first starts."""
        if self._clocks_for_workers is None:
            self._clocks_for_workers = new_directory()
        return self._clocks_for_workers

    def close(self) -> None:
        _network_guard.uninstall()
        tmp_paths.uninstall()
        if self.froze_imports:
            gc.unfreeze()
        if self._clocks_for_workers is not None:
            remove_directory(self._clocks_for_workers)


_RUN = pytest.StashKey[_Run]()
_TEST_BLOCK = pytest.StashKey[CassetteBlock | None]()
_CALL_FAILED = pytest.StashKey[bool]()
_SETUP_FAILURE = pytest.StashKey[BaseException]()
_GC_HELD = pytest.StashKey[bool]()


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        f"{_MARKER}(strict=False, live=()): give this test a cassette of its own (see timetracer's pytest docs)",
    )
    run = config.stash[_RUN] = _Run(config)
    if run.mode != "off":
        tmp_paths.install(claims=run.fixture_clocks)
    config.pluginmanager.register(_SetupFailures(), "timetracer-setup-failures")
    config.pluginmanager.register(_AsyncSteps(), "timetracer-async-steps")


def pytest_unconfigure(config: pytest.Config) -> None:
    run = config.stash.get(_RUN, None)
    if run is not None:
        run.close()


def _marker_options(item: pytest.Item) -> dict[str, Any]:
    marker = item.get_closest_marker(_MARKER)
    return dict(marker.kwargs) if marker is not None else {}


_DESELECTED = pytest.StashKey[set[Path]]()


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Learn the node ids shared by several files, before any is deselected."""
    config.stash[_RUN].names.learn(items)


def pytest_deselected(items: list[pytest.Item]) -> None:
    """A deselected test still owns its cassette, and its module was not run whole."""
    for item in items:
        run = item.config.stash[_RUN]
        item.config.stash.setdefault(_DESELECTED, set()).add(item.path)
        if run.opted_in(item):
            run.report.owned.add(str(cassette_of_test(run.directory, run.names.of(item))))


@pytest.hookimpl(trylast=True)
def pytest_collection_finish(session: pytest.Session) -> None:
    """Note the cassettes the collected tests own, and the directories of modules run whole: there a
    cassette nothing owns is stale."""
    config = session.config
    run = config.stash[_RUN]
    partial = config.stash.get(_DESELECTED, set()) | {
        (config.invocation_params.dir / arg.split("::")[0]).resolve()
        for arg in config.args
        if "::" in arg
    }
    # --lf drops the tests of a module that passed as it collects the module, telling no hook
    whole_modules_known = not config.getoption("lf", False)
    opted_in = [item for item in session.items if run.opted_in(item)]
    for item in opted_in:
        run.report.owned.add(str(cassette_of_test(run.directory, run.names.of(item))))
        if whole_modules_known and item.path.resolve() not in partial:
            run.report.scopes.add(str(cassettes_of_module(run.directory, run.names.of(item))))
    if opted_in:
        _freeze_what_was_imported(run)


# ----------------------------------------------------------------------------- a test's cassette
@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> Generator[None, None, None]:
    run = item.config.stash[_RUN]
    item.stash[_TEST_BLOCK] = None
    if run.opted_in(item):
        # A failure here is raised by _SetupFailures, inside every wrapper: raised from this
        # wrapper, the wrappers after it would never set up, and their teardown would fail.
        try:
            _begin_test_block(item, run)
        except (Exception, pytest.fail.Exception) as exc:
            item.stash[_SETUP_FAILURE] = _one_line(exc)
    return (yield)


def _begin_test_block(item: pytest.Item, run: _Run) -> None:
    path = cassette_of_test(run.directory, run.names.of(item))
    action = run.action(path)
    if action is None:
        run.report.missing(str(path))
        _fail_missing("for this test at", path, run.mode)
    options = _marker_options(item)
    block = run.block(path, item.nodeid, action, live=tuple(options.get("live", ())))
    _hold_garbage_collection(item)
    block.activate()
    _in_the_tests_context(item)
    item.stash[_TEST_BLOCK] = block


def _in_the_tests_context(item: pytest.Item) -> None:
    """``unittest.IsolatedAsyncioTestCase`` (Python 3.11 and later) runs ``setUp``, the test and
    ``tearDown`` in a copy of the context taken when its instance was made, which pytest makes
    as it collects: without the test's cassette, so nothing was recorded (Tortoise ORM's
    ``contrib.test.TestCase``). A copy taken now has it."""
    instance = getattr(item, "instance", None)
    if isinstance(getattr(instance, "_asyncioTestContext", None), contextvars.Context):
        instance._asyncioTestContext = contextvars.copy_context()  # type: ignore[union-attr]


def _freeze_what_was_imported(run: _Run) -> None:
    """Set what the suite's imports and collection made (the app, its libraries: hundreds of
    thousands of objects in a large service) apart from the collections before each test,
    which then look at what the tests made alone. A full collection of fief's suite took
    0.19 s, longer than most of its tests; those objects are its modules, classes and
    functions, which no test frees. Given back to the collector when the run ends, unless
    the suite had frozen objects itself."""
    run.froze_imports = not gc.get_freeze_count()  # else the suite froze objects itself: left so
    gc.collect()
    gc.freeze()


def _hold_garbage_collection(item: pytest.Item) -> None:
    """Collect garbage now and none until the test's teardown (see :mod:`timetracer_otel._gc_hold`):
    recording and replaying the test free the same objects at the same points."""
    gc.collect()
    _gc_hold.hold()
    item.stash[_GC_HELD] = True


class _AsyncSteps:
    """Async tests and fixtures run each step under the cassette active when pytest runs it,
    whatever task their plugin runs them in (see :mod:`timetracer_otel._pytest.coroutines`);
    around the plugins that run them (AnyIO's, pytest-asyncio's)."""

    @pytest.hookimpl(wrapper=True, tryfirst=True)
    def pytest_pyfunc_call(self, pyfuncitem: pytest.Function) -> Generator[None, Any, Any]:
        if pyfuncitem.stash.get(_TEST_BLOCK, None) is None:
            return (yield)
        with swapped(pyfuncitem, "obj"):
            return (yield)

    @pytest.hookimpl(wrapper=True, tryfirst=True)
    def pytest_fixture_setup(
        self, fixturedef: pytest.FixtureDef[Any], request: pytest.FixtureRequest
    ) -> Generator[None, Any, Any]:
        # a fixture of a test class: AnyIO and pytest-asyncio bind it to the test's instance
        if running_block() is None or inspect.ismethod(fixturedef.func):
            return (yield)
        with swapped(fixturedef, "func"):
            return (yield)


class _SetupFailures:
    """Fails the set-up of a test whose cassette could not be opened (missing in a replay-only
    run, unreadable, refused), from a plain hook that runs after every wrapper set up."""

    @pytest.hookimpl(tryfirst=True)
    def pytest_runtest_setup(self, item: pytest.Item) -> None:
        failure = item.stash.get(_SETUP_FAILURE, None)
        if failure is not None:
            raise failure


def _one_line(error: BaseException) -> BaseException:
    """A cassette that cannot be used as the one line that names it and says why, without the
    traceback through timetracer's frames; any other error as it is."""
    if isinstance(error, CassetteError):
        return pytest.fail.Exception(str(error), pytrace=False)
    return error


def _fail_missing(where: str, path: Path, mode: str) -> NoReturn:
    pytest.fail(
        f"timetracer: no cassette {where} {shown(path)} and --timetracer-mode={mode} only replays: "
        "record it with pytest --timetracer-mode=once",
        pytrace=False,
    )


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    if report.when in ("setup", "call") and report.failed:
        item.stash[_CALL_FAILED] = True
        _note_replayed_fixtures(item)
    return report


def _note_replayed_fixtures(item: pytest.Item) -> None:
    """A test failed while it recorded: the wider-scoped fixtures it uses that were replayed,
    whose set-up did not run for real (a database they create), for the report to name."""
    run = item.config.stash.get(_RUN, None)
    block = item.stash.get(_TEST_BLOCK, None)
    if run is None or block is None or block.action != RECORD:
        return
    used = getattr(item, "fixturenames", ())
    run.report.replayed_for_failed.update(
        fixturedef.argname
        for fixturedef, fixture in run.fixture_blocks.items()
        if fixture.action == REPLAY and fixturedef.argname in used
    )


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_teardown(
    item: pytest.Item, nextitem: pytest.Item | None
) -> Generator[None, None, None]:
    errored = False
    try:
        return (yield)
    except pytest.skip.Exception:
        raise
    except BaseException as exc:
        # a teardown error: its cassette would answer with what went wrong; not one of a wider
        # fixture torn down after the last test of its scope (its calls are in its own cassette)
        errored = not _raised_by_wider_fixtures(exc)
        raise
    finally:
        if item.stash.get(_GC_HELD, False):
            item.stash[_GC_HELD] = False
            _gc_hold.release()
        block = item.stash.get(_TEST_BLOCK, None)
        if block is not None:
            item.stash[_TEST_BLOCK] = None
            block.deactivate()
            failed = item.stash.get(_CALL_FAILED, False) or errored
            outcome = block.close(failed=failed)
            run = item.config.stash[_RUN]
            run.report.add(outcome, is_test=True)
            if not failed:
                _fail_unless_faithful(
                    outcome, strict=bool(_marker_options(item).get("strict", False))
                )


def _raised_by_wider_fixtures(exc: BaseException) -> bool:
    """Whether each error of ``exc`` (an exception group's too) was raised as a fixture wider than
    a function was torn down: the innermost fixture finishing in its traceback is a class,
    module, package or session one (a session fixture dropping its database after the last
    test)."""
    leaves = getattr(exc, "exceptions", None)
    if isinstance(leaves, tuple) and leaves:
        return all(_raised_by_wider_fixtures(leaf) for leaf in leaves)
    scope = None
    traceback = exc.__traceback__
    while traceback is not None:
        finishing = traceback.tb_frame.f_locals.get("self")
        if traceback.tb_frame.f_code.co_name == "finish" and isinstance(finishing, FixtureDef):
            scope = finishing.scope
        traceback = traceback.tb_next
    return scope is not None and scope != "function"


def _fail_unless_faithful(outcome: BlockOutcome, strict: bool) -> None:
    """Fail a test that reached for the network, even where the code under test caught the refusal; with
    ``strict``, also one whose calls did not all match (each already raised at its call site) or were not all made."""
    lines = [f"  refused connection: {target}" for target in outcome.refused]
    if strict:
        lines += [f"  unmatched: {line}" for line in outcome.unmatched]
        lines += [f"  recorded but unused: {label}" for label in outcome.unused]
    if lines:
        pytest.fail(
            "\n".join([f"timetracer replay of {shown(outcome.path)} failed:", *lines]),
            pytrace=False,
        )


# ----------------------------------------------------------------------------- fixtures of wider scopes
@pytest.hookimpl(wrapper=True)
def pytest_fixture_setup(
    fixturedef: pytest.FixtureDef[Any], request: pytest.FixtureRequest
) -> Generator[None, Any, Any]:
    run = request.config.stash[_RUN]
    item = getattr(request, "_pyfuncitem", None)
    if (
        fixturedef.scope == "function"
        or item is None
        or not run.opted_in(item)
        or not _project_fixture(fixturedef, run)
    ):
        return (yield)
    instance = cassette_of_fixture(
        run.directory,
        run.names.of(request.node),
        fixturedef.argname,
        getattr(request, "param", None),
    )
    run.fixture_paths[instance] += 1
    # the same scope instance again (a parametrised dependency changed)
    if run.fixture_paths[instance] > 1:
        instance = instance.with_name(f"{instance.stem}#{run.fixture_paths[instance]}.json")
    path = run.fixture_cassette(instance, item)
    # Replay-only and no cassette: the fixture made no call when it was recorded, and may make none now.
    action = run.action(path) or REPLAY
    # Seeded with the run's id and the worker's own instance, on the clock of the first worker
    # to set it up: each pytest-xdist worker draws values of its own, as without timetracer (the
    # same uuid4() on two workers collides in the database they share), at the same instants.
    seed = f"{run.uid}\0{of_worker(instance, run.worker)}"
    clock_from = (
        first_instant(Path(run.fixture_clocks), instance)
        if action == RECORD and run.fixture_clocks is not None
        else None
    )
    run.report.owned.add(str(path))  # even when it cannot be opened: never stale
    try:
        block = run.block(
            path,
            f"fixture {fixturedef.argname}",
            action,
            keep_empty=False,
            seed=seed,
            clock_from=clock_from,
        )
    except Exception as exc:
        failure = _one_line(exc)
        _fixture_failed(fixturedef, request, failure)
        raise failure from None
    run.fixture_blocks[fixturedef] = block
    block.activate()
    try:
        result = yield
    except BaseException as exc:
        block.deactivate()
        if not isinstance(exc, pytest.skip.Exception):
            # its set-up raised: a cassette would replay what went wrong, so none is kept
            run.fixture_blocks.pop(fixturedef, None)
            run.report.add(block.close(failed=block.action == RECORD), is_test=False)
        raise
    block.deactivate()
    # runs first at teardown: the fixture's own teardown comes next
    fixturedef.addfinalizer(block.activate)
    return result


def _fixture_failed(
    fixturedef: pytest.FixtureDef[Any], request: pytest.FixtureRequest, error: BaseException
) -> None:
    """Keep ``error`` as the fixture's outcome, as pytest does when the fixture itself raises:
    each test using this instance then fails with it, not with pytest's own assertion."""
    failure: Any = (error, error.__traceback__) if pytest.version_tuple >= (8, 2) else error
    fixturedef.cached_result = (None, fixturedef.cache_key(request), failure)  # type: ignore[arg-type]


def _project_fixture(fixturedef: pytest.FixtureDef[Any], run: _Run) -> bool:
    """A fixture of the project's own (a conftest or test module), not of an installed pytest
    plugin; seen through the wrapper a plugin may have put around it: pytest-asyncio 0.21 keeps
    the fixture's function as the wrapper's ``__wrapped__``, AnyIO in the wrapper's closure."""
    function = inspect.unwrap(fixturedef.func)
    try:
        kept = list(inspect.getclosurevars(function).nonlocals.values())
    except (TypeError, ValueError):
        kept = []
    return any(
        _in_project(candidate, run.rootpath)
        for candidate in (function, *(inspect.unwrap(v) for v in kept if inspect.isroutine(v)))
    )


def _in_project(function: Any, rootpath: Path) -> bool:
    try:
        path = Path(inspect.getfile(function)).resolve()
    except (TypeError, OSError, ValueError):
        return False
    return in_project(path, rootpath)


def pytest_fixture_post_finalizer(
    fixturedef: pytest.FixtureDef[Any], request: pytest.FixtureRequest
) -> None:
    run = request.config.stash.get(_RUN, None)
    block = run.fixture_blocks.pop(fixturedef, None) if run is not None else None
    if block is None:
        return
    with contextlib.suppress(IndexError, ValueError):  # not reactivated: its set-up failed
        block.deactivate()
    outcome = block.close()
    run.report.add(outcome, is_test=False)  # type: ignore[union-attr]


# ----------------------------------------------------------------------------- the report, xdist
@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node: Any) -> None:
    """pytest-xdist's controller, starting a worker: give it the run's fixture clocks."""
    node.workerinput[WORKERINPUT_KEY] = node.config.stash[_RUN].fixture_clocks_for_workers()


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    run = session.config.stash[_RUN]
    run.report.failures = {
        kind: [count, first] for kind, (count, first) in failures(run.counted_before).items()
    }
    workeroutput = getattr(session.config, "workeroutput", None)
    if workeroutput is not None:  # a pytest-xdist worker: the controller reports
        workeroutput["timetracer"] = run.report.as_data()


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    run = config.stash[_RUN]
    if run.mode == "off" or hasattr(config, "workerinput"):
        return
    report = run.report
    if not any(report.tests.values()) and not any(report.fixtures.values()) and not report.unopened:
        chosen = config.getoption("--timetracer-mode")
        if chosen and not run.autouse:  # asked for, and nothing took it: the tests ran live
            terminalreporter.section("timetracer")
            terminalreporter.write_line(
                f"--timetracer-mode={chosen} was given, but no test used a cassette (they ran live): set "
                f"timetracer_autouse = true in the pytest configuration, or mark tests with @pytest.mark.{_MARKER}"
            )
        return
    terminalreporter.section("timetracer")
    recorded = report.tests[RECORD] or report.fixtures[RECORD]
    # a run that only replayed made no key, whoever made one meanwhile
    report.key_file, report.created_key = run.key_file, run.created_key() if recorded else None
    for line in report.lines():  # a cassette's labels and file names: never raw on the terminal
        terminalreporter.write_line(printable(line))
    stale = report.stale()
    if stale and (config.getoption("--timetracer-prune") or run.mode == "rewrite"):
        for path in stale:
            Path(path).unlink(missing_ok=True)
        terminalreporter.write_line(
            f"removed {len(stale)} stale cassettes (no test owns them any more)"
        )
    elif stale:
        terminalreporter.write_line(
            f"stale: {len(stale)} cassettes no test owns any more (remove them with --timetracer-prune):"
        )
        for path in stale:
            terminalreporter.write_line(f"  {printable(shown(path))}")


class _XdistController:
    """Merges the workers' reports, and replays each recording process's tests on one worker
    (registered only where pytest-xdist is installed)."""

    def __init__(self, run: _Run) -> None:
        self.run = run

    @pytest.hookimpl(tryfirst=True)
    def pytest_xdist_make_scheduler(self, config: pytest.Config, log: Any) -> Any:
        """For a run that replays and distributes with ``load`` (what ``-n`` chooses), the
        tests grouped as they were recorded (see :mod:`._pytest.distribution`); other
        distributions are the user's choice, kept."""
        if self.run.mode in ("all", "rewrite", "off") or config.getvalue("dist") != "load":
            return None
        return recorded_order_scheduler(config, log, self.run.directory)

    @pytest.hookimpl
    def pytest_testnodedown(self, node: Any, error: Any) -> None:
        data = getattr(node, "workeroutput", {}).get("timetracer")
        if data is not None:
            self.run.report.merge(data)


@pytest.hookimpl(trylast=True)
def pytest_sessionstart(session: pytest.Session) -> None:
    config = session.config
    if config.pluginmanager.hasplugin("xdist") and not hasattr(config, "workerinput"):
        config.pluginmanager.register(_XdistController(config.stash[_RUN]), "timetracer-xdist")


# ----------------------------------------------------------------------------- explicit blocks
@contextlib.contextmanager
def _block(
    path: Path, label: str, action: str, run: _Run, strict: bool, live: tuple[str, ...]
) -> Iterator[object]:
    block = run.block(path, label, action, live=live)
    block.activate()
    error: BaseException | None = None
    try:
        yield block.state
    except BaseException as exc:
        error = exc
        raise
    finally:
        block.deactivate()
        outcome = block.close(error)
        run.report.add(outcome, is_test=True)
    _fail_unless_faithful(outcome, strict)


def _explicit(
    request: pytest.FixtureRequest, path: Path, strict: bool, live: tuple[str, ...]
) -> AbstractContextManager[object]:
    run = request.config.stash[_RUN]
    if run.mode == "off":
        return contextlib.nullcontext()
    action = run.action(path)
    if action is None:
        _fail_missing("at", path, run.mode)
    return _block(path, request.node.nodeid, action, run, strict, live)


@pytest.fixture
def timetracer_replay(
    request: pytest.FixtureRequest,
) -> Callable[..., AbstractContextManager[object]]:
    """``with timetracer_replay("cassettes/x.json", strict=False, live=()):`` replays the calls made in the block.

    A missing cassette is recorded (``--timetracer-mode=once``); ``all`` re-records it.
    """

    def use(
        cassette: PathLike, *, strict: bool = False, live: tuple[str, ...] = ()
    ) -> AbstractContextManager[object]:
        return _explicit(request, Path(cassette), strict, tuple(live))

    return use


@pytest.fixture
def timetracer_record(
    request: pytest.FixtureRequest,
) -> Callable[..., AbstractContextManager[object]]:
    """``with timetracer_record("name"):`` records, then replays, the calls made in the block as ``<dir>/name.json``.

    A name ending in ``.json.gz`` is recorded gzip-compressed.
    """
    directory = request.config.stash[_RUN].directory

    def use(name: str, *, strict: bool = False) -> AbstractContextManager[object]:
        cassette = directory / (name if name.endswith((".json", ".json.gz")) else f"{name}.json")
        return _explicit(request, cassette, strict, ())

    return use
