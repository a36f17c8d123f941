"""The chunk store: streams in, manifests out; shared references; garbage collection.

Writing: the stream is cut, hashed (and sealed) and its chunks uploaded by `ChunkWriter`;
existing plain chunks are claimed (touched) instead of uploaded; then one transaction
inserts the manifest and counts its chunk references. Reading verifies every chunk.
Garbage collection deletes a chunk object only after its row says nothing referenced it
for a whole grace period, and sweeps objects no row knows (a crashed writer's leftovers)
once they are older than the grace period too.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from app.datastore.chunks import CHUNK_PREFIX, ChunkRef
from app.datastore.crypto import Opener, Sealer
from app.datastore.reader import read_stream
from app.datastore.tables import Manifest
from app.datastore.writer import ChunkWriter
from app.db.types import new_id, utcnow
from app.db.uow import Database
from app.storage.base import ObjectStore
from app.storage.factory import service_bucket

#: GCM nonce and tag around every sealed chunk.
SEAL_OVERHEAD = 12 + 16
DEFAULT_GRACE = timedelta(hours=6)
EPOCH = datetime(2000, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class DataKey:
    """A data key in the clear (never stored) with its wrapped form and ids."""

    kms_key_id: str
    data_key_id: str
    plaintext: bytes
    wrapped: bytes

    def __repr__(self) -> str:
        return f"DataKey(kms_key_id={self.kms_key_id!r}, data_key_id={self.data_key_id!r})"


@dataclass(frozen=True)
class GcReport:
    chunks_deleted: int
    orphans_adopted: int


class ChunkStore:
    def __init__(self, db: Database, stores: dict[str, ObjectStore], *, grace: timedelta = DEFAULT_GRACE) -> None:
        self.db = db
        self.stores = stores
        self.grace = grace
        #: Called with ("in"|"out", bytes) as data moves (metrics); None: not measured.
        self.meter: Callable[[str, int], None] | None = None

    def _where(self, region: str) -> tuple[ObjectStore, str]:
        return self.stores[region], service_bucket(region)

    async def write(self, region: str, source: AsyncIterator[bytes], *, key: DataKey | None = None) -> Manifest:
        """Store a stream; returns its manifest (one reference, owned by the caller)."""
        store, bucket = self._where(region)

        async def claim(digests: list[str]) -> set[str]:
            async with self.db.uow() as uow:
                found = await uow.chunks.claim(region, digests, utcnow())
                await uow.commit()
            return found

        sealer = Sealer(key.plaintext, key.data_key_id) if key else None
        result = await ChunkWriter().write_stream(
            source, store=store, bucket=bucket, seal=sealer, exists=claim
        )
        overhead = SEAL_OVERHEAD if key else 0
        sizes = {r.digest: r.length + overhead for r in result.chunks if r.digest is not None}
        manifest = Manifest(
            id=new_id("man"), region=region, size=result.size, checksum=result.checksum,
            new_bytes=result.new_bytes, stored_bytes=sum(r.length + overhead for r in result.chunks if r.digest),
            kms_key_id=key.kms_key_id if key else None, data_key_id=key.data_key_id if key else None,
            wrapped_key=key.wrapped if key else None, refcount=1, created_at=utcnow(),
        )
        if self.meter is not None:
            self.meter("in", result.size)
        async with self.db.uow() as uow:
            await uow.chunks.add_manifest(
                manifest, [(r.index, r.digest, r.length) for r in result.chunks], sizes, utcnow()
            )
            await uow.commit()
        return manifest

    async def load(self, manifest_id: str) -> tuple[Manifest, list[ChunkRef]]:
        async with self.db.uow(write=False) as uow:
            manifest = await uow.chunks.manifest(manifest_id)
            if manifest is None:
                raise KeyError(manifest_id)
            rows = await uow.chunks.chunk_list(manifest_id)
        return manifest, [ChunkRef(i, d, n) for i, d, n in rows]

    async def read(
        self, manifest_id: str, *, data_key: bytes | None = None, offset: int = 0, length: int | None = None
    ) -> AsyncIterator[bytes]:
        """The manifest's plaintext bytes, each chunk verified before any of it is yielded."""
        manifest, chunks = await self.load(manifest_id)
        store, bucket = self._where(manifest.region)
        opener = None
        if manifest.data_key_id is not None:
            if data_key is None:
                raise ValueError("an encrypted manifest needs its data key")
            opener = Opener(data_key, manifest.data_key_id)
        async for piece in read_stream(
            chunks, store=store, bucket=bucket, opener=opener, total_size=manifest.size, offset=offset, length=length
        ):
            if self.meter is not None:
                self.meter("out", len(piece))
            yield piece

    async def retain(self, manifest_id: str) -> None:
        async with self.db.uow() as uow:
            if not await uow.chunks.retain(manifest_id):
                raise KeyError(manifest_id)
            await uow.commit()

    async def release(self, manifest_id: str) -> None:
        async with self.db.uow() as uow:
            await uow.chunks.release(manifest_id, utcnow())
            await uow.commit()

    async def collect(self, region: str, *, batch: int = 1000) -> GcReport:
        """Delete chunks unreferenced for a grace period, then objects no row knows."""
        store, bucket = self._where(region)
        cutoff = utcnow() - self.grace
        deleted = 0
        async with self.db.uow(write=False) as uow:
            candidates = await uow.chunks.collectable(region, cutoff, batch)
        for digest in candidates:
            async with self.db.uow() as uow:
                if not await uow.chunks.lock_collectable(region, digest, cutoff):
                    continue  # claimed again meanwhile
                await store.delete(bucket, CHUNK_PREFIX + digest)
                await uow.chunks.forget(region, digest)
                await uow.commit()
            deleted += 1
        return GcReport(deleted, await self._adopt_orphans(region, cutoff, batch))

    async def _adopt_orphans(self, region: str, cutoff: datetime, batch: int) -> int:
        """Objects under chunks/ that no row knows (and older than the grace period) get a
        collectable row: the next collection deletes them on the locked path."""
        store, bucket = self._where(region)
        adopted = 0
        after = ""
        while True:
            infos = await store.list_objects(bucket, prefix=CHUNK_PREFIX, start_after=after, limit=batch)
            if not infos:
                return adopted
            after = infos[-1].key
            old = [i.key[len(CHUNK_PREFIX):] for i in infos if i.last_modified < cutoff]
            if not old:
                continue
            async with self.db.uow() as uow:
                unknown = sorted(set(old) - await uow.chunks.known(region, old))
                await uow.chunks.adopt_orphans(region, unknown, EPOCH)
                await uow.commit()
            adopted += len(unknown)
