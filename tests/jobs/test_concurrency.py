"""Claim exclusivity: many workers over separate database handles, every job run exactly once."""

from __future__ import annotations

import asyncio
import time
from collections import Counter

from app.bootstrap import build_database, build_services
from app.config import Settings
from app.db.uow import Database
from app.jobs.worker import Worker
from app.services.registry import Services
from tests.factories import make_account
from tests.jobs.conftest import attempts, enqueue
from tests.jobs.handlers import ECHO, RUNS

JOBS = 60
PROCESSES = 3
WORKERS_PER_PROCESS = 4


async def _all_finished(db: Database, ids: list[str], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        async with db.uow(write=False) as uow:
            rows = [await uow.jobs.get(i) for i in ids]
        if all(r is not None and r.status in ("SUCCESS", "FAIL") for r in rows):
            return
        await asyncio.sleep(0.1)
    raise AssertionError("jobs did not finish")


async def test_every_job_runs_exactly_once(services: Services, db: Database, job_settings: Settings) -> None:
    alice, _ = await make_account(db)
    jobs = [await enqueue(services, alice, ECHO, {"i": i, "sleep": 0.01}) for i in range(JOBS)]
    ids = [j.id for j in jobs]
    # Each "process" has its own engine(s) and event bus, as separate processes would.
    stacks = [build_services(job_settings, build_database(job_settings)) for _ in range(PROCESSES)]
    workers = [
        Worker(s, f"p{p}-w{w}", lease_seconds=30, poll_interval=0.02)
        for p, s in enumerate(stacks) for w in range(WORKERS_PER_PROCESS)
    ]
    tasks = [asyncio.create_task(w.run()) for w in workers]
    try:
        await _all_finished(db, ids, timeout=60)
    finally:
        await asyncio.gather(*(w.stop(5) for w in workers))
        await asyncio.gather(*tasks)
        for s in stacks:
            await s.close()
            await s.db.dispose()
    assert all(RUNS[i] == 1 for i in ids), {i: RUNS[i] for i in ids if RUNS[i] != 1}
    rows = await attempts(db, ids)
    assert Counter(a.job_id for a in rows) == Counter({i: 1 for i in ids})
    assert {a.outcome for a in rows} == {"SUCCESS"}
    assert len({a.worker_id for a in rows}) > 1  # the work was actually shared
