"""The set of services a request or job uses, built once by bootstrap."""

from __future__ import annotations

from dataclasses import dataclass

from app.config import Settings
from app.db.uow import Database
from app.kms.port import KeyProvider
from app.services.accounts import AccountService
from app.services.images import ImageService
from app.services.storage import StorageService
from app.services.kms import KmsService
from app.services.tags import TagService
from app.storage.base import ObjectStore


@dataclass
class Services:
    settings: Settings
    db: Database
    accounts: AccountService
    images: ImageService
    tags: TagService
    storage: StorageService

    #: The KMS port itself, for services that encrypt and decrypt data.
    key_provider: KeyProvider
    kms: KmsService

    @classmethod
    def build(cls, settings: Settings, db: Database, stores: dict[str, ObjectStore], key_provider: KeyProvider) -> Services:
        return cls(
            settings=settings,
            db=db,
            accounts=AccountService(db, settings.default_region),
            images=ImageService(db, settings.regions),
            tags=TagService(db),
            storage=StorageService(db, stores, settings.default_region),
            key_provider=key_provider,
            kms=KmsService(db, key_provider),
        )

    async def ping(self) -> bool:
        return await self.db.ping()
