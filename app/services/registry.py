"""The set of services a request or job uses, built once by bootstrap."""

from __future__ import annotations

from dataclasses import dataclass

from app.config import Settings
from app.db.uow import Database
from app.services.accounts import AccountService
from app.services.images import ImageService
from app.services.tags import TagService


@dataclass
class Services:
    settings: Settings
    db: Database
    accounts: AccountService
    images: ImageService
    tags: TagService

    @classmethod
    def build(cls, settings: Settings, db: Database) -> Services:
        return cls(
            settings=settings,
            db=db,
            accounts=AccountService(db, settings.default_region),
            images=ImageService(db, settings.regions),
            tags=TagService(db),
        )

    async def ping(self) -> bool:
        return await self.db.ping()
