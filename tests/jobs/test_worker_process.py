"""`ims serve` runs its job workers in a child process (app.jobs.process): a real server
process, a real child, real signals. On PostgreSQL each test gets a database of its own."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import replace
from pathlib import Path

import httpx

from app.config import Settings
from app.db.tables import Job
from app.jobs.worker import CANCEL_WAIT_SECONDS
from app.services.registry import Services
from tests.bench.common import served_process
from tests.conftest import free_port
from tests.factories import make_account
from tests.jobs.conftest import attempts, enqueue, finished, load, wait_for
from tests.jobs.handlers import HANG, HANG_IN_THREAD, STEPS
from tests.jobs.test_api import subscription, ws_session

LEASE = 1.5
PATIENCE = 30.0


class Server:
    def __init__(self, proc: subprocess.Popen[bytes], url: str, log: Path) -> None:
        self.proc, self.url, self.log = proc, url, log

    def children(self) -> list[int]:
        try:
            with open(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children") as fh:
                return [int(c) for c in fh.read().split()]
        except FileNotFoundError:
            return []

    def worker_pid(self, other_than: int | None = None) -> int:
        """The job worker process (other than `other_than`), once its worker runs."""
        deadline = time.monotonic() + PATIENCE
        while True:
            found = [pid for pid in self.children() if pid != other_than]
            if found and f":{found[0]}:0 started" in self.log.read_text():
                [pid] = found
                return pid
            assert time.monotonic() < deadline and self.proc.poll() is None, self.log.read_text()[-3000:]
            time.sleep(0.05)


@contextmanager
def serve(settings: Settings, tmp_path: Path) -> Iterator[Server]:
    """A real `ims serve` with one job worker, in the child process it starts by default."""
    port = free_port()
    settings = replace(settings, workers=1, worker_process=True, job_poll_interval=0.05, job_lease_seconds=LEASE,
                       worker_stop_grace=0.5, maintenance_interval=0, public_url=f"http://127.0.0.1:{port}")
    log = tmp_path / "server.log"
    with served_process({**os.environ, **settings.to_env()}, port, log) as (url, proc):
        yield Server(proc, url, log)


@asynccontextmanager
async def running_a_hanging_job(
    services: Services, settings: Settings, tmp_path: Path
) -> AsyncIterator[tuple[Server, int, Job]]:
    """A served job that never ends, held by the server's worker process: (server, that
    process's pid, the job)."""
    alice, _ = await make_account(services.db)
    job = await enqueue(services, alice, HANG)
    with serve(settings, tmp_path) as server:
        child = server.worker_pid()
        await wait_for(services.db, job.id, lambda j: j.lease_owner is not None, timeout=PATIENCE)
        yield server, child, job


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def niceness(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as fh:
        return int(fh.read().rsplit(")", 1)[1].split()[16])  # field 19 of stat(5)


async def wait_gone(pid: int) -> None:
    deadline = time.monotonic() + PATIENCE
    while alive(pid):
        assert time.monotonic() < deadline, f"process {pid} is still there"
        await asyncio.sleep(0.02)


def worker_pids(rows: list[tuple[int, str, str | None]]) -> list[int]:
    return [int(worker.split(":")[1]) for _, worker, _ in rows]


async def test_jobs_run_in_a_niced_child_that_reports_progress_and_metrics(
    proc_services: Services, proc_settings: Settings, tmp_path: Path
) -> None:
    db = proc_services.db
    alice, token = await make_account(db)
    with serve(proc_settings, tmp_path) as server:
        child = server.worker_pid()
        assert niceness(child) == niceness(server.proc.pid) + 10
        job = await enqueue(proc_services, alice, "EXPORT_IMAGE_LIST", {"n": 8, "seconds": 0.5})
        # Eight steps half a second apart: a subscriber that only re-read its job after each
        # quiet period (2 s) would miss most; the child's pipe delivers every one.
        result = await ws_session(server, {"authorization": f"Bearer {token}"}, subscription(job.id))
        updates = [m["payload"]["data"]["jobUpdated"] for m in result.messages if m["type"] == "next"]
        assert updates[-1]["status"] == "SUCCESS", server.log.read_text()[-3000:]
        assert sorted({u["progress"] for u in updates if u["progress"] < 1}) == [i / 8 for i in range(8)]
        metrics = httpx.get(f"{server.url}/metrics").text
        assert 'ims_job_duration_seconds_count{status="SUCCESS",type="EXPORT_IMAGE_LIST"} 1.0' in metrics
        assert "ims_worker_process_restarts_total 0.0" in metrics
        rows = [(a.attempt, a.worker_id, a.outcome) for a in await attempts(db, [job.id])]
        assert [(n, outcome) for n, _, outcome in rows] == [(1, "SUCCESS")]
        assert worker_pids(rows) == [child] != [server.proc.pid]


async def test_a_killed_worker_process_is_replaced_and_its_job_taken_over(
    proc_services: Services, proc_settings: Settings, tmp_path: Path
) -> None:
    db = proc_services.db
    alice, _ = await make_account(db)
    with serve(proc_settings, tmp_path) as server:
        first = server.worker_pid()
        job = await enqueue(proc_services, alice, STEPS, {"n": 10, "seconds": 0.3})
        await wait_for(db, job.id, lambda j: j.progress >= 0.2, timeout=PATIENCE)
        os.kill(first, signal.SIGKILL)
        await wait_gone(first)
        assert httpx.get(f"{server.url}/health").status_code == 200  # the API goes on
        done = await wait_for(db, job.id, finished, timeout=PATIENCE)
        second = server.worker_pid(other_than=first)
        rows = [(a.attempt, a.worker_id, a.outcome) for a in await attempts(db, [job.id])]
        assert done.status == "SUCCESS", server.log.read_text()[-3000:]
        assert [(n, outcome) for n, _, outcome in rows] == [(1, "LOST"), (2, "SUCCESS")]
        assert worker_pids(rows) == [first, second] and second != first
        assert f"job worker process {first} exited with -9" in server.log.read_text()
        assert "ims_worker_process_restarts_total 1.0" in httpx.get(f"{server.url}/metrics").text


async def test_the_worker_process_dies_with_a_killed_server(
    proc_services: Services, proc_settings: Settings, tmp_path: Path
) -> None:
    db = proc_services.db
    async with running_a_hanging_job(proc_services, proc_settings, tmp_path) as (server, child, job):
        server.proc.send_signal(signal.SIGKILL)
        assert server.proc.wait(timeout=PATIENCE) == -signal.SIGKILL
        await wait_gone(child)  # no orphan goes on running the job
    stored = await wait_for(db, job.id, lambda j: j.lease_owner is not None, timeout=1)
    assert f":{child}:" in (stored.lease_owner or "") and stored.status == "RUNNING"


async def test_sigterm_stops_the_server_and_its_worker_process_gracefully(
    proc_services: Services, proc_settings: Settings, tmp_path: Path
) -> None:
    db = proc_services.db
    async with running_a_hanging_job(proc_services, proc_settings, tmp_path) as (server, child, job):
        server.proc.send_signal(signal.SIGTERM)
        # uvicorn ends by raising the signal it caught, once shut down.
        assert server.proc.wait(timeout=PATIENCE) == -signal.SIGTERM, server.log.read_text()[-3000:]
        assert "Application shutdown complete." in server.log.read_text() and not alive(child)
    stored = await wait_for(db, job.id, lambda j: j.lease_owner is None, timeout=1)
    assert (stored.status, stored.attempts) == ("RUNNING", 0)
    assert [a.outcome for a in await attempts(db, [job.id])] == ["RELEASED"]
    assert "exited with" not in server.log.read_text()  # stopped, not restarted


async def test_a_stopping_server_lets_its_worker_process_release_a_job_stuck_in_a_thread(
    proc_services: Services, proc_settings: Settings, tmp_path: Path
) -> None:
    """A stopping worker waits for the attempt it cancels up to CANCEL_WAIT_SECONDS after the
    stop's grace, then releases the job: the server must not kill its child before (it did
    IMS_WORKER_STOP_GRACE + 10 s after its SIGTERM, and the job waited out its lease, the
    attempt counted against the job's three)."""
    db = proc_services.db
    alice, _ = await make_account(db)
    # The thread returns 15 s in: past the grace (0.5 s) + 10 s, within CANCEL_WAIT_SECONDS.
    job = await enqueue(proc_services, alice, HANG_IN_THREAD, {"seconds": 15})
    with serve(proc_settings, tmp_path) as server:
        server.worker_pid()
        await wait_for(db, job.id, lambda j: j.lease_owner is not None, timeout=PATIENCE)
        server.proc.send_signal(signal.SIGTERM)
        code = await asyncio.to_thread(server.proc.wait, CANCEL_WAIT_SECONDS + PATIENCE)
        log = server.log.read_text()
    assert code == -signal.SIGTERM, log[-3000:]
    assert "did not stop; killing it" not in log
    stored = await load(db, job.id)
    assert (stored.status, stored.lease_owner, stored.attempts) == ("RUNNING", None, 0)
    assert [a.outcome for a in await attempts(db, [job.id])] == ["RELEASED"]


def test_settings_survive_the_environment_a_child_is_started_with() -> None:
    settings = Settings(
        data_dir=Path("/srv/ims"), database_url="postgresql://ims@db/ims", regions=("eu-1", "us-2"),
        admin_token="ims_x", admin_name="root", kms_root_key_file=Path("/keys/root"), s3_endpoint="minio:9000",
        s3_access_key="a", s3_secret_key="s", s3_secure=True, url_secret="u" * 16, public_url="https://ims.example", direct_io=False,
        workers=3, worker_process=False, worker_nice=5, job_lease_seconds=12.5, job_poll_interval=0.25,
        worker_stop_grace=4.0, maintenance_interval=0.0, test_job_handlers=("a.b", "c.d"), auto_migrate=False,
        log_level="DEBUG", region_endpoints={"us-2": "minio-us:9000"},
    )
    assert Settings.from_env(settings.to_env()) == settings
    assert Settings.from_env(Settings().to_env()) == Settings()
