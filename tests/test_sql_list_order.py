"""SELECT and GROUP BY lists an ORM builds from a set (Tortoise ORM does), IN lists bound
from one, a CREATE TABLE's constraints taken from one (alembic's batch mode does), and JSON
text whose keys come from one (Phoenix's span attributes): recorded by one process, replayed by another whose string hashes order the
set otherwise, with PostgreSQL unreachable. Every call is answered and every row's columns come back in the replaying
process's order. Likewise the rows of an executemany SQLAlchemy orders by object identity."""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from _replay import APPS_DIR, CONNECTS, Sent, audited_uvicorn_process, send, uvicorn_process
from _services import POSTGRES_ADMIN, closed_port, postgres_schemas
from apps.set_order_app import create_tables

from timetracer_otel._sql_lists import in_list_parameters, order_free

SENT: list[Sent] = [
    ("GET", "/authors/ada", {}),
    ("GET", "/authors/nobody", {}),
    ("GET", "/authors", {}),
    ("GET", "/columns", {}),
    ("GET", "/copy", {}),
    ("GET", "/meta", {}),
]
RECORD_SEED = "0"
_REPORT = re.compile(
    r"^timetracer \[(\w+)\] replayed .*  calls=(\d+)/(\d+)  unused=(\d+)  response=(\w+)$", re.M
)


@pytest.fixture
def schema() -> Iterator[str]:
    with postgres_schemas("") as name:
        asyncio.run(create_tables(POSTGRES_ADMIN, name))
        yield name


def _orders(seed: str) -> tuple[list[str], list[str]]:
    """The app's column order and constraint order in a process with ``PYTHONHASHSEED=seed``."""
    probe = (
        f"import json, sys; sys.path.insert(0, {str(APPS_DIR)!r}); import set_order_app as app; "
        "print(json.dumps([app.SELECTED, list(app.CONSTRAINTS)]))"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe],
        env={**os.environ, "PYTHONHASHSEED": seed},
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    columns, constraints = json.loads(out)
    return columns, constraints


def _replay_seed() -> str:
    """A hash seed under which the app selects its columns, and lists its constraints, in
    another order than the recording's."""
    recorded = _orders(RECORD_SEED)
    return next(
        seed
        for seed in map(str, range(1, 200))
        if all(mine != theirs for mine, theirs in zip(_orders(seed), recorded, strict=True))
    )


def test_lists_built_from_a_set_replay_in_another_process_order(
    cassette_dir: Path, schema: str
) -> None:
    env = {"SET_ORDER_APP_SCHEMA": schema, "TIMETRACER_DIR": str(cassette_dir)}
    record_env = {**env, "TIMETRACER_MODE": "record", "PYTHONHASHSEED": RECORD_SEED}
    record_env["SET_ORDER_APP_DSN"] = POSTGRES_ADMIN
    with uvicorn_process(record_env, "set_order_app:from_environment") as server:
        recorded = send(server.url, SENT)
    assert [r.status_code for r in recorded] == [200] * len(SENT), server.stderr
    assert recorded[0].json()["fetchrow"]["name"] == "ada"
    assert recorded[3].json() == sorted(_orders(RECORD_SEED)[0])
    assert recorded[4].json() == {"copied": 2}
    assert recorded[5].json() == {"status": "UPDATE 1"}

    replay_env = {
        **env,
        "TIMETRACER_MODE": "replay",
        "TIMETRACER_CASSETTE": str(cassette_dir),
        "PYTHONHASHSEED": _replay_seed(),
        "SET_ORDER_APP_DSN": f"postgresql://postgres@127.0.0.1:{closed_port()}/test",
    }
    with audited_uvicorn_process(replay_env, "set_order_app:from_environment") as server:
        replayed = send(server.url, SENT)
    for before, after in zip(recorded, replayed, strict=True):
        assert (after.status_code, after.text) == (before.status_code, before.text), server.stderr
    reports = _REPORT.findall(server.stderr)
    assert [
        (ok, made == recorded_calls, unused, same)
        for ok, made, recorded_calls, unused, same in reports
    ] == [("OK", True, "0", "same")] * len(SENT), server.stderr
    assert not CONNECTS.findall(server.stderr)


@pytest.mark.parametrize(
    ("one", "other", "same"),
    [
        (
            'SELECT "a","b" FROM t GROUP BY a, b LIMIT 2',
            'SELECT "b","a" FROM t GROUP BY b,a LIMIT 2',
            True,
        ),
        ("SELECT DISTINCT a, b FROM t", "SELECT DISTINCT b, a FROM t", True),
        ("SELECT a, b FROM t ORDER BY a, b", "SELECT a, b FROM t ORDER BY b, a", False),
        ("SELECT f(a, b) FROM t", "SELECT f(b, a) FROM t", False),
        ("SELECT 'a, b' FROM t", "SELECT 'b, a' FROM t", False),
        ("SELECT x FROM (SELECT a, b FROM t) s", "SELECT x FROM (SELECT b, a FROM t) s", False),
        ("SELECT t.*, u.* FROM t, u", "SELECT u.*, t.* FROM t, u", False),
        ("SELECT a, b FROM t; SELECT 1", "SELECT b, a FROM t; SELECT 1", False),
        (
            "CREATE TABLE t (a INTEGER, b TEXT, PRIMARY KEY (a), CHECK (b IN ('x', 'y')), FOREIGN KEY(a) REFERENCES p (id))",
            "CREATE TABLE t (a INTEGER, b TEXT, FOREIGN KEY(a) REFERENCES p (id), PRIMARY KEY (a), CHECK (b IN ('x', 'y')))",
            True,
        ),
        (
            "CREATE TEMP TABLE t (a INT, UNIQUE (a), CHECK (a > 0))",
            "CREATE TEMP TABLE t (a INT, CHECK (a > 0), UNIQUE (a))",
            True,
        ),
        ("CREATE TABLE t (a INTEGER, b TEXT)", "CREATE TABLE t (b TEXT, a INTEGER)", False),
        (
            "CREATE TABLE t (unique_code INT, check_no INT)",
            "CREATE TABLE t (check_no INT, unique_code INT)",
            False,
        ),
    ],
)
def test_only_a_statements_own_select_and_group_by_lists_and_table_constraints_are_order_free(
    one: str, other: str, same: bool
) -> None:
    """Order matters everywhere else: ORDER BY, a function's arguments, quoted text, a
    subquery, ``*`` (columns not told apart by expression), a script of statements, a
    table's columns."""
    assert (order_free(one) == order_free(other)) is same


@pytest.mark.parametrize(
    ("statement", "one", "other", "same"),
    [
        ("SELECT * FROM t WHERE a = %s AND n IN (%s, %s)", [1, "x", "y"], [1, "y", "x"], True),
        ("SELECT * FROM t WHERE n IN ($2::TEXT, $3::TEXT) AND a = $1", [1, "x", "y"], [1, "y", "x"], True),
        ("SELECT * FROM t WHERE n IN (%(n_1)s, %(n_2)s)", {"n_1": "x", "n_2": "y"}, {"n_1": "y", "n_2": "x"}, True),
        # names starting or ending in "s" (Airflow's task_instance.state IN (%(state_1_1)s, ...))
        ("SELECT * FROM ti WHERE ti.state IN (%(state_1_1)s, %(state_1_2)s)", {"state_1_1": "x", "state_1_2": "y"}, {"state_1_1": "y", "state_1_2": "x"}, True),
        ("SELECT * FROM t WHERE id IN (%(firsts)s, %(lasts)s)", {"firsts": "x", "lasts": "y"}, {"firsts": "y", "lasts": "x"}, True),
        ("SELECT * FROM t WHERE n NOT IN (:a, :b)", {"a": "x", "b": "y"}, {"a": "y", "b": "x"}, True),
        ("SELECT * FROM t WHERE x = '?' AND n IN (?, ?)", ["x", "y"], ["y", "x"], True),
        ("SELECT * FROM t WHERE a = %s AND n IN (%s, %s)", [1, "x", "y"], ["x", 1, "y"], False),
        ("SELECT f(%s, %s) FROM t", ["x", "y"], ["y", "x"], False),
        ("INSERT INTO t VALUES (%s, %s)", ["x", "y"], ["y", "x"], False),
        ("SELECT * FROM t WHERE id IN (SELECT id FROM u WHERE a = %s AND b = %s)", ["x", "y"], ["y", "x"], False),
    ],
)  # fmt: skip
def test_only_the_values_bound_in_an_in_list_are_order_free(
    statement: str, one: Any, other: Any, same: bool
) -> None:
    """A value outside the list, a function's arguments, a VALUES row and a subquery's
    parameters keep their order; a '?' in quoted text is no parameter."""
    assert (
        in_list_parameters(statement, one, json.dumps)
        == in_list_parameters(statement, other, json.dumps)
    ) is same


_LINK_APP = """
import os
import sys

import sqlalchemy as sa
from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.testclient import TestClient

import timetracer_otel
from timetracer_otel.config import TraceConfig
from timetracer_otel.integrations.starlette import auto_setup

mode, directory, url = sys.argv[1:4]
engine = sa.create_engine(url)
links = sa.Table("links", sa.MetaData(), sa.Column("post", sa.Integer), sa.Column("tag", sa.String))


async def tag(request):
    with engine.begin() as conn:  # the rows in the order of the ORM's objects: another per process
        conn.execute(links.insert(), [{"post": 1, "tag": name} for name in os.environ["TAG_ORDER"].split(",")])
    return JSONResponse({"tagged": True})


app = Starlette(routes=[Route("/tag", tag, methods=["POST"])])
auto_setup(app, TraceConfig(mode=mode, cassette_dir=directory, cassette_path=directory), plugins=["sqlalchemy"])
with TestClient(app) as client:
    print(client.post("/tag").json())
timetracer_otel.flush(30)
"""


@pytest.fixture(params=["sqlite", "psycopg2"])
def links_database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty ``links`` table: SQLite sends SQLAlchemy's batch of rows as an executemany,
    psycopg2 as one INSERT with a VALUES list ("insertmanyvalues")."""
    import sqlalchemy as sa

    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'links.sqlite'}"
        with sa.create_engine(url).begin() as conn:
            conn.exec_driver_sql("CREATE TABLE links (post INTEGER, tag TEXT)")
        yield url
        return
    with postgres_schemas("") as schema:
        url = f"{POSTGRES_ADMIN.replace('postgresql://', 'postgresql+psycopg2://')}?options=-csearch_path%3D{schema}"
        with sa.create_engine(url).begin() as conn:
            conn.exec_driver_sql("CREATE TABLE links (post INTEGER, tag TEXT)")
        yield url


def test_the_rows_of_an_insert_returning_nothing_match_in_any_order(
    tmp_path: Path, links_database: str
) -> None:
    """SQLAlchemy sends a many-to-many's association rows in the order of its objects' identities:
    recorded as a, b, c, replayed as c, a, b, the insert is still answered."""
    script = tmp_path / "link_app.py"
    script.write_text(_LINK_APP)
    cassettes = str(tmp_path / "cassettes")
    for mode, order in (("record", "a,b,c"), ("replay", "c,a,b")):
        done = subprocess.run(
            [sys.executable, str(script), mode, cassettes, links_database],
            env={**os.environ, "TAG_ORDER": order}, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert done.stdout.strip() == "{'tagged': True}", done.stderr
    assert re.search(
        r"\[OK\] replayed POST /tag .*calls=(\d+)/\1  unused=0  response=same", done.stderr
    ), done.stderr


def test_an_executemany_returning_rows_keeps_its_row_order() -> None:
    """With RETURNING, the rows come back in the order sent: that order is part of the call."""
    from timetracer_otel.protocols.sql import live_view

    def key(statement: str, rows: list) -> Any:
        return live_view(
            {
                "operation": "executemany",
                "dialect": "sqlite",
                "statement": statement,
                "parameters": rows,
            }
        ).key

    plain, returning = (
        "INSERT INTO links (post, tag) VALUES (?, ?)",
        "INSERT INTO t (a) VALUES (?) RETURNING id",
    )
    assert key(plain, [(1, "a"), (1, "b")]) == key(plain, [(1, "b"), (1, "a")])
    assert key(returning, [(1,), (2,)]) != key(returning, [(2,), (1,)])


def test_only_an_inserts_batched_rows_are_order_free() -> None:
    """One VALUES list of rows named ``<name>__<row>`` (psycopg2's batches) matches in any row
    order; not with RETURNING, not other statements, not a row's own values swapped."""
    from timetracer_otel.protocols.sql import live_view

    def key(statement: str, parameters: dict) -> Any:
        return live_view(
            {"operation": "execute", "dialect": "postgresql", "statement": statement,
             "parameters": parameters}
        ).key  # fmt: skip

    insert = (
        "INSERT INTO links (post, tag) VALUES (%(post__0)s, %(tag__0)s), (%(post__1)s, %(tag__1)s)"
    )
    one, other = {"post__0": 1, "tag__0": "a", "post__1": 2, "tag__1": "b"}, {
        "post__0": 2, "tag__0": "b", "post__1": 1, "tag__1": "a"}  # fmt: skip
    assert key(insert, one) == key(insert, other)
    assert key(insert, one) != key(insert, {**one, "tag__0": "b", "tag__1": "a"})
    assert key(insert + " RETURNING id", one) != key(insert + " RETURNING id", other)
    update = "UPDATE links SET tag = %(tag__0)s WHERE post = %(post__1)s"
    assert key(update, {"tag__0": "a", "post__1": 1}) != key(update, {"tag__0": 1, "post__1": "a"})


@pytest.mark.parametrize(
    ("one", "other", "same"),
    [
        ('{"a": 1, "b": {"c": 2, "d": 3}}', '{"b": {"d": 3, "c": 2}, "a": 1}', True),
        ('{"a": [1, 2]}', '{"a": [2, 1]}', False),
        ("[1, 2]", "[2, 1]", False),
        ('{"a": 1}', '{"a": 2}', False),
        ("{not json}", "{not json}", True),
        ("{not json}", "{json not}", False),
    ],
)
def test_only_the_keys_of_a_json_objects_text_are_order_free(
    one: str, other: str, same: bool
) -> None:
    """A parameter holding a JSON object's text matches one with the same keys and values in
    another order, named or bound by position; arrays and other text keep their order."""
    from timetracer_otel.protocols.sql import live_view

    for wrap in (lambda text: [text, 7], lambda text: {"meta": text}):
        keys = [
            live_view(
                {
                    "operation": "execute",
                    "dialect": "postgresql",
                    "statement": "UPDATE t SET meta=%s",
                    "parameters": wrap(text),
                }
            ).key
            for text in (one, other)
        ]
        assert (keys[0] == keys[1]) is same
