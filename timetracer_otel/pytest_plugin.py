"""The pytest plugin: ``timetracer_replay`` and ``timetracer_record`` fixtures.

``--timetracer-mode=replay`` (the default) answers the app's outgoing calls from the
cassette, and the clock, UUID and random values drawn in the block as they were recorded;
``record`` makes the same tests record their cassettes live; ``off`` runs them
live without touching cassettes. The test client's own request still reaches the app:
only the calls the app makes are replayed.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Callable, ContextManager, Iterator, Union

import pytest

from timetracer_otel.cassette.reader import load_cassette
from timetracer_otel.config import TraceConfig

__all__ = ["timetracer_replay", "timetracer_record"]

PathLike = Union[str, Path]


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("timetracer")
    group.addoption(
        "--timetracer-mode",
        choices=("replay", "record", "off"),
        default="replay",
        help="timetracer fixtures: replay cassettes (default), record them live, or run live (off)",
    )
    group.addoption(
        "--timetracer-dir",
        default="cassettes",
        help="directory for timetracer_record(name) cassettes (default: ./cassettes)",
    )


@contextlib.contextmanager
def _replaying(cassette: PathLike, strict: bool, live: tuple[str, ...]) -> Iterator[object]:
    from timetracer_otel.determinism import DrawReplayer, install as install_draw_sources, real_time_ns
    from timetracer_otel.determinism import activate as activate_draws
    from timetracer_otel.determinism import deactivate as deactivate_draws
    from timetracer_otel.replayers import install_replayers
    from timetracer_otel.replayers.opening import open_for_replay
    from timetracer_otel.replayers.session import ReplaySession, activate, deactivate

    install_replayers()
    config = TraceConfig(mode="replay")
    opened = open_for_replay(load_cassette(cassette, limits=config.read_limits), str(cassette), config)
    session = ReplaySession(opened.answers, str(cassette), config, live_libraries=live, views=opened.views(str(cassette)))
    install_draw_sources(config.draws)
    draws = DrawReplayer(opened.answers.get("draws"), config.draws, real_time_ns)
    token, draws_token = activate(session), activate_draws(draws)
    try:
        yield session
    finally:
        deactivate_draws(draws_token)
        deactivate(token)
    if strict and (session.unmatched or session.unused()):
        lines = [f"timetracer strict replay of {cassette} failed:"]
        lines += [f"  unmatched: {str(e).splitlines()[0]}" for e in session.unmatched]
        lines += [f"  recorded but unused: {c.view.label}" for c in session.unused()]
        pytest.fail("\n".join(lines), pytrace=False)


def _recording(cassette: PathLike, nodeid: str) -> ContextManager[object]:
    from timetracer_otel._standalone import record_block

    return record_block(Path(cassette), label=nodeid)


@pytest.fixture
def timetracer_replay(request: pytest.FixtureRequest) -> Callable[..., ContextManager[object]]:
    """``with timetracer_replay("cassettes/x.json", strict=False, live=()):`` replays the app's calls.

    In ``--timetracer-mode=record`` the block runs live and (re)writes that cassette.
    """
    mode = request.config.getoption("--timetracer-mode")

    def use(cassette: PathLike, *, strict: bool = False, live: tuple[str, ...] = ()) -> ContextManager[object]:
        if mode == "record":
            return _recording(cassette, request.node.nodeid)
        if mode == "off":
            return contextlib.nullcontext()
        return _replaying(cassette, strict, tuple(live))

    return use


@pytest.fixture
def timetracer_record(request: pytest.FixtureRequest) -> Callable[[str], ContextManager[object]]:
    """``with timetracer_record("name"):`` records the calls made in the block to ``<dir>/name.json``.

    A name ending in ``.json.gz`` is recorded gzip-compressed.

    In ``--timetracer-mode=replay`` (default) the block replays that cassette if it
    exists and records it if it does not, like VCR.py's ``once`` mode.
    """
    mode = request.config.getoption("--timetracer-mode")
    directory = Path(request.config.getoption("--timetracer-dir"))

    def use(name: str, *, strict: bool = False) -> ContextManager[object]:
        cassette = directory / (name if name.endswith((".json", ".json.gz")) else f"{name}.json")
        if mode == "off":
            return contextlib.nullcontext()
        if mode == "replay" and cassette.exists():
            return _replaying(cassette, strict, ())
        return _recording(cassette, request.node.nodeid)

    return use
