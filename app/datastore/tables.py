"""Chunk store tables: chunks with reference counts, and immutable shared manifests.

A manifest is the ordered chunk list of one stream (an image's disk, a volume, a backup).
Manifests are immutable once written and shared by reference: copying an image or making
a server from it takes one more reference to the manifest (O(1)); a chunk's `refcount`
counts the manifests that list it. Both counts change in the same transaction as the rows
that hold them.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, Column, ForeignKey, Index, LargeBinary, String
from sqlmodel import Field, SQLModel

from app.db.types import UTCDateTime


class Chunk(SQLModel, table=True):
    __tablename__ = "chunks"
    __table_args__ = (Index("ix_chunks_gc", "region", "refcount", "touched_at"),)

    region: str = Field(primary_key=True, max_length=64)
    digest: str = Field(primary_key=True, max_length=64)
    #: Bytes of the stored object.
    size: int = Field(sa_type=BigInteger)
    refcount: int = 0
    #: Last time a writer claimed the chunk or a manifest let go of it: GC waits a grace
    #: period after it, so a chunk an in-flight write is about to reference survives.
    touched_at: datetime = Field(sa_type=UTCDateTime)


class Manifest(SQLModel, table=True):
    __tablename__ = "manifests"

    id: str = Field(primary_key=True, max_length=40)
    region: str = Field(max_length=64)
    #: Plaintext bytes of the stream.
    size: int = Field(sa_type=BigInteger)
    checksum: str = Field(max_length=80)
    #: Bytes stored by the chunks this manifest introduced when written.
    new_bytes: int = Field(default=0, sa_type=BigInteger)
    #: Stored bytes of the manifest's non-zero chunks.
    stored_bytes: int = Field(default=0, sa_type=BigInteger)
    #: Envelope encryption: the KMS key, the data key's id (bound into every chunk's
    #: associated data) and the data key wrapped by the KMS. Null for plain manifests.
    kms_key_id: str | None = Field(default=None, max_length=40)
    data_key_id: str | None = Field(default=None, max_length=40)
    wrapped_key: bytes | None = Field(default=None, sa_column=Column(LargeBinary, nullable=True))
    refcount: int = 1
    created_at: datetime = Field(sa_type=UTCDateTime)


class ManifestChunk(SQLModel, table=True):
    __tablename__ = "manifest_chunks"
    __table_args__ = (Index("ix_manifest_chunks_digest", "digest"),)

    manifest_id: str = Field(
        sa_column=Column(String(40), ForeignKey("manifests.id", ondelete="CASCADE"), primary_key=True)
    )
    idx: int = Field(primary_key=True)
    #: Null for an all-zero chunk (never stored).
    digest: str | None = Field(default=None, max_length=64)
    length: int
