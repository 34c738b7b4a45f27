"""SQL parameters and string literals are found secret by the column they meet in the statement,
whatever the placeholder style, and a live statement is hidden exactly as the recorded one was."""

from __future__ import annotations

import json
import logging
from typing import Any

import pytest

from timetracer_otel.cassette.values import decode_value, encode_value
from timetracer_otel.redaction import REDACTED, Redactor
from timetracer_otel.secret_columns import SecretColumns

S = "s3cret-value"  # what each statement below must hide


def _hidden(statement: str, parameters: Any, operation: str = "execute") -> dict[str, Any]:
    """The call's request (decoded) after redaction, as a cassette without a key keeps it."""
    request = encode_value(
        {
            "operation": operation,
            "dialect": "postgresql+psycopg2",
            "statement": statement,
            "parameters": parameters,
        }
    )
    call = {"protocol": "sql", "request": request, "response": None}
    Redactor().document({"calls": [call]})
    return decode_value(call["request"])


R = REDACTED
RB = REDACTED.encode()  # bytes hidden stay bytes: a replay without the key gives the app bytes


@pytest.mark.parametrize(
    ("statement", "parameters", "operation", "expected"),
    [
        ("INSERT INTO u (name, password) VALUES (%s, %s)", [("a", S), ("b", S)], "executemany", [("a", R), ("b", R)]),
        ("INSERT INTO u (name, password) VALUES (%s, %s), (%s, %s)", ("a", S, "b", S), "execute", ("a", R, "b", R)),
        ("UPDATE u SET password_hash=%s, x=%s WHERE id=%s", (S, "x", 7), "execute", (R, "x", 7)),
        ("SELECT id FROM u WHERE token = %s AND name = %s", (S, "ann"), "execute", (R, "ann")),
        ("SELECT id FROM u WHERE lower(u.api_key) = lower(?) OR name IN (?, ?)", (S, "a", "b"), "execute", (R, "a", "b")),
        ("SELECT id FROM u WHERE name = ? AND refresh_token IN (?, ?)", ("ann", S, S), "execute", ("ann", R, R)),
        ("SELECT id FROM u WHERE name = $2 AND token = $1", (S, "ann"), "execute", (R, "ann")),
        ("INSERT INTO u (name, hashed_password) VALUES (?, ?) RETURNING id, hashed_password", ("ann", S), "execute", ("ann", R)),
        # SQLAlchemy's multi-row insert returning rows in order ("insertmanyvalues")
        ("INSERT INTO u (email, password_hash, password_salt) SELECT p0::VARCHAR, p1::BYTEA, p2::BYTEA FROM (VALUES ($1::VARCHAR, $2::BYTEA, $3::BYTEA, 0), ($4::VARCHAR, $5::BYTEA, $6::BYTEA, 1)) AS imp_sen(p0, p1, p2, sen_counter) ORDER BY sen_counter RETURNING u.id, u.id AS id__1",
         ("a", S.encode(), S.encode(), "b", S.encode(), S.encode()), "execute", ("a", RB, RB, "b", RB, RB)),
        ("INSERT INTO u (email, password) SELECT p1, p0 FROM (VALUES (%(a)s, %(b)s, 0)) AS imp_sen(p0, p1, sen_counter)", {"a": S, "b": "x"}, "execute", {"a": R, "b": "x"}),
        ("INSERT INTO u (id, secret) VALUES (:id, :v) ON CONFLICT (id) DO UPDATE SET secret = EXCLUDED.secret", {"id": 1, "v": S}, "execute", {"id": 1, "v": R}),
        ("INSERT INTO u (id) VALUES (%(id)s) ON CONFLICT (id) DO UPDATE SET password = %(p)s", {"id": 1, "p": S}, "execute", {"id": 1, "p": R}),
        ("UPDATE u SET note = %(note)s WHERE id = %(id)s", {"note": "n", "id": 1, "new_password": S}, "execute", {"note": "n", "id": 1, "new_password": R}),
        ("SELECT data ? %s FROM u WHERE password = %s", ("k", S), "execute", ("k", R)),  # PostgreSQL's jsonb "?" is no parameter
        # JSON in a text column (a webhook payload): its members named like a secret hidden where they stand
        ("INSERT INTO logs (payload) VALUES (%s)", ('{"client_id": "c1", "client_secret": "' + S + '"}',), "execute", ('{"client_id": "c1", "client_secret": "' + R + '"}',)),
        ("INSERT INTO logs (payload) VALUES (%(p)s)", {"p": '[{"n": 1, "api_key": {"v": "' + S + '"}}]'}, "execute", {"p": '[{"n": 1, "api_key": "' + R + '"}]'}),
        ("INSERT INTO logs (payload) VALUES (%s)", ('{"client_id": "c1"}',), "execute", ('{"client_id": "c1"}',)),
        # a json/jsonb value the driver takes as a dict: its secret members alone
        ("INSERT INTO logs (payload) VALUES (%s)", ({"client_id": "c1", "client_secret": S},), "execute", ({"client_id": "c1", "client_secret": R},)),
        # a settings table of name-value pairs: the value whose name or key is a secret's
        ("INSERT INTO sys_config (name, key, value) VALUES ($1, $2, $3)", ("Mail password", "EMAIL_PASSWORD", S), "execute", ("Mail password", "EMAIL_PASSWORD", R)),
        ("INSERT INTO settings (key, value) VALUES (%s, %s)", [("SITE_TITLE", "Shop"), ("smtp_password", S)], "executemany", [("SITE_TITLE", "Shop"), ("smtp_password", R)]),
        ("UPDATE settings SET value = :v WHERE key = :k", {"v": S, "k": "api_token"}, "execute", {"v": R, "k": "api_token"}),
        ("UPDATE settings SET value = :v WHERE key = :k", {"v": "Shop", "k": "SITE_TITLE"}, "execute", {"v": "Shop", "k": "SITE_TITLE"}),
        # a multi-row insert of tags (Dagster's run tags): each row's value by its own key
        ("INSERT INTO kv (key, value) VALUES (%(key_m0)s, %(value_m0)s), (%(key_m1)s, %(value_m1)s)",
         {"key_m0": "color", "value_m0": "green", "key_m1": "api_token", "value_m1": S}, "execute",
         {"key_m0": "color", "value_m0": "green", "key_m1": "api_token", "value_m1": R}),
        ("INSERT INTO kv (key, value) VALUES (?, ?), (?, ?)", ("api_token", S, "color", "green"), "execute", ("api_token", R, "color", "green")),
        # Airflow's variable table: its value column is "val"
        ("INSERT INTO variable (key, val, description) VALUES (%(key)s, %(val)s, %(description)s)",
         {"key": "api_secret_key", "val": S, "description": "d"}, "execute", {"key": "api_secret_key", "val": R, "description": "d"}),
        ("UPDATE variable SET val=%(val)s WHERE variable.key = %(key_1)s", {"val": S, "key_1": "db_password"}, "execute", {"val": R, "key_1": "db_password"}),
        # SQLAlchemy names a comparison's parameter <table>_<column>: a table named like a secret
        # (ZenML's api_key) makes no secret of its ids; a secret column stays one
        ("UPDATE api_key SET name=%(name)s WHERE api_key.id = %(api_key_id)s", {"name": "n", "api_key_id": "k1"}, "execute", {"name": "n", "api_key_id": "k1"}),
        ('UPDATE "api_key" SET name=%(name)s WHERE "api_key".id = %(api_key_id)s', {"name": "n", "api_key_id": "k1"}, "execute", {"name": "n", "api_key_id": "k1"}),
        ("UPDATE app.api_key SET name=%(name)s WHERE app.api_key.id = %(api_key_id)s", {"name": "n", "api_key_id": "k1"}, "execute", {"name": "n", "api_key_id": "k1"}),
        ("SELECT t.id FROM t WHERE t.token = %(t_token)s", {"t_token": S}, "execute", {"t_token": R}),
        ("UPDATE api_key SET name=%(name)s WHERE id = %(api_key_id)s", {"name": "n", "api_key_id": S}, "execute", {"name": "n", "api_key_id": R}),
    ],
)  # fmt: skip
def test_parameters_meeting_a_secret_column_are_hidden(
    statement: str, parameters: Any, operation: str, expected: Any
) -> None:
    assert _hidden(statement, parameters, operation)["parameters"] == expected


def test_string_literals_meeting_a_secret_column_are_hidden_in_place() -> None:
    statement = (
        "INSERT INTO u (name, hashed_password) VALUES ('ann', 'argon-it''s'), ('bob', 'x') -- 'c'"
    )
    assert (
        _hidden(statement, ())["statement"]
        == f"INSERT INTO u (name, hashed_password) VALUES ('ann', '{R}'), ('bob', '{R}') -- 'c'"
    )
    where = _hidden("SELECT 1 FROM u WHERE \"token\" = 'tok-1234567' AND note = 'token'", ())[
        "statement"
    ]
    assert where == f"SELECT 1 FROM u WHERE \"token\" = '{R}' AND note = 'token'"


def test_a_literal_found_by_its_column_is_hidden_wherever_else_it_appears() -> None:
    calls = [
        {
            "protocol": "sql",
            "request": {
                "operation": "execute",
                "statement": "UPDATE u SET token = 'tok-literal-99'",
                "parameters": [],
            },
        },
        {
            "protocol": "redis",
            "request": {"command": "SET", "args": ["last", "tok-literal-99"]},
            "response": {"reply": True},
        },
    ]
    doc = {"calls": json.loads(json.dumps([encode_value(call) for call in calls]))}
    Redactor().document(doc)
    assert "tok-literal-99" not in json.dumps(doc)


def test_a_live_statement_is_hidden_as_the_recorded_one_was() -> None:
    """What replay matches a live call on equals what the cassette kept."""
    statement = "INSERT INTO u (name, password) VALUES (%s, %s), (%s, 'lit-pass-1') ON CONFLICT (name) DO UPDATE SET password = %s"
    parameters = ("a", S, "b", S)
    request = {
        "operation": "execute",
        "dialect": "postgresql+psycopg2",
        "statement": statement,
        "parameters": parameters,
    }
    live = decode_value(Redactor().protocol_request("sql", encode_value(request)))
    assert live == _hidden(statement, parameters)
    assert live["parameters"] == ("a", R, "b", R) and "lit-pass-1" not in live["statement"]


def test_a_value_an_sql_error_quotes_under_a_secret_column_is_hidden_everywhere() -> None:
    """PostgreSQL's DETAIL names the column: the value is hidden there, in the span's status, and
    wherever else the cassette quotes it."""
    message = 'duplicate key value violates unique constraint "u_api_key_key"\nDETAIL:  Key (api_key)=(k-1234567890) already exists.'
    pair = "Key (org, api_key)=(acme, k-1234567890)"
    doc = {
        "calls": [
            {"protocol": "sql", "request": {"operation": "execute", "statement": "UPDATE u SET api_key = other", "parameters": []},
             "response": None, "error": {"type": "psycopg.errors.UniqueViolation", "message": message}},
            {"protocol": "redis", "request": {"command": "GET", "args": ["cache:k-1234567890"]}, "response": {"reply": None}},
        ],
        "spans": [{"span_id": "00000000000000aa", "status": {"code": "ERROR", "description": pair}, "attributes": {}, "events": []}],
    }  # fmt: skip
    Redactor().document(doc)
    assert "k-1234567890" not in json.dumps(doc)
    assert doc["calls"][0]["error"]["message"].endswith(f"Key (api_key)=({R}) already exists.")
    assert doc["spans"][0]["status"]["description"] == f"Key (org, api_key)=(acme, {R})"


def test_rows_holding_json_with_a_secret_member_are_hidden() -> None:
    """A text column of JSON and a jsonb column the driver parsed: their secret members alone."""
    request = encode_value(
        {
            "operation": "execute",
            "dialect": "postgresql+psycopg",
            "statement": "SELECT payload, data FROM logs",
            "parameters": (),
        }
    )
    response = encode_value(
        {
            "description": [["payload"], ["data"]],
            "rows": [
                (
                    '{"event": "client.updated", "client_secret": "' + S + '"}',
                    {"refresh_token": S, "n": 2},
                )
            ],
        }
    )
    call = {"protocol": "sql", "request": request, "response": response}
    Redactor().document({"calls": [call]})
    assert decode_value(call["response"])["rows"] == [
        ('{"event": "client.updated", "client_secret": "' + R + '"}', {"refresh_token": R, "n": 2})
    ]


def test_a_column_that_held_a_secret_found_by_value_is_learned_and_named_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """lnbits' wallet keys under ``inkey``: the key a request sent is found by value; the other
    rows' keys, and a later cassette's INSERT of one, are hidden too, and the log names the
    column once. Ids and names stay readable."""
    sent, other, later = (f"{n}" * 32 for n in "abc")

    def cassette(*calls: dict[str, Any]) -> dict[str, Any]:
        return {"calls": json.loads(json.dumps([encode_value(call) for call in calls]))}

    listing = {
        "protocol": "sql",
        "request": {
            "operation": "execute",
            "statement": "SELECT id, name, inkey FROM wallets",
            "parameters": [],
        },
        "response": {
            "description": [["id"], ["name"], ["inkey"]],
            "rows": [
                ["w-000000000000000001", "mine", sent],
                ["w-000000000000000002", "theirs", other],
            ],
        },
    }
    insert = {
        "protocol": "sql",
        "request": {
            "operation": "execute",
            "statement": "INSERT INTO wallets (id, name, inkey) VALUES ($1, $2, $3)",
            "parameters": ["w-000000000000000003", "new", later],
        },
    }
    columns = SecretColumns()
    first, second = cassette(listing), cassette(insert)
    with caplog.at_level(logging.WARNING, logger="timetracer"):
        Redactor().document(first, given=[sent], columns=columns)
        Redactor().document(second, columns=columns)
        Redactor().document(cassette(insert), columns=columns)
    text = json.dumps([first, second])
    assert (sent in text, other in text, later in text) == (False, False, False)
    assert "w-000000000000000001" in text and "theirs" in text and "w-000000000000000003" in text
    assert [r.getMessage().split(":")[1] for r in caplog.records] == [
        " column inkey holds secrets (one was found there by value)"
    ]


def test_a_secret_is_searched_in_payload_ids_and_never_in_the_cassettes_own_members() -> None:
    """A draw's caller is the module that drew (slowapi's suite sent a token spelling a module
    name, and the draw's caller was sealed: replayed without the key it matched nothing); a
    JSON body's ``id`` is payload (a session listed as ``{"id": <its token>}`` was in clear)."""
    token = "tests.test_sessions"
    doc = {
        "id": "c0ffee00",
        "request": {"method": "GET", "path": "/", "headers": [["x-api-token", token]]},
        "calls": [
            {
                "library": "httpx",
                "request": {"method": "GET", "url": "http://127.0.0.1/s", "headers": []},
                "response": {
                    "status": 200,
                    "body": {"encoding": "json", "json": [{"id": token, "kind": token}]},
                },
            }
        ],
        "draws": [{"source": "clock", "kind": "time", "caller": token, "value": 1}],
        "spans": [
            {
                "span_id": "ab",
                "name": "GET",
                "kind": "CLIENT",
                "attributes": {"id": token},
                "events": [],
            }
        ],
    }
    Redactor().document(doc)
    assert doc["draws"][0]["caller"] == token
    assert doc["calls"][0]["response"]["body"]["json"] == [{"id": REDACTED, "kind": REDACTED}]
    assert doc["spans"][0]["attributes"] == {"id": REDACTED}
    assert (doc["spans"][0]["kind"], doc["calls"][0]["library"]) == ("CLIENT", "httpx")


def test_the_value_of_a_name_value_row_whose_name_or_key_is_a_secrets_is_hidden() -> None:
    """A settings table read back (a service's mail settings), and the same row as its API shows
    it: the value alone, where the name or the key names a secret, a title beside the key too."""
    request = encode_value(
        {"operation": "execute", "dialect": "postgresql+asyncpg",
         "statement": "SELECT name, key, value FROM sys_config", "parameters": ()}
    )  # fmt: skip
    rows = [("Site title", "SITE_TITLE", "Shop"), ("邮箱密码", "EMAIL_PASSWORD", S)]
    response = encode_value({"description": [["name"], ["key"], ["value"]], "rows": rows})
    call = {"protocol": "sql", "request": request, "response": response}
    shown = [dict(zip(("name", "key", "value"), row, strict=True)) for row in rows]
    body = {"size": 1, "encoding": "json", "json": {"data": shown}, "json_format": "compact"}
    doc = {"response": {"status": 200, "headers": [], "body": body}, "calls": [call]}
    Redactor().document(doc)
    assert decode_value(call["response"])["rows"] == [rows[0], ("邮箱密码", "EMAIL_PASSWORD", R)]
    assert [item["value"] for item in doc["response"]["body"]["json"]["data"]] == ["Shop", R]


def test_result_columns_are_judged_by_the_column_their_label_selects() -> None:
    """SQLAlchemy labels the columns of joined and legacy queries with the table's name
    (``invite_tokens.group_id AS invite_tokens_group_id``): a table named like a secret made
    every column of it secret, its ids were then hidden by value wherever they stood, and their
    columns learned, in every later cassette (a suite's group and user ids). The token column
    stays hidden, and so does a secret column selected under a harmless label."""
    group, user = "0fb3aaec36c24557a2298e0e5e55901c", "65d83829a48243b9b5936bccc6939afc"
    statement = (
        "SELECT invite_tokens.token AS invite_tokens_token, invite_tokens.group_id AS"
        " invite_tokens_group_id, long_live_tokens_1.user_id AS long_live_tokens_1_user_id,"
        " users.password AS pw FROM invite_tokens JOIN users ON users.group_id ="
        " invite_tokens.group_id LEFT OUTER JOIN long_live_tokens AS long_live_tokens_1 ON"
        " long_live_tokens_1.user_id = users.id WHERE invite_tokens.group_id = ?"
    )
    labels = [
        "invite_tokens_token",
        "invite_tokens_group_id",
        "long_live_tokens_1_user_id",
        "pw",
    ]
    call = {
        "protocol": "sql",
        "request": {"operation": "execute", "statement": statement, "parameters": [group]},
        "response": {"description": [[n] for n in labels], "rows": [[S, group, user, S + "2"]]},
    }
    later = {
        "protocol": "sql",
        "request": {
            "operation": "execute",
            "statement": "SELECT users.id, users.group_id FROM users",
            "parameters": [],
        },
        "response": {"description": [["id"], ["group_id"]], "rows": [[user, group]]},
    }
    columns = SecretColumns()
    first, second = ({"calls": [encode_value(c)]} for c in (call, later))
    Redactor().document(first, columns=columns)
    Redactor().document(second, columns=columns)
    (row,) = decode_value(first["calls"][0]["response"])["rows"]
    assert row == [R, group, user, R]
    assert decode_value(first["calls"][0]["request"])["parameters"] == [group]
    assert decode_value(second["calls"][0]["response"])["rows"] == [[user, group]]
