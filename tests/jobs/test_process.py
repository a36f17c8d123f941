"""Real `ims worker` processes: one is SIGKILLed mid-job and another takes the job over;
SIGTERM stops a worker gracefully. On PostgreSQL each test gets a database of its own."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

from app.config import Settings
from app.services.registry import Services
from tests.factories import make_account
from tests.jobs.conftest import TEST_HANDLERS, attempts, enqueue, finished, wait_for
from tests.jobs.handlers import HANG, STEPS

ROOT = Path(__file__).resolve().parents[2]
LEASE = 1.5


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
