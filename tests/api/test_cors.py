"""Cross-origin calls from browser front ends (IMS_CORS_ORIGINS): preflights answered before
authentication, every answer of an allowed origin marked for the page (401s included), and
nothing for other origins or when no origin is configured."""

from __future__ import annotations

from dataclasses import replace

import httpx
import pytest

from app.config import Settings
from tests.conftest import LiveServer

CONSOLE = "https://console.example.com"
VIEWER = {"query": "{ viewer { account { name } } }"}
ADMIN = {"Authorization": "Bearer ims_test-admin-token"}


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return replace(settings, cors_origins=(CONSOLE, "http://localhost:5173"))


def _preflight(server: LiveServer, origin: str) -> httpx.Response:
    return httpx.options(f"{server.url}/graphql", headers={
        "Origin": origin, "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization, content-type",
    })


def test_a_preflight_of_an_allowed_origin_is_answered_without_a_token(live_server: LiveServer) -> None:
    response = _preflight(live_server, CONSOLE)
    assert response.status_code == 200
    assert response.headers["access-control-allow-origin"] == CONSOLE
    assert set(response.headers["access-control-allow-methods"].split(", ")) == {"GET", "POST"}
    assert {"authorization", "content-type"} <= {
        h.strip().lower() for h in response.headers["access-control-allow-headers"].split(",")}
    assert response.headers["access-control-max-age"] == "600"
    assert "access-control-allow-credentials" not in response.headers


def test_a_preflight_of_another_origin_is_refused(live_server: LiveServer) -> None:
    response = _preflight(live_server, "https://evil.example.net")
    assert response.status_code == 400
    assert "access-control-allow-origin" not in response.headers


def test_answers_to_an_allowed_origin_are_marked_for_the_page(live_server: LiveServer) -> None:
    response = httpx.post(f"{live_server.url}/graphql", json=VIEWER, headers={**ADMIN, "Origin": CONSOLE})
    assert response.status_code == 200
    assert response.json() == {"data": {"viewer": {"account": {"name": "admin"}}}}
    assert response.headers["access-control-allow-origin"] == CONSOLE
    assert response.headers["access-control-expose-headers"].lower() == "x-request-id"
    # The edge's own answers too: the page can tell a missing token from a network failure.
    refused = httpx.post(f"{live_server.url}/graphql", json=VIEWER, headers={"Origin": CONSOLE})
    assert refused.status_code == 401
    assert refused.headers["access-control-allow-origin"] == CONSOLE


def test_answers_to_another_origin_are_not_marked(live_server: LiveServer) -> None:
    response = httpx.post(f"{live_server.url}/graphql", json=VIEWER,
                          headers={**ADMIN, "Origin": "https://evil.example.net"})
    assert response.status_code == 200  # the browser, not the server, withholds it from the page
    assert "access-control-allow-origin" not in response.headers


async def test_without_configured_origins_nothing_is_allowed(settings: Settings) -> None:
    from app.main import create_app

    app = create_app(replace(settings, cors_origins=()))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://ims") as http:
        preflight = await http.options("/graphql", headers={
            "Origin": CONSOLE, "Access-Control-Request-Method": "POST"})
        assert preflight.status_code == 401  # the edge asks for a token, as for any other method
        assert "access-control-allow-origin" not in preflight.headers
        refused = await http.post("/graphql", json=VIEWER, headers={"Origin": CONSOLE})
        assert refused.status_code == 401
        assert "access-control-allow-origin" not in refused.headers
