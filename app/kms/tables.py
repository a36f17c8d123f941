"""SQLModel tables of the local KMS: keys (material sealed under the root key) and grants."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Column, ForeignKey, Index, LargeBinary, String, UniqueConstraint
from sqlmodel import Field, SQLModel

from app.db.types import UTCDateTime


def _ts(nullable: bool = False) -> Any:
    return Field(sa_type=UTCDateTime, nullable=nullable)


class KmsKey(SQLModel, table=True):
    __tablename__ = "kms_keys"
    __table_args__ = (
        UniqueConstraint("account_id", "alias", name="uq_kms_keys_account_alias"),
        Index("ix_kms_keys_account_created", "account_id", "created_at", "id"),
        Index("ix_kms_keys_state_deletion", "state", "deletion_date"),
    )

    id: str = Field(primary_key=True, max_length=40)
    account_id: str = Field(
        sa_column=Column(String(40), ForeignKey("accounts.id", ondelete="CASCADE"), nullable=False)
    )
    alias: str = Field(max_length=255)
    description: str = Field(default="", max_length=1024)
    #: ENABLED, DISABLED or PENDING_DELETION; a destroyed key's row is deleted.
    state: str = Field(max_length=16)
    is_default: bool = False
    #: version ‖ nonce ‖ AES-256-GCM(root key, material, AAD = key id). Never in clear.
    sealed_material: bytes = Field(sa_type=LargeBinary, repr=False)
    deletion_date: datetime | None = _ts(nullable=True)
    created_at: datetime = _ts()
    updated_at: datetime = _ts()


class KmsGrant(SQLModel, table=True):
    __tablename__ = "kms_grants"

    id: str = Field(primary_key=True, max_length=40)
    key_id: str = Field(
        sa_column=Column(String(40), ForeignKey("kms_keys.id", ondelete="CASCADE"), index=True, nullable=False)
    )
    grantee_account_id: str = Field(
        sa_column=Column(String(40), ForeignKey("accounts.id", ondelete="CASCADE"), index=True, nullable=False)
    )
    #: GrantOperation values, de-duplicated, in the enum's order.
    operations: list[str] = Field(default_factory=list, sa_type=JSON)
    created_at: datetime = _ts()
