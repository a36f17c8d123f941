"""The one place that picks and builds adapters and services for a process."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from app.config import Settings, SettingsError
from app.db.engine import (
    make_engine,
    make_generic_plan_engine,
    make_sync_read_engine,
    make_sync_write_engine,
)
from app.db.migrate import prepare
from app.db.uow import Database, GenericPlanReads, SyncReads, SyncWrites
from app.jobs.events import InProcessEventBus, event_bus_for
from app.jobs.maintenance import run_forever
from app.jobs.process import Message, ParentChannel, WorkerProcess
from app.jobs.worker import WorkerPool
from app.kms.envelope import load_root_key
from app.kms.local import LocalKeyProvider
from app.kms.port import KeyProvider, KmsSealError
from app.metrics import Metrics, attach
from app.services.registry import Services
from app.storage.base import ObjectStore
from app.storage.factory import build_stores, close_stores, create_service_buckets, url_secret
from app.storage.signing import UrlSigner

log = logging.getLogger(__name__)


def make_data_dir(settings: Settings) -> None:
    """Create IMS_DATA_DIR (every process keeps files there by default). SettingsError naming
    the variable when it cannot be: a file of that name, a parent that is a file, no right."""
    try:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise SettingsError("IMS_DATA_DIR", f"a directory this process can create and use ({exc.strerror or exc})",
                            str(settings.data_dir)) from None


def build_database(settings: Settings) -> Database:
    url = settings.effective_database_url
    if settings.is_sqlite:
        make_data_dir(settings)
        reads = SyncReads(make_sync_read_engine(url), make_sync_read_engine(url, busy_timeout_ms=100, pool_size=1))
        return Database(make_engine(url), reads, make_engine(url, writer=True), SyncWrites(make_sync_write_engine(url)))
    return Database(make_engine(url), GenericPlanReads(make_generic_plan_engine(url)))


async def build_key_provider(settings: Settings, db: Database) -> KeyProvider:
    """The local KMS with the root key file (created 0600 at first start, while no key is
    stored). KmsSealError when the file is missing or does not open the stored keys."""
    async with db.uow(write=False) as uow:
        sealed = await uow.kms.any_key() is not None
    path = settings.effective_kms_root_key_file
    provider = LocalKeyProvider(db, await asyncio.to_thread(load_root_key, path, create=not sealed))
    try:
        await provider.check_root_key()
    except KmsSealError as exc:
        raise KmsSealError(f"the KMS root key file {path} is not the one the stored keys are sealed under "
                           f"({exc})") from None
    return provider


async def preflight(settings: Settings) -> None:
    """What `Runtime.start` needs of the world besides the database (`prepare`): every region's
    store answers and holds its service bucket, and the KMS root key file opens the stored
    keys. `ims serve` runs it before uvicorn, which reports a start that fails as the traceback
    of its lifespan: a StorageError naming the region's store, or a KmsSealError naming the
    file, becomes one line instead (`app.cli.main`). Keeps nothing open."""
    db = build_database(settings)
    stores = build_stores(settings, UrlSigner(url_secret(settings), settings.public_url))
    try:
        await create_service_buckets(stores, settings)
        await build_key_provider(settings, db)
    finally:
        await close_stores(stores)
        await db.dispose()


def build_services(settings: Settings, db: Database, stores: dict[str, ObjectStore] | None = None,
                   key_provider: KeyProvider | None = None) -> Services:
    """Services with the adapters the settings pick (event bus by database dialect). Stores
    and the key provider are built from the settings when not given (tools and tests)."""
    if stores is None:
        stores = build_stores(settings, UrlSigner(url_secret(settings), settings.public_url))
    if key_provider is None:
        key_provider = LocalKeyProvider(db, load_root_key(settings.effective_kms_root_key_file))
    services = Services.build(settings, db, stores, key_provider, events=event_bus_for(db))
    return services


class Runtime:
    """Everything a process holds: database, stores, KMS, services and job workers.

    `api=False` (the `ims worker` process) skips the admin bootstrap, which belongs to the
    API processes. An API process runs its workers in a child process (`worker_process`,
    app.jobs.process) or on its own event loop; a worker process started that way reports
    through `channel`."""

    def __init__(self, settings: Settings, *, api: bool = True, channel: ParentChannel | None = None) -> None:
        self.settings = settings
        self.api = api
        self.channel = channel
        self._services: Services | None = None
        self._workers: WorkerPool | None = None
        self.worker_process: WorkerProcess | None = None
        self._maintenance: asyncio.Task[None] | None = None
        self.stores: dict[str, ObjectStore] = {}
        #: Set by the HTTP app before start; workers and the chunk store report into it.
        self.metrics: Metrics | None = None

    @property
    def services(self) -> Services:
        assert self._services is not None, "runtime not started"
        return self._services

    async def start(self) -> None:
        s = self.settings
        make_data_dir(s)
        await asyncio.to_thread(prepare, s.effective_database_url, migrate=s.migrates_at_start)
        db = build_database(s)
        self.signer = UrlSigner(url_secret(s), s.public_url)
        self.stores = build_stores(s, self.signer)
        await create_service_buckets(self.stores, s)
        self._services = build_services(s, db, self.stores, await build_key_provider(s, db))
        if self.metrics is not None:
            attach(self._services, self.metrics)
        if self.channel is not None:
            attach(self._services, self.channel)
            if isinstance(self._services.jobs.events, InProcessEventBus):
                self._services.jobs.events.forward = self.channel.job_changed
        if self.api:
            await self._services.accounts.bootstrap_admin(s.admin_name, s.admin_token, s.data_dir / "admin-token")
            if not s.admin_token:
                log.info("admin token file: %s", (s.data_dir / "admin-token").resolve())
        if s.workers > 0 and self.api and s.worker_process:
            self.worker_process = WorkerProcess(s, self._from_worker_process, self._worker_process_restarted)
            await self.worker_process.start()
        elif s.workers > 0:
            self._workers = WorkerPool(
                self._services, s.workers, lease_seconds=s.job_lease_seconds, poll_interval=s.job_poll_interval,
                max_run_seconds=s.job_max_seconds,
            )
            self._workers.start()
            if s.maintenance_interval > 0:
                self._maintenance = asyncio.create_task(run_forever(self._services, s.maintenance_interval))

    def _from_worker_process(self, message: Message) -> None:
        if "job" in message:
            events = self.services.jobs.events
            if isinstance(events, InProcessEventBus):
                events.hub.notify(message["job"])
        elif self.metrics is not None and "moved" in message:
            self.metrics.moved(*message["moved"])
        elif self.metrics is not None and "job_finished" in message:
            self.metrics.job_finished(*message["job_finished"])

    def _worker_process_restarted(self) -> None:
        if self.metrics is not None:
            self.metrics.worker_restarts.inc()

    async def stop(self) -> None:
        if self.worker_process is not None:
            await self.worker_process.stop(self.settings.worker_stop_grace)
            self.worker_process = None
        if self._maintenance is not None:
            self._maintenance.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._maintenance
            self._maintenance = None
        if self._workers is not None:
            await self._workers.stop(self.settings.worker_stop_grace)
            self._workers = None
        for store in {id(s): s for s in self.stores.values()}.values():
            close = getattr(store, "close", None)
            if close is not None:
                await close()
        if self._services is not None:
            await self._services.close()
            await self._services.db.dispose()
            self._services = None
