"""Which cassette answers a replayed request, in a directory: per-signature turns in recording order,
secrets told apart by their fingerprint, cassettes read when chosen, and an honest report."""

from __future__ import annotations

import json
import logging
import re
from collections import Counter
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from _replay import (
    Sent,
    assert_same_response,
    cassette_files,
    new_reports,
    record,
    replay,
    replay_config,
    send,
    uvicorn_process,
)
from apps.replay_app import create_app
from conftest import Upstream

from timetracer_otel._keys import Key
from timetracer_otel.cassette.reader import CassetteError
from timetracer_otel.replayers.selection import CassetteLibrary
from timetracer_otel.sealing import redacted


def _lookup(name: str) -> Sent:
    return ("POST", "/lookup", {"json": {"name": name}})


def _login(password: str) -> Sent:
    return ("POST", "/login", {"json": {"user": "ada", "password": password}})


def _in_recording_order(directory: Path) -> list[tuple[Path, dict[str, Any]]]:
    """The cassettes as read without the key (sealed values as [REDACTED]), in recording order."""
    found = [
        (path, redacted(json.loads(path.read_text("utf-8")))) for path in cassette_files(directory)
    ]
    return sorted(
        found,
        key=lambda item: datetime.fromisoformat(item[1]["recorded_at"].replace("Z", "+00:00")),
    )


def _ids_by_name(directory: Path) -> dict[str, list[str]]:
    """The ids of the /lookup cassettes by the name looked up, in recording order."""
    ids: dict[str, list[str]] = {}
    for _, doc in _in_recording_order(directory):
        ids.setdefault(doc["request"]["body"]["json"]["name"], []).append(doc["id"])
    return ids


def _names_against_recording_order(directory: Path) -> list[Path]:
    """Rename the cassettes so that file-name order is the reverse of recording order; the new paths, in recording order."""
    recorded = _in_recording_order(directory)
    renamed = []
    for position, (path, _) in enumerate(recorded):
        renamed.append(path.with_name(f"{len(recorded) - position:03d}.json"))
        path.rename(renamed[-1])
    assert sorted(renamed) == renamed[::-1]
    return renamed


def test_each_signature_takes_its_cassettes_in_turn(
    serve: Callable[..., Any], upstream: Upstream, cassette_dir: Path
) -> None:
    """Recorded ada, bob, ada, bob, ada; replayed in another interleaving: the Nth request of a signature gets the
    Nth cassette recorded with it, whatever the other signature did meanwhile; after the last, the first again."""
    record(
        serve,
        upstream.url,
        cassette_dir,
        [_lookup(name) for name in ["ada", "bob", "ada", "bob", "ada"]],
    )
    ada, bob = _ids_by_name(cassette_dir)["ada"], _ids_by_name(cassette_dir)["bob"]
    sent = [_lookup(name) for name in ["ada", "ada", "bob", "ada", "bob", "ada", "bob"]]
    replayed, reports = replay(serve, upstream.url, replay_config(cassette_dir), sent)
    assert [r.cassette_id for r in reports] == [
        ada[0],
        ada[1],
        bob[0],
        ada[2],
        bob[1],
        ada[0],
        bob[0],
    ]
    assert [r.json()["query"] for r in replayed] == [
        f"name={options['json']['name']}" for _, _, options in sent
    ]
    assert all(r.ok for r in reports)


def test_the_cassettes_of_a_request_taken_in_turn_stay_parsed_between_turns(
    serve: Callable[..., Any], upstream: Upstream, cassette_dir: Path
) -> None:
    """40 recordings of one request, replayed twice over: the second round is answered with every
    file gone, from the cassettes parsed in the first (they are kept by the size of their files,
    not reloaded on every turn once there are more than a few dozen)."""
    sent = [_lookup("ada")] * 40
    recorded = record(serve, upstream.url, cassette_dir, sent)
    server = serve(create_app(upstream.url, replay_config(cassette_dir)))
    # one collection over both rounds, read once the server stopped: a request's report is
    # made after its response went out, so the last of the first round may come in the second
    with new_reports() as reports:
        send(server.url, sent)
        for path in cassette_files(cassette_dir):
            path.unlink()
        again = send(server.url, sent)
        server.stop()
    taken = Counter(r.cassette_id for r in reports)
    assert len(taken) == 40 and set(taken.values()) == {2} and all(r.ok for r in reports)
    assert_same_response(recorded[0], again[0])


def test_cassettes_are_taken_in_recording_order_not_file_name_order(
    serve: Callable[..., Any], upstream: Upstream, cassette_dir: Path
) -> None:
    record(serve, upstream.url, cassette_dir, [_lookup("ada")] * 3)
    recorded_ids = _ids_by_name(cassette_dir)["ada"]
    renamed = _names_against_recording_order(cassette_dir)
    _, reports = replay(serve, upstream.url, replay_config(cassette_dir), [_lookup("ada")] * 3)
    assert [r.cassette_id for r in reports] == recorded_ids
    assert [r.cassette for r in reports] == [str(path) for path in renamed]


def test_a_wrong_and_a_right_password_are_told_apart_by_their_fingerprint(
    serve: Callable[..., Any], upstream: Upstream, cassette_dir: Path, key_file: Path
) -> None:
    """The cassettes differ only in the redacted password; replayed the other way round, each login gets its own."""
    recorded = record(serve, upstream.url, cassette_dir, [_login("wrong"), _login("right")])
    assert [r.status_code for r in recorded] == [401, 200]
    (wrong_path, wrong), (right_path, right) = _in_recording_order(cassette_dir)
    assert (
        wrong["request"]["body"]["json"]
        == right["request"]["body"]["json"]
        == {"user": "ada", "password": "[REDACTED]"}
    )
    key_id = Key(key_file.read_text("ascii").strip().encode(), "").key_id
    for doc in (wrong, right):
        assert re.fullmatch(rf"hmac-sha256:{key_id}:[0-9a-f]{{64}}", doc["request"]["fingerprint"])
    assert wrong["request"]["fingerprint"] != right["request"]["fingerprint"]
    assert not any('"right"' in path.read_text("utf-8") for path in (wrong_path, right_path))

    replayed, reports = replay(
        serve, upstream.url, replay_config(cassette_dir), [_login("right"), _login("wrong")]
    )
    assert [r.cassette_id for r in reports] == [right["id"], wrong["id"]]
    assert_same_response(recorded[1], replayed[0])
    assert_same_response(recorded[0], replayed[1])
    assert all(r.ok and not r.notes for r in reports)


def test_a_request_refused_before_its_body_was_read_gets_its_own_cassette(
    serve: Callable[..., Any], upstream: Upstream, cassette_dir: Path, key_file: Path
) -> None:
    """A login without its CSRF header is refused before the app reads the body: its cassette has
    no body and the fingerprint of its cookie only. Replayed beside an accepted login with the same
    body, it is chosen by what the app read, not by the body replay reads in order to choose."""
    body = {"user": "ada", "password": "right"}
    refused: Sent = ("POST", "/login", {"json": body, "headers": {"cookie": "csrftoken=t1"}})
    accepted: Sent = (
        "POST",
        "/login",
        {"json": body, "headers": {"cookie": "csrftoken=t1", "x-csrftoken": "t1"}},
    )
    recorded = record(serve, upstream.url, cassette_dir, [refused, accepted])
    assert [r.status_code for r in recorded] == [403, 200]
    (_, refused_doc), (_, accepted_doc) = _in_recording_order(cassette_dir)
    assert refused_doc["request"]["body"].get("complete") is False
    replayed, reports = replay(
        serve, upstream.url, replay_config(cassette_dir), [accepted, refused]
    )
    assert [r.status_code for r in replayed] == [200, 403]
    assert [r.cassette_id for r in reports] == [accepted_doc["id"], refused_doc["id"]]
    assert all(r.ok for r in reports), [r.console_text() for r in reports]


def test_the_first_recording_makes_the_key_outside_the_cassette_directory(
    serve: Callable[..., Any], upstream: Upstream, cassette_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:  # fmt: skip
    """By default in $XDG_CONFIG_HOME/timetracer: 32 random bytes in hex, mode 0600 in a 0700 directory, its
    location logged once; the cassettes name its id."""
    monkeypatch.delenv("TIMETRACER_KEY_FILE")
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    key_file = tmp_path / "config" / "timetracer" / "key"
    with caplog.at_level(logging.INFO, logger="timetracer"):
        record(serve, upstream.url, cassette_dir, [_lookup("ada"), _lookup("bob")])
    assert re.fullmatch(r"[0-9a-f]{64}\n", key_file.read_text("ascii"))
    assert (key_file.stat().st_mode & 0o777, key_file.parent.stat().st_mode & 0o777) == (
        0o600,
        0o700,
    )
    assert [r.getMessage() for r in caplog.records if "secret key" in r.getMessage()] == [
        f"timetracer: created the secret key {key_file} (keep it: replay needs it to open sealed secrets and tell requests apart by them)"
    ]
    key_id = Key(key_file.read_text("ascii").strip().encode(), "").key_id
    assert {
        doc["request"]["fingerprint"].split(":")[1] for _, doc in _in_recording_order(cassette_dir)
    } == {key_id}


def test_without_the_recording_key_the_report_says_the_secrets_could_not_tell_them_apart(
    serve: Callable[..., Any],
    upstream: Upstream,
    cassette_dir: Path,
    key_file: Path,
    tmp_path: Path,
) -> None:
    record(serve, upstream.url, cassette_dir, [_login("wrong"), _login("right")])
    (_, wrong), (_, right) = _in_recording_order(cassette_dir)
    key_id = Key(key_file.read_text("ascii").strip().encode(), "").key_id
    config = replay_config(cassette_dir, key_file=str(tmp_path / "no-key-here"))
    reason = f"this process has no secret key (they were fingerprinted with key {key_id})"
    replayed, reports = replay(serve, upstream.url, config, [_login("right"), _login("wrong")])
    # recording order: the right password got a 401
    assert [r.cassette_id for r in reports] == [
        wrong["id"],
        right["id"],
    ]
    assert [r.status_code for r in replayed] == [401, 200]
    note = (
        f"2 cassettes of this request differ in their secret values and {reason}: "
        "the request could not be told apart by its secrets; taken in recording order"
    )
    for report in reports:
        assert report.notes[0] == note and report.notes[1].startswith(
            "unverifiable without the key: "
        )
        assert report.console_text().splitlines()[2] == f"  note: {note}"


def test_a_cassette_sealed_with_another_key_is_refused_naming_the_key_it_needs(
    serve: Callable[..., Any], upstream: Upstream, cassette_dir: Path, key_file: Path
) -> None:
    record(serve, upstream.url, cassette_dir, [_login("right")])
    ((path, _),) = _in_recording_order(cassette_dir)
    key_id = Key(key_file.read_text("ascii").strip().encode(), "").key_id
    other = "another-key-of-32-characters-000"
    library = CassetteLibrary(str(cassette_dir), replay_config(cassette_dir, secret_key=other))
    with pytest.raises(CassetteError) as refused:
        library.load(str(path))
    assert str(refused.value) == (
        f"timetracer: cannot use cassette {path}: holds sealed secrets this process cannot open: it is sealed with key {key_id}, and this process has "
        f"key {Key(other.encode(), '').key_id}; replay with that key (TIMETRACER_SECRET_KEY or TIMETRACER_KEY_FILE)"
    )


def test_a_sealed_value_changed_after_it_was_sealed_is_named_damaged_not_another_keys(
    serve: Callable[..., Any], upstream: Upstream, cassette_dir: Path, key_file: Path
) -> None:
    """A sealed value with this process's key id that does not open (edited, or forged) is
    refused as damaged: asking for "that key" would send the user after the key they have."""
    record(serve, upstream.url, cassette_dir, [_login("right")])
    ((path, _),) = _in_recording_order(cassette_dir)
    key_id = Key(key_file.read_text("ascii").strip().encode(), "").key_id
    text = path.read_text("utf-8")
    token = re.search(rf"\[SEALED:{key_id}:([A-Za-z0-9_-]+)\]", text)
    assert token is not None
    data = token.group(1)
    forged = data[:-2] + ("AA" if not data.endswith("AA") else "BB")
    path.write_text(text.replace(data, forged, 1), "utf-8")
    library = CassetteLibrary(str(cassette_dir), replay_config(cassette_dir))
    with pytest.raises(CassetteError) as refused:
        library.load(str(path))
    assert str(refused.value) == (
        f"timetracer: cannot use cassette {path}: holds sealed secrets this process cannot open: a value sealed "
        f"with key {key_id}, this process's, is damaged (InvalidTag): it was changed after it was sealed, "
        "or timetracer did not seal it"
    )


def test_a_cassette_is_read_when_chosen_and_no_other_is(
    serve: Callable[..., Any], upstream: Upstream, cassette_dir: Path
) -> None:
    """After start, 200 cassettes no request chooses are deleted and the chosen one is edited: the replay
    still answers, with the edit: cassettes are read when a request chooses them, not held from the start."""
    recorded = record(serve, upstream.url, cassette_dir, [_lookup("ada"), _lookup("bob")])
    by_name = {
        doc["request"]["body"]["json"]["name"]: (path, doc)
        for path, doc in _in_recording_order(cassette_dir)
    }
    bob_path, bob = by_name["bob"]
    unchosen = []
    # the same request recorded at other paths: valid cassettes no request asks for
    for n in range(200):
        doc = {
            **bob,
            "id": f"{n:08x}",
            "request": {**bob["request"], "path": f"/lookup/{n}", "route": f"/lookup/{n}"},
        }
        unchosen.append(cassette_dir / "other" / f"POST__lookup__{n:08x}.json")
        unchosen[-1].parent.mkdir(exist_ok=True)
        unchosen[-1].write_text(json.dumps(doc), "utf-8")

    server = serve(create_app(upstream.url, replay_config(cassette_dir)))
    for path in unchosen:
        path.unlink()
    (call,) = bob["calls"]
    call["response"]["body"]["json"]["query"] = "name=edited-after-start"
    bob_path.write_text(json.dumps(bob), "utf-8")

    ada_again, bob_again = send(server.url, [_lookup("ada"), _lookup("bob")])
    assert_same_response(recorded[0], ada_again)
    assert bob_again.json()["query"] == "name=edited-after-start"


def test_a_cassette_broken_since_the_index_was_saved_is_left_out_and_named(
    serve: Callable[..., Any],
    upstream: Upstream,
    cassette_dir: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """One bad file does not stop a directory's replay: the app starts without it, says so once, and
    the other cassette answers its request."""
    recorded = record(serve, upstream.url, cassette_dir, [_lookup("ada"), _lookup("bob")])
    CassetteLibrary(str(cassette_dir))  # both checked, and the index saved
    (ada_path, _), (bob_path, _) = _in_recording_order(cassette_dir)
    bob_path.write_bytes(bob_path.read_bytes()[:300])
    with caplog.at_level(logging.WARNING, logger="timetracer"):
        server = serve(create_app(upstream.url, replay_config(cassette_dir)))
    (warning,) = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert re.fullmatch(
        rf"timetracer: cannot use cassette {re.escape(str(bob_path))}: is truncated: .+; the replay goes on without it",
        warning,
    )
    (ada_again,) = send(server.url, [_lookup("ada")])
    assert_same_response(recorded[0], ada_again)
    bob_path.unlink()  # only whole cassettes for the schema check


def test_a_value_redacted_in_the_recording_is_unverified_not_the_same_nor_different(
    serve: Callable[..., Any], upstream: Upstream, cassette_dir: Path, tmp_path: Path
) -> None:
    """/token answers a fresh access token, CSRF token and session cookie, drawn from ``secrets``: sealed in
    the cassette. Replayed without the key, they are new: redacted on both sides, or (the CSRF token, no
    secret by its name) new in clear, so the report cannot say they are the same, nor that they differ."""
    (recorded,) = record(serve, upstream.url, cassette_dir, [("GET", "/token", {})])
    ((cassette, doc),) = _in_recording_order(cassette_dir)
    config = replay_config(cassette, key_file=str(tmp_path / "no-key-here"))
    (replayed,), (report,) = replay(serve, upstream.url, config, [("GET", "/token", {})])
    assert replayed.json()["access_token"] != recorded.json()["access_token"]
    assert (report.differences, report.unverified) == (
        [],
        ["header set-cookie", "body $.access_token", "body $.csrf"],
    )
    assert (report.response_matches, report.verdict, report.ok) == (True, "unverified", False)
    assert [note.split(":")[0] for note in report.notes] == ["unverifiable without the key"]
    assert (
        report.console_text().splitlines()
        == [
            f"timetracer [UNVERIFIED] replayed GET /token  id={doc['id']}  status=200  calls=1/1  unused=0  response=same  unverified=3",
            f"  cassette: {cassette}",
            f"  note: {report.notes[0]}",
            "  extra draws (not recorded, real values given): secrets=3",  # their sealed values cannot be opened
            "  unverified: header set-cookie",
            "  unverified: body $.access_token",
            "  unverified: body $.csrf",
        ]
    )


def test_with_the_key_sealed_values_are_replayed_and_verified(
    serve: Callable[..., Any], upstream: Upstream, cassette_dir: Path
) -> None:
    """The same /token replayed with the key that sealed it: the same token and cookie, compared for real."""
    (recorded,) = record(serve, upstream.url, cassette_dir, [("GET", "/token", {})])
    ((cassette, doc),) = _in_recording_order(cassette_dir)
    assert recorded.json()["access_token"] not in cassette.read_text("utf-8")
    (replayed,), (report,) = replay(
        serve, upstream.url, replay_config(cassette), [("GET", "/token", {})]
    )
    assert_same_response(recorded, replayed)
    assert (report.differences, report.unverified, report.extra_draws, report.verdict) == (
        [],
        [],
        {},
        "ok",
    )


def test_processes_replaying_one_directory_at_once_take_turns_together(
    serve: Callable[..., Any], cassette_dir: Path
) -> None:
    """A replay served by two worker processes (started by one parent): the same request,
    recorded four times with four ids, sent to one worker then the other, gets the four
    recorded ids in order, as from one process. A replay started apart meanwhile (here, in
    their parent) counts its own turns, and one started after they stopped counts from the
    first again."""
    from apps.draws_app import create_app as create_draws_app

    sent: list[Sent] = [("GET", "/draw/uuid/1", {})] * 4
    record_env = {"TIMETRACER_MODE": "record", "TIMETRACER_DIR": str(cassette_dir)}
    with uvicorn_process(record_env, "draws_app:create_app") as server:
        recorded = [response.json() for response in send(server.url, sent)]
    assert len({json.dumps(ids) for ids in recorded}) == 4
    replay_env = {"TIMETRACER_MODE": "replay", "TIMETRACER_CASSETTE": str(cassette_dir)}
    with (
        uvicorn_process(replay_env, "draws_app:create_app") as first,
        uvicorn_process(replay_env, "draws_app:create_app") as second,
    ):
        replayed = [send(server.url, sent[:1])[0].json() for server in (first, second, second)]
        apart = serve(create_draws_app(replay_config(cassette_dir)))
        assert send(apart.url, sent[:1])[0].json() == recorded[0]
        replayed += [send(first.url, sent[:1])[0].json()]
    assert replayed == recorded
    with uvicorn_process(replay_env, "draws_app:create_app") as alone:
        assert [response.json() for response in send(alone.url, sent[:2])] == recorded[:2]


@pytest.mark.parametrize("made_by_another", ["open to others", "a link"])
def test_turns_are_shared_only_through_a_directory_of_the_users_alone(
    tmp_path: Path,
    cassette_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    made_by_another: str,
) -> None:
    """The temporary directory is everyone's: where the counts' directory is open to others, or
    is a link someone put there, nothing is written through it and the process counts its own."""
    import os
    import tempfile

    from timetracer_otel.replayers.shared_turns import shared_turns

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    mine = tmp_path / f"timetracer-{os.geteuid()}"
    assert shared_turns(str(cassette_dir)) is not None
    assert mine.is_dir() and mine.stat().st_mode & 0o777 == 0o700
    for path in mine.iterdir():
        path.unlink()
    mine.rmdir()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    if made_by_another == "a link":
        mine.symlink_to(elsewhere)
    else:
        mine.mkdir()
        mine.chmod(0o777)
    with caplog.at_level(logging.WARNING, logger="timetracer"):
        assert shared_turns(str(cassette_dir)) is None
    assert "counted in this process only" in caplog.text
    assert not any(mine.iterdir()) and not any(elsewhere.iterdir())


def test_a_request_naming_its_cassette_gets_it_and_takes_no_turn(
    serve: Callable[..., Any], upstream: Upstream, cassette_dir: Path
) -> None:
    """The pin header chooses a cassette by id or by the start of its file name, whatever the
    turns say; the app never sees the header; a name that fits no cassette is a 500 naming it."""
    names = ("GET", "/header-names", {})
    recorded = record(serve, upstream.url, cassette_dir, [_lookup("ada")] * 3 + [names] * 2)
    found = _in_recording_order(cassette_dir)
    ada = [doc["id"] for _, doc in found if doc["request"]["path"] == "/lookup"]
    second_names = [doc["id"] for _, doc in found if doc["request"]["path"] == "/header-names"][1]
    second_ada_file = next(path for path, doc in found if doc["id"] == ada[1]).name

    def pinned(sent: Sent, reference: str) -> Sent:
        method, path, options = sent
        return (method, path, {**options, "headers": {"x-timetracer-cassette": reference}})

    sent = [
        pinned(_lookup("ada"), ada[2]),
        pinned(_lookup("ada"), second_ada_file[:-5]),  # the file name without ".json"
        _lookup("ada"),
        pinned(names, second_names),
        pinned(_lookup("ada"), "nosuch"),
    ]
    replayed, reports = replay(serve, upstream.url, replay_config(cassette_dir), sent)
    assert [r.cassette_id for r in reports[:4]] == [ada[2], ada[1], ada[0], second_names]
    assert all(r.ok for r in reports[:4]), [r.console_text() for r in reports]
    assert "x-timetracer-cassette" not in replayed[3].json()
    assert_same_response(recorded[4], replayed[3])
    assert replayed[4].status_code == 500
    assert "holds no cassette named by 'nosuch'" in replayed[4].text
