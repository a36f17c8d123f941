"""Workers: claim a job, run its handler under a renewed lease, record the outcome.

A worker runs one job at a time. While the handler runs, a heartbeat task renews the lease
every third of it (and persists pending progress). If the lease cannot be renewed — another
worker took the job over, or the database has been unreachable for a whole lease — the
handler is cancelled and its outcome discarded: the job belongs to someone else now.

Stopping is graceful: the current job gets `grace` seconds to finish; after that its handler
is cancelled and the lease released, so another worker takes the job at once (the released
attempt does not count against MAX_ATTEMPTS). A job whose claim was still in flight when the
stop came is released the same way without its handler ever starting.

A cancelled handler (stopped, its lease lost, or past `max_run_seconds`) is waited for at most
`cancel_wait_seconds`: one waiting for a call stuck in a thread does not end, and the worker
goes on without it (releases the job, discards the attempt, or fails the job), its heartbeat
stopped; the attempt's late end is logged, and its progress reports no longer reach the job.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import socket
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from app.db.repositories.jobs import Claim
from app.domain.jobs import LEASE_SECONDS
from app.http import request_id_var
from app.jobs.queue import JobQueue
from app.jobs.registry import (
    JobContext,
    JobFailed,
    LeaseLost,
    Registration,
    kill_job_images,
    out_of_space,
    storage_unavailable,
)
from app.services.registry import Services

log = logging.getLogger(__name__)

POLL_INTERVAL_SECONDS = 0.5
STOP_GRACE_SECONDS = 10.0
#: Pauses before recording a job's end again when its transaction failed (a deadlock, a lost
#: connection): its hooks reclaim what the job held, and are only dropped after the last try.
END_RETRY_DELAYS = (0.2, 1.0)
#: While claiming keeps failing (the database is down), the pause before the next try doubles
#: from the poll interval up to this.
CLAIM_BACKOFF_MAX_SECONDS = 5.0
#: Longest an attempt may run (IMS_JOB_MAX_SECONDS): a handler whose heartbeats go on while it
#: waits for something that never comes would otherwise hold its job and images for ever.
MAX_RUN_SECONDS = 86400.0
#: How long a cancelled attempt (stopped, its lease lost, or running too long) is given to end
#: before the worker goes on without it.
CANCEL_WAIT_SECONDS = 30.0


@dataclass(frozen=True)
class _GivenUp:
    """Why the worker went on without a cancelled attempt, as its log lines say it."""

    attempt: str  # "the {attempt} attempt ended"
    job: str  # "still running … after its cancellation; {job} without it"
    result: str  # "the {attempt} attempt ended {result}" when it returned a result


_TIMED_OUT = _GivenUp("timed-out", "failing the job", "after its job failed")
_STOPPED = _GivenUp("stopped", "releasing the job", "after its job was released")
_LOST = _GivenUp("abandoned", "going on", "after its lease was lost")


def _late_end(job_id: str, why: _GivenUp, task: asyncio.Task[Any]) -> None:
    """The end of an attempt the worker went on without: logged, not lost."""
    if task.cancelled():
        log.info("job %s: the %s attempt ended", job_id, why.attempt)
    elif task.exception() is not None:
        log.info("job %s: the %s attempt ended: %r", job_id, why.attempt, task.exception())
    else:
        log.info("job %s: the %s attempt ended %s", job_id, why.attempt, why.result)


def default_worker_id(index: int = 0) -> str:
    return f"{socket.gethostname()[:40]}:{os.getpid()}:{index}"


class _ProgressWriter:
    """An attempt's progress writes (its JobContext's), until the worker goes on without it: an
    attempt left behind may report when its stuck thread returns, by when this worker may hold
    the job again (a job's writes are checked against the worker's id only)."""

    def __init__(self, queue: JobQueue, job_id: str, worker_id: str) -> None:
        self.queue, self.job_id, self.worker_id = queue, job_id, worker_id
        self.given_up = False

    async def __call__(self, progress: float, step: str | None) -> bool:
        return not self.given_up and await self.queue.progress(self.job_id, self.worker_id, progress, step)


@dataclass
class _Run:
    """One job being run by this worker."""

    ctx: JobContext
    registration: Registration
    task: asyncio.Task[dict[str, Any] | None]
    write: _ProgressWriter
    lost: bool = False
    #: Cancelled for running longer than the worker's `max_run_seconds`.
    timed_out: bool = False
    #: The claim counted an attempt (an exhausted one did not): a release gives it back.
    counted: bool = True
    #: Set once the handler is cancelled (by a stop, a lost lease or the run time limit).
    cancelled: asyncio.Future[None] = field(default_factory=lambda: asyncio.get_running_loop().create_future())

    @property
    def given_up(self) -> bool:
        """The worker went on without the cancelled handler, which had not ended."""
        return self.write.given_up

    def cancel(self) -> None:
        self.task.cancel()
        if not self.cancelled.done():
            self.cancelled.set_result(None)


class Worker:
    def __init__(
        self, services: Services, worker_id: str | None = None, *,
        lease_seconds: float = LEASE_SECONDS, poll_interval: float = POLL_INTERVAL_SECONDS,
        max_run_seconds: float = MAX_RUN_SECONDS, cancel_wait_seconds: float = CANCEL_WAIT_SECONDS,
    ) -> None:
        self.services = services
        self.worker_id = worker_id or default_worker_id()
        self.lease_seconds = lease_seconds
        self.max_run_seconds = max_run_seconds
        self.cancel_wait_seconds = cancel_wait_seconds
        self.poll_interval = poll_interval
        self.queue = services.jobs.queue
        self.registry = services.jobs.registry
        self._stopping = asyncio.Event()
        self._current: _Run | None = None

    async def run(self) -> None:
        """Claim and run jobs until `stop()`."""
        log.info("worker %s started", self.worker_id)
        failures = 0
        while not self._stopping.is_set():
            try:
                ran = await self.run_once()
            except Exception as exc:  # noqa: BLE001 - logged by _claim_failed; an outage must not kill the worker
                failures += 1
                self._claim_failed(failures, exc)
                ran = False
            else:
                if failures:
                    log.info("worker %s: claiming works again after %d failed tries", self.worker_id, failures)
                failures = 0
            if not ran:
                # Jitter keeps many idle workers from polling in lockstep; an outage is tried
                # less and less often, up to CLAIM_BACKOFF_MAX_SECONDS.
                pause = self.poll_interval
                if failures:
                    backoff = min(self.poll_interval * 2 ** min(failures, 32), CLAIM_BACKOFF_MAX_SECONDS)
                    pause = max(pause, backoff)
                timeout = pause * random.uniform(0.5, 1.5)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), timeout)
        log.info("worker %s stopped", self.worker_id)

    def _claim_failed(self, failures: int, exc: Exception) -> None:
        """The first failure of a run of them is logged with its traceback; the next ones (an
        outage lasting minutes) in one line each."""
        if failures == 1:
            log.error("worker %s: claiming failed", self.worker_id, exc_info=exc)
        else:
            reason = (str(exc).strip().splitlines() or [""])[0][:300]
            log.warning("worker %s: claiming failed again (%d tries): %s: %s", self.worker_id, failures,
                        type(exc).__name__, reason)

    async def run_once(self) -> bool:
        """Claim one job and run it to its end (or, when a stop came during the claim, release
        it unstarted); False when there was nothing to claim."""
        if self._stopping.is_set():
            return False
        claim = await self.queue.claim(self.worker_id, self.lease_seconds, self.registry.types())
        if claim is None:
            return False
        if self._stopping.is_set() and not claim.exhausted:
            # stop() found no current run to bound while the claim was in flight: running the
            # job now would ignore the grace. (An exhausted claim only records FAIL: no handler.)
            released = await self.queue.release(claim.job.id, self.worker_id)
            log.info("job %s: claimed as the worker stopped; lease %s unstarted",
                     claim.job.id, "released" if released else "lost")
            return True
        # From here to `self._current = run` in _handle nothing awaits but an exhausted
        # claim's look at its images, after which the stop is checked again: a stop() from
        # now on finds the run and bounds it by its grace.
        token = request_id_var.set(f"job:{claim.job.id}")
        try:
            await self._handle(claim)
        finally:
            request_id_var.reset(token)
        return True

    async def _handle(self, claim: Claim) -> None:
        job = claim.job
        registration = self.registry.get(job.type)
        assert registration is not None, "claimed a job type without a handler"
        write = _ProgressWriter(self.queue, job.id, self.worker_id)
        ctx = JobContext(job, claim.attempt, self.services, write)
        if claim.exhausted:
            if not (registration.saves_images and await self._images_saved(job.id)):
                log.warning("job %s: lease expired after attempt %d of %d; failing it",
                            job.id, job.attempts, self.queue.max_attempts)
                await self._fail(ctx, registration, "WORKER_LOST",
                                 f"The job's worker stopped answering {job.attempts} times.")
                return
            # Its last attempt saved the images and stopped before recording SUCCESS: the
            # handler, idempotent, now only returns the result.
            if self._stopping.is_set():  # came while the images were looked at: as in run_once
                released = await self.queue.release(job.id, self.worker_id, counted=False)
                log.info("job %s: claimed as the worker stopped; lease %s unstarted",
                         job.id, "released" if released else "lost")
                return
            log.warning("job %s: lease expired after attempt %d of %d with its images saved; "
                        "recording its result", job.id, job.attempts, self.queue.max_attempts)
        if claim.took_over:
            log.warning("job %s: taken over after an expired lease (attempt %d)", job.id, claim.attempt)
        log.info("job %s (%s) attempt %d started", job.id, job.type, claim.attempt)
        run = _Run(ctx, registration, asyncio.create_task(registration.handler(ctx)), write,
                   counted=not claim.exhausted)
        self._current = run
        heartbeat = asyncio.create_task(self._heartbeat(run))
        try:
            await self._wait(run)
        except asyncio.CancelledError:  # the worker itself is being torn down
            run.task.cancel()
            await asyncio.wait({run.task})
            await self.queue.release(job.id, self.worker_id, counted=run.counted)
            raise
        finally:
            heartbeat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await heartbeat
            self._current = None
        await self._conclude(run)

    async def _wait(self, run: _Run) -> None:
        """Until the handler ends, or at most `max_run_seconds`, then cancel it; once it is
        cancelled (that way, by a stop or by a lost lease) at most `cancel_wait_seconds` more."""
        job_id, attempt = run.ctx.job_id, run.ctx.attempt
        ended_or_cancelled: set[asyncio.Future[Any]] = {run.task, run.cancelled}
        await asyncio.wait(ended_or_cancelled, timeout=self.max_run_seconds, return_when=asyncio.FIRST_COMPLETED)
        if run.task.done():
            return
        if not run.cancelled.done():
            log.error("job %s: attempt %d still running after %g s; cancelling it", job_id, attempt,
                      self.max_run_seconds)
            run.timed_out = True
            run.cancel()
        # A handler waiting for a call stuck in a thread (a hung disk or network file system:
        # the stores let their threads finish before a cancellation goes on) does not end: the
        # worker goes on without it (the job failed, released or left to its new owner; the
        # heartbeat stopped), which lets its lease, images and references go; the thread, and
        # what is left of the task, end when they can.
        done, _ = await asyncio.wait({run.task}, timeout=self.cancel_wait_seconds)
        if not done:
            why = _LOST if run.lost else _TIMED_OUT if run.timed_out else _STOPPED
            log.error("job %s: attempt %d still running %g s after its cancellation; %s without it", job_id,
                      attempt, self.cancel_wait_seconds, why.job)
            run.write.given_up = True
            run.task.add_done_callback(partial(_late_end, job_id, why))

    async def _images_saved(self, job_id: str) -> bool:
        async with self.services.db.uow(write=False) as uow:
            return await uow.jobs.images_saved(job_id)

    async def _heartbeat(self, run: _Run) -> None:
        renewed = time.monotonic()
        while True:
            await asyncio.sleep(self.lease_seconds / 3)
            asked = time.monotonic()  # the database's lease runs from no earlier than this
            try:
                # Bounded by what is left of the lease: a call that hangs (a connection lost
                # without a reset, a lock held past the busy timeout) must not keep the handler
                # running beside the attempt of whoever takes the expired lease over.
                async with asyncio.timeout(max(0.0, renewed + self.lease_seconds - asked)):
                    await run.ctx.flush()
                    ok = await self.queue.heartbeat(run.ctx.job_id, self.worker_id, self.lease_seconds)
            except LeaseLost:
                ok = False
            except Exception:  # keep trying until the lease is surely gone (TimeoutError: it is)
                log.warning("job %s: heartbeat failed", run.ctx.job_id, exc_info=True)
                ok = time.monotonic() - renewed < self.lease_seconds
                if ok:
                    continue
            if not ok:
                log.warning("job %s: lease lost; abandoning attempt %d", run.ctx.job_id, run.ctx.attempt)
                run.lost = True
                run.cancel()
                return
            renewed = asked

    async def _conclude(self, run: _Run) -> None:
        ctx, task = run.ctx, run.task
        if run.lost:
            return
        if run.timed_out and (not task.done() or task.cancelled() or task.exception() is not None):
            await self._fail(ctx, run.registration, "JOB_TIMEOUT",
                             f"The job ran longer than {self.max_run_seconds:g} seconds; it kept nothing.")
            return
        if run.given_up or task.cancelled():  # stopped
            released = await self.queue.release(ctx.job_id, self.worker_id, counted=run.counted)
            log.info("job %s: stopped before the end; lease %s", ctx.job_id, "released" if released else "lost")
            return
        exc = task.exception()
        if isinstance(exc, LeaseLost):
            log.warning("job %s: lease lost; abandoning attempt %d", ctx.job_id, ctx.attempt)
            return
        if isinstance(exc, JobFailed):
            log.info("job %s: failed %s: %s", ctx.job_id, exc.code, exc.message)
            await self._fail(ctx, run.registration, exc.code, exc.message)
            return
        if exc is None:
            result = task.result()
            if result is None or isinstance(result, dict):
                await self._succeed(ctx, run.registration, result)
                return
            exc = TypeError(f"handler returned {type(result).__name__}, not a dict")
        if out_of_space(exc):
            log.error("job %s: out of disk space", ctx.job_id, exc_info=exc)
            await self._fail(ctx, run.registration, "INSUFFICIENT_STORAGE",
                             "The service ran out of disk space; nothing was kept. Try again later.")
            return
        if storage_unavailable(exc):
            log.error("job %s: the object store did not answer or is read-only", ctx.job_id, exc_info=exc)
            await self._fail(ctx, run.registration, "STORAGE_UNAVAILABLE",
                             "The object store could not be reached or written; nothing was kept. Try again later.")
            return
        log.error("job %s: unexpected error", ctx.job_id, exc_info=exc)
        await self._fail(ctx, run.registration, "INTERNAL_ERROR", f"Internal error (job {ctx.job_id}).")

    async def _succeed(self, ctx: JobContext, registration: Registration, result: dict[str, Any] | None) -> None:
        try:
            ok = await self._retried(ctx, "recording success", lambda: self.queue.succeed(
                ctx.job_id, self.worker_id, result, ctx=ctx, on_finish=registration.on_finish))
        except Exception:  # e.g. a result that is not JSON
            log.exception("job %s: recording success failed", ctx.job_id)
            await self._fail(ctx, registration, "INTERNAL_ERROR", f"Internal error (job {ctx.job_id}).")
            return
        if ok:
            log.info("job %s: SUCCESS", ctx.job_id)
            self._observe(ctx, "SUCCESS")
        else:
            log.warning("job %s: lease lost before success was recorded", ctx.job_id)

    async def _fail(self, ctx: JobContext, registration: Registration, code: str, message: str) -> None:
        try:
            ok = await self._retried(ctx, "recording failure", lambda: self.queue.fail(
                ctx, self.worker_id, code, message, registration.on_fail, registration.on_finish))
        except Exception:  # a broken hook must not leave the job RUNNING
            # Nor its images QUEUED/SAVING for ever (no delete takes an image a job writes):
            # KILLED, the owner deletes them, and what they hold goes with them.
            kill = kill_job_images if registration.on_fail is not None else None
            log.exception("job %s: a failure hook failed; failing with %s", ctx.job_id,
                          "its images KILLED only" if kill else "no hooks")
            try:
                ok = await self.queue.fail(ctx, self.worker_id, code, message, kill, None)
            except Exception:
                if kill is None:
                    raise
                log.exception("job %s: killing its images failed too; failing without hooks", ctx.job_id)
                ok = await self.queue.fail(ctx, self.worker_id, code, message, None, None)
        if not ok:
            log.warning("job %s: lease lost before failure was recorded", ctx.job_id)
        else:
            self._observe(ctx, "FAIL")

    async def _retried(self, ctx: JobContext, what: str, end: Callable[[], Awaitable[bool]]) -> bool:
        """`end()` (one transaction, rolled back when it raises), tried again after each of
        END_RETRY_DELAYS; the last try's error propagates."""
        for delay in END_RETRY_DELAYS:
            try:
                return await end()
            except Exception:
                log.warning("job %s: %s failed; trying again in %g s", ctx.job_id, what, delay, exc_info=True)
                await asyncio.sleep(delay)
        return await end()

    def _observe(self, ctx: JobContext, status: str) -> None:
        metrics = getattr(ctx.services, "metrics", None)
        if metrics is not None:
            metrics.job_finished(ctx.type, status, time.monotonic() - ctx.started)

    def request_stop(self) -> None:
        self._stopping.set()

    async def stop(self, grace: float = STOP_GRACE_SECONDS) -> None:
        """Stop claiming; give the current job `grace` seconds, then cancel it (its lease is
        released once it ends, or after `cancel_wait_seconds` without it)."""
        self.request_stop()
        run = self._current
        if run is not None:
            done, _ = await asyncio.wait({run.task}, timeout=grace)
            if not done:
                run.cancel()


class WorkerPool:
    """N workers of one process (`ims serve` with IMS_WORKERS > 0, or `ims worker`)."""

    def __init__(self, services: Services, count: int, *, lease_seconds: float = LEASE_SECONDS,
                 poll_interval: float = POLL_INTERVAL_SECONDS, max_run_seconds: float = MAX_RUN_SECONDS) -> None:
        self.workers = [
            Worker(services, default_worker_id(i), lease_seconds=lease_seconds, poll_interval=poll_interval,
                   max_run_seconds=max_run_seconds)
            for i in range(count)
        ]
        self._tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        self._tasks = [asyncio.create_task(w.run(), name=f"worker {w.worker_id}") for w in self.workers]

    async def stop(self, grace: float = STOP_GRACE_SECONDS) -> None:
        await asyncio.gather(*(w.stop(grace) for w in self.workers))
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
