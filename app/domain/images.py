"""Plain types describing images as a caller sees them, and list queries."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from app.domain.enums import (
    DiskFormat,
    ImageKind,
    ImageOrderField,
    ImageStatus,
    ImageVisibility,
    MemberStatus,
    OrderDirection,
    OsType,
)

#: Platforms whose public images carry a license: copies of them may not be exported.
LICENSED_PLATFORMS = frozenset({"windows", "suse", "red hat", "redhat", "ubuntu", "oracle linux", "oraclelinux"})


def is_licensed_platform(platform: str | None) -> bool:
    return platform is not None and platform.strip().lower() in LICENSED_PLATFORMS


@dataclass(frozen=True)
class Caller:
    """The authenticated account a request or job acts for."""

    account_id: str
    name: str
    role: str
    #: When the API token the request came with expires (None: it does not, or no token, as
    #: for jobs and the CLI): a token it creates may not outlive it.
    token_expires_at: datetime | None = None

    @property
    def is_admin(self) -> bool:
        return self.role == "ADMIN"


@dataclass(frozen=True)
class TagMatch:
    key: str
    value: str | None = None


@dataclass(frozen=True)
class ImageQuery:
    """Every `ImageFilter` field, normalized (None = no restriction)."""

    region: str
    visibility: frozenset[ImageVisibility] = frozenset(ImageVisibility)
    kinds: frozenset[ImageKind] | None = None
    statuses: frozenset[ImageStatus] | None = None
    name_contains: str | None = None
    os_types: frozenset[OsType] | None = None
    platforms: frozenset[str] | None = None
    disk_formats: frozenset[DiskFormat] | None = None
    encrypted: bool | None = None
    kms_key_id: str | None = None
    protected: bool | None = None
    tags: tuple[TagMatch, ...] = ()
    member_statuses: frozenset[MemberStatus] = frozenset({MemberStatus.ACCEPTED})
    created_after: datetime | None = None
    created_before: datetime | None = None
    ids: frozenset[str] | None = None


@dataclass(frozen=True)
class ImageOrder:
    field: ImageOrderField = ImageOrderField.CREATED_AT
    direction: OrderDirection = OrderDirection.DESC


@dataclass
class Page:
    """One keyset page: items, whether more follow, and the total when asked for."""

    items: list[object] = field(default_factory=list)
    has_next: bool = False
    total: int | None = None
