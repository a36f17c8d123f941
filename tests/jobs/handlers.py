"""Job handlers for tests, loaded through IMS_TEST_JOB_HANDLERS=tests.jobs.handlers.

They record every run in `RUNS` (per process) and are idempotent the way real handlers must
be: `steps` resumes from the progress an earlier attempt persisted.
"""

from __future__ import annotations

import asyncio
import threading
from collections import Counter
from typing import Any

from app.domain.enums import JobType
from app.jobs.registry import JobContext, JobFailed, JobRegistry

ECHO = "TEST_ECHO"
STEPS = "TEST_STEPS"
FAIL = "TEST_FAIL"
CRASH = "TEST_CRASH"
HANG = "TEST_HANG"
HANG_IN_THREAD = "TEST_HANG_IN_THREAD"
SECRET = "db-password-hunter2"

#: job id -> how many times a handler started on it in this process.
RUNS: Counter[str] = Counter()


async def echo(ctx: JobContext) -> dict[str, Any]:
    RUNS[ctx.job_id] += 1
    await asyncio.sleep(float(ctx.params.get("sleep", 0)))
    return {"echo": ctx.params, "attempt": ctx.attempt}


async def steps(ctx: JobContext) -> dict[str, Any]:
    """`n` steps of `seconds` each, reporting progress; resumes after a takeover."""
    RUNS[ctx.job_id] += 1
    n = int(ctx.params.get("n", 5))
    seconds = float(ctx.params.get("seconds", 0.05))
    start = round(ctx.resumed_progress * n)
    for i in range(start, n):
        await ctx.progress(i / n, f"step {i + 1} of {n}")
        await asyncio.sleep(seconds)
    await ctx.progress(1.0, "done")
    result: dict[str, Any] = {"resumedAt": start, "attempt": ctx.attempt}
    if "bucket" in ctx.params:
        result.update(bucket=ctx.params["bucket"], key=f"exports/{ctx.job_id}.csv", size=1234,
                      checksum="sha256:" + "ab" * 32)
    return result


async def fail(ctx: JobContext) -> None:
    RUNS[ctx.job_id] += 1
    raise JobFailed(str(ctx.params.get("code", "TEST_FAILED")), str(ctx.params.get("message", "it failed")))


async def slow_fail(ctx: JobContext) -> None:
    """Works a little, then fails the expected way (its images are then KILLED)."""
    RUNS[ctx.job_id] += 1
    await ctx.progress(0.5, "inspecting")
    await asyncio.sleep(float(ctx.params.get("seconds", 0.3)))
    raise JobFailed("UNSAFE_IMAGE_FILE", "qcow2 backing file")


async def crash(ctx: JobContext) -> None:
    RUNS[ctx.job_id] += 1
    raise RuntimeError(f"connection refused for {SECRET}")


async def hang(ctx: JobContext) -> None:
    RUNS[ctx.job_id] += 1
    await asyncio.sleep(3600)


#: Lets `hang_in_thread`'s thread go (set it when the test is done).
THREAD_RELEASE = threading.Event()


async def hang_in_thread(ctx: JobContext) -> None:
    """Waits for a call stuck in a thread, as the stores do: a cancellation waits for the
    thread to finish before it goes on (a hung disk write). The thread returns once
    THREAD_RELEASE is set, or after `seconds` (60)."""
    RUNS[ctx.job_id] += 1
    stuck = asyncio.ensure_future(asyncio.to_thread(THREAD_RELEASE.wait, float(ctx.params.get("seconds", 60))))
    try:
        await asyncio.shield(stuck)
    except asyncio.CancelledError:
        await stuck
        raise


def register(registry: JobRegistry) -> None:
    registry.register(ECHO, echo)
    registry.register(STEPS, steps)
    registry.register(FAIL, fail)
    registry.register(CRASH, crash)
    registry.register(HANG, hang)
    registry.register(HANG_IN_THREAD, hang_in_thread)
    # Real types, so the GraphQL API can show them, with test behaviour; EXPORT_IMAGE jobs stay
    # INIT (no worker claims a type nobody handles).
    registry.register(JobType.EXPORT_IMAGE_LIST, steps, replace=True)
    registry.remove(JobType.EXPORT_IMAGE)
    registry.register(JobType.IMPORT_IMAGE, slow_fail, replace=True)
