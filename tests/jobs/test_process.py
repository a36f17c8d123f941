"""Real `ims worker` processes: one is SIGKILLed mid-job and another takes the job over;
SIGTERM stops a worker gracefully. On PostgreSQL each test gets a database of its own."""

from __future__ import annotations

import asyncio
import os
import secrets
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from app.bootstrap import build_database, build_services
from app.config import Settings, normalize_database_url
from app.db.engine import sync_url
from app.db.migrate import upgrade
from app.services.registry import Services
from tests.factories import make_account
from tests.jobs.conftest import TEST_HANDLERS, attempts, enqueue, finished, wait_for
from tests.jobs.handlers import HANG, STEPS

ROOT = Path(__file__).resolve().parents[2]
LEASE = 1.5


@pytest.fixture
def proc_settings(settings: Settings) -> Iterator[Settings]:
    """The test's settings; on PostgreSQL pointed at a fresh database dropped afterwards
    (the shared test database may be truncated by other test runs at any moment)."""
    if settings.is_sqlite:
        yield replace(settings, test_job_handlers=TEST_HANDLERS)
        return
    base = make_url(sync_url(settings.effective_database_url))
    name = f"ims_jobs_proc_{secrets.token_hex(4)}"
    admin = create_engine(base.set(database="postgres"), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = normalize_database_url(base.set(drivername="postgresql", database=name).render_as_string(hide_password=False))
    try:
        upgrade(url)
        yield replace(settings, database_url=url, test_job_handlers=TEST_HANDLERS)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture
async def proc_services(proc_settings: Settings) -> AsyncIterator[Services]:
    built = build_services(proc_settings, build_database(proc_settings))
    yield built
    await built.close()
    await built.db.dispose()


def spawn_worker(settings: Settings, log: Path) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "IMS_DATA_DIR": str(settings.data_dir),
        "IMS_DATABASE_URL": settings.database_url,
        "IMS_TEST_JOB_HANDLERS": ",".join(TEST_HANDLERS),
        "IMS_JOB_LEASE_SECONDS": str(LEASE),
        "IMS_JOB_POLL_INTERVAL": "0.1",
        "IMS_WORKER_STOP_GRACE": "0.5",
        "IMS_AUTO_MIGRATE": "false",
    }
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "app.cli", "worker", "--concurrency", "1"], cwd=ROOT, env=env,
            stdout=out, stderr=subprocess.STDOUT,
        )


async def wait_exit(proc: subprocess.Popen[bytes], timeout: float = 15) -> int:
    return await asyncio.wait_for(asyncio.to_thread(proc.wait), timeout)


async def test_killed_worker_is_replaced_and_the_job_completes(
    proc_services: Services, proc_settings: Settings, tmp_path: Path
) -> None:
    db = proc_services.db
    alice, _ = await make_account(db)
    job = await enqueue(proc_services, alice, STEPS, {"n": 10, "seconds": 0.3})
    first = spawn_worker(proc_settings, tmp_path / "worker-1.log")
    try:
        running = await wait_for(db, job.id, lambda j: j.progress >= 0.2, timeout=30)
        assert running.status == "RUNNING" and f":{first.pid}:" in (running.lease_owner or "")
        first.send_signal(signal.SIGKILL)
        assert await wait_exit(first) == -signal.SIGKILL
    finally:
        if first.poll() is None:
            first.kill()
    second = spawn_worker(proc_settings, tmp_path / "worker-2.log")
    try:
        done = await wait_for(db, job.id, finished, timeout=30)
        second.send_signal(signal.SIGTERM)
        assert await wait_exit(second) == 0
    finally:
        if second.poll() is None:
            second.kill()
    assert done.status == "SUCCESS", (tmp_path / "worker-2.log").read_text()
    assert done.result is not None and done.result["attempt"] == 2
    assert done.result["resumedAt"] >= 2  # resumed from the dead attempt's progress
    rows = [(a.attempt, a.worker_id.split(":")[1], a.outcome) for a in await attempts(db, [job.id])]
    assert rows == [(1, str(first.pid), "LOST"), (2, str(second.pid), "SUCCESS")]


async def test_sigterm_releases_the_running_job(proc_services: Services, proc_settings: Settings, tmp_path: Path) -> None:
    db = proc_services.db
    alice, _ = await make_account(db)
    job = await enqueue(proc_services, alice, HANG)
    worker = spawn_worker(proc_settings, tmp_path / "worker.log")
    try:
        await wait_for(db, job.id, lambda j: j.lease_owner is not None, timeout=30)
        worker.send_signal(signal.SIGTERM)
        assert await wait_exit(worker) == 0
    finally:
        if worker.poll() is None:
            worker.kill()
    stored = await wait_for(db, job.id, lambda j: j.lease_owner is None, timeout=1)
    assert (stored.status, stored.attempts) == ("RUNNING", 0)
    assert [a.outcome for a in await attempts(db, [job.id])] == ["RELEASED"]
