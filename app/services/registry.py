"""The set of services a request or job uses, built once by bootstrap."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from app.config import Settings
from app.datastore.store import ChunkStore
from app.db.uow import Database
from app.jobs.events import EventBus, event_bus_for
from app.jobs.registry import JobRegistry, build_registry
from app.jobs.service import JobService
from app.kms.port import KeyProvider
from app.services.accounts import AccountService
from app.services.backups import BackupService
from app.services.compute import ComputeService
from app.services.exports import ExportService
from app.services.image_list import ImageListService
from app.services.images import ImageService
from app.services.imports import ImportService
from app.services.kms import KmsService
from app.services.replication import ReplicationService
from app.services.server_images import ServerImageService
from app.services.sharing import SharingService
from app.services.storage import StorageService
from app.services.tags import TagService
from app.services.volumes import VolumeService
from app.storage.base import ObjectStore

#: `(bucket, key, expires_in_seconds) -> URL`: a time-limited download URL of an object.
ObjectUrls = Callable[[str, str, int], str]


@dataclass
class Services:
    settings: Settings
    db: Database
    accounts: AccountService
    images: ImageService
    tags: TagService
    storage: StorageService
    imports: ImportService

    #: The KMS port itself, for services that encrypt and decrypt data.
    key_provider: KeyProvider
    kms: KmsService
    sharing: SharingService

    jobs: JobService
    #: Servers and volumes, and the images made from them.
    compute: ComputeService
    server_images: ServerImageService
    #: Full-ECS backups, kept or not, as their owner lists and deletes them.
    backups: BackupService
    #: Volumes, attached or not, as their owner lists and deletes them.
    volumes: VolumeService
    replication: ReplicationService
    exports: ExportService
    image_list: ImageListService
    #: Provided by the object-storage wiring; None until it exists (StoredObject then stays null).
    object_urls: ObjectUrls | None = None
    #: The chunk store (set by bootstrap, which owns the object stores).
    chunks: Any = None
    #: The process's Prometheus metrics (app.metrics.Metrics), when it serves them.
    metrics: Any = None

    @classmethod
    def build(
        cls, settings: Settings, db: Database, stores: dict[str, ObjectStore], key_provider: KeyProvider, *,
        events: EventBus | None = None,
        job_registry: JobRegistry | None = None,
    ) -> Services:
        storage = StorageService(db, stores, settings.default_region,
                                 buckets_per_account=settings.buckets_per_account)
        chunks = ChunkStore(db, stores)
        jobs = JobService(
            db, events or event_bus_for(db),
            job_registry if job_registry is not None else build_registry(settings.test_job_handlers),
        )
        return cls(
            settings=settings,
            db=db,
            accounts=AccountService(db, settings.default_region, settings.regions,
                                    tokens_per_account=settings.tokens_per_account,
                                    expired_token_retention=timedelta(seconds=settings.expired_token_retention)),
            images=ImageService(db, settings.regions),
            tags=TagService(db),
            storage=storage,
            key_provider=key_provider,
            kms=KmsService(db, key_provider),
            jobs=jobs,
            imports=ImportService(db, storage, key_provider, jobs),
            sharing=SharingService(db, key_provider),
            compute=ComputeService(db, chunks, key_provider, settings.regions, settings.data_dir / "work"),
            server_images=ServerImageService(db, chunks, jobs, key_provider),
            backups=BackupService(db),
            volumes=VolumeService(db),
            replication=ReplicationService(db, key_provider, settings.regions, jobs),
            exports=ExportService(db, storage, jobs),
            image_list=ImageListService(db, storage, settings.regions, settings.default_region, jobs),
            object_urls=lambda bucket, key, expires: storage.download_url_for_bucket(bucket, key, expires),
            chunks=chunks,
        )

    async def ping(self) -> bool:
        return await self.db.ping()

    async def close(self) -> None:
        """Release what the services hold beyond the database (the event bus connection)."""
        await self.jobs.events.close()
