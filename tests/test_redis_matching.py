"""Redis call data without a server: which arguments are passwords (hidden by the cassette's
redaction, sealed with the key), and which calls match."""

from __future__ import annotations

import json
from typing import Any

import pytest

from timetracer_otel._keys import Key
from timetracer_otel.cassette.calls import CassetteCall
from timetracer_otel.cassette.values import decode_value, encode_value
from timetracer_otel.protocols.redis import command_entry, recorded_view, request_view
from timetracer_otel.redaction import Redactor
from timetracer_otel.replayers.session import ReplayMismatchError, ReplaySession
from timetracer_otel.sealing import Sealer, unsealed

R = "[REDACTED]"
RB = R.encode()  # bytes hidden stay bytes: a replay without the key gives the app bytes


@pytest.mark.parametrize(
    ("args", "redacted"),
    [
        (("AUTH", "pw"), [R]),
        (("AUTH", "alice", b"pw"), ["alice", RB]),
        (
            ("HELLO", 3, "AUTH", "alice", "pw", "SETNAME", "app"),
            [3, "AUTH", "alice", R, "SETNAME", "app"],
        ),
        (
            ("hello", 3, "SETNAME", "auth", "auth", "alice", "pw"),
            [3, "SETNAME", "auth", "auth", "alice", R],
        ),
        (
            ("CONFIG SET", "requirepass", "pw", "maxmemory", "10mb", "masterauth", b"pw2"),
            ["requirepass", R, "maxmemory", "10mb", "masterauth", RB],
        ),
        (("config", "set", "REQUIREPASS", "pw"), ["set", "REQUIREPASS", R]),
        (
            ("MIGRATE", "h", 6379, "", 0, 5000, "COPY", "AUTH", "pw", "KEYS", "AUTH", "b"),
            ["h", 6379, "", 0, 5000, "COPY", "AUTH", R, "KEYS", "AUTH", "b"],
        ),
        (
            ("MIGRATE", "h", 6379, "", 0, 5000, "AUTH2", "alice", "pw", "KEYS", "a"),
            ["h", 6379, "", 0, 5000, "AUTH2", "alice", R, "KEYS", "a"],
        ),
        (
            ("ACL SETUSER", "alice", "on", ">pw1", "<pw2", "#ab12", "!cd34", "~*", "+@all"),
            ["alice", "on", R, R, R, R, "~*", "+@all"],
        ),
        (
            ("SENTINEL SET", "main", "auth-pass", "pw", "quorum", 2),
            ["main", "auth-pass", R, "quorum", 2],
        ),
        (("SET", "AUTH", "pw"), ["AUTH", "pw"]),
        (
            ("HSET", "user:1", "password", "pw"),
            ["user:1", "password", R],
        ),  # a hash field named like a secret
        (("SET", "user:1", "password"), ["user:1", "password"]),
        # a cached object, as JSON text: its members named like a secret hidden where they stand
        (
            ("SET", "session:1", '{"user": 1, "access_token": "t-1", "scopes": ["a"]}', "EX", 60),
            ["session:1", f'{{"user": 1, "access_token": "{R}", "scopes": ["a"]}}', "EX", 60],
        ),
        (  # as bytes, whole: a sealed value inside base64 could not be opened
            ("SET", "session:2", b'{"user": 2, "access_token": "t-2"}'),
            ["session:2", RB],
        ),
        (("SET", "user:1", b'{"name": "ann"}'), ["user:1", b'{"name": "ann"}']),
    ],
)
def test_password_arguments_are_redacted_and_sealed_with_the_key(
    args: tuple, redacted: list[Any]
) -> None:
    """Capture keeps the command whole; the cassette's redaction hides the passwords (a live command in
    replay is hidden the same way before matching), and with the key they are sealed and open back."""
    request = encode_value(command_entry(args))
    assert decode_value(Redactor().protocol_request("redis", json.loads(json.dumps(request)))) == {
        "command": args[0],
        "args": redacted,
    }
    sealer = Sealer(Key(b"k" * 32, "test"))
    call = {
        "protocol": "redis",
        "request": json.loads(json.dumps(request)),
        "response": {"reply": True},
    }
    doc = Redactor().sealing(sealer).document({"calls": [call]})
    assert json.dumps(doc).count("[SEALED:") == sum(
        a != b for a, b in zip(args[1:], redacted, strict=False)
    )
    assert unsealed(doc, sealer)["calls"][0]["request"] == request


def test_secrets_are_hidden_in_config_replies_and_error_messages() -> None:
    """``CONFIG GET`` answers the password; a pipeline's error quotes its commands: both lose it."""
    config = {"protocol": "redis", "request": encode_value({"command": "CONFIG GET", "args": ["*"]}),
              "response": encode_value({"reply": {b"requirepass": b"pw-4711-x", b"maxmemory": b"0"}})}  # fmt: skip
    pipeline = {
        "protocol": "redis",
        "request": encode_value({"pipeline": [{"command": "AUTH", "args": ["x", "pw-4711-x"]}]}),
        "error": {
            "type": "redis.exceptions.ResponseError",
            "message": "Command # 1 (AUTH x pw-4711-x) of pipeline caused error",
        },
    }
    doc = Redactor().document({"calls": [config, pipeline]})
    assert decode_value(doc["calls"][0]["response"]) == {
        "reply": {b"requirepass": RB, b"maxmemory": b"0"}
    }
    assert (
        doc["calls"][1]["error"]["message"] == f"Command # 1 (AUTH x {R}) of pipeline caused error"
    )


def test_replies_holding_json_with_a_secret_member_are_hidden() -> None:
    calls = [
        {"protocol": "redis", "request": encode_value({"command": "GET", "args": ["session:1"]}),
         "response": encode_value({"reply": b'{"user": 1, "refresh_token": "r-1"}'})},
        {"protocol": "redis", "request": encode_value({"command": "MGET", "args": ["a", "b"]}),
         "response": encode_value({"reply": ['{"api_key": "k-1"}', '{"n": 2}']})},
    ]  # fmt: skip
    doc = Redactor().document({"calls": calls})
    assert [decode_value(call["response"])["reply"] for call in doc["calls"]] == [
        RB,
        [f'{{"api_key": "{R}"}}', '{"n": 2}'],
    ]


def _key(command: Any, *args: Any, decode: bool = False) -> Any:
    return request_view({"command": command, "args": list(args), "decode_responses": decode}).key


def test_commands_match_as_redis_py_puts_them_on_the_wire() -> None:
    assert _key("get", 1) == _key("GET", "1") == _key(b"GET", b"1") == _key("GET", bytearray(b"1"))
    assert _key("GET", 1.0) != _key("GET", 1)  # sent as "1.0"
    assert _key("GET", "é") == _key("GET", "é".encode())
    assert _key("client  list") == _key("CLIENT LIST")
    assert _key("GET", "k", decode=True) != _key("GET", "k")  # the reply types differ
    assert _key("GET", "a") != _key("GET", "b")


def test_members_of_a_set_match_in_any_order_where_the_reply_does_not_depend_on_it() -> None:
    """SADD's members, DEL's keys: an app passing a Python set of strings sends them in its
    process's hash order. A list, and commands whose reply follows the arguments, keep theirs."""
    assert _key("SADD", "tags", "a", "b", "c") == _key("sadd", "tags", "c", "a", "b")
    assert _key("DEL", "k1", "k2") == _key("DEL", "k2", "k1")
    assert _key("HDEL", "h", "f1", "f2") == _key("HDEL", "h", "f2", "f1")
    assert _key("SADD", "tags", "a") != _key("SADD", "a", "tags")  # the key is no member
    assert _key("RPUSH", "q", "a", "b") != _key("RPUSH", "q", "b", "a")
    assert _key("MGET", "k1", "k2") != _key("MGET", "k2", "k1")


def _pipeline(
    *commands: tuple, transaction: bool = True, raise_on_error: bool = True
) -> dict[str, Any]:
    entries = [{"command": c[0], "args": list(c[1:])} for c in commands]
    return {
        "pipeline": entries,
        "transaction": transaction,
        "raise_on_error": raise_on_error,
        "decode_responses": False,
    }


def test_a_pipeline_matches_on_its_whole_command_list() -> None:
    both = request_view(_pipeline(("SET", "k", 1), ("get", "k")))
    assert both.key == request_view(_pipeline(("set", "k", "1"), ("GET", b"k"))).key
    assert both.label == "MULTI/EXEC [SET k 1; GET k]"
    assert both.key != request_view(_pipeline(("GET", "k"), ("SET", "k", 1))).key
    assert both.key != request_view(_pipeline(("SET", "k", 1))).key
    assert both.key != request_view(_pipeline(("SET", "k", 1), ("GET", "k"), transaction=False)).key
    assert (
        both.key != request_view(_pipeline(("SET", "k", 1), ("GET", "k"), raise_on_error=False)).key
    )


def test_a_recorded_call_has_the_view_of_its_live_twin() -> None:
    request = {"command": "SET", "args": [b"\xff", 1, 2.5, "x y"], "decode_responses": False}
    view = recorded_view(CassetteCall({"protocol": "redis", "request": encode_value(request)}))
    assert view.key == request_view(request).key
    assert view.label == r"SET \xff 1 2.5 'x y'"
    assert view.fields == {
        "command": "SET",
        "key": r"\xff",
        "args": "1 2.5 'x y'",
        "decode_responses": False,
    }


def test_a_mismatch_writes_binary_arguments_as_escapes() -> None:
    """arq enqueues a pickled job (``\\x80\\x04...``): the error naming the call that no recorded
    call matches wrote its control bytes raw into the server's log."""
    job = {"command": "SET", "args": [b"arq:job:1", b"\x80\x04\x95\x16\x00"], "decode_responses": False}  # fmt: skip
    recorded = {**job, "args": [b"arq:job:1", b"\x80\x04\x95\x17\x00"]}
    document = {
        "calls": [
            {"protocol": "redis", "library": "redis", "request": encode_value(recorded),
             "response": encode_value({"reply": True})},
        ]
    }  # fmt: skip
    with pytest.raises(ReplayMismatchError) as raised:
        ReplaySession(document, "c.json").answer("redis", request_view(job))
    message = str(raised.value)
    assert all(c == "\n" or c.isprintable() for c in message), message
    assert r"SET arq:job:1 \x80\x04\x95\x16\x00" in message
