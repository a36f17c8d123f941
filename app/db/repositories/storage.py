"""Buckets and recorded object checksums."""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from app.db.tables import Bucket, ObjectChecksum
from app.db.types import insert_for


class StorageRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def bucket(self, name: str) -> Bucket | None:
        return await self.session.get(Bucket, name)

    async def buckets_of(self, account_id: str) -> list[Bucket]:
        stmt = select(Bucket).where(col(Bucket.account_id) == account_id).order_by(col(Bucket.name))
        return list((await self.session.execute(stmt)).scalars())

    async def count_buckets(self, account_id: str) -> int:
        """The account's buckets, in every region."""
        stmt = select(func.count()).select_from(Bucket).where(col(Bucket.account_id) == account_id)
        return int((await self.session.execute(stmt)).scalar_one())

    async def add_bucket(self, bucket: Bucket) -> bool:
        """Insert the bucket's row; False, and nothing inserted, when the name is taken, also
        by a request whose transaction commits while this one runs (on PostgreSQL the insert
        waits for it, then does nothing: a plain INSERT raised a unique violation there)."""
        stmt = insert_for(self.session.bind.dialect.name)(Bucket).values(  # type: ignore[union-attr]
            name=bucket.name, account_id=bucket.account_id, region=bucket.region, created_at=bucket.created_at,
        ).on_conflict_do_nothing(index_elements=["name"])
        return bool((await self.session.execute(stmt)).rowcount == 1)  # type: ignore[attr-defined]

    async def checksum(self, bucket: str, key: str) -> ObjectChecksum | None:
        return await self.session.get(ObjectChecksum, (bucket, key))

    async def record_checksum(self, row: ObjectChecksum) -> None:
        """Insert or replace the object's row in one statement: a merge read it and then
        inserted it, and when two processes recorded one object at once (an upload through a
        signed URL beside a listing that hashed it) the later INSERT raised a unique
        violation on PostgreSQL; now it waits and replaces the row."""
        values = {"bucket": row.bucket, "key": row.key, "size": row.size, "modified_at": row.modified_at,
                  "checksum": row.checksum, "etag": row.etag}
        stmt = insert_for(self.session.bind.dialect.name)(ObjectChecksum).values(**values)  # type: ignore[union-attr]
        await self.session.execute(stmt.on_conflict_do_update(
            index_elements=["bucket", "key"],
            set_={name: stmt.excluded[name] for name in ("size", "modified_at", "checksum", "etag")},
        ))
