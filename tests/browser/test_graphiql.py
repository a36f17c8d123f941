"""GraphiQL in a real headless Chromium, against a real uvicorn server.

Needs the Debian packages ``chromium`` and ``chromium-driver`` and the npm assets
(``make assets``).  Skipped only when /usr/bin/chromium is absent and CI is unset;
under CI it always runs.

Set ``IMS_GRAPHIQL_SCREENSHOT=/some/file.png`` to keep a screenshot of the page
after the query ran.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import strawberry
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.routing import Route, WebSocketRoute
from starlette.types import Receive, Scope, Send
from strawberry.asgi import GraphQL
from strawberry.types import Info

from app.web.graphiql import (
    INSTALL_COMMAND,
    assets_installed,
    graphiql_page,
    graphiql_routes,
    wants_graphiql,
)

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
IN_CI = bool(os.environ.get("CI"))

if not CHROMIUM.exists() and not IN_CI:
    pytest.skip(
        "headless browser test needs /usr/bin/chromium "
        "(apt-get install chromium chromium-driver); runs unconditionally when CI is set",
        allow_module_level=True,
    )

TOKEN = "Bearer browser-test-token"


# --------------------------------------------------------------------------- app


@dataclass
class Recorder:
    """What the server saw: the Authorization header of each `hello` resolution."""

    authorizations: list[str | None] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


def make_app(recorder: Recorder) -> Starlette:
    @strawberry.type
    class Query:
        @strawberry.field
        def hello(self, name: str, info: Info) -> str:
            request: Request = info.context["request"]
            with recorder.lock:
                recorder.authorizations.append(request.headers.get("authorization"))
            return f"Hello {name}"

    schema = strawberry.Schema(query=Query)
    gql = GraphQL[Any, Any](schema, graphql_ide=None)

    class GraphQLHttp:
        """ASGI app: the GraphiQL page for browsers, the GraphQL endpoint otherwise."""

        async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
            if wants_graphiql(Request(scope, receive)):
                await graphiql_page("/graphql")(scope, receive, send)
            else:
                await gql(scope, receive, send)

    return Starlette(
        routes=[
            *graphiql_routes(endpoint="/graphql"),
            Route("/graphql", GraphQLHttp(), methods=["GET", "POST"]),
            WebSocketRoute("/graphql", gql),
        ]
    )


@dataclass
class LiveServer:
    url: str
    recorder: Recorder


@pytest.fixture
def live_server() -> Iterator[LiveServer]:
    recorder = Recorder()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    # log_config=None and no log_level: uvicorn would otherwise configure the process's
    # logging (its loggers' levels and handlers) for every test that runs after this one.
    config = uvicorn.Config(make_app(recorder), log_config=None, lifespan="off")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.02)
    try:
        yield LiveServer(url=f"http://127.0.0.1:{port}", recorder=recorder)
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


# ----------------------------------------------------------------------- browser


@pytest.fixture
def driver(tmp_path: Path) -> Iterator[Any]:
    missing = [str(p) for p in (CHROMIUM, CHROMEDRIVER) if not p.exists()]
    if missing:
        pytest.fail(f"missing {missing}: apt-get install chromium chromium-driver")
    if not assets_installed():
        pytest.fail(f"GraphiQL assets are not installed: run `{INSTALL_COMMAND}`")

    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for arg in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        "--window-size=1400,900",
        f"--user-data-dir={tmp_path / 'chromium-profile'}",
    ):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    # An explicit driver path: Selenium Manager never runs (it would try to download).
    service = Service(executable_path=str(CHROMEDRIVER))
    drv = webdriver.Chrome(options=options, service=service)
    drv.set_page_load_timeout(30)
    try:
        yield drv
    finally:
        drv.quit()


def _set_editor(drv: Any, selector: str, text: str) -> None:
    """Set a CodeMirror 5 editor's text through its own API (as a paste would)."""
    drv.execute_script(
        "const cm = document.querySelector(arguments[0]).CodeMirror;"
        "cm.focus(); cm.setValue(arguments[1]); cm.setCursor(cm.lineCount(), 0);",
        selector,
        text,
    )


def _editor_value(drv: Any, selector: str) -> str:
    value = drv.execute_script(
        "const el = document.querySelector(arguments[0]);"
        "return el && el.CodeMirror ? el.CodeMirror.getValue() : null;",
        selector,
    )
    return "" if value is None else str(value)


def _diagnostics(drv: Any, tmp_path: Path) -> str:
    shot = tmp_path / "failure.png"
    drv.save_screenshot(str(shot))
    from selenium.common.exceptions import WebDriverException

    try:
        logs = drv.get_log("browser")
    except WebDriverException as exc:  # pragma: no cover - only for failure messages
        logs = [repr(exc)]
    body = drv.execute_script("return document.body ? document.body.innerText : ''")
    return f"screenshot={shot}\nbrowser log={logs}\nbody text={str(body)[:2000]}"


QUERY_EDITOR = ".graphiql-query-editor .CodeMirror"
RESPONSE_EDITOR = ".graphiql-response .CodeMirror"
HEADERS_EDITOR = ".graphiql-editor-tool .graphiql-editor:not(.hidden) .CodeMirror"


def test_graphiql_runs_query_with_authorization_header(
    live_server: LiveServer, driver: Any, tmp_path: Path
) -> None:
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    drv = driver
    wait = WebDriverWait(drv, 30)
    drv.get(f"{live_server.url}/graphql")  # a navigation: Accept includes text/html
    try:
        wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, QUERY_EDITOR)))
        # Header editor: enabled, and open by default showing the placeholder token.
        wait.until(lambda d: "paste your token" in _editor_value(d, HEADERS_EDITOR))
        headers_el = drv.find_element(By.CSS_SELECTOR, HEADERS_EDITOR)
        assert headers_el.is_displayed()
        assert "health { ok version }" in _editor_value(drv, QUERY_EDITOR)

        _set_editor(drv, QUERY_EDITOR, '{ hello(name: "ims") }')
        _set_editor(drv, HEADERS_EDITOR, json.dumps({"Authorization": TOKEN}, indent=2))
        assert _editor_value(drv, QUERY_EDITOR) == '{ hello(name: "ims") }'

        run = wait.until(ec.element_to_be_clickable((By.CSS_SELECTOR, ".graphiql-execute-button")))
        run.click()
        wait.until(lambda d: '"hello": "Hello ims"' in _editor_value(d, RESPONSE_EDITOR))
    except (TimeoutException, AssertionError) as exc:
        pytest.fail(f"{exc!r}\n{_diagnostics(drv, tmp_path)}")

    result = json.loads(_editor_value(drv, RESPONSE_EDITOR))
    assert result == {"data": {"hello": "Hello ims"}}
    # The text the user sees in the result pane, not only the editor model.
    pane_text = drv.find_element(By.CSS_SELECTOR, ".graphiql-response").text
    assert '"hello": "Hello ims"' in pane_text

    with live_server.recorder.lock:
        seen = list(live_server.recorder.authorizations)
    assert seen == [TOKEN]

    # Nothing was loaded from another host, and nothing failed to load.
    resources = drv.execute_script(
        "return performance.getEntriesByType('resource').map(e => e.name)"
    )
    assert resources, "no resources recorded"
    for name in resources:
        assert str(name).startswith(live_server.url + "/"), name
    severe = [e for e in drv.get_log("browser") if e.get("level") == "SEVERE"]
    assert not severe, severe

    shot = tmp_path / "graphiql.png"
    assert drv.save_screenshot(str(shot))
    if target := os.environ.get("IMS_GRAPHIQL_SCREENSHOT"):
        shutil.copyfile(shot, target)
