"""No automatic garbage collection inside a recorded or replayed request: an ORM's identity
map holds objects weakly, and a collection that fell inside a request in one run and not in
the other made replay send a query the cassette did not have.

The app (SQLAlchemy ORM on a SQLite file, through uvicorn) loads a role and its users, whose
objects point at each other, builds a response from throwaway cyclic objects, then reads the
role again; the collector's own callback counts the collections that ran meanwhile.
"""

from __future__ import annotations

import collections
import contextlib
import gc
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from _replay import assert_same_response, new_reports, send
from sqlalchemy import ForeignKey, create_engine, event, select
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, relationship
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, StreamingResponse
from starlette.routing import Route

import timetracer_otel
from timetracer_otel import _gc_hold
from timetracer_otel.config import TraceConfig
from timetracer_otel.integrations.starlette import auto_setup


class _Base(DeclarativeBase):
    pass


class Role(_Base):
    __tablename__ = "roles"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str]
    users: Mapped[list[User]] = relationship(back_populates="role")


class User(_Base):
    __tablename__ = "users"
    id: Mapped[int] = mapped_column(primary_key=True)
    email: Mapped[str]
    role_id: Mapped[int] = mapped_column(ForeignKey("roles.id"))
    role: Mapped[Role] = relationship(back_populates="users")


class _Node:
    """A throwaway object in a reference cycle: what building a response leaves to the collector."""

    def __init__(self) -> None:
        self.me = self


@contextlib.contextmanager
def _collections_started() -> Iterator[list[int]]:
    """The generation of each collection that starts inside the block, as the collector's own
    callback sees them."""
    started: list[int] = []

    def count(phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            started.append(info["generation"])

    gc.callbacks.append(count)
    try:
        yield started
    finally:
        gc.callbacks.remove(count)


def _create_app(url: str, config: TraceConfig) -> Starlette:
    engine = create_engine(url)
    statements: list[str] = []
    event.listen(engine, "before_cursor_execute", lambda *args: statements.append(args[2]))

    def add_user(request: Request) -> JSONResponse:
        statements.clear()
        with _collections_started() as collections, Session(engine) as session:
            role = session.scalars(select(Role).where(Role.name == "admin")).one()
            user = User(email=request.path_params["email"], role=role)
            session.add(user)
            session.commit()
            session.refresh(user)
            garbage = [_Node() for _ in range(5_000)]
            del garbage, role
            members = sorted(u.email for u in user.role.users)
        return JSONResponse(
            {"members": members, "collections": len(collections), "queries": len(statements)}
        )

    def stream(request: Request) -> StreamingResponse:
        """A long response: each chunk made after more garbage than the hold lets pile up."""

        def chunks() -> Iterator[bytes]:
            with _collections_started() as collections:
                for index in range(3):
                    garbage = [_Node() for _ in range(_gc_hold._OVERDUE + 1_000)]
                    del garbage
                    yield f"chunk {index}\n".encode()
            yield f"collections while streaming: {bool(collections)}\n".encode()

        return StreamingResponse(chunks())

    app = Starlette(
        routes=[
            Route("/users/{email}", add_user, methods=["POST"]),
            Route("/stream", stream),
        ]
    )
    auto_setup(app, config=config, plugins=["sqlalchemy"])
    return app


@pytest.fixture
def eager_collector() -> Iterator[None]:
    """A collector that runs after every 50 allocations (700 by default), so that the 5,000
    cyclic objects of a request would start several collections if nothing held it."""
    thresholds = gc.get_threshold()
    gc.set_threshold(50, *thresholds[1:])
    try:
        yield
    finally:
        gc.set_threshold(*thresholds)


@pytest.fixture
def own_hold(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The hold as a process with no request running has it (a request another test left
    running would hold it too), and the collector as it was afterwards."""
    enabled = gc.isenabled()
    monkeypatch.setattr(_gc_hold, "_holders", 0)
    gc.enable()
    yield
    (gc.enable if enabled else gc.disable)()


@pytest.fixture
def holds_by_thread(monkeypatch: pytest.MonkeyPatch) -> dict[int, list[int]]:
    """``[holds, releases]`` made by each thread: a server's requests run in its own thread,
    so a test counts its own server's holds whatever requests other tests left running."""
    counts: dict[int, list[int]] = collections.defaultdict(lambda: [0, 0])

    def counted(function: Callable[[], None], index: int) -> Callable[[], None]:
        def call() -> None:
            counts[threading.get_ident()][index] += 1
            function()

        return call

    monkeypatch.setattr(_gc_hold, "hold", counted(_gc_hold.hold, 0))
    monkeypatch.setattr(_gc_hold, "release", counted(_gc_hold.release, 1))
    return counts


def test_no_collection_runs_inside_a_recorded_or_replayed_request(
    serve: Callable[..., Any],
    cassette_dir: Path,
    tmp_path: Path,
    eager_collector: None,
    holds_by_thread: dict[int, list[int]],
) -> None:
    """Recorded and replayed, the request runs no collection, sends the same queries, and
    the collector runs again once it is over; the database is gone for the replay. A
    response streamed past the hold's limit collects as it goes."""
    database = tmp_path / "app.db"
    url = f"sqlite:///{database}"
    setup = create_engine(url)
    _Base.metadata.create_all(setup)
    with Session(setup) as session:
        session.add(Role(name="admin"))
        session.commit()
    setup.dispose()
    sent = [
        ("POST", "/users/ada@example.com", {}),
        ("POST", "/users/bob@example.com", {}),
        ("GET", "/stream", {}),
    ]

    record = serve(_create_app(url, TraceConfig(mode="record", cassette_dir=str(cassette_dir))))
    recorded = send(record.url, sent)
    record.stop()  # its requests are over: the last chunk reaches the client before that
    assert timetracer_otel.flush(30), "cassette writer did not drain"
    database.unlink()

    with new_reports() as reports:
        replay = serve(
            _create_app(url, TraceConfig(mode="replay", cassette_path=str(cassette_dir)))
        )
        replayed = send(replay.url, sent)
        replay.stop()

    assert [r.json()["collections"] for r in recorded[:2]] == [0, 0]
    # held no longer than overdue, a response sent for long still lets the collector run
    assert recorded[2].text.endswith("collections while streaming: True\n")
    assert recorded[1].json()["members"] == ["ada@example.com", "bob@example.com"]
    for before, after in zip(recorded, replayed, strict=True):
        assert_same_response(before, after)
    assert all((r.unmatched, r.unused, r.differences) == ([], [], []) for r in reports), reports
    assert not database.exists()
    # each request held the collector (replay's layers each hold it) and gave it back
    for server in (record, replay):
        holds, releases = holds_by_thread[server.thread.ident]
        assert holds == releases >= len(sent)


def test_a_hold_leaves_a_collector_the_app_turned_off_off(own_hold: None) -> None:
    gc.disable()
    try:
        _gc_hold.hold()
        _gc_hold.release()
        assert not gc.isenabled()
    finally:
        gc.enable()


def test_overlapping_holds_give_collection_back_with_the_last_one(own_hold: None) -> None:
    _gc_hold.hold()
    _gc_hold.hold()
    _gc_hold.release()
    assert not gc.isenabled()
    _gc_hold.release()
    assert gc.isenabled()


def test_a_hold_overdue_collects_at_the_next_request(eager_collector: None, own_hold: None) -> None:
    """Requests that always overlap never let the collector run: past the limit, the next
    request's start collects, so memory stays bounded."""
    _gc_hold.hold()
    try:
        with _collections_started() as starts:
            garbage = [_Node() for _ in range(_gc_hold._OVERDUE + 1_000)]
            del garbage
            assert starts == []  # held: nothing collected while the requests ran
            _gc_hold.hold()  # one more request starts while the first still runs
            assert starts != []
            assert gc.get_count()[0] < _gc_hold._OVERDUE
    finally:
        _gc_hold.release()
        _gc_hold.release()
    assert gc.isenabled()


def test_a_response_sent_long_after_the_hold_is_overdue_collects(
    eager_collector: None, own_hold: None
) -> None:
    """A response streamed for hours with no other request starting: each message it sends
    collects once the hold is overdue."""
    _gc_hold.hold()
    try:
        with _collections_started() as starts:
            _gc_hold.collect_if_overdue()
            assert starts == []  # not overdue yet
            garbage = [_Node() for _ in range(_gc_hold._OVERDUE + 1_000)]
            del garbage
            _gc_hold.collect_if_overdue()
            assert starts != []
    finally:
        _gc_hold.release()
    assert gc.isenabled()


def test_what_a_hold_held_back_is_collected_as_it_ends_not_at_the_next_allocation(
    own_hold: None,
) -> None:
    """Left to the next allocation, the deferred collection ran inside the ``ContextVar.reset``
    that follows a request, where a finalizer setting a context variable crashes CPython 3.10
    and 3.11; it runs in ``release()``, and the collector is on again afterwards."""
    _gc_hold.hold()
    garbage = [_Node() for _ in range(5_000)]
    del garbage
    assert gc.get_count()[0] > gc.get_threshold()[0]
    _gc_hold.release()
    assert gc.get_count()[0] < gc.get_threshold()[0] and gc.isenabled()


def test_requests_on_a_large_heap_leave_full_collections_to_the_interpreters_rules(
    own_hold: None,
) -> None:
    """Each request's garbage is collected as it ends, by the interpreter's own choice of
    generations: it puts off a full collection until enough objects wait in the oldest
    generation. Chosen by the counts alone, every hundredth request traversed the whole heap:
    a suite replaying thousands of tests on a growing heap slowed down test after test."""
    kept = [[n] for n in range(200_000)]  # a service's long-lived objects
    gc.collect()
    each = (
        gc.get_threshold()[0] + 100
    )  # a request's garbage: more than a young collection waits for
    with _collections_started() as starts:
        for _ in range(300):
            _gc_hold.hold()
            garbage = [_Node() for _ in range(each)]
            del garbage
            _gc_hold.release()
    assert starts.count(0) >= 250, starts  # each request's garbage, as it ends
    assert 2 not in starts, starts
    del kept
