"""GraphiQL served from local assets.

Strawberry's built-in GraphiQL page loads React and GraphiQL from a CDN, which
shows nothing but "Loading..." on a machine without internet.  This module
serves the same UI from bundles installed by ``npm ci --prefix app/web`` (run
by ``make assets``) into ``app/web/node_modules``.

Only an explicit allowlist of files below ``node_modules`` is reachable through
the ``/graphiql-assets`` mount; everything else (including path traversal
attempts) is a 404.

Usage from the application::

    routes = [*graphiql_routes(endpoint="/graphql"), ...]
    # and for GET /graphql with Accept: text/html
    if wants_graphiql(request):
        return graphiql_page("/graphql")
"""

from __future__ import annotations

import html
import json
import os
import secrets
from pathlib import Path
from typing import Final

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import BaseRoute, Mount
from starlette.staticfiles import StaticFiles
from starlette.types import Scope

__all__ = [
    "ASSETS_PREFIX",
    "ASSET_FILES",
    "DEFAULT_ASSETS_DIR",
    "DEFAULT_HEADERS",
    "DEFAULT_QUERY",
    "INSTALL_COMMAND",
    "AssetFiles",
    "assets_installed",
    "graphiql_page",
    "graphiql_routes",
    "wants_graphiql",
]

#: Where ``npm ci --prefix app/web`` puts the packages.
DEFAULT_ASSETS_DIR: Final[Path] = Path(__file__).resolve().parent / "node_modules"

#: URL prefix of the static mount.
ASSETS_PREFIX: Final[str] = "/graphiql-assets"

#: The command that installs the assets (shown on the page when they are missing).
INSTALL_COMMAND: Final[str] = "make assets"

#: Files (relative to node_modules, "/"-separated) reachable through the mount,
#: with the content type each is served as.  Versions are pinned in package.json.
ASSET_FILES: Final[dict[str, str]] = {
    "react/umd/react.production.min.js": "text/javascript; charset=utf-8",
    "react-dom/umd/react-dom.production.min.js": "text/javascript; charset=utf-8",
    "graphiql/graphiql.min.js": "text/javascript; charset=utf-8",
    "graphiql/graphiql.min.css": "text/css; charset=utf-8",
}

_REACT_JS: Final = "react/umd/react.production.min.js"
_REACT_DOM_JS: Final = "react-dom/umd/react-dom.production.min.js"
_GRAPHIQL_JS: Final = "graphiql/graphiql.min.js"
_GRAPHIQL_CSS: Final = "graphiql/graphiql.min.css"

DEFAULT_QUERY: Final[str] = "{ health { ok version } viewer { account { name role } } }"
DEFAULT_HEADERS: Final[str] = '{\n  "Authorization": "Bearer <paste your token>"\n}'


def assets_installed(assets_dir: Path | None = None) -> bool:
    """True when every allowlisted asset exists as a regular file under ``assets_dir``."""
    base = DEFAULT_ASSETS_DIR if assets_dir is None else assets_dir
    return all((base / rel).is_file() for rel in ASSET_FILES)


class AssetFiles(StaticFiles):
    """StaticFiles over node_modules that serves only the :data:`ASSET_FILES` allowlist.

    A missing directory is not an error at start-up or request time: the assets
    simply 404 until ``make assets`` has been run.
    """

    def __init__(self, directory: Path) -> None:
        super().__init__(directory=directory, check_dir=False)

    async def check_config(self) -> None:
        # StaticFiles raises (-> 500) when the directory is missing; we 404 instead.
        return None

    async def get_response(self, path: str, scope: Scope) -> Response:
        # ``path`` is already normalised by StaticFiles.get_path (no "." / ".." parts).
        rel = path.replace(os.sep, "/")
        if rel not in ASSET_FILES:
            raise HTTPException(status_code=404)
        response = await super().get_response(path, scope)
        if response.status_code == 200:
            response.headers["content-type"] = ASSET_FILES[rel]
        response.headers["x-content-type-options"] = "nosniff"
        response.headers["cache-control"] = "public, max-age=3600"
        return response


def graphiql_routes(
    *, endpoint: str = "/graphql", assets_dir: Path | None = None
) -> list[BaseRoute]:
    """Routes serving the GraphiQL assets under :data:`ASSETS_PREFIX`.

    ``endpoint`` is accepted for symmetry with :func:`graphiql_page`; the page
    itself is served by the application for ``GET <endpoint>`` with
    ``Accept: text/html`` (see :func:`wants_graphiql`).
    """
    del endpoint  # the page is served at the GraphQL endpoint by the app
    directory = DEFAULT_ASSETS_DIR if assets_dir is None else assets_dir
    return [Mount(ASSETS_PREFIX, app=AssetFiles(directory), name="graphiql-assets")]


def wants_graphiql(request: Request) -> bool:
    """True for a browser navigation: ``GET``/``HEAD`` with ``text/html`` in ``Accept``."""
    return request.method in ("GET", "HEAD") and "text/html" in request.headers.get("accept", "")


def _js(value: object) -> str:
    """JSON for embedding inside an inline <script> (no ``</script>`` breakout)."""
    return (
        json.dumps(value)
        .replace("<", "\\u003c")
        .replace(">", "\\u003e")
        .replace("&", "\\u0026")
        .replace("\u2028", "\\u2028")
        .replace("\u2029", "\\u2029")
    )


def _asset_url(rel: str) -> str:
    return html.escape(f"{ASSETS_PREFIX}/{rel}", quote=True)


_STYLE: Final = """
      html, body { height: 100%; margin: 0; overflow: hidden; }
      #graphiql { height: 100vh; }
      .ims-missing { font: 16px/1.5 system-ui, sans-serif; max-width: 44rem; margin: 4rem auto;
                     padding: 0 1rem; color: #222; }
      .ims-missing code { background: #f2f2f2; padding: 0.1em 0.3em; border-radius: 3px; }
"""


def _missing_body() -> str:
    cmd = html.escape(INSTALL_COMMAND)
    return (
        '<div class="ims-missing" id="graphiql-missing">'
        "<h1>GraphiQL assets are not installed</h1>"
        f"<p>Run <code>{cmd}</code> (that is, <code>npm ci --prefix app/web</code>) "
        "in the project checkout, then reload this page.</p>"
        "<p>The GraphQL endpoint itself works without them: POST queries to it.</p>"
        "</div>"
    )


def _csp(nonce: str) -> str:
    return (
        "default-src 'self'; "
        f"script-src 'self' 'nonce-{nonce}'; "
        "style-src 'self' 'unsafe-inline'; "
        "img-src 'self' data:; font-src 'self' data:; "
        "connect-src 'self'; "
        "base-uri 'none'; form-action 'self'; frame-ancestors 'self'"
    )


def graphiql_page(endpoint: str, *, assets_dir: Path | None = None) -> HTMLResponse:
    """The GraphiQL HTML page, wired to POST to ``endpoint``.

    Subscriptions go over ``graphql-transport-ws`` to the same path (``ws:``/``wss:``
    derived from the page location).  When the assets are missing the page says
    which command installs them, with status 503.
    """
    nonce = secrets.token_urlsafe(16)
    headers = {
        "content-security-policy": _csp(nonce),
        "cache-control": "no-store",
        "x-content-type-options": "nosniff",
    }
    if not assets_installed(assets_dir):
        body = (
            '<!doctype html>\n<html lang="en">\n<head>\n'
            '    <meta charset="utf-8">\n'
            "    <title>GraphiQL (assets missing)</title>\n"
            f"    <style>{_STYLE}</style>\n"
            f"</head>\n<body>\n{_missing_body()}\n</body>\n</html>\n"
        )
        return HTMLResponse(body, status_code=503, headers=headers)

    config = {
        "endpoint": endpoint,
        "defaultQuery": DEFAULT_QUERY,
        "defaultHeaders": DEFAULT_HEADERS,
        "missingHtml": _missing_body(),
    }
    body = f"""<!doctype html>
<html lang="en">
  <head>
    <meta charset="utf-8">
    <meta name="viewport" content="width=device-width, initial-scale=1">
    <title>GraphiQL</title>
    <link rel="icon" href="data:,">
    <link rel="stylesheet" href="{_asset_url(_GRAPHIQL_CSS)}">
    <style>{_STYLE}</style>
  </head>
  <body>
    <div id="graphiql">Loading GraphiQL&hellip;</div>
    <script src="{_asset_url(_REACT_JS)}"></script>
    <script src="{_asset_url(_REACT_DOM_JS)}"></script>
    <script src="{_asset_url(_GRAPHIQL_JS)}"></script>
    <script nonce="{nonce}">
      (function () {{
        "use strict";
        var config = {_js(config)};
        var container = document.getElementById("graphiql");
        if (!window.React || !window.ReactDOM || !window.GraphiQL) {{
          container.innerHTML = config.missingHtml;
          return;
        }}
        var url = new URL(config.endpoint, window.location.href);
        var wsUrl = new URL(url.href);
        wsUrl.protocol = url.protocol === "https:" ? "wss:" : "ws:";
        var fetcher = GraphiQL.createFetcher({{
          url: url.href,
          subscriptionUrl: wsUrl.href
        }});
        ReactDOM.createRoot(container).render(
          React.createElement(GraphiQL, {{
            fetcher: fetcher,
            defaultQuery: config.defaultQuery,
            defaultHeaders: config.defaultHeaders,
            isHeadersEditorEnabled: true,
            shouldPersistHeaders: false,
            defaultEditorToolsVisibility: "headers"
          }})
        );
      }})();
    </script>
  </body>
</html>
"""
    return HTMLResponse(body, headers=headers)
