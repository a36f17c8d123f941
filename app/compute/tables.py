"""Tables of the built-in compute inventory: servers, their volumes, and full-ECS backups.

A volume's data is a manifest of the chunk store (`manifest_id`, one reference held by the
volume). The manifest may cover less than `size_gb` GiB: the rest of the disk reads as
zeros (a blank disk is a manifest of size 0). Encryption lives in the manifest (its KMS key
and wrapped data key); `kms_key_id` repeats the key for listing.

A backup holds one manifest reference per disk it saved (`disks[*].manifestId`), so it
survives the server; `server_id` is therefore a plain id, not a foreign key.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, Column, ForeignKey, Index, String
from sqlmodel import Field, SQLModel

from app.db.types import UTCDateTime


def _ts() -> Any:
    return Field(sa_type=UTCDateTime, nullable=False)


class Server(SQLModel, table=True):
    __tablename__ = "servers"
    __table_args__ = (Index("ix_servers_account_created", "account_id", "created_at", "id"),)

    id: str = Field(primary_key=True, max_length=40)
    account_id: str = Field(
        sa_column=Column(String(40), ForeignKey("accounts.id", ondelete="CASCADE"), nullable=False)
    )
    name: str = Field(max_length=128)
    #: RUNNING or STOPPED.
    status: str = Field(max_length=8)
    region: str = Field(max_length=64)
    source_image_id: str | None = Field(default=None, max_length=40)
    #: The source image's operating system, inherited by images made from the server.
    os_type: str | None = Field(default=None, max_length=8)
    os_platform: str | None = Field(default=None, max_length=64)
    os_version: str | None = Field(default=None, max_length=128)
    os_bits: int | None = None
    boot_mode: str = Field(default="BIOS", max_length=8)
    #: The licensed public platform in the system disk's origin chain (export rule).
    licensed_platform: str | None = Field(default=None, max_length=64)
    created_at: datetime = _ts()
    updated_at: datetime = _ts()


class Volume(SQLModel, table=True):
    __tablename__ = "volumes"
    __table_args__ = (
        Index("ix_volumes_account_created", "account_id", "created_at", "id"),
        Index("ix_volumes_server", "server_id", "position"),
    )

    id: str = Field(primary_key=True, max_length=40)
    account_id: str = Field(
        sa_column=Column(String(40), ForeignKey("accounts.id", ondelete="CASCADE"), nullable=False)
    )
    name: str = Field(max_length=128)
    region: str = Field(max_length=64)
    #: SYSTEM or DATA.
    role: str = Field(max_length=8)
    size_gb: int
    server_id: str | None = Field(
        default=None, sa_column=Column(String(40), ForeignKey("servers.id", ondelete="SET NULL"), nullable=True)
    )
    #: Order on the server: 0 for the system disk, 1.. for data disks.
    position: int = 0
    manifest_id: str = Field(max_length=40)
    kms_key_id: str | None = Field(default=None, max_length=40)
    source_image_id: str | None = Field(default=None, max_length=40)
    licensed_platform: str | None = Field(default=None, max_length=64)
    created_at: datetime = _ts()
    updated_at: datetime = _ts()


class Backup(SQLModel, table=True):
    """A differential backup of every disk of a server (what a FULL_ECS image is made of)."""

    __tablename__ = "backups"
    __table_args__ = (Index("ix_backups_server_created", "server_id", "created_at", "id"),
                      Index("ix_backups_account_created", "account_id", "created_at", "id"))

    id: str = Field(primary_key=True, max_length=40)
    account_id: str = Field(
        sa_column=Column(String(40), ForeignKey("accounts.id", ondelete="CASCADE"), nullable=False)
    )
    server_id: str = Field(max_length=40)
    region: str = Field(max_length=64)
    #: Logical bytes of every disk (their sizes).
    size_bytes: int = Field(default=0, sa_type=BigInteger)
    #: Stored bytes of the chunks no earlier backup of the server held (set by the job).
    new_bytes: int = Field(default=0, sa_type=BigInteger)
    #: [{"volumeId", "role", "sizeGb", "manifestId", "storedBytes", "newBytes"}], SYSTEM first.
    disks: list[dict[str, Any]] = Field(default_factory=list, sa_type=JSON)
    created_at: datetime = _ts()
