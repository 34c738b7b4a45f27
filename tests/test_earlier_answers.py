"""What the recording process remembered: an app that asks the upstream for its currencies once
and keeps them (as services cache a discovery document or a settings row) makes that call in its
first request only. A later request replayed alone, in a fresh app, makes it again: the answer
comes from an earlier cassette of the same service, never from a later one or another service's,
and a call made more often than its own cassette recorded it is not taken from elsewhere."""

from __future__ import annotations

import json
import secrets
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
from _replay import cassette_files, new_reports
from sqlalchemy import Connection, create_engine, text
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

import timetracer_otel
from timetracer_otel.config import TraceConfig
from timetracer_otel.dashboard._replay import call_pairs
from timetracer_otel.integrations.starlette import auto_setup


def quote_app(
    upstream_url: str, config: TraceConfig, known: list[str] | None = None, asks: int = 1
) -> Starlette:
    """``/quote?c=EUR``: the currencies the upstream supports, asked for ``asks`` times the first
    time and kept (``known``: already kept when the app starts), then the quote itself."""
    currencies: list[str] = list(known or ())

    async def quote(request: Request) -> JSONResponse:
        wanted = request.query_params["c"]
        async with httpx.AsyncClient(base_url=upstream_url) as client:
            for _ in range(asks if not currencies else 0):
                currencies[:] = (await client.get("/currencies")).json()
            if wanted not in currencies:
                return JSONResponse({"error": f"no rates for {wanted}"}, status_code=422)
            echo = (await client.get("/echo", params={"symbols": wanted})).json()
        return JSONResponse({"currency": wanted, "query": echo["query"]})

    app = Starlette(routes=[Route("/quote", quote)])
    auto_setup(app, config=config, plugins=["httpx"])
    return app


def _record(serve: Callable[..., Any], app: Starlette, *currencies: str) -> list[Path]:
    """The cassettes of ``/quote?c=...`` for each currency, sent one after the other."""
    url = serve(app).url
    for currency in currencies:
        assert httpx.get(f"{url}/quote", params={"c": currency}, timeout=30).status_code == 200
    assert timetracer_otel.flush(30)
    return cassette_files(Path(app.state.recorded_into))


def _currency(cassette: Path) -> str:
    """The currency the cassette's request asked for (its query is ``c=...``)."""
    return str(json.loads(cassette.read_text("utf-8"))["request"]["query"]).removeprefix("c=")


def _replayed_alone(
    serve: Callable[..., Any], upstream_url: str, cassette: Path, **app: Any
) -> tuple[httpx.Response, Any]:
    """``cassette`` replayed in a fresh app, by itself: the response and the report."""
    config = TraceConfig(mode="replay", cassette_path=str(cassette))
    with new_reports() as reports:
        server = serve(quote_app(upstream_url, config, **app))
        response = httpx.get(f"{server.url}/quote", params={"c": _currency(cassette)}, timeout=30)
        server.stop()
    (report,) = reports
    return response, report


def _recording(upstream_url: str, directory: Path, service: str, **app: Any) -> Starlette:
    config = TraceConfig(mode="record", cassette_dir=str(directory), service_name=service)
    recording = quote_app(upstream_url, config, **app)
    recording.state.recorded_into = str(directory)
    return recording


def test_a_later_request_alone_gets_the_answer_an_earlier_one_recorded(
    serve: Callable[..., Any], upstream: Any, tmp_path: Path
) -> None:
    first, second = sorted(
        _record(serve, _recording(upstream.url, tmp_path, "shop"), "EUR", "GBP"),
        key=lambda path: _currency(path) == "GBP",
    )
    assert "/currencies" not in second.read_text("utf-8")

    response, report = _replayed_alone(serve, upstream.url, second)

    assert response.status_code == 200 and response.json()["currency"] == "GBP"
    assert report.ok and report.unmatched == []
    assert report.from_earlier == [
        f"httpx GET {upstream.url}/currencies (answered by {first.name}, recorded before)"
    ]
    assert "  from an earlier request: httpx GET" in report.console_text()
    # the dashboard's call-by-call rows: the call is not shown as one the recording lacks
    (pair, _) = call_pairs(report.to_dict(), ["GET /echo"])
    assert (pair.state, pair.recorded) == ("earlier request", f"{first.name}#0")


def test_a_later_cassette_or_another_services_never_answers(
    serve: Callable[..., Any], upstream: Any, tmp_path: Path
) -> None:
    """USD is recorded first by another service, asking for the currencies; EUR by an app that
    already knew them; GBP later, asking: replayed in an app that must ask, EUR finds no answer."""
    _record(serve, _recording(upstream.url, tmp_path, "billing"), "USD")
    _record(serve, _recording(upstream.url, tmp_path, "shop", known=["EUR", "GBP"]), "EUR")
    _record(serve, _recording(upstream.url, tmp_path, "shop"), "GBP")
    (eur,) = [path for path in cassette_files(tmp_path) if _currency(path) == "EUR"]

    response, report = _replayed_alone(serve, upstream.url, eur)

    assert response.status_code == 500
    assert report.from_earlier == []
    assert report.unmatched == [
        f"timetracer replay: no recorded call matches GET {upstream.url}/currencies (httpx)"
    ]


def test_a_call_made_more_often_than_its_cassette_recorded_is_not_taken_from_another(
    serve: Callable[..., Any], upstream: Any, tmp_path: Path
) -> None:
    _record(serve, _recording(upstream.url, tmp_path, "shop"), "EUR")
    _record(serve, _recording(upstream.url, tmp_path, "shop"), "GBP")
    (gbp,) = [path for path in cassette_files(tmp_path) if _currency(path) == "GBP"]

    response, report = _replayed_alone(serve, upstream.url, gbp, asks=2)

    assert response.status_code == 500
    assert report.from_earlier == []
    (entry,) = [call for call in report.calls if call["recorded"] is None and call["replayed"]]
    assert entry["differences"][-1] == "same call; every recorded answer for it is used up"


def test_a_cassette_whose_recording_directory_is_gone_fails_the_call_as_unrecorded(
    serve: Callable[..., Any], upstream: Any, tmp_path: Path
) -> None:
    """Copied elsewhere and its recording directory removed, a cassette that lacks a call has no
    earlier request to ask: the call fails where it is made, as one no cassette holds."""
    recorded = _record(serve, _recording(upstream.url, tmp_path / "recorded", "shop"), "EUR", "GBP")
    (gbp,) = [path for path in recorded if _currency(path) == "GBP"]
    alone = tmp_path / "copied" / gbp.name
    alone.parent.mkdir()
    alone.write_bytes(gbp.read_bytes())
    shutil.rmtree(tmp_path / "recorded")

    response, report = _replayed_alone(serve, upstream.url, alone)

    assert response.status_code == 500
    assert report.from_earlier == []
    assert report.unmatched == [
        f"timetracer replay: no recorded call matches GET {upstream.url}/currencies (httpx)"
    ]


def _kept_connection_app(database: Path, config: TraceConfig) -> Starlette:
    """``/first`` opens a connection the app keeps (a long-lived session, a test module's
    fixture); ``/both`` uses it and one more: when recorded after ``/first``, it opened one."""
    engine = create_engine(f"sqlite:///{database}")
    kept: list[Connection] = []

    def count(connection: Connection) -> int:
        return int(connection.execute(text("SELECT count(*) FROM sqlite_master")).scalar_one())

    def kept_connection() -> Connection:
        if not kept:
            kept.append(engine.connect())
        return kept[0]

    async def first(request: Request) -> JSONResponse:
        return JSONResponse({"tables": count(kept_connection())})

    async def both(request: Request) -> JSONResponse:
        with engine.connect() as other:
            return JSONResponse({"tables": [count(kept_connection()), count(other)]})

    app = Starlette(routes=[Route("/first", first), Route("/both", both)])
    app.state.kept = kept
    auto_setup(app, config=config, plugins=["sqlalchemy"])
    return app


def test_a_connection_opened_more_often_than_recorded_gets_the_recorded_connect_again(
    serve: Callable[..., Any], tmp_path: Path
) -> None:
    """Replayed alone, in a fresh app that keeps no connection yet, ``/both`` opens two
    connections where its recording opened one: a ``connect`` carries no data, so the recorded one answers
    again, and the statements still match the recording's."""
    cassettes, database = tmp_path / "cassettes", tmp_path / "app.db"
    app = _kept_connection_app(database, TraceConfig(mode="record", cassette_dir=str(cassettes)))
    record = serve(app)
    recorded = [httpx.get(f"{record.url}{path}", timeout=30) for path in ("/first", "/both")]
    record.stop()
    app.state.kept[0].close()
    assert timetracer_otel.flush(30)
    (both,) = [path for path in cassette_files(cassettes) if "both" in path.name]
    connects = [
        call for call in json.loads(both.read_text())["calls"]
        if call["request"]["operation"] == "connect"
    ]  # fmt: skip
    assert len(connects) == 1
    database.unlink()

    with new_reports() as reports:
        app = _kept_connection_app(database, TraceConfig(mode="replay", cassette_path=str(both)))
        replay = serve(app)
        replayed = httpx.get(f"{replay.url}/both", timeout=30)
        replay.stop()
    for connection in app.state.kept:
        connection.close()
    assert replayed.status_code == 200, replayed.text
    assert replayed.json() == recorded[1].json()
    assert [(r.unmatched, r.unused) for r in reports] == [([], [])]
    assert not database.exists()


API_KEY = "service-api-key-1"


def _token_app(database: Path, config: TraceConfig, refresh_checks: bool) -> Starlette:
    """``/me`` and ``/refresh`` with a bearer token, on SQLite: ``/me`` first looks the token up
    in the revoked tokens; ``/refresh`` does too where ``refresh_checks`` (a later release)."""
    engine = create_engine(f"sqlite:///{database}")

    def revoked(request: Request) -> bool:
        token = request.headers["authorization"].removeprefix("Bearer ")
        with engine.connect() as connection:
            found = connection.execute(  # and a secret of the service's, the same for all
                text("SELECT 1 FROM revoked WHERE token = :token AND api_key = :api_key"),
                {"token": token, "api_key": API_KEY},
            )
            return found.first() is not None

    def me(request: Request) -> JSONResponse:
        if revoked(request):
            return JSONResponse({"error": "revoked"}, status_code=401)
        return JSONResponse({"me": True})

    def refresh(request: Request) -> JSONResponse:
        if refresh_checks and revoked(request):
            return JSONResponse({"error": "revoked"}, status_code=401)
        return JSONResponse({"refreshed": True})

    app = Starlette(routes=[Route("/me", me), Route("/refresh", refresh)])
    auto_setup(app, config=config, plugins=["sqlalchemy"])
    return app


def test_a_lookup_by_another_requests_secret_is_not_answered_from_its_cassette(
    serve: Callable[..., Any], tmp_path: Path
) -> None:
    """Recorded: ``/me`` for dave (revoked), bob and carol, then ``/refresh`` for alice (revoked),
    carol and dave, by a release whose ``/refresh`` looks nothing up. Replayed alone by the
    release that looks the token up, carol's lookup is answered from her ``/me`` (the same
    token), dave's from his (older than the others' ``/me``), and alice's is not answered from
    another user's: "no row" for carol's token said nothing of alice's. The service's own API
    key, hidden by its name, is not compared: carol's cassette does not hold it."""
    database, cassettes = tmp_path / "tokens.sqlite", tmp_path / "cassettes"
    alice, bob, carol, dave = (secrets.token_urlsafe(24) for _ in range(4))
    with create_engine(f"sqlite:///{database}").begin() as connection:
        connection.execute(text("CREATE TABLE revoked (token TEXT, api_key TEXT)"))
        for revoked in (alice, dave):
            connection.execute(
                text("INSERT INTO revoked VALUES (:token, :key)"),
                {"token": revoked, "key": API_KEY},
            )
    record = TraceConfig(mode="record", cassette_dir=str(cassettes), service_name="auth")
    url = serve(_token_app(database, record, refresh_checks=False)).url
    tokens = {"alice": alice, "bob": bob, "carol": carol, "dave": dave}
    for path, who, status in [
        ("/me", "dave", 401),
        ("/me", "bob", 200),
        ("/me", "carol", 200),
        ("/refresh", "alice", 200),
        ("/refresh", "carol", 200),
        ("/refresh", "dave", 200),
    ]:
        bearer = {"Authorization": f"Bearer {tokens[who]}"}
        assert httpx.get(url + path, params={"who": who}, headers=bearer).status_code == status
    assert timetracer_otel.flush(30)
    database.unlink()
    assert not any(token in path.read_text() for path in cassette_files(cassettes) for token in (*tokens.values(), API_KEY))  # fmt: skip

    def refresh_alone(who: str) -> tuple[httpx.Response, Any]:
        (cassette,) = [
            path for path in cassette_files(cassettes)
            if json.loads(path.read_text())["request"]["path"] == "/refresh"
            and json.loads(path.read_text())["request"]["query"] == f"who={who}"
        ]  # fmt: skip
        config = TraceConfig(mode="replay", cassette_path=str(cassette))
        with new_reports() as reports:
            server = serve(_token_app(database, config, refresh_checks=True))
            bearer = {"Authorization": f"Bearer {tokens[who]}"}
            response = httpx.get(f"{server.url}/refresh", params={"who": who}, headers=bearer)
            server.stop()
        return response, reports[0]

    response, report = refresh_alone("carol")
    assert response.json() == {"refreshed": True}
    assert [line.split(" (answered by ")[0] for line in report.from_earlier] == [
        "sqlalchemy connect sqlite+pysqlite",
        "sqlalchemy execute SELECT 1 FROM revoked WHERE token = ? AND api_key = ?",
    ]
    response, report = refresh_alone("dave")
    assert response.status_code == 401
    assert report.from_earlier[-1].startswith(
        "sqlalchemy execute SELECT 1 FROM revoked WHERE token = ? AND api_key = ? (answered by GET__me__"
    )
    assert report.unmatched == []  # 401, as live: the release now refuses a revoked token
    response, report = refresh_alone("alice")
    assert response.status_code == 500
    assert [line.split(" (answered by ")[0] for line in report.from_earlier] == [
        "sqlalchemy connect sqlite+pysqlite"
    ]
    assert report.unmatched == [
        "timetracer replay: no recorded call matches execute SELECT 1 FROM revoked WHERE token = ? AND api_key = ? (sqlalchemy)"
    ]
