"""Chunk reference counts and manifests: the only SQL of the chunk store."""

from __future__ import annotations

import functools
from collections import Counter
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, and_, bindparam, delete, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from app.datastore.tables import Chunk, Manifest, ManifestChunk
from app.db.types import insert_for

_BATCH = 500


def _batches(items: list[str]) -> Iterable[list[str]]:
    for i in range(0, len(items), _BATCH):
        yield items[i : i + _BATCH]


def claim_chunks(connection: Connection, region: str, digests: list[str], now: datetime) -> set[str]:
    """Claim chunks a writer is about to store or reference, before it uploads anything:
    every row is created or touched (GC then waits a grace period, and a GC holding the
    row makes this wait until its delete is done). Returns the chunks a committed
    manifest references: their objects surely exist and need no upload. Run on
    `Database.writes` (in a transaction of its own) by the chunk store's writers."""
    found: set[str] = set()
    for stmt in _claim_statements(connection.dialect.name, region, digests, now):
        found.update(digest for digest, refcount in connection.execute(stmt) if refcount > 0)
    return found


def _claim_statements(dialect: str, region: str, digests: list[str], now: datetime) -> Iterable[Any]:
    # One upsert per batch that returns each row's count: a claim sits on the write path
    # of every new plain chunk. Sorted, so that concurrent claims lock rows in one order.
    insert = insert_for(dialect)
    for batch in _batches(sorted(set(digests))):
        stmt = insert(Chunk).values(
            [{"region": region, "digest": d, "size": 0, "refcount": 0, "touched_at": now} for d in batch]
        )
        yield stmt.on_conflict_do_update(
            index_elements=["region", "digest"], set_={"touched_at": now}
        ).returning(col(Chunk.digest), col(Chunk.refcount))


_chunks = Chunk.__table__.c  # type: ignore[attr-defined]
#: One reference fewer on a chunk (executemany: one row of parameters per distinct digest).
_RELEASE_CHUNK = (
    update(Chunk.__table__).where(_chunks.region == bindparam("r"), _chunks.digest == bindparam("d"))  # type: ignore[attr-defined]
    .values(refcount=_chunks.refcount - 1, touched_at=bindparam("now"))
)


@functools.cache
def _reference_statement(dialect: str) -> Any:
    """One reference more on a chunk, creating its row if no claim did (executemany); the claim
    made the row with size 0 before the upload, and the size is known now."""
    insert = insert_for(dialect)
    stmt = insert(Chunk.__table__).values(  # type: ignore[attr-defined]
        region=bindparam("region"), digest=bindparam("digest"), size=bindparam("size"), refcount=1,
        touched_at=bindparam("touched_at"),
    )
    return stmt.on_conflict_do_update(
        index_elements=["region", "digest"],
        set_={"refcount": _chunks.refcount + 1, "touched_at": stmt.excluded.touched_at, "size": stmt.excluded.size},
    )


class ChunkRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    def _insert(self) -> Any:
        return insert_for(self.session.bind.dialect.name)  # type: ignore[union-attr]

    async def add_manifest(self, manifest: Manifest, refs: list[tuple[int, str | None, int]],
                           sizes: dict[str, int], now: datetime) -> None:
        """Insert a manifest and its chunk list, and count one reference per distinct chunk."""
        self.session.add(manifest)
        await self.session.flush()
        rows = [{"manifest_id": manifest.id, "idx": i, "digest": d, "length": n} for i, d, n in refs]
        for start in range(0, len(rows), _BATCH):
            await self.session.execute(ManifestChunk.__table__.insert(), rows[start : start + _BATCH])  # type: ignore[attr-defined]
        counts = Counter(d for _, d, _ in refs if d is not None)
        if counts:
            # One statement for all the chunks (executemany), in digest order like the claims:
            # built per digest it cost more than re-encrypting the data (256 MiB: 64 chunks).
            await self.session.execute(_reference_statement(self.session.bind.dialect.name), [  # type: ignore[union-attr]
                {"region": manifest.region, "digest": d, "size": sizes.get(d, 0), "touched_at": now}
                for d in sorted(counts)
            ])

    async def manifest(self, manifest_id: str) -> Manifest | None:
        return await self.session.get(Manifest, manifest_id)

    async def chunk_list(self, manifest_id: str) -> list[tuple[int, str | None, int]]:
        stmt = select(col(ManifestChunk.idx), col(ManifestChunk.digest), col(ManifestChunk.length)).where(
            col(ManifestChunk.manifest_id) == manifest_id
        ).order_by(col(ManifestChunk.idx))
        return [(r[0], r[1], r[2]) for r in await self.session.execute(stmt)]

    async def retain(self, manifest_id: str) -> bool:
        result = await self.session.execute(
            update(Manifest).where(col(Manifest.id) == manifest_id)
            .values(refcount=col(Manifest.refcount) + 1).execution_options(synchronize_session=False)
        )
        return bool(result.rowcount == 1)  # type: ignore[attr-defined]

    async def release(self, manifest_id: str, now: datetime) -> bool:
        """Drop one reference; the last one deletes the manifest and lets go of its chunks.
        Returns True when the manifest was deleted."""
        await self.session.execute(
            update(Manifest).where(col(Manifest.id) == manifest_id)
            .values(refcount=col(Manifest.refcount) - 1).execution_options(synchronize_session=False)
        )
        row = (await self.session.execute(
            select(col(Manifest.refcount), col(Manifest.region)).where(col(Manifest.id) == manifest_id)
        )).first()
        if row is None or row[0] > 0:
            return False
        region = row[1]
        counts = (await self.session.execute(
            select(col(ManifestChunk.digest), func.count()).where(
                col(ManifestChunk.manifest_id) == manifest_id, col(ManifestChunk.digest).is_not(None)
            ).group_by(col(ManifestChunk.digest))
        )).all()
        if counts:
            await self.session.execute(_RELEASE_CHUNK, [
                {"r": region, "d": digest, "now": now} for digest, _ in sorted(counts)
            ])
        await self.session.execute(delete(ManifestChunk).where(col(ManifestChunk.manifest_id) == manifest_id))
        await self.session.execute(delete(Manifest).where(col(Manifest.id) == manifest_id))
        return True

    async def release_all(self, manifest_ids: list[str], now: datetime) -> None:
        """`release` of several manifests at once (one reference per occurrence of an id),
        in one lock order: the manifests in id order, then the chunks of those whose last
        reference went, all of them in digest order. Released one by one in the caller's
        order, two transactions letting go of manifests they share (an image and its copies
        deleted by their owners at once) each held one and waited for the other's, a
        deadlock on PostgreSQL; so did two letting go of chunks that different manifests
        share."""
        for manifest_id in sorted(manifest_ids):
            await self.session.execute(
                update(Manifest).where(col(Manifest.id) == manifest_id)
                .values(refcount=col(Manifest.refcount) - 1).execution_options(synchronize_session=False)
            )
        gone: dict[str, str] = {manifest_id: region for manifest_id, region in await self.session.execute(
            select(col(Manifest.id), col(Manifest.region))
            .where(col(Manifest.id).in_(sorted(set(manifest_ids))), col(Manifest.refcount) <= 0)
        )}
        if not gone:
            return
        held = [(manifest_id, digest) for manifest_id, digest in await self.session.execute(
            select(col(ManifestChunk.manifest_id), col(ManifestChunk.digest)).distinct().where(
                col(ManifestChunk.manifest_id).in_(sorted(gone)), col(ManifestChunk.digest).is_not(None)
            )
        )]
        if held:
            await self.session.execute(_RELEASE_CHUNK, [
                {"r": region, "d": digest, "now": now}
                for region, digest in sorted((gone[manifest_id], digest) for manifest_id, digest in held)
            ])
        await self.session.execute(delete(ManifestChunk).where(col(ManifestChunk.manifest_id).in_(sorted(gone))))
        await self.session.execute(delete(Manifest).where(col(Manifest.id).in_(sorted(gone))))

    async def collectable(self, region: str, cutoff: datetime, limit: int) -> list[str]:
        stmt = select(col(Chunk.digest)).where(
            col(Chunk.region) == region, col(Chunk.refcount) <= 0, col(Chunk.touched_at) < cutoff
        ).limit(limit)
        return [r[0] for r in await self.session.execute(stmt)]

    async def lock_collectable(self, region: str, digest: str, cutoff: datetime) -> bool:
        """Lock the chunk's row if it is still unreferenced and untouched since `cutoff`. The
        caller deletes the object and then the row in this same transaction, so a writer's
        claim waits for both (on SQLite the write lock serializes them the same way)."""
        stmt = select(col(Chunk.digest)).where(and_(
            col(Chunk.region) == region, col(Chunk.digest) == digest,
            col(Chunk.refcount) <= 0, col(Chunk.touched_at) < cutoff,
        )).with_for_update()
        return (await self.session.execute(stmt)).first() is not None

    async def forget(self, region: str, digest: str) -> None:
        await self.session.execute(
            delete(Chunk).where(col(Chunk.region) == region, col(Chunk.digest) == digest)
        )

    async def adopt_orphans(self, region: str, digests: list[str], epoch: datetime) -> None:
        """Give objects no row knows a collectable row, so GC removes them on its locked path."""
        insert = self._insert()
        for digest in digests:
            stmt = insert(Chunk).values(region=region, digest=digest, size=0, refcount=0, touched_at=epoch)
            await self.session.execute(stmt.on_conflict_do_nothing(index_elements=["region", "digest"]))

    async def known(self, region: str, digests: list[str]) -> set[str]:
        found: set[str] = set()
        for batch in _batches(digests):
            rows = await self.session.execute(
                select(col(Chunk.digest)).where(col(Chunk.region) == region, col(Chunk.digest).in_(batch))
            )
            found.update(r[0] for r in rows)
        return found

    async def referenced_total(self, region: str) -> tuple[int, int]:
        """(chunks, stored bytes) in a region: the chunk-store size metric."""
        row = (await self.session.execute(
            select(func.count(), func.coalesce(func.sum(Chunk.size), 0)).where(col(Chunk.region) == region)
        )).one()
        return int(row[0]), int(row[1])
