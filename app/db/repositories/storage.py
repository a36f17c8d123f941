"""Buckets and recorded object checksums."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from app.db.tables import Bucket, ObjectChecksum


class StorageRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def bucket(self, name: str) -> Bucket | None:
        return await self.session.get(Bucket, name)

    async def buckets_of(self, account_id: str) -> list[Bucket]:
        stmt = select(Bucket).where(col(Bucket.account_id) == account_id).order_by(col(Bucket.name))
        return list((await self.session.execute(stmt)).scalars())

    async def add_bucket(self, bucket: Bucket) -> None:
        self.session.add(bucket)
        await self.session.flush()

    async def checksum(self, bucket: str, key: str) -> ObjectChecksum | None:
        return await self.session.get(ObjectChecksum, (bucket, key))

    async def record_checksum(self, row: ObjectChecksum) -> None:
        await self.session.merge(row)
        await self.session.flush()
