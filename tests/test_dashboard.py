"""The dashboard in headless Chromium (Debian's ``chromium``, driven by Playwright), over cassettes
this test records from the replay app; and its refusals checked with a plain HTTP client too."""

from __future__ import annotations

import dataclasses
import http.client
import json
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from _mixed_deps import deps, mongo, record_crash_and_mixed  # noqa: F401 - fixtures
from _replay import APPS_DIR, Sent, record
from apps.mixed_app import Deps
from conftest import Upstream
from playwright.sync_api import Browser, Page, sync_playwright

from timetracer_otel.config import ReadLimits
from timetracer_otel.dashboard import ReplayTarget, create_app

CHROMIUM = Path("/usr/bin/chromium")
_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run"]  # fmt: skip
# A request body that tries to close the <pre> it is shown in and run a script, and a header with markup.
_ATTACK = "</pre><script>window.__pwned = true</script>"
_SENT: list[Sent] = [
    ("GET", "/async/httpx", {}),
    ("GET", "/fail/httpx", {}),
    ("POST", "/lookup", {"json": {"name": "ada"}}),
    (
        "POST",
        "/lookup",
        {
            "json": {"name": _ATTACK},
            "headers": {"x-note": '<img src="x" onerror="window.__pwned = true">'},
        },
    ),
]


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    # Never skipped: without chromium this fails and says how to get it (.ci/run installs it).
    assert CHROMIUM.exists(), (
        "the browser tests need Debian's chromium: apt-get update && apt-get install -y chromium"
    )
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(CHROMIUM), args=_ARGS)
        yield launched
        launched.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context()
    yield context.new_page()
    context.close()


def _dashboard(
    serve: Callable[..., Any], upstream: Upstream, cassette_dir: Path
) -> tuple[str, dict[str, dict[str, Any]]]:
    """Record :data:`_SENT`, serve the dashboard over it; its URL and the cassettes by ``METHOD path[ name]``."""
    record(serve, upstream.url, cassette_dir, _SENT)
    target = ReplayTarget("replay_app:create_app", str(APPS_DIR), factory=True)
    docs = {}
    for path in cassette_dir.rglob("*.json"):
        doc = json.loads(path.read_text("utf-8"))
        name = (
            f" {doc['request']['body']['json']['name'][:3]}"
            if doc["request"]["path"] == "/lookup"
            else ""
        )
        docs[f"{doc['request']['method']} {doc['request']['path']}{name}"] = {
            **doc,
            "key": path.relative_to(cassette_dir).as_posix(),
        }
    assert len(docs) == len(_SENT)
    return serve(create_app(str(cassette_dir), target)).url, docs


def _follow(page: Page, selector: str) -> None:
    """Click a link or button and wait until the page it leads to has loaded."""
    with page.expect_navigation():
        page.click(selector)


def _rows(page: Page) -> list[list[str]]:
    return [
        [cell.strip() for cell in row.locator("td").all_inner_texts()]
        for row in page.locator("#recordings tbody tr").all()
    ]


def test_the_table_lists_every_recording_and_filters_and_sorts_it(
    serve: Callable[..., Any], upstream: Upstream, cassette_dir: Path, page: Page
) -> None:
    url, docs = _dashboard(serve, upstream, cassette_dir)
    page.goto(url)
    assert sorted(row[10] for row in _rows(page)) == sorted(doc["id"] for doc in docs.values())
    assert page.locator("#count").inner_text().startswith("4 of 4 recordings")

    page.fill("input[name=path]", "/look*")
    _follow(page, "#apply")
    assert sorted(row[10] for row in _rows(page)) == sorted(
        docs[n]["id"] for n in ("POST /lookup ada", "POST /lookup </p")
    )
    page.goto(url)
    page.check("input[name=errors]")
    _follow(page, "#apply")
    assert [row[4] for row in _rows(page)] == ["/fail/httpx"]

    page.goto(url)
    _follow(page, "a.sort >> text=status")
    # the first click sorts descending
    assert [row[5] for row in _rows(page)] == [
        "502",
        "200",
        "200",
        "200",
    ]
    _follow(page, "a.sort >> text=status")
    assert [row[5] for row in _rows(page)] == ["200", "200", "200", "502"]


def test_a_recording_shows_its_waterfall_calls_and_payloads(
    serve: Callable[..., Any], upstream: Upstream, cassette_dir: Path, page: Page
) -> None:
    url, docs = _dashboard(serve, upstream, cassette_dir)
    doc = docs["GET /async/httpx"]
    page.goto(url)
    _follow(page, f"#recordings tr:has-text('{doc['id']}') a.detail")
    assert page.url == f"{url}/cassettes/{doc['key']}"  # the key, never a filesystem path
    spans = page.locator("#waterfall details.span")
    assert spans.count() == len(doc["spans"]) == 8
    assert spans.locator(".kind").all_inner_texts() == ["SERVER"] + ["CLIENT"] * 7
    labels = [label.strip() for label in spans.locator(".label").all_inner_texts()]
    host = upstream.url.removeprefix("http://")
    # library, method, target
    assert labels[0] == "GET /async/httpx" and labels[1] == f"httpx POST {host}/echo?via=json"
    assert page.locator("#waterfall .ticks span").all_inner_texts()[0] == "0.0 ms"  # the time axis
    widths = [
        float(w)
        for w in page.locator("#waterfall svg rect").evaluate_all(
            "rs => rs.map(r => r.getAttribute('width'))"
        )
    ]
    assert widths[0] == max(widths)  # the server span's bar is the whole request
    offsets = [
        float(x)
        for x in page.locator("#waterfall svg rect").evaluate_all(
            "rs => rs.map(r => r.getAttribute('x'))"
        )
    ]
    assert offsets == sorted(offsets) and offsets[0] == 0.0  # the calls run one after the other
    assert page.locator("#waterfall section.call").count() == 7  # every call inside its span
    stream = page.locator("#call-6")
    assert not stream.is_visible()  # the span is closed until opened
    assert stream.locator(".call-label").text_content() == f"httpx GET {host}/stream?chunks=3"
    page.click("details.span:has(#call-6) > summary")
    assert stream.locator("#call-6-response pre.body").inner_text() == "chunk-0;chunk-1;chunk-2;"


def test_recorded_markup_is_shown_as_text_and_never_runs(
    serve: Callable[..., Any], upstream: Upstream, cassette_dir: Path, page: Page
) -> None:
    url, docs = _dashboard(serve, upstream, cassette_dir)
    doc = docs["POST /lookup </p"]
    response = page.goto(f"{url}/cassettes/{doc['key']}")
    assert response is not None and "script-src" not in response.headers["content-security-policy"]
    assert "default-src 'none'" in response.headers["content-security-policy"]
    assert json.loads(page.locator("#request pre.body").inner_text()) == {"name": _ATTACK}
    assert (
        page.locator("#request table.headers")
        .inner_text()
        .count('<img src="x" onerror="window.__pwned = true">')
        == 1
    )
    assert page.evaluate("document.querySelectorAll('script, img').length") == 0
    assert page.evaluate("typeof window.__pwned") == "undefined"
    page.goto(url)  # the table shows the same recording's values escaped too
    assert page.evaluate("document.querySelectorAll('script, img').length") == 0


def _raw_get(url: str, target: str) -> int:
    """The status of GET ``target`` sent exactly as written (no client normalising the dots away)."""
    parts = urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
    try:
        connection.request("GET", target)
        return connection.getresponse().status
    finally:
        connection.close()


def test_nothing_outside_the_directory_is_served(
    serve: Callable[..., Any], upstream: Upstream, cassette_dir: Path, tmp_path: Path, page: Page
) -> None:
    """Dot segments, encoded or not, absolute paths, a link leading out, and a call number that is
    no number of calls (a superscript digit, 5000 digits) are all 404; a real key is 200."""
    url, docs = _dashboard(serve, upstream, cassette_dir)
    key = docs["GET /fail/httpx"]["key"]
    outside = tmp_path / "outside.json"
    shutil.copy(cassette_dir / key, outside)  # a valid cassette, but not in the served directory
    (cassette_dir / "2026-01-01").mkdir()
    (cassette_dir / "2026-01-01" / "link.json").symlink_to(outside)
    attempts = [
        "/cassettes/../../outside.json", "/cassettes/..%2F..%2Foutside.json", "/cassettes/%2e%2e/%2e%2e/outside.json",
        f"/cassettes/{outside}", f"/cassettes/{key}/../../../outside.json",
        "/diff?a=../outside.json&b=../outside.json", f"/diff?a={key}&b=%2e%2e%2Foutside.json",
        "/static/../app.py", "/static/%2e%2e/app.py", "/cassettes/../../../../etc/passwd",
        "/download/../outside.json?part=request", f"/download/{key}?part=../../outside.json",
        f"/download/{key}?part=calls.%C2%B2.request", f"/download/{key}?part=calls.{'9' * 5000}.request",
    ]  # fmt: skip
    assert {target: _raw_get(url, target) for target in attempts} == {
        target: 404 for target in attempts
    }
    assert _raw_get(url, f"/cassettes/{key}") == 200
    assert page.goto(f"{url}/cassettes/2026-01-01/link.json").status == 422  # type: ignore[union-attr]  # named, never followed
    assert (
        page.locator("#problem").inner_text()
        == "cannot use cassette 2026-01-01/link.json: is a link to a file outside the cassette directory"
    )
    assert page.goto(f"{url}/cassettes/..%2F..%2Foutside.json").status == 404  # type: ignore[union-attr]
    assert "no such cassette in this directory" in page.locator("#problem").inner_text()
    page.goto(url)
    assert (
        page.locator("#count").inner_text()
        == "4 of 4 recordings; 1 file(s) are not usable cassettes"
    )
    (
        cassette_dir / "2026-01-01" / "link.json"
    ).unlink()  # leave only real cassettes for the schema check
    # a name with a line break is served as any other (Starlette's path parameters stop at one)
    shutil.copy(cassette_dir / key, cassette_dir / "2026-01-01" / "line\nbreak.json")
    assert _raw_get(url, "/cassettes/2026-01-01/line%0Abreak.json") == 200
    assert _raw_get(url, "/download/2026-01-01/line%0Abreak.json?part=request") == 200


def test_two_recordings_diff_and_one_replays_from_the_button(
    serve: Callable[..., Any],
    upstream: Upstream,
    cassette_dir: Path,
    page: Page,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # what the replayed app reads; it is never called
    monkeypatch.setenv("REPLAY_APP_UPSTREAM", upstream.url)
    url, docs = _dashboard(serve, upstream, cassette_dir)
    a, b = docs["POST /lookup ada"], docs["POST /lookup </p"]
    page.goto(url)
    page.check(f"#recordings tr:has-text('{a['id']}') input[name=a]")
    page.check(f"#recordings tr:has-text('{b['id']}') input[name=b]")
    _follow(page, "#diff button")
    assert page.locator("#verdict").inner_text() == "8 differences"
    cells = {
        row[0]: row[1:]
        for row in (
            r.locator("td").all_inner_texts() for r in page.locator("#differences tbody tr").all()
        )
    }
    assert cells["request.body.name"] == ['"ada"', json.dumps(_ATTACK)]
    assert cells["request.headers.x-note"] == [
        '"<absent>"',
        json.dumps(_SENT[3][2]["headers"]["x-note"]),
    ]
    assert page.evaluate("document.querySelectorAll('script').length") == 0

    before = len(upstream.requests)
    page.goto(f"{url}/cassettes/{a['key']}")
    _follow(page, "#replay")
    assert page.locator("#verdict").inner_text() == "same response, every call answered"
    assert "recorded 200, replayed 200" in page.locator("#report").inner_text()
    assert page.locator("#changed").inner_text() == "every call as recorded"
    assert [_cells(row)[1:] for row in page.locator("#calls tbody tr").all()] == [
        [
            f"httpx GET {upstream.url.removeprefix('http://')}/echo?name=ada",
            f"httpx GET {upstream.url}/echo?name=ada",
            "same",
        ]
    ]
    assert len(upstream.requests) == before  # the upstream's answer came from the cassette
    forged = page.request.post(f"{url}/replay/{a['key']}", form={"token": "guessed"})
    assert forged.status == 403


def test_requests_for_another_host_are_refused(
    serve: Callable[..., Any], upstream: Upstream, cassette_dir: Path
) -> None:
    """A DNS-rebinding page reaches 127.0.0.1 under its own host name: the dashboard does not answer it."""
    url, _ = _dashboard(serve, upstream, cassette_dir)
    parts = urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
    connection.request("GET", "/", headers={"Host": f"attacker.example:{parts.port}"})
    refused = connection.getresponse()
    status, body = refused.status, refused.read()
    connection.close()
    assert (status, body) == (400, b"Invalid host header")
    assert _raw_get(url, "/") == 200


def test_a_long_body_is_cut_and_links_to_the_whole_of_it(
    serve: Callable[..., Any], upstream: Upstream, cassette_dir: Path, page: Page
) -> None:
    name = "x" * 5000
    record(serve, upstream.url, cassette_dir, [("POST", "/lookup", {"json": {"name": name}})])
    (path,) = cassette_dir.rglob("*.json")
    limits = dataclasses.replace(ReadLimits.from_env(), show_body_bytes=1000)
    url = serve(create_app(str(cassette_dir), limits=limits)).url
    page.goto(f"{url}/cassettes/{path.relative_to(cassette_dir).as_posix()}")
    assert len(page.locator("#request pre.body").inner_text()) == 1000
    assert (
        page.locator("#request p.cut").inner_text()
        == "… cut after 1000 characters: download the whole of it"
    )
    download = page.request.get(url + page.locator("#request p.cut a").get_attribute("href"))  # type: ignore[operator]
    assert download.status == 200 and json.loads(download.body()) == {"name": name}
    assert download.headers["content-disposition"].startswith("attachment;")
    # the call's request is short: whole, no link
    assert page.locator("#call-0-request p.cut").count() == 0


def test_a_recording_of_many_calls_shows_a_thousand_and_counts_the_rest(
    serve: Callable[..., Any], upstream: Upstream, cassette_dir: Path
) -> None:
    """A page for every call of a cassette of thousands (a hostile file, an N+1 loop) would be
    more than a browser opens: a thousand are shown, the rest counted."""
    record(serve, upstream.url, cassette_dir, [("GET", "/report", {})])
    (path,) = cassette_dir.rglob("*.json")
    doc = json.loads(path.read_text("utf-8"))
    doc["calls"] = doc["calls"] * 700  # 1,400 calls; two have their span
    # and a header and an attribute of 300,000 characters (a 50 MB one made a 50 MB page)
    doc["request"]["headers"].append(["x-long", "y" * 300_000])
    doc["spans"][0].setdefault("attributes", {})["app.long"] = "z" * 300_000
    path.write_text(json.dumps(doc), "utf-8")
    url = serve(create_app(str(cassette_dir))).url
    page = httpx.get(f"{url}/cassettes/{path.relative_to(cassette_dir).as_posix()}", timeout=60)
    assert page.status_code == 200
    assert "<td>" + "y" * 4096 + "…</td>" in page.text and "y" * 4097 not in page.text
    assert "z" * 4097 not in page.text
    assert page.text.count('<section class="call ') == 2 + 1000
    assert "and 398 more calls, not shown: <code>timetracer show</code> lists them all" in page.text
    # against the same recording with one call: a difference per call, a thousand shown
    record(serve, upstream.url, cassette_dir, [("GET", "/report", {})])
    (other,) = [p for p in cassette_dir.rglob("*.json") if p != path]
    keys = [p.relative_to(cassette_dir).as_posix() for p in (path, other)]
    diff = httpx.get(f"{url}/diff", params={"a": keys[0], "b": keys[1]}, timeout=60)
    assert diff.status_code == 200
    assert diff.text.count('<tr><td class="mono">') == 1000
    assert (
        '(the first 1000 shown; <span class="mono">timetracer diff</span> lists them all)'
        in diff.text
    )


def _cells(row: Any) -> list[str]:
    return [cell.strip() for cell in row.locator("td").all_inner_texts()]


def test_calls_of_every_protocol_read_as_what_they_did_and_a_failure_shows_its_traceback(
    serve: Callable[..., Any], upstream: Upstream, deps: Deps, cassette_dir: Path, page: Page
) -> None:
    record_crash_and_mixed(serve, upstream, deps, cassette_dir)
    url = serve(create_app(str(cassette_dir))).url
    page.goto(url)
    rows = {cells[4]: cells for cells in map(_cells, page.locator("#recordings tbody tr").all())}
    # the status with the exception, the route
    assert rows["/crash"][5:7] == [
        "500 ⚠ LookupError",
        "/crash",
    ]
    assert rows["/mixed/sequence"][5:7] == ["200", "/mixed/sequence"]

    _follow(page, "#recordings a.detail >> text='/mixed/sequence'")
    labels = [
        label.strip() for label in page.locator("#waterfall details.span .label").all_inner_texts()
    ]
    table, key, host = (
        f"tt_mixed_{deps.suffix}",
        f"tt-mixed:{deps.suffix}",
        upstream.url.removeprefix("http://"),
    )
    assert labels == [
        "GET /mixed/sequence", f"httpx GET {host}/json?route=sequence", "sql connect postgresql+asyncpg",
        # asyncpg's own client spans under SQLAlchemy's (the app enables both instrumentors): its
        # dialect's first-connection probes, then each statement's transaction
        "BEGIN;", "select", "select", "show", "show", "ROLLBACK;",
        f"sql INSERT INTO {table}", "BEGIN;", "INSERT", f"sql SELECT FROM {table}", "SELECT", "COMMIT;",
        f"redis INCRBY {key}:hits", f"redis HSET {key}:sequence",
        f"redis HGETALL {key}:sequence", "redis MULTI/EXEC SET, GET, INCRBYFLOAT",
        f"pymongo insert mixed.events_{deps.suffix}", f"pymongo find mixed.events_{deps.suffix}",
        f"pymongo aggregate mixed.events_{deps.suffix}", "sql connect sqlite+aiosqlite", "sql INSERT INTO items",
        "sql SELECT FROM items", f"httpx POST {host}/echo",
    ]  # fmt: skip
    page.locator("#waterfall details.span").evaluate_all(
        "spans => spans.forEach(s => s.open = true)"
    )
    inserted = page.locator("#call-2-response table.rows")  # INSERT ... RETURNING id, amount, at
    assert inserted.locator("th").all_inner_texts() == ["id", "amount", "at"]
    assert _cells(inserted.locator("tbody tr")) == [
        "1",
        "12.50 Decimal",
        "2026-01-22 10:30:00.123000+00:00 datetime",
    ]
    # the parameters as the driver got them
    assert page.locator("#call-2-request pre.body").nth(1).inner_text() == (
        "('sequence',\n Decimal('12.50'),\n datetime.datetime(2026, 1, 22, 10, 30, 0, 123000, tzinfo=datetime.timezone.utc))"
    )
    assert page.locator("#call-13-response table.rows th").all_inner_texts() == ["id", "n", "label"]
    assert page.locator("#call-4-request pre.body").inner_text() == f"INCRBY {key}:hits 1"
    assert page.locator("#call-7-request pre.body").inner_text() == (
        f"MULTI\nSET {key}:sequence:raw b'\\x00\\xffbin'\nGET {key}:sequence:raw\nINCRBYFLOAT {key}:f 0.5\nEXEC"
    )
    found = page.locator("#call-9-request pre.body").inner_text()
    # no session fields
    assert found == f"{{'find': 'events_{deps.suffix}', 'filter': {{'route': 'sequence'}}}}"
    assert "Decimal128('9.99')" in page.locator("#call-9-response pre.body").inner_text()

    page.goto(url)
    _follow(page, "#recordings a.detail >> text='/crash'")
    assert (
        page.locator("#failure p.problem").inner_text()
        == "LookupError: no profile page for octocat"
    )
    traceback = page.locator("#failure pre.traceback").inner_text()
    assert traceback.startswith("Traceback (most recent call last):")
    assert (
        'raise LookupError(f"no profile page for {login}")' in traceback
        and "replay_app.py" in traceback
    )
    assert traceback.rstrip().endswith("LookupError: no profile page for octocat")
    assert "The client received 500 with an empty body." in page.locator("#failure").inner_text()


def test_a_replay_through_changed_code_names_the_call_that_changed(
    serve: Callable[..., Any],
    upstream: Upstream,
    cassette_dir: Path,
    page: Page,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("REPLAY_APP_UPSTREAM", upstream.url)
    record(serve, upstream.url, cassette_dir, [("GET", "/report", {})])
    (path,) = cassette_dir.rglob("*.json")
    url = serve(
        create_app(
            str(cassette_dir),
            ReplayTarget("replay_app:create_changed_app", str(APPS_DIR), factory=True),
        )
    ).url
    page.goto(f"{url}/cassettes/{path.relative_to(cassette_dir).as_posix()}")
    _follow(page, "#replay")
    host = upstream.url.removeprefix("http://")
    assert page.locator("#verdict").inner_text() == "differs"
    assert (
        page.locator("#changed").inner_text()
        == f"call #1 changed: httpx GET {host}/echo?step=2 → httpx GET {upstream.url}/echo?step=3"
    )
    assert [_cells(row) for row in page.locator("#calls tbody tr").all()] == [
        ["0", f"httpx GET {host}/echo?step=1", f"httpx GET {upstream.url}/echo?step=1", "same"],
        [
            "1",
            f"httpx GET {host}/echo?step=2",
            f"httpx GET {upstream.url}/echo?step=3",
            "query 'step': recorded 2, this call 3",
        ],
    ]
    rows = [_cells(row) for row in page.locator("#differences tbody tr").all()]
    assert ["header x-version", '"1"', '"2"'] in rows and [
        "body $.added",
        "<absent>",
        '"new field"',
    ] in rows  # side by side


def test_the_replay_button_passes_the_cassette_after_its_options() -> None:
    """A file named like an option (``--credentials=x.json``, in a directory served as ``.``) is
    still the cassette: it comes after ``--``."""
    command = ReplayTarget("app:app", "src").command(Path("--credentials=os:getcwd.json"))
    assert command[-2:] == ["--", "--credentials=os:getcwd.json"]
    assert command.count("--credentials=os:getcwd.json") == 1
