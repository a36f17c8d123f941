"""Shared fixtures: a fresh migrated database per test (SQLite, and PostgreSQL when
IMS_TEST_DATABASE_URL is set), a live uvicorn server on loopback, and an HTTP GraphQL client.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from sqlalchemy import create_engine, text

from app.bootstrap import build_database
from app.config import Settings, normalize_database_url
from app.db.engine import sync_url
from app.db.migrate import upgrade
from app.db.uow import Database

PG_URL = os.environ.get("IMS_TEST_DATABASE_URL")
BACKENDS = ["sqlite"] + (["postgres"] if PG_URL else [])


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("template") / "ims.db"
    upgrade(f"sqlite+aiosqlite:///{path}")
    return path


@pytest.fixture(scope="session")
def pg_migrated() -> str | None:
    if not PG_URL:
        return None
    url = normalize_database_url(PG_URL)
    engine = create_engine(sync_url(url))
    with engine.begin() as conn:
        conn.execute(text("DROP SCHEMA public CASCADE"))
        conn.execute(text("CREATE SCHEMA public"))
    engine.dispose()
    upgrade(url)
    return url


def _truncate_pg(url: str) -> None:
    engine = create_engine(sync_url(url))
    with engine.begin() as conn:
        tables = [r[0] for r in conn.execute(text(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public' AND tablename <> 'alembic_version'"
        ))]
        if tables:
            conn.execute(text("TRUNCATE " + ", ".join(f'"{t}"' for t in tables) + " CASCADE"))
    engine.dispose()


@pytest.fixture(params=BACKENDS)
def settings(request: pytest.FixtureRequest, tmp_path: Path, sqlite_template: Path) -> Settings:
    """Settings of a fresh, migrated database and data directory for one test."""
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    # Tests that give the app workers run them on its event loop (their handlers are the
    # test's); tests/jobs/test_worker_process.py covers the child process of `ims serve`.
    base = Settings(data_dir=data_dir, auto_migrate=False, workers=0, worker_process=False,
                    admin_token="ims_test-admin-token")
    if request.param == "postgres":
        url = request.getfixturevalue("pg_migrated")
        _truncate_pg(url)
        return replace(base, database_url=url)
    shutil.copy(sqlite_template, data_dir / "ims.db")
    return base


@pytest.fixture
async def db(settings: Settings) -> AsyncIterator[Database]:
    database = build_database(settings)
    yield database
    await database.dispose()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def run_ims(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """`ims ARGS` as a process of its own, in the checkout, with `env` for the environment's
    IMS_* variables (none of the test process's own)."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("IMS_")}
    return subprocess.run([sys.executable, "-m", "app.cli", *args], cwd=Path(__file__).resolve().parents[1],
                          env={**clean, **env}, capture_output=True, text=True, timeout=120, check=False)


@dataclass
class LiveServer:
    url: str
    settings: Settings
    app: Any


class _Server(uvicorn.Server):
    def install_signal_handlers(self) -> None:  # the test runner owns signals
        pass


@pytest.fixture
def live_server(settings: Settings) -> Iterator[LiveServer]:
    """The real application on a real loopback port, in a thread with its own loop."""
    from app.main import create_app

    port = free_port()
    settings = replace(settings, public_url=f"http://127.0.0.1:{port}")
    app = create_app(settings)
    server = _Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None, lifespan="on"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 15
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("server did not start")
        time.sleep(0.01)
    yield LiveServer(f"http://127.0.0.1:{port}", settings, app)
    server.should_exit = True
    thread.join(timeout=15)


class GraphQLClient:
    """Minimal GraphQL-over-HTTP client for tests (errors are returned, not raised)."""

    def __init__(self, http: httpx.AsyncClient, token: str | None) -> None:
        self.http = http
        self.token = token

    def as_(self, token: str | None) -> GraphQLClient:
        return GraphQLClient(self.http, token)

    async def raw(self, query: str, variables: dict[str, Any] | None = None, **kw: Any) -> httpx.Response:
        headers = {"authorization": f"Bearer {self.token}"} if self.token else {}
        return await self.http.post("/graphql", json={"query": query, "variables": variables or {}},
                                    headers=headers, **kw)

    async def execute(self, query: str, variables: dict[str, Any] | None = None) -> dict[str, Any]:
        response = await self.raw(query, variables)
        assert response.status_code == 200, response.text
        body = response.json()
        assert "errors" not in body, body["errors"]
        return body["data"]  # type: ignore[no-any-return]


@pytest.fixture
async def http(live_server: LiveServer) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=live_server.url, timeout=30) as client:
        yield client


@pytest.fixture
async def gql(http: httpx.AsyncClient, live_server: LiveServer) -> GraphQLClient:
    """A client authenticated as the bootstrap admin."""
    assert live_server.settings.admin_token
    return GraphQLClient(http, live_server.settings.admin_token)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def pytest_configure(config: pytest.Config) -> None:
    # Tests never write into the checkout's ./data.
    os.environ.setdefault("IMS_DATA_DIR", str(Path(config.rootpath) / ".pytest_cache" / "data"))
    asyncio.set_event_loop_policy(None)
