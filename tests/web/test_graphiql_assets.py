"""GraphiQL page and asset mount, without a browser."""

from __future__ import annotations

import os
import re
from pathlib import Path

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from app.web.graphiql import (
    ASSET_FILES,
    ASSETS_PREFIX,
    DEFAULT_ASSETS_DIR,
    INSTALL_COMMAND,
    assets_installed,
    graphiql_page,
    graphiql_routes,
    wants_graphiql,
)

IN_CI = bool(os.environ.get("CI"))


def client_for(app: Starlette) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver")


def make_app(assets_dir: Path) -> Starlette:
    async def graphql_get(request: Request) -> Response:
        if wants_graphiql(request):
            return graphiql_page("/graphql", assets_dir=assets_dir)
        return Response("not the page", media_type="text/plain")

    return Starlette(
        routes=[
            *graphiql_routes(endpoint="/graphql", assets_dir=assets_dir),
            Route("/graphql", graphql_get, methods=["GET"]),
        ]
    )


@pytest.fixture
def fake_assets(tmp_path: Path) -> Path:
    """A node_modules look-alike: the allowlisted files plus files that must stay hidden."""
    root = tmp_path / "node_modules"
    for rel in ASSET_FILES:
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"/* {rel} */\n")
    (root / "graphiql" / "package.json").write_text('{"name": "graphiql"}')
    (root / "graphiql" / "graphiql.min.js.map").write_text("{}")
    (tmp_path / "secret.txt").write_text("TOP SECRET")
    return root


def test_assets_installed(fake_assets: Path, tmp_path: Path) -> None:
    assert assets_installed(fake_assets)
    assert not assets_installed(tmp_path / "nowhere")
    (fake_assets / "graphiql" / "graphiql.min.js").unlink()
    assert not assets_installed(fake_assets)


async def test_page_references_only_local_assets(fake_assets: Path) -> None:
    async with client_for(make_app(fake_assets)) as client:
        resp = await client.get("/graphql", headers={"accept": "text/html"})
    assert resp.status_code == 200
    assert resp.headers["content-type"].startswith("text/html")
    page = resp.text

    # No absolute URL to any host at all, and no protocol-relative URL.
    assert not re.search(r"https?://", page, re.IGNORECASE), page
    assert "//cdn" not in page and 'src="//' not in page and 'href="//' not in page

    srcs = re.findall(r'<script[^>]*\ssrc="([^"]+)"', page)
    hrefs = re.findall(r'<link[^>]*\shref="([^"]+)"', page)
    assert "data:," in hrefs  # inline favicon: no /favicon.ico request
    hrefs.remove("data:,")
    assert srcs and hrefs
    for url in [*srcs, *hrefs]:
        assert url.startswith(ASSETS_PREFIX + "/"), url
        assert url.removeprefix(ASSETS_PREFIX + "/") in ASSET_FILES, url

    assert "Bearer &lt;paste your token&gt;" not in page  # JSON-escaped, not HTML-escaped
    assert "Bearer \\u003cpaste your token\\u003e" in page
    assert "health { ok version }" in page
    assert "isHeadersEditorEnabled: true" in page
    csp = resp.headers["content-security-policy"]
    assert "default-src 'self'" in csp and "script-src 'self' 'nonce-" in csp


def test_page_escapes_endpoint(fake_assets: Path) -> None:
    page = graphiql_page("/x</script><script>alert(1)</script>", assets_dir=fake_assets)
    assert page.status_code == 200
    body = bytes(page.body).decode()
    assert "</script><script>alert(1)" not in body
    assert "/x\\u003c/script\\u003e" in body


async def test_plain_get_is_not_the_page(fake_assets: Path) -> None:
    async with client_for(make_app(fake_assets)) as client:
        resp = await client.get("/graphql", headers={"accept": "application/json"})
    assert resp.text == "not the page"


async def test_assets_served_with_content_types(fake_assets: Path) -> None:
    async with client_for(make_app(fake_assets)) as client:
        for rel, ctype in ASSET_FILES.items():
            resp = await client.get(f"{ASSETS_PREFIX}/{rel}")
            assert resp.status_code == 200, rel
            assert resp.headers["content-type"] == ctype, rel
            assert resp.headers["x-content-type-options"] == "nosniff"
            assert resp.text == f"/* {rel} */\n"
        head = await client.head(f"{ASSETS_PREFIX}/graphiql/graphiql.min.js")
        assert head.status_code == 200
        assert (await client.post(f"{ASSETS_PREFIX}/graphiql/graphiql.min.js")).status_code == 405


@pytest.mark.parametrize(
    "path",
    [
        "/graphiql/package.json",  # exists, not allowlisted
        "/graphiql/graphiql.min.js.map",  # exists, not allowlisted
        "/graphiql",  # a directory
        "/",
        "/../secret.txt",
        "/%2e%2e/secret.txt",
        "/..%2fsecret.txt",
        "/graphiql/..%2f..%2fsecret.txt",
        "/%2e%2e%2f%2e%2e%2fpyproject.toml",
        "/react/umd/../../../secret.txt",
        "//etc/passwd",
        "/%00",
    ],
)
async def test_traversal_and_unlisted_paths_are_404(fake_assets: Path, path: str) -> None:
    async with client_for(make_app(fake_assets)) as client:
        resp = await client.get(ASSETS_PREFIX + path)
    assert resp.status_code == 404, (path, resp.text)
    assert "TOP SECRET" not in resp.text


async def test_raw_asgi_traversal_is_404(fake_assets: Path) -> None:
    """Bypass any client-side URL normalisation: hand '..' straight to the app."""
    app = make_app(fake_assets)
    sent: list[dict[str, object]] = []

    async def receive() -> dict[str, object]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, object]) -> None:
        sent.append(message)

    for raw in ("/graphiql-assets/../secret.txt", "/graphiql-assets/../../secret.txt"):
        sent.clear()
        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": "GET",
            "scheme": "http",
            "path": raw,
            "raw_path": raw.encode(),
            "root_path": "",
            "query_string": b"",
            "headers": [],
            "client": ("127.0.0.1", 1),
            "server": ("testserver", 80),
        }
        await app(scope, receive, send)  # type: ignore[arg-type]
        assert sent[0]["status"] == 404, raw
        bodies = [m["body"] for m in sent if isinstance(m.get("body"), bytes)]
        assert all(b"TOP SECRET" not in body for body in bodies if isinstance(body, bytes))


async def test_missing_assets_page_names_the_install_command(tmp_path: Path) -> None:
    async with client_for(make_app(tmp_path / "node_modules")) as client:
        resp = await client.get("/graphql", headers={"accept": "text/html"})
        asset = await client.get(f"{ASSETS_PREFIX}/graphiql/graphiql.min.js")
    assert resp.status_code == 503
    assert INSTALL_COMMAND in resp.text and "make assets" in resp.text
    assert "npm ci --prefix app/web" in resp.text
    assert "<script" not in resp.text  # nothing that could hang on "Loading..."
    assert asset.status_code == 404  # a missing node_modules is a 404, not a 500


async def test_real_assets_are_installed_and_served() -> None:
    """The pinned npm packages (npm ci --prefix app/web) provide every allowlisted file."""
    if not assets_installed():
        if IN_CI:
            pytest.fail(f"GraphiQL assets missing in CI: run `{INSTALL_COMMAND}` first")
        pytest.skip(f"GraphiQL assets not installed: run `{INSTALL_COMMAND}`")
    async with client_for(make_app(DEFAULT_ASSETS_DIR)) as client:
        page = await client.get("/graphql", headers={"accept": "text/html"})
        assert page.status_code == 200
        for rel, ctype in ASSET_FILES.items():
            resp = await client.get(f"{ASSETS_PREFIX}/{rel}")
            assert resp.status_code == 200, rel
            assert resp.headers["content-type"] == ctype
            assert len(resp.content) > 1000, rel
        assert (await client.get(f"{ASSETS_PREFIX}/graphiql/package.json")).status_code == 404
        assert (await client.get(f"{ASSETS_PREFIX}/.package-lock.json")).status_code == 404
        js = (await client.get(f"{ASSETS_PREFIX}/graphiql/graphiql.min.js")).text
        assert "createFetcher" in js or "createGraphiQLFetcher" in js
