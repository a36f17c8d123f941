"""Workers in this process: outcomes, failures, takeover, bounded retries, graceful stop."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import time
from collections.abc import AsyncIterator, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import update

from app.bootstrap import build_database, build_services
from app.config import Settings
from app.db.repositories.jobs import Claim
from app.db.tables import Job
from app.db.types import utcnow
from app.db.uow import Database
from app.domain.images import Caller
from app.domain.jobs import MAX_ATTEMPTS
from app.jobs.queue import JobQueue
from app.jobs.registry import JobContext, JobFailed
from app.jobs.worker import Worker
from app.services.registry import Services
from tests.factories import make_account, make_image
from tests.jobs.conftest import attempts, enqueue, finished, load, wait_for
from tests.jobs.handlers import (
    CRASH,
    ECHO,
    FAIL,
    HANG,
    HANG_IN_THREAD,
    RUNS,
    SECRET,
    STEPS,
    THREAD_RELEASE,
    hang_in_thread,
)


@contextlib.asynccontextmanager
async def running(worker: Worker) -> AsyncIterator[Worker]:
    task = asyncio.create_task(worker.run())
    try:
        yield worker
    finally:
        await worker.stop(grace=5)
        await asyncio.wait_for(task, 10)


def worker(services: Services, name: str = "w1", lease: float = 5.0) -> Worker:
    return Worker(services, name, lease_seconds=lease, poll_interval=0.05)


async def test_job_runs_to_success_with_its_result(services: Services, db: Database) -> None:
    alice, _ = await make_account(db)
    job = await enqueue(services, alice, STEPS, {"n": 4, "seconds": 0.01})
    async with running(worker(services)):
        done = await wait_for(db, job.id, finished)
    assert (done.status, done.progress, done.step, done.error_code) == ("SUCCESS", 1.0, "done", None)
    assert done.result == {"resumedAt": 0, "attempt": 1}
    assert done.started_at is not None and done.finished_at is not None and done.started_at <= done.finished_at
    assert RUNS[job.id] == 1
    assert [(a.worker_id, a.outcome) for a in await attempts(db, [job.id])] == [("w1", "SUCCESS")]


async def test_progress_is_persisted_while_the_job_runs(services: Services, db: Database) -> None:
    alice, _ = await make_account(db)
    job = await enqueue(services, alice, STEPS, {"n": 4, "seconds": 0.4})
    async with running(worker(services)):
        seen = await wait_for(db, job.id, lambda j: j.status == "RUNNING" and j.progress >= 0.5)
        assert seen.progress == 0.5 and seen.step == "step 3 of 4"
        await wait_for(db, job.id, finished)


async def test_job_failed_ends_fail_with_its_code_and_kills_its_images(services: Services, db: Database) -> None:
    alice, _ = await make_account(db)
    image = await make_image(db, alice, status="QUEUED")
    job = await enqueue(services, alice, FAIL, {"code": "FORMAT_MISMATCH", "message": "not a qcow2"}, [image.id])
    async with running(worker(services)):
        done = await wait_for(db, job.id, finished)
    assert (done.status, done.error_code, done.error_message) == ("FAIL", "FORMAT_MISMATCH", "not a qcow2")
    assert RUNS[job.id] == 1  # an expected failure is not retried
    async with db.uow(alice.id, write=False) as uow:
        view = await uow.images.get_visible(image.id)
    assert view is not None and view.image.status == "KILLED"


async def test_unexpected_error_is_masked_and_logged_with_the_job_id(
    services: Services, db: Database, caplog: pytest.LogCaptureFixture
) -> None:
    alice, _ = await make_account(db)
    job = await enqueue(services, alice, CRASH)
    with caplog.at_level(logging.ERROR, logger="app.jobs.worker"):
        async with running(worker(services)):
            done = await wait_for(db, job.id, finished)
    assert (done.status, done.error_code) == ("FAIL", "INTERNAL_ERROR")
    assert done.error_message == f"Internal error (job {job.id})."
    assert SECRET not in (done.error_message or "")
    [record] = [r for r in caplog.records if r.exc_info and job.id in r.getMessage()]
    assert record.exc_info is not None and SECRET in str(record.exc_info[1])


async def test_an_attempt_past_the_run_time_limit_fails_job_timeout_and_the_worker_goes_on(
    services: Services, db: Database, caplog: pytest.LogCaptureFixture
) -> None:
    """A handler that never returns while its heartbeats keep the lease (an I/O call that
    hangs) is cancelled after IMS_JOB_MAX_SECONDS: the job fails JOB_TIMEOUT at once, without
    another attempt, its images KILLED; the worker takes the next job."""
    alice, _ = await make_account(db)
    image = await make_image(db, alice, status="SAVING")
    hung = await enqueue(services, alice, HANG, {}, [image.id])
    after = await enqueue(services, alice, ECHO, {"x": 1})
    with caplog.at_level(logging.ERROR, logger="app.jobs.worker"):
        async with running(Worker(services, "w1", lease_seconds=1.0, poll_interval=0.05, max_run_seconds=2.5)):
            done = await wait_for(db, hung.id, finished)
            assert (await wait_for(db, after.id, finished)).status == "SUCCESS"
    assert (done.status, done.error_code, done.error_message) == (
        "FAIL", "JOB_TIMEOUT", "The job ran longer than 2.5 seconds; it kept nothing.")
    assert RUNS[hung.id] == 1
    assert [(a.worker_id, a.outcome) for a in await attempts(db, [hung.id])] == [("w1", "FAIL")]
    async with db.uow(alice.id, write=False) as uow:
        view = await uow.images.get_visible(image.id)
    assert view is not None and view.image.status == "KILLED"
    assert any(hung.id in r.getMessage() and "still running after 2.5 s" in r.getMessage() for r in caplog.records)


async def test_an_attempt_stuck_in_a_thread_past_the_limit_fails_without_waiting_for_it(
    services: Services, db: Database, caplog: pytest.LogCaptureFixture
) -> None:
    """A cancelled handler that waits for a thread stuck in a call (as the stores let their
    threads finish) does not end: after `cancel_wait_seconds` the job fails JOB_TIMEOUT without
    it, its images KILLED, and the worker takes the next job; the attempt's late end is logged."""
    alice, _ = await make_account(db)
    image = await make_image(db, alice, status="SAVING")
    stuck = await enqueue(services, alice, HANG_IN_THREAD, {}, [image.id])
    after = await enqueue(services, alice, ECHO, {"x": 1})
    THREAD_RELEASE.clear()
    try:
        with caplog.at_level(logging.INFO, logger="app.jobs.worker"):
            async with running(Worker(services, "w1", lease_seconds=1.0, poll_interval=0.05, max_run_seconds=0.5,
                                      cancel_wait_seconds=0.5)):
                done = await wait_for(db, stuck.id, finished)
                assert (await wait_for(db, after.id, finished)).status == "SUCCESS"
                THREAD_RELEASE.set()
                for _ in range(100):
                    if any("timed-out attempt ended" in r.getMessage() for r in caplog.records):
                        break
                    await asyncio.sleep(0.05)
    finally:
        THREAD_RELEASE.set()
    assert (done.status, done.error_code) == ("FAIL", "JOB_TIMEOUT")
    assert done.lease_owner is None
    async with db.uow(alice.id, write=False) as uow:
        view = await uow.images.get_visible(image.id)
    assert view is not None and view.image.status == "KILLED"
    messages = [r.getMessage() for r in caplog.records if stuck.id in r.getMessage()]
    assert any("still running 0.5 s after its cancellation" in m for m in messages)
    assert any("the timed-out attempt ended" in m for m in messages)


@contextlib.contextmanager
def threads_stuck() -> Iterator[None]:
    """`hang_in_thread`'s threads stay stuck until the block ends (however it ends: a test
    that fails must not leave a worker waiting for one)."""
    THREAD_RELEASE.clear()
    try:
        yield
    finally:
        THREAD_RELEASE.set()


async def logged(caplog: pytest.LogCaptureFixture, text: str, timeout: float = 5.0) -> list[str]:
    """The messages logged so far, once one of them contains `text` (or after `timeout`)."""
    deadline = time.monotonic() + timeout
    while not any(text in r.getMessage() for r in caplog.records) and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    return [r.getMessage() for r in caplog.records]


async def test_a_stop_releases_the_job_of_an_attempt_stuck_in_a_thread_without_waiting_for_it(
    services: Services, db: Database, caplog: pytest.LogCaptureFixture
) -> None:
    """A handler cancelled at the end of the stop's grace that waits for a thread stuck in a
    call does not end: after `cancel_wait_seconds` the worker releases the job without it
    (claimable at once, the attempt not counted) and stops; the attempt's late end is logged.
    Before, the worker waited for the thread, its heartbeat renewing the lease all the while."""
    alice, _ = await make_account(db)
    job = await enqueue(services, alice, HANG_IN_THREAD)
    w = Worker(services, "w1", lease_seconds=1.0, poll_interval=0.05, cancel_wait_seconds=0.5)
    task = asyncio.create_task(w.run())
    with caplog.at_level(logging.INFO, logger="app.jobs.worker"):
        with threads_stuck():
            await wait_for(db, job.id, lambda j: j.lease_owner == "w1")
            began = time.monotonic()
            await w.stop(grace=0.2)
            stopped, _ = await asyncio.wait({task}, timeout=5)
            took = time.monotonic() - began
            assert stopped, "the worker waited for its stuck attempt"
            stored = await load(db, job.id)
            claim = await services.jobs.queue.claim("w2", 5, frozenset({HANG_IN_THREAD}))
        messages = await logged(caplog, "the stopped attempt ended")
        await asyncio.wait({task}, timeout=10)
    assert 0.69 < took < 3.0  # the grace (0.2 s), then the wait for the cancelled attempt (0.5 s)
    assert (stored.status, stored.lease_owner, stored.attempts) == ("RUNNING", None, 0)
    # Released, the thread still stuck: the next worker claims it at once, as attempt 1.
    assert claim is not None and (claim.job.id, claim.attempt, claim.took_over) == (job.id, 1, False)
    outcomes = [(a.worker_id, a.attempt, a.outcome) for a in await attempts(db, [job.id])]
    assert outcomes == [("w1", 1, "RELEASED"), ("w2", 1, None)]
    mine = [m for m in messages if job.id in m]
    assert any("still running 0.5 s after its cancellation; releasing the job without it" in m for m in mine)
    assert any("the stopped attempt ended" in m for m in mine)


async def test_a_lost_lease_goes_on_without_an_attempt_stuck_in_a_thread(
    services: Services, db: Database, caplog: pytest.LogCaptureFixture
) -> None:
    """A handler cancelled because another worker took its job over, waiting for a thread stuck
    in a call, does not end: after `cancel_wait_seconds` the worker leaves it behind and runs
    the next job; the attempt's late end is logged. Before, the worker waited for the thread."""
    alice, _ = await make_account(db)
    stuck = await enqueue(services, alice, HANG_IN_THREAD)
    after = await enqueue(services, alice, ECHO, {"x": 1})
    with caplog.at_level(logging.INFO, logger="app.jobs.worker"):
        async with running(Worker(services, "w1", lease_seconds=1.0, poll_interval=0.05, cancel_wait_seconds=0.5)):
            with threads_stuck():
                await wait_for(db, stuck.id, lambda j: j.lease_owner == "w1")
                # Another worker takes the job over, in one statement: a lapse then a claim
                # would race w1's heartbeat, which renews the lease every third of a second.
                async with db.uow() as uow:
                    await uow.session.execute(update(Job).where(Job.id == stuck.id).values(  # type: ignore[arg-type]
                        lease_owner="thief", lease_expires_at=utcnow() + timedelta(seconds=60),
                        attempts=Job.attempts + 1))
                    await uow.commit()
                next_job = await wait_for(db, after.id, finished, timeout=5)
            messages = await logged(caplog, "the abandoned attempt ended")
    assert next_job.status == "SUCCESS"
    stored = await load(db, stuck.id)
    assert (stored.status, stored.lease_owner, stored.attempts) == ("RUNNING", "thief", 2)
    assert RUNS[stuck.id] == 1
    mine = [m for m in messages if stuck.id in m]
    assert any("still running 0.5 s after its cancellation; going on without it" in m for m in mine)
    assert any("the abandoned attempt ended" in m for m in mine)


LATE_REPORT = "TEST_LATE_REPORT"


async def _reports_late(ctx: JobContext) -> None:
    """Attempt 1 hangs in a thread and reports progress once the thread returns; later ones
    report, then wait."""
    if ctx.attempt > 1:
        await ctx.progress(0.5, "second run")
        await asyncio.sleep(3600)
    try:
        await hang_in_thread(ctx)
    finally:
        await ctx.progress(0.9, "late")


async def test_an_attempt_left_behind_cannot_report_on_the_job_its_worker_holds_again(
    services: Services, db: Database, caplog: pytest.LogCaptureFixture
) -> None:
    """A worker that went on without its attempt stuck in a thread may claim the same job
    again (once its lease is released or has lapsed, after an outage longer than the lease):
    when the thread returns, the old attempt's progress report must not land on the job, which
    the worker's id holds again (a job's writes are checked against the worker's id only)."""
    services.jobs.registry.register(LATE_REPORT, _reports_late)
    alice, _ = await make_account(db)
    job = await enqueue(services, alice, LATE_REPORT)
    with caplog.at_level(logging.INFO, logger="app.jobs.worker"):
        async with running(Worker(services, "w1", lease_seconds=1.0, poll_interval=0.05, cancel_wait_seconds=0.5)):
            with threads_stuck():
                await wait_for(db, job.id, lambda j: j.lease_owner == "w1")
                # Taken over and released at once, in one statement (a lapse then a claim would
                # race w1's heartbeat): w1's lease is lost, and the job claimable again.
                async with db.uow() as uow:
                    await uow.session.execute(update(Job).where(Job.id == job.id).values(  # type: ignore[arg-type]
                        lease_owner=None, lease_expires_at=None))
                    await uow.commit()
                await wait_for(db, job.id, lambda j: j.lease_owner == "w1" and j.step == "second run", timeout=5)
            messages = await logged(caplog, "the abandoned attempt ended")
            stored = await load(db, job.id)
    assert (stored.status, stored.lease_owner, stored.attempts, stored.progress, stored.step) == (
        "RUNNING", "w1", 2, 0.5, "second run")
    assert any(job.id in m and "the abandoned attempt ended: LeaseLost" in m for m in messages)


async def test_expired_lease_is_taken_over_and_the_job_resumes(services: Services, db: Database) -> None:
    alice, _ = await make_account(db)
    job = await enqueue(services, alice, STEPS, {"n": 5, "seconds": 0.01})
    queue = services.jobs.queue
    claim = await queue.claim("dead", 0.3, frozenset({STEPS}))  # a worker that dies mid-job
    assert claim is not None
    assert await queue.progress(job.id, "dead", 0.4, "step 3 of 5")
    async with running(worker(services, "heir")):
        done = await wait_for(db, job.id, finished)
    assert done.status == "SUCCESS" and done.result == {"resumedAt": 2, "attempt": 2}
    outcomes = [(a.attempt, a.worker_id, a.outcome) for a in await attempts(db, [job.id])]
    assert outcomes == [(1, "dead", "LOST"), (2, "heir", "SUCCESS")]


async def test_retries_are_bounded_then_worker_lost(services: Services, db: Database) -> None:
    alice, _ = await make_account(db)
    image = await make_image(db, alice, status="SAVING")
    job = await enqueue(services, alice, ECHO, image_ids=[image.id])
    for n in range(MAX_ATTEMPTS):
        claim = await services.jobs.queue.claim(f"dead-{n}", 0.05, frozenset({ECHO}))
        assert claim is not None and claim.attempt == n + 1
        await asyncio.sleep(0.1)
    async with running(worker(services)):
        done = await wait_for(db, job.id, finished)
    assert (done.status, done.error_code, done.attempts) == ("FAIL", "WORKER_LOST", MAX_ATTEMPTS)
    assert RUNS[job.id] == 0  # never run a fourth time
    async with db.uow(alice.id, write=False) as uow:
        view = await uow.images.get_visible(image.id)
    assert view is not None and view.image.status == "KILLED"
    assert [a.outcome for a in await attempts(db, [job.id])] == ["LOST"] * MAX_ATTEMPTS


async def test_a_worker_that_loses_its_lease_abandons_the_job(services: Services, db: Database) -> None:
    alice, _ = await make_account(db)
    job = await enqueue(services, alice, HANG)
    slow = worker(services, "slow", lease=0.6)
    async with running(slow):
        await wait_for(db, job.id, lambda j: j.lease_owner == "slow")
        # Its lease lapses (say the process was frozen) and another worker takes the job.
        async with db.uow() as uow:
            await uow.session.execute(update(Job).where(Job.id == job.id).values(lease_expires_at=utcnow()))  # type: ignore[arg-type]
            await uow.commit()
        assert await services.jobs.queue.claim("thief", 60, frozenset({HANG})) is not None
        await asyncio.sleep(0.6)  # two heartbeats
        assert slow._current is None  # the handler was cancelled
    stored = await load(db, job.id)
    assert (stored.status, stored.lease_owner, stored.attempts) == ("RUNNING", "thief", 2)


async def test_graceful_stop_releases_an_unfinished_job(services: Services, db: Database) -> None:
    alice, _ = await make_account(db)
    job = await enqueue(services, alice, HANG)
    w = worker(services)
    task = asyncio.create_task(w.run())
    await wait_for(db, job.id, lambda j: j.lease_owner == "w1")
    await w.stop(grace=0.1)
    await asyncio.wait_for(task, 5)
    stored = await load(db, job.id)
    assert (stored.status, stored.lease_owner, stored.attempts) == ("RUNNING", None, 0)
    assert [a.outcome for a in await attempts(db, [job.id])] == ["RELEASED"]


class GatedQueue(JobQueue):
    """The real queue, whose claim waits for `gate` once begun: a claim transaction still in
    flight (waiting on the database, say) when the worker is told to stop."""

    def __init__(self, queue: JobQueue, gate: asyncio.Event) -> None:
        super().__init__(queue.db, queue.events, max_attempts=queue.max_attempts)
        self.gate = gate
        self.claiming = asyncio.Event()

    async def claim(self, *args: Any, **kwargs: Any) -> Claim | None:
        self.claiming.set()
        await self.gate.wait()
        return await super().claim(*args, **kwargs)


async def test_a_stop_during_a_claim_releases_the_job_unstarted(services: Services, db: Database) -> None:
    alice, _ = await make_account(db)
    job = await enqueue(services, alice, HANG)
    w = worker(services)
    gate = asyncio.Event()
    w.queue = queue = GatedQueue(services.jobs.queue, gate)
    task = asyncio.create_task(w.run())
    await queue.claiming.wait()
    await w.stop(grace=60)  # no run to bound yet: the claim has not returned
    gate.set()
    # Had the claimed job run, its hour-long handler (or the 60 s grace) would outlast this.
    await asyncio.wait_for(task, 10)
    stored = await load(db, job.id)
    assert (stored.status, stored.lease_owner, stored.attempts) == ("RUNNING", None, 0)
    assert [(a.worker_id, a.attempt, a.outcome) for a in await attempts(db, [job.id])] == [("w1", 1, "RELEASED")]
    assert RUNS[job.id] == 0
    # Released, not lost: the next worker claims it at once as its first counted attempt.
    claim = await services.jobs.queue.claim("w2", 5, frozenset({HANG}))
    assert claim is not None and (claim.job.id, claim.attempt, claim.exhausted) == (job.id, 1, False)


async def test_graceful_stop_lets_the_current_job_finish(services: Services, db: Database) -> None:
    alice, _ = await make_account(db)
    job = await enqueue(services, alice, STEPS, {"n": 3, "seconds": 0.1})
    w = worker(services)
    task = asyncio.create_task(w.run())
    await wait_for(db, job.id, lambda j: j.status == "RUNNING")
    await w.stop(grace=5)
    await asyncio.wait_for(task, 5)
    assert (await load(db, job.id)).status == "SUCCESS"


async def test_heartbeats_keep_a_job_longer_than_its_lease(services: Services, db: Database) -> None:
    alice, _ = await make_account(db)
    job = await enqueue(services, alice, STEPS, {"n": 4, "seconds": 0.4})  # 1.6 s, lease 0.6 s
    async with running(worker(services, "a", lease=0.6)):
        await wait_for(db, job.id, lambda j: j.lease_owner == "a")
        async with running(worker(services, "b", lease=0.6)):  # would take over a lapsed lease
            done = await wait_for(db, job.id, finished)
    assert done.status == "SUCCESS" and RUNS[job.id] == 1
    assert [(a.worker_id, a.outcome) for a in await attempts(db, [job.id])] == [("a", "SUCCESS")]


async def test_a_broken_finish_hook_fails_the_job_and_the_worker_goes_on(services: Services, db: Database) -> None:
    """A hook that raises in the transaction ending the job (success or failure) cannot leave the
    job RUNNING nor stop the worker: the job ends FAIL without hooks, the next job runs."""

    async def ok(ctx: object) -> dict[str, object]:
        return {"ok": True}

    async def broken(ctx: object, uow: object) -> None:
        raise KeyError("manifestId")

    services.jobs.registry.register("BROKEN_FINISH", ok, on_fail=None, on_finish=broken)
    alice, _ = await make_account(db)
    job = await enqueue(services, alice, "BROKEN_FINISH")
    after = await enqueue(services, alice, STEPS, {"n": 1, "seconds": 0})
    async with running(worker(services)):
        done = await wait_for(db, job.id, finished)
        later = await wait_for(db, after.id, finished)
    assert (done.status, done.error_code) == ("FAIL", "INTERNAL_ERROR")
    assert later.status == "SUCCESS"


@pytest.mark.parametrize("outcome", ["SUCCESS", "FAIL"])
async def test_an_end_whose_transaction_fails_once_is_recorded_with_its_hooks(
    services: Services, db: Database, outcome: str
) -> None:
    """A transient error in the transaction ending a job (a deadlock, a lost connection) is
    tried again: the hooks that reclaim what the job held are not dropped, and a job that did
    its work is not failed for it."""
    calls: list[str] = []

    async def handler(ctx: object) -> dict[str, object]:
        if outcome == "FAIL":
            raise JobFailed("IMAGE_NOT_FOUND", "gone")
        return {"ok": True}

    async def flaky(ctx: JobContext, uow: object) -> None:
        calls.append(ctx.job_id)
        if len(calls) == 1:
            raise ConnectionResetError("the database went away")

    services.jobs.registry.register("FLAKY_END", handler, on_fail=None, on_finish=flaky)
    alice, _ = await make_account(db)
    job = await enqueue(services, alice, "FLAKY_END")
    async with running(worker(services)):
        done = await wait_for(db, job.id, finished)
    expected = ("SUCCESS", None, {"ok": True}) if outcome == "SUCCESS" else ("FAIL", "IMAGE_NOT_FOUND", None)
    assert (done.status, done.error_code, done.result) == expected
    assert calls == [job.id, job.id]  # the hook ran again, and its second run was committed


def unreachable_url(kind: str, tmp_path: Path) -> str:
    if kind == "sqlite":
        return f"sqlite:///{tmp_path / 'no-such-directory' / 'ims.db'}"
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"postgresql://ims:pw@127.0.0.1:{port}/ims"


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
async def test_a_database_outage_is_logged_with_one_traceback_then_one_line_per_try(
    kind: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # Before, every poll (twice a second per worker) logged a traceback of ~120 lines: a
    # 10-minute outage wrote hundreds of thousands of lines per worker process.
    settings = Settings(data_dir=tmp_path / "data", database_url=unreachable_url(kind, tmp_path), workers=0)
    down = build_services(settings, build_database(settings))
    caplog.set_level(logging.INFO, logger="app.jobs.worker")
    failing = Worker(down, "w-down", lease_seconds=5, poll_interval=0.001)

    def failures() -> list[logging.LogRecord]:
        return [r for r in caplog.records if "claiming failed" in r.getMessage()]

    try:
        async with running(failing):
            while len(failures()) < 6:
                await asyncio.sleep(0.01)
    finally:
        await down.close()
        await down.db.dispose()
    first, *later = failures()
    assert (first.levelno, first.getMessage(), first.exc_info is not None) == (
        logging.ERROR, "worker w-down: claiming failed", True)
    assert [(r.levelno, r.exc_info) for r in later] == [(logging.WARNING, None)] * len(later)
    assert [r.getMessage().split(":")[1] for r in later[:4]] == [
        f" claiming failed again ({n} tries)" for n in range(2, 6)]
    assert all("\n" not in r.getMessage() and "pw@" not in r.getMessage() for r in later)



SAVED_HANG = "TEST_SAVED_HANG"
#: job id -> how many times _hang_saved started on it.
SAVED_RUNS: dict[str, int] = {}


async def _hang_saved(ctx: JobContext) -> None:
    SAVED_RUNS[ctx.job_id] = SAVED_RUNS.get(ctx.job_id, 0) + 1
    await asyncio.sleep(3600)


async def _exhausted_with_its_images_saved(services: Services, db: Database) -> Job:
    """A job that `saves_images`, its image ACTIVE, whose every allowed attempt's worker died."""
    services.jobs.registry.register(SAVED_HANG, _hang_saved, saves_images=True)
    alice, _ = await make_account(db)
    image = await make_image(db, alice, status="ACTIVE")
    job = await enqueue(services, alice, SAVED_HANG, image_ids=[image.id])
    for n in range(MAX_ATTEMPTS):
        assert await services.jobs.queue.claim(f"dead-{n}", 0.05, frozenset({SAVED_HANG})) is not None
        await asyncio.sleep(0.1)
    return job


async def _still_exhausted(services: Services, db: Database, job: Job) -> None:
    stored = await load(db, job.id)
    assert (stored.status, stored.lease_owner, stored.attempts) == ("RUNNING", None, MAX_ATTEMPTS)
    claim = await services.jobs.queue.claim("w2", 5, frozenset({SAVED_HANG}))
    assert claim is not None and (claim.attempt, claim.exhausted) == (MAX_ATTEMPTS, True)
    assert [(a.attempt, a.outcome) for a in await attempts(db, [job.id])] == [
        (n + 1, "LOST") for n in range(MAX_ATTEMPTS)]


async def test_a_stop_during_the_run_past_the_last_attempt_keeps_the_job_exhausted(
    services: Services, db: Database
) -> None:
    """A claim past the last attempt counts none (its handler only returns the result of the
    attempt that saved the images): releasing it at a stop must not give one back either.
    Before, the release took one off, and the next claim ran the handler as a fresh attempt
    MAX_ATTEMPTS (one run more than allowed, and a second audit row numbered 3)."""
    job = await _exhausted_with_its_images_saved(services, db)
    w = worker(services)
    task = asyncio.create_task(w.run())
    while w._current is None:
        await asyncio.sleep(0.01)
    await w.stop(grace=0.1)
    await asyncio.wait_for(task, 5)
    assert SAVED_RUNS[job.id] == 1
    await _still_exhausted(services, db, job)


async def test_a_stop_during_the_claim_past_the_last_attempt_starts_no_handler(
    services: Services, db: Database
) -> None:
    """The stop came while the claim was in flight, and the claim turned out exhausted with the
    images saved: the handler must not start unbounded by the grace (it ran its hour here)."""
    job = await _exhausted_with_its_images_saved(services, db)
    w = worker(services)
    gate = asyncio.Event()
    w.queue = queue = GatedQueue(services.jobs.queue, gate)
    task = asyncio.create_task(w.run())
    await queue.claiming.wait()
    await w.stop(grace=60)
    gate.set()
    await asyncio.wait_for(task, 10)
    assert SAVED_RUNS.get(job.id, 0) == 0
    await _still_exhausted(services, db, job)


async def test_a_failure_hook_that_keeps_failing_still_kills_the_jobs_images(
    services: Services, db: Database
) -> None:
    """The job's own failure hook raises on every try: the job ends FAIL all the same, and its
    images must not stay SAVING for ever (no delete takes an image a job is writing:
    IMAGE_BUSY, and it holds a PRIVATE_IMAGES place for good). They end KILLED, which the owner
    deletes, letting go of what they hold."""

    async def failing(ctx: JobContext) -> None:
        raise JobFailed("IMAGE_NOT_FOUND", "gone")

    async def broken(ctx: JobContext, uow: object) -> None:
        raise KeyError("manifestId")

    services.jobs.registry.register("BROKEN_FAIL_HOOK", failing, on_fail=broken)
    alice, _ = await make_account(db)
    image = await make_image(db, alice, status="SAVING")
    job = await enqueue(services, alice, "BROKEN_FAIL_HOOK", image_ids=[image.id])
    async with running(worker(services)):
        done = await wait_for(db, job.id, finished)
    assert (done.status, done.error_code) == ("FAIL", "IMAGE_NOT_FOUND")
    async with db.uow(alice.id, write=False) as uow:
        view = await uow.images.get_visible(image.id)
    assert view is not None and view.image.status == "KILLED"
    me = Caller(alice.id, alice.name, alice.role)
    assert await services.images.delete(me, [image.id]) == [image.id]


class HangingHeartbeats(JobQueue):
    """The real queue, whose heartbeats never get an answer (a database connection hanging
    on a network partition, a lock held past the busy timeout)."""

    async def heartbeat(self, job_id: str, worker_id: str, lease_seconds: float) -> bool:
        await asyncio.Event().wait()
        raise AssertionError("unreachable")


async def test_a_heartbeat_that_hangs_past_the_lease_abandons_the_job(services: Services, db: Database) -> None:
    """A renewal that does not come back within the lease leaves the lease expired in the
    database, where another worker takes the job over: the handler must stop then, as when
    renewals fail, not run on beside the new attempt for as long as the call hangs."""
    alice, _ = await make_account(db)
    job = await enqueue(services, alice, HANG)
    w = worker(services, lease=0.6)
    w.queue = HangingHeartbeats(services.jobs.queue.db, services.jobs.queue.events)
    # The handler runs for an hour: the attempt ends when it is abandoned, about a lease in.
    assert await asyncio.wait_for(w.run_once(), 3)
    assert RUNS[job.id] == 1
    stored = await load(db, job.id)
    assert (stored.status, stored.lease_owner) == ("RUNNING", "w1")  # not released: its lease is gone
    claim = await services.jobs.queue.claim("heir", 5, frozenset({HANG}))
    assert claim is not None and (claim.attempt, claim.took_over) == (2, True)
