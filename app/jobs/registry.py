"""Job handlers by type, and the context a handler runs with.

A handler is `async def handler(ctx: JobContext) -> dict | None`: it does the work, reports
`await ctx.progress(fraction, step)`, and returns the job's result (e.g. the object an export
wrote: `{"bucket", "key", "size", "checksum"}`). It fails an expected way by raising
`JobFailed(code, message)`; a full disk (ENOSPC or EDQUOT anywhere in the error's chain,
qemu-img's included) fails it INSUFFICIENT_STORAGE, an object store that does not answer (refused,
timed out, broken off) or a read-only filesystem (EROFS) STORAGE_UNAVAILABLE; anything else fails the job as
INTERNAL_ERROR with a masked message, the full error logged with the job id. Either way the
failure hooks below reclaim what the job held.

Handlers must be idempotent. A job is run again (up to MAX_ATTEMPTS times) when the worker
running it stops renewing its lease, so a handler may find the work of an earlier, dead
attempt half done: it starts over or resumes, and never creates anything twice (derive
object keys and row ids from the job id; write rows with compare-and-set). A lease that expires
after the last attempt fails the job WORKER_LOST, unless the job type `saves_images` and its
images are all ACTIVE: that attempt finished the work, and the handler runs once more to
return its result.

When a job fails, its `on_fail` hook runs in the same transaction that marks it FAIL. The
default, `kill_job_images`, compare-and-sets the job's QUEUED/SAVING images to KILLED; a
data-plane handler passes its own hook to reclaim partial data as well. An `on_finish` hook
runs in the transaction that ends the job either way (SUCCESS or FAIL), exactly once: e.g. an
export lets go of the reference that kept the image's data readable while it ran. A transaction
ending a job that raises (a deadlock, a lost connection) is tried again, hooks and all; only
after the last try does a job end FAIL without its hooks, but for `kill_job_images` when it has
an `on_fail`: its images KILLED, never left QUEUED/SAVING (which no delete takes).

Handler modules expose `register(registry: JobRegistry) -> None`; `build_registry` imports
the built-in ones and those named in IMS_TEST_JOB_HANDLERS.
"""

from __future__ import annotations

import asyncio
import errno
import importlib
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from app.db.tables import Job
from app.db.types import utcnow
from app.db.uow import UnitOfWork
from app.domain.enums import JobType
from app.domain.jobs import PROGRESS_INTERVAL_SECONDS, STEP_MAX, clamp_progress
from app.errors import CODES
from app.formats.qemu import QemuImgError
from app.storage.base import StorageUnavailableError

if TYPE_CHECKING:
    from app.services.registry import Services

log = logging.getLogger(__name__)

#: Modules of the service's own handlers (the data plane adds its modules here).
BUILTIN_HANDLER_MODULES: tuple[str, ...] = (
    "app.jobs.handlers.import_image",
    "app.jobs.handlers.from_server",
    "app.jobs.handlers.from_volume",
    "app.jobs.handlers.replicate_image",
    "app.jobs.handlers.export_image",
    "app.jobs.handlers.export_image_list",
)


class JobFailed(Exception):
    """An expected failure of a job: it ends FAIL with this code and message, shown to the owner."""

    def __init__(self, code: str, message: str) -> None:
        if code not in CODES:  # as for ImsError: every code a client sees is in the README's list
            raise ValueError(f"unregistered error code {code}")
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


#: What a full filesystem (or a user's disk quota) raises.
_NO_SPACE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})


def _in_chain(exc: BaseException, matches: Callable[[BaseException], bool]) -> bool:
    """Whether `exc`, or an error it was raised from or while handling, `matches`."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if matches(current):
            return True
        current = current.__cause__ or current.__context__
    return False


def _is_out_of_space(exc: BaseException) -> bool:
    return ((isinstance(exc, OSError) and exc.errno in _NO_SPACE_ERRNOS)
            or (isinstance(exc, QemuImgError) and exc.out_of_space))


def _is_unavailable(exc: BaseException) -> bool:
    # A filesystem remounted read-only (ext4's errors=remount-ro after a disk error) cannot
    # be written until an operator repairs it: the storage is unavailable, not the image bad.
    return isinstance(exc, StorageUnavailableError) or (isinstance(exc, OSError) and exc.errno == errno.EROFS)


def out_of_space(exc: BaseException) -> bool:
    """Whether `exc`, or an error it was raised from or while handling, is a full disk."""
    return _in_chain(exc, _is_out_of_space)


def storage_unavailable(exc: BaseException) -> bool:
    """Whether `exc`, or an error it was raised from or while handling, is an object store
    that did not answer, or the service's storage mounted read-only."""
    return _in_chain(exc, _is_unavailable)


class LeaseLost(Exception):
    """The worker no longer holds the job (another worker took it over): stop at once."""


#: Writes (progress, step) if the worker still holds the job; False when it does not.
ProgressWriter = Callable[[float, str | None], Awaitable[bool]]


class JobContext:
    """What a handler knows and may do: ids, params, services, and progress reports."""

    def __init__(
        self, job: Job, attempt: int, services: Services, write: ProgressWriter, *,
        interval: float = PROGRESS_INTERVAL_SECONDS, clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.job_id = job.id
        self.account_id = job.account_id
        self.type = job.type
        self.params: dict[str, Any] = dict(job.params or {})
        self.image_ids: list[str] = list(job.image_ids or [])
        self.attempt = attempt
        self.started = time.monotonic()
        #: What an earlier attempt last persisted: a handler may resume from there.
        self.resumed_progress = job.progress if attempt > 1 else 0.0
        #: What the job's watchers last saw (after a takeover, or a release at a graceful stop).
        self._floor = job.progress
        self.services = services
        self.log = logging.LoggerAdapter(log, {"job_id": job.id})
        self._write = write
        self._interval = interval
        self._clock = clock
        self._lock = asyncio.Lock()
        self._written: tuple[float, str | None] = (job.progress, job.step)
        self._latest = self._written
        self._written_at = float("-inf")

    async def progress(self, fraction: float, step: str | None = None) -> None:
        """Report progress (0..1, and not below what the job had when this attempt began: its
        progress never goes back) and what the job is doing. Persisted at most every
        PROGRESS_INTERVAL_SECONDS, and at once when the step changes; raises LeaseLost when
        another worker took the job over."""
        step = step[:STEP_MAX] if step is not None else self._latest[1]
        # Never below what an earlier attempt persisted: a job taken over after a lost worker
        # starts its handler again, and its watchers' bar would jump back.
        self._latest = (max(clamp_progress(fraction), self._floor), step)
        due = self._clock() - self._written_at >= self._interval
        if due or step != self._written[1]:
            await self.flush()

    async def flush(self) -> None:
        """Persist the latest report if it was not yet (the worker's heartbeat calls this)."""
        async with self._lock:
            latest = self._latest
            if latest == self._written:
                return
            if not await self._write(*latest):
                raise LeaseLost(self.job_id)
            self._written, self._written_at = latest, self._clock()


Handler = Callable[[JobContext], Coroutine[Any, Any, dict[str, Any] | None]]
#: Runs in the transaction that marks the job FAIL (after the job row is updated).
OnFail = Callable[[JobContext, UnitOfWork], Awaitable[None]]


async def kill_job_images(ctx: JobContext, uow: UnitOfWork) -> None:
    """Compare-and-set the job's QUEUED/SAVING images to KILLED (ACTIVE ones are untouched)."""
    killed = await uow.jobs.kill_images(ctx.job_id, utcnow())
    if killed:
        ctx.log.info("job %s: %d image(s) KILLED", ctx.job_id, killed)


@dataclass(frozen=True)
class Registration:
    handler: Handler
    on_fail: OnFail | None
    #: Runs in the transaction that ends the job, SUCCESS or FAIL (after on_fail).
    on_finish: OnFail | None = None
    #: The job makes images, and once they are all ACTIVE its work is done: a claim after
    #: the last allowed attempt runs the handler (which then only returns the result) instead
    #: of failing WORKER_LOST when that attempt saved them and died before recording SUCCESS.
    saves_images: bool = False


class JobRegistry:
    """Handlers by job type. Workers only claim jobs of the types registered here."""

    def __init__(self) -> None:
        self._handlers: dict[str, Registration] = {}

    def register(
        self, job_type: JobType | str, handler: Handler, *, on_fail: OnFail | None = kill_job_images,
        on_finish: OnFail | None = None, saves_images: bool = False, replace: bool = False,
    ) -> None:
        key = job_type.value if isinstance(job_type, JobType) else job_type
        if key in self._handlers and not replace:
            raise ValueError(f"a handler for {key} is already registered")
        self._handlers[key] = Registration(handler, on_fail, on_finish, saves_images)

    def remove(self, job_type: JobType | str) -> None:
        """Stop handling a type: workers then leave its jobs INIT (tests park jobs this way)."""
        self._handlers.pop(job_type.value if isinstance(job_type, JobType) else job_type, None)

    def get(self, job_type: str) -> Registration | None:
        return self._handlers.get(job_type)

    def types(self) -> frozenset[str]:
        return frozenset(self._handlers)


def build_registry(extra_modules: Iterable[str] = ()) -> JobRegistry:
    """A registry with the built-in handlers and those of `extra_modules` (each has `register`)."""
    registry = JobRegistry()
    for name in (*BUILTIN_HANDLER_MODULES, *extra_modules):
        module = importlib.import_module(name)
        module.register(registry)
    return registry
