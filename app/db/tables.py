"""SQLModel tables of the foundation: accounts, tokens, images, tags, members, quotas, jobs.

Table models are persistence only; GraphQL types are built from them in `app.api`.
Every list filter of `images(...)` is served by an index declared here.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, Column, ForeignKey, Index, String, Text
from sqlmodel import Field, SQLModel
from sqlmodel.sql.sqltypes import AutoString

from app.db.types import UTCDateTime

#: An image name's column type (see `Image.name`).
NAME_TYPE = AutoString(128).with_variant(AutoString(128, collation="C"), "postgresql")


def _ts(nullable: bool = False, index: bool = False) -> Any:
    return Field(sa_type=UTCDateTime, nullable=nullable, index=index)


class Account(SQLModel, table=True):
    __tablename__ = "accounts"

    id: str = Field(primary_key=True, max_length=40)
    name: str = Field(max_length=64, unique=True)
    role: str = Field(max_length=8)
    created_at: datetime = _ts()


class ApiToken(SQLModel, table=True):
    __tablename__ = "api_tokens"

    id: str = Field(primary_key=True, max_length=40)
    account_id: str = Field(
        sa_column=Column(String(40), ForeignKey("accounts.id", ondelete="CASCADE"), index=True, nullable=False)
    )
    name: str = Field(max_length=64)
    #: SHA-256 hex of the token; the token itself is never stored.
    token_hash: str = Field(max_length=64, unique=True)
    created_at: datetime = _ts()
    #: Indexed for maintenance, which deletes the tokens expired longest ago first.
    expires_at: datetime | None = _ts(nullable=True, index=True)
    last_used_at: datetime | None = _ts(nullable=True)


class Image(SQLModel, table=True):
    __tablename__ = "images"
    __table_args__ = (
        Index("ix_images_public_created", "region", "visibility", "created_at", "id"),
        Index("ix_images_owner_created", "owner_id", "region", "created_at", "id"),
        Index("ix_images_owner_name", "owner_id", "region", "name", "id"),
        Index("ix_images_public_name", "region", "visibility", "name", "id"),
    )

    id: str = Field(primary_key=True, max_length=40)
    owner_id: str = Field(sa_column=Column(String(40), ForeignKey("accounts.id"), nullable=False))
    #: PUBLIC or PRIVATE; SHARED is a relation of a caller to a PRIVATE image.
    visibility: str = Field(max_length=8)
    region: str = Field(max_length=64)
    #: Sorted and compared in code point order on both backends (README "Catalog order"):
    #: "C" on PostgreSQL, whatever the database's collation (migration 0005); SQLite's is binary.
    name: str = Field(sa_column=Column(NAME_TYPE, nullable=False))
    description: str = Field(default="", max_length=1024)
    kind: str = Field(max_length=16)
    status: str = Field(max_length=8)
    disk_format: str = Field(max_length=8)
    os_type: str | None = Field(default=None, max_length=8)
    os_platform: str | None = Field(default=None, max_length=64)
    os_version: str | None = Field(default=None, max_length=128)
    os_bits: int | None = None
    min_disk_gb: int = 1
    min_ram_mb: int = 0
    max_ram_mb: int | None = None
    size_bytes: int | None = Field(default=None, sa_type=BigInteger)
    virtual_size_bytes: int | None = Field(default=None, sa_type=BigInteger)
    checksum: str | None = Field(default=None, max_length=80)
    boot_mode: str = Field(default="BIOS", max_length=8)
    nic_multi_queue: bool = False
    sriov_driver: bool = False
    quick_provisioning: bool = False
    kms_key_id: str | None = Field(default=None, max_length=40, index=True)
    protected: bool = False
    origin_type: str = Field(default="NONE", max_length=8)
    origin_ref: str | None = Field(default=None, max_length=1100)
    #: The licensed public platform somewhere in this image's origin chain (export rule).
    licensed_platform: str | None = Field(default=None, max_length=64)
    #: [{"role": "SYSTEM"|"DATA", "sizeGb": int, "storedBytes": int|None}]
    disks: list[dict[str, Any]] = Field(default_factory=list, sa_type=JSON)
    #: The FULL_ECS image's backup (`backups`, app.compute.tables); indexed: `deleteBackups`
    #: and `Backup.image` look images up by it.
    backup_id: str | None = Field(default=None, max_length=40, index=True)
    version: int = 1
    created_at: datetime = _ts()
    updated_at: datetime = _ts()
    #: The image's tags as a row of the image-list CSV shows them, `key=value` pairs in key
    #: order, and its members, `account name:STATUS` pairs in name order, each joined with `;`
    #: (app.services.image_list). Kept by triggers (migration 0007) in the transaction of every
    #: change of a tag, a membership or an account's name; the service never writes them.
    #: NULL: none.
    csv_tags: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    csv_shared_with: str | None = Field(default=None, sa_column=Column(Text, nullable=True))


#: Columns of `images` that only the image-list CSV reads (`Image.csv_tags`).
CSV_ONLY_COLUMNS = ("csv_tags", "csv_shared_with")


class ImageTag(SQLModel, table=True):
    __tablename__ = "image_tags"
    # ix_image_tags_image_cover holds whole rows: a page's tags are read from the index alone
    # (the primary key's index has no value: every tag cost a second lookup in the table).
    __table_args__ = (Index("ix_image_tags_key_value", "key", "value"),
                      Index("ix_image_tags_image_cover", "image_id", "key", "value"))

    image_id: str = Field(
        sa_column=Column(String(40), ForeignKey("images.id", ondelete="CASCADE"), primary_key=True)
    )
    key: str = Field(primary_key=True, max_length=36)
    value: str = Field(default="", max_length=43)


class ImageMember(SQLModel, table=True):
    __tablename__ = "image_members"
    __table_args__ = (Index("ix_image_members_account_status", "account_id", "status", "image_id"),
                      Index("ix_image_members_image_cover", "image_id", "account_id", "status"))

    image_id: str = Field(
        sa_column=Column(String(40), ForeignKey("images.id", ondelete="CASCADE"), primary_key=True)
    )
    account_id: str = Field(
        sa_column=Column(String(40), ForeignKey("accounts.id", ondelete="CASCADE"), primary_key=True)
    )
    status: str = Field(max_length=8)
    created_at: datetime = _ts()
    updated_at: datetime = _ts()


class ImageCsvHold(SQLModel, table=True):
    """An image whose members text (`Image.csv_shared_with`) a batch of membership changes
    writes once, when its row here is deleted, instead of at each change (migration 0008's
    triggers). Rows live within one transaction of `SharingRepository`; none is ever committed."""

    __tablename__ = "image_csv_holds"

    image_id: str = Field(primary_key=True, max_length=40)


class ImageCount(SQLModel, table=True):
    """How many images each caller sees unfiltered, kept by database triggers (migration
    0002) in the transaction that changes an image or a membership, so that `totalCount` of
    a listing filtered at most by visibility, kind and membership status is a sum of a few
    rows instead of a count of every visible image.

    scope PUBLIC: public images of the region (account_id and member_status '');
    OWNED: private images of account_id; SHARED: private images of another owner that
    account_id is a member of, in member_status."""

    __tablename__ = "image_counts"

    region: str = Field(primary_key=True, max_length=64)
    scope: str = Field(primary_key=True, max_length=8)
    account_id: str = Field(primary_key=True, max_length=40)
    member_status: str = Field(primary_key=True, max_length=8)
    kind: str = Field(primary_key=True, max_length=16)
    n: int = Field(default=0, sa_type=BigInteger)


class Quota(SQLModel, table=True):
    """An administrator's override of a default limit (DEFAULT_QUOTAS otherwise)."""

    __tablename__ = "quotas"

    account_id: str = Field(
        sa_column=Column(String(40), ForeignKey("accounts.id", ondelete="CASCADE"), primary_key=True)
    )
    resource: str = Field(primary_key=True, max_length=32)
    limit: int


class Job(SQLModel, table=True):
    """A durable long operation. Workers claim it with a lease; see app.jobs."""

    __tablename__ = "jobs"
    __table_args__ = (
        Index("ix_jobs_account_status", "account_id", "status", "type"),
        Index("ix_jobs_claim", "status", "lease_expires_at", "created_at"),
    )

    id: str = Field(primary_key=True, max_length=40)
    account_id: str = Field(sa_column=Column(String(40), ForeignKey("accounts.id"), nullable=False))
    type: str = Field(max_length=32)
    status: str = Field(max_length=8)
    progress: float = 0.0
    step: str | None = Field(default=None, max_length=256)
    error_code: str | None = Field(default=None, max_length=64)
    error_message: str | None = Field(default=None, max_length=1024)
    image_ids: list[str] = Field(default_factory=list, sa_type=JSON)
    #: The job's input (ids and options, never secrets).
    params: dict[str, Any] = Field(default_factory=dict, sa_type=JSON)
    #: What the job produced, e.g. {"bucket":..,"key":..,"size":..,"checksum":..}.
    result: dict[str, Any] | None = Field(default=None, sa_type=JSON)
    attempts: int = 0
    lease_owner: str | None = Field(default=None, max_length=64)
    lease_expires_at: datetime | None = _ts(nullable=True)
    created_at: datetime = _ts()
    started_at: datetime | None = _ts(nullable=True)
    finished_at: datetime | None = _ts(nullable=True)
    updated_at: datetime = _ts()


class JobImage(SQLModel, table=True):
    """The images a job creates or works on: `jobs(filter: {imageId})` without JSON operators.

    No foreign key to images: a job outlives the images it touched (they may be deleted)."""

    __tablename__ = "job_images"

    job_id: str = Field(
        sa_column=Column(String(40), ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True)
    )
    image_id: str = Field(sa_column=Column(String(40), primary_key=True, index=True))
    position: int = 0


class JobAttempt(SQLModel, table=True):
    """One run of a job by one worker: the audit trail of claims, takeovers and outcomes."""

    __tablename__ = "job_attempts"
    __table_args__ = (Index("ix_job_attempts_job", "job_id", "attempt"),)

    id: int | None = Field(default=None, primary_key=True)
    job_id: str = Field(sa_column=Column(String(40), ForeignKey("jobs.id", ondelete="CASCADE"), nullable=False))
    attempt: int
    worker_id: str = Field(max_length=64)
    started_at: datetime = _ts()
    ended_at: datetime | None = _ts(nullable=True)
    #: SUCCESS, FAIL, LOST (lease expired, taken over) or RELEASED (graceful stop); null while running.
    outcome: str | None = Field(default=None, max_length=8)


def metadata() -> Any:
    """The metadata of every table (Alembic's target): feature modules declare theirs."""
    import app.compute.tables
    import app.datastore.tables
    import app.kms.tables  # noqa: F401

    return SQLModel.metadata


class Bucket(SQLModel, table=True):
    """A bucket of an account in a region (names are unique across the service, as on S3)."""

    __tablename__ = "buckets"

    name: str = Field(primary_key=True, max_length=63)
    account_id: str = Field(
        sa_column=Column(String(40), ForeignKey("accounts.id", ondelete="CASCADE"), index=True, nullable=False)
    )
    region: str = Field(max_length=64)
    created_at: datetime = _ts()


class ObjectChecksum(SQLModel, table=True):
    """The sha256 of an object as last seen (size, mtime and the store's entity tag tell when
    it went stale: a same-size replacement within the mtime's resolution changes only the
    tag)."""

    __tablename__ = "object_checksums"

    bucket: str = Field(primary_key=True, max_length=63)
    key: str = Field(primary_key=True, max_length=1024)
    size: int = Field(sa_type=BigInteger)
    modified_at: datetime = _ts()
    checksum: str = Field(max_length=80)
    #: `ObjectInfo.etag` of the version hashed; None in rows recorded before it was kept.
    etag: str | None = Field(default=None, max_length=200)
