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
    assert set(response.headers["access-control-allow-methods"].split(", ")) == {"GET", "POST", "PUT"}
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
    assert set(response.headers["access-control-expose-headers"].lower().split(", ")) == {
        "x-request-id", "etag", "content-range", "accept-ranges", "retry-after"}
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


def _graphql(server: LiveServer, query: str) -> dict[str, object]:
    response = httpx.post(f"{server.url}/graphql", json={"query": query}, headers=ADMIN)
    data: dict[str, object] = response.json()["data"]
    return data


def test_a_page_of_an_allowed_origin_uploads_and_downloads_through_signed_urls(live_server: LiveServer) -> None:
    """Big files go through signed /objects/ URLs, not GraphQL: a console of another origin must
    be able to PUT them (its preflight was refused: PUT was not an allowed method), resume a
    download (Range and If-Range are not simple headers for a suffix range or a tag) and read
    the answer's ETag and Content-Range (not exposed)."""
    made = _graphql(live_server, 'mutation { createBucket(input: {name: "console-files"}) { __typename } }')
    assert made == {"createBucket": {"__typename": "CreateBucketSuccess"}}
    signed = _graphql(live_server, 'mutation { createUploadUrl(input: {bucket: "console-files", key: "disk.raw"}) '
                                   '{ ... on CreateUploadUrlSuccess { url } } }')
    url = signed["createUploadUrl"]["url"]  # type: ignore[index]
    put_preflight = httpx.options(url, headers={"Origin": CONSOLE, "Access-Control-Request-Method": "PUT",
                                                "Access-Control-Request-Headers": "content-type"})
    get_preflight = httpx.options(url, headers={"Origin": CONSOLE, "Access-Control-Request-Method": "GET",
                                                "Access-Control-Request-Headers": "range, if-range"})
    put = httpx.put(url, content=b"d" * 1000, headers={"Origin": CONSOLE, "Content-Type": "application/octet-stream"})
    listed = _graphql(live_server, '{ buckets { objects { edges { node { downloadUrl(expiresInSeconds: 60) } } } } }')
    download = listed["buckets"][0]["objects"]["edges"][0]["node"]["downloadUrl"]  # type: ignore[index]
    ranged = httpx.get(download, headers={"Origin": CONSOLE, "Range": "bytes=-10"})

    assert (put_preflight.status_code, get_preflight.status_code) == (200, 200)
    assert put_preflight.headers["access-control-allow-origin"] == CONSOLE
    assert (put.status_code, put.headers["access-control-allow-origin"]) == (200, CONSOLE)
    assert (ranged.status_code, ranged.content) == (206, b"d" * 10)
    for answer in (put, ranged):
        exposed = {h.strip().lower() for h in answer.headers["access-control-expose-headers"].split(",")}
        assert {"etag", "content-range", "x-request-id"} <= exposed
