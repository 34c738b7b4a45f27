"""FastAPI through ``timetracer_otel.integrations.fastapi.auto_setup``: route templates, bodies, errors."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import Upstream, load_cassettes
from fastapi import APIRouter, FastAPI
from pydantic import BaseModel, Field

from timetracer_otel.config import TraceConfig
from timetracer_otel.inbound import route_template
from timetracer_otel.integrations.fastapi import auto_setup


class Item(BaseModel):
    name: str
    price: float
    tags: list[str] = []


class Signup(BaseModel):
    user: str
    password: str = Field(min_length=8)


def _app(upstream: Upstream, config: TraceConfig) -> FastAPI:
    app = FastAPI()

    @app.get("/users/{user_id}")
    async def get_user(user_id: int) -> dict[str, Any]:
        async with httpx.AsyncClient() as client:
            login = (await client.get(f"{upstream.url}/json")).json()["login"]
        return {"user_id": user_id, "login": login}

    @app.post("/items", status_code=201)
    async def create_item(item: Item) -> dict[str, Any]:
        return {"id": 7, **item.model_dump()}

    @app.post("/signup", status_code=201)
    async def signup(body: Signup) -> dict[str, str]:
        return {"user": body.user}

    @app.get("/boom")
    async def boom() -> None:
        raise RuntimeError("kaboom")

    orders = APIRouter(prefix="/api/v1")

    @orders.get("/orders/{order_id}")
    def get_order(order_id: str) -> dict[str, str]:
        return {"order_id": order_id}

    app.include_router(orders)
    # Routers included in routers, as services lay out their API (FastAPI 0.165 keeps them nested).
    invoices, api = APIRouter(prefix="/invoices"), APIRouter(prefix="/api/v2")

    @invoices.get("/{invoice_id}")
    def get_invoice(invoice_id: str) -> dict[str, str]:
        return {"invoice_id": invoice_id}

    api.include_router(invoices)
    app.include_router(api)
    admin = FastAPI()

    @admin.get("/stats/{name}")
    def stats(name: str) -> dict[str, str]:
        return {"stat": name}

    app.mount("/admin", admin)
    auto_setup(app, config=config, plugins=["httpx"])
    return app


@pytest.fixture
def base_url(serve: Callable[..., Any], upstream: Upstream, record_config: TraceConfig) -> str:
    return serve(_app(upstream, record_config)).url


def _only_cassette(directory: Path) -> tuple[dict[str, Any], str]:
    """The single cassette written and its path relative to ``directory``."""
    (doc,) = load_cassettes(directory)
    (path,) = directory.rglob("*.json")
    return doc, path.relative_to(directory).as_posix()


@pytest.mark.parametrize(
    ("path", "route", "name", "body"),
    [
        ("/users/42", "/users/{user_id}", "users_user_id", {"user_id": 42, "login": "octocat"}),
        (
            "/api/v1/orders/A-9",
            "/api/v1/orders/{order_id}",
            "api_v1_orders_order_id",
            {"order_id": "A-9"},
        ),
        (
            "/api/v2/invoices/7",
            "/api/v2/invoices/{invoice_id}",
            "api_v2_invoices_invoice_id",
            {"invoice_id": "7"},
        ),
        ("/admin/stats/cpu", "/admin/stats/{name}", "admin_stats_name", {"stat": "cpu"}),
    ],
    ids=["path-param", "router-prefix", "nested-routers", "mounted-app"],
)
def test_the_route_template_names_the_cassette(
    base_url: str, cassette_dir: Path, path: str, route: str, name: str, body: dict[str, Any]
) -> None:
    response = httpx.get(f"{base_url}{path}")
    assert response.json() == body

    doc, relpath = _only_cassette(cassette_dir)
    assert (doc["request"]["path"], doc["request"]["route"]) == (path, route)
    assert relpath == f"{doc['recorded_at'][:10]}/GET__{name}__{doc['id']}.json"
    assert doc["response"]["status"] == 200 and doc["response"]["body"]["json"] == body


def test_the_user_route_records_its_upstream_call(
    base_url: str, upstream: Upstream, cassette_dir: Path
) -> None:
    httpx.get(f"{base_url}/users/42")
    doc, _ = _only_cassette(cassette_dir)
    (call,) = doc["calls"]
    assert (call["library"], call["request"]["url"]) == ("httpx", f"{upstream.url}/json")
    assert call["response"]["status"] == 200
    assert call["response"]["body"]["json"]["login"] == "octocat"


def test_a_pydantic_body_is_recorded_as_sent(base_url: str, cassette_dir: Path) -> None:
    item = {"name": "lamp", "price": 19.5, "tags": ["home"]}
    response = httpx.post(f"{base_url}/items", json=item)
    assert (response.status_code, response.json()) == (201, {"id": 7, **item})

    doc, relpath = _only_cassette(cassette_dir)
    assert relpath.endswith(f"/POST__items__{doc['id']}.json")
    assert doc["request"]["body"]["json"] == item
    assert (doc["response"]["status"], doc["response"]["body"]["json"]) == (201, {"id": 7, **item})


def test_a_validation_error_is_recorded_with_its_422(base_url: str, cassette_dir: Path) -> None:
    response = httpx.post(f"{base_url}/items", json={"name": "lamp", "price": "free"})
    assert response.status_code == 422

    doc, _ = _only_cassette(cassette_dir)
    assert doc["request"]["body"]["json"] == {"name": "lamp", "price": "free"}
    assert doc["response"]["status"] == 422 and doc["error"] is None
    assert doc["response"]["body"]["json"] == response.json()


def test_a_validation_error_about_a_password_keeps_its_echoed_input_out_of_the_cassette(
    base_url: str, cassette_dir: Path
) -> None:
    """FastAPI's 422 echoes the value sent (``input``); for a password too short to be searched
    for by value, the error's ``loc`` names the secret field and the echo is hidden too."""
    response = httpx.post(f"{base_url}/signup", json={"user": "ada", "password": "pw12"})
    assert response.status_code == 422 and response.json()["detail"][0]["input"] == "pw12"

    doc, relative = _only_cassette(cassette_dir)
    assert "pw12" not in (cassette_dir / relative).read_text("utf-8")
    (detail,) = doc["response"]["body"]["json"]["detail"]
    assert detail["loc"] == ["body", "password"] and detail["input"] != "pw12"


def test_an_unhandled_exception_is_recorded_as_500(base_url: str, cassette_dir: Path) -> None:
    response = httpx.get(f"{base_url}/boom")
    assert response.status_code == 500

    doc, relpath = _only_cassette(cassette_dir)
    assert relpath.endswith(f"/GET__boom__{doc['id']}.json")
    assert doc["request"]["route"] == "/boom"
    assert doc["response"]["status"] == 500
    assert doc["error"] == {"type": "RuntimeError", "message": "kaboom"}
    (server,) = [span for span in doc["spans"] if span["kind"] == "SERVER"]
    assert server["status"]["code"] == "ERROR"


def test_a_path_never_recorded_replays_the_cassette_of_its_route(
    serve: Callable[..., Any], upstream: Upstream, cassette_dir: Path, record_config: TraceConfig
) -> None:
    """Among several cassettes a request is chosen by its very path first; a path no cassette has
    (another id) gets the cassette of its route template, its upstream call answered from it."""
    from _replay import new_reports

    import timetracer_otel

    recorder = serve(_app(upstream, record_config)).url
    assert httpx.get(f"{recorder}/users/42").status_code == 200
    assert httpx.get(f"{recorder}/api/v1/orders/A-9").status_code == 200
    assert timetracer_otel.flush(30), "cassette writer did not drain"
    before = len(upstream.requests)

    with new_reports() as reports:
        server = serve(_app(upstream, TraceConfig(mode="replay", cassette_path=str(cassette_dir))))
        same, other = httpx.get(f"{server.url}/users/42"), httpx.get(f"{server.url}/users/43")
        server.stop()  # each report is made after its response went out

    assert (same.json(), other.json()) == (
        {"user_id": 42, "login": "octocat"},
        {"user_id": 43, "login": "octocat"},
    )
    assert len(upstream.requests) == before  # the call came from the cassette both times
    assert [Path(r.cassette or "").name.split("__")[1] for r in reports] == ["users_user_id"] * 2
    assert [len(r.answered) for r in reports] == [1, 1]
    # the other id is the one difference the report names
    assert (reports[0].differences, [d.split(":")[0] for d in reports[1].differences]) == (
        [],
        ["body $.user_id"],
    )


@pytest.mark.parametrize(
    ("method", "path", "route"),
    [("GET", "/api/v2/invoices/8", "/api/v2/invoices/{invoice_id}"), ("GET", "/api/v1/orders/B-1", "/api/v1/orders/{order_id}"),
     ("POST", "/api/v2/invoices/8", "/api/v2/invoices/{invoice_id}"), ("GET", "/api/v3/nothing", None)],
)  # fmt: skip
def test_before_routing_the_route_is_found_through_nested_routers(
    upstream: Upstream, record_config: TraceConfig, method: str, path: str, route: str | None
) -> None:
    """Replay chooses a cassette before the app routes the request: the template must be found the same way."""
    app = _app(upstream, record_config)
    scope = {
        "type": "http",
        "method": method,
        "path": path,
        "root_path": "",
        "app": app,
        "headers": [],
        "query_string": b"",
    }
    assert route_template(scope, dict(scope)) == route


def test_a_route_behind_a_mounted_apps_middleware_is_found() -> None:
    """An API app mounted behind its own middleware (Piccolo Admin wraps its API in CSRF and
    session middleware): the template is the inner route's, not the mount's catch-all."""
    from starlette.applications import Starlette
    from starlette.middleware.cors import CORSMiddleware
    from starlette.routing import Mount

    api = FastAPI()

    @api.get("/tables/{table_name}/")
    async def rows(table_name: str) -> list[str]:
        return []

    root = Starlette(routes=[Mount("/api", app=CORSMiddleware(api, allow_origins=["*"]))])
    scope = {
        "type": "http",
        "method": "GET",
        "path": "/api/tables/movie/",
        "root_path": "",
        "app": root,
        "headers": [],
        "query_string": b"",
    }
    assert route_template(scope, dict(scope)) == "/api/tables/{table_name}/"


def test_the_openapi_document_is_recorded_whole(base_url: str, cassette_dir: Path) -> None:
    """Its member names are schemas (``Signup``, with its ``password`` property) and paths, not a
    payload's fields: nothing in it is sealed (a replay without the key can compare it)."""
    served = httpx.get(f"{base_url}/openapi.json").json()
    assert "password" in served["components"]["schemas"]["Signup"]["properties"]
    doc, _ = _only_cassette(cassette_dir)
    assert doc["response"]["body"]["json"] == served
