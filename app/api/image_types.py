"""The `Image` union and its three members, built from what the caller may see."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

import strawberry

from app.api.common import (
    AccountRef,
    BootMode,
    DiskFormat,
    DiskRole,
    ImageKind,
    ImageStatus,
    MemberStatus,
    Node,
    OriginType,
    OsType,
    PageInfo,
)
from app.api.compute_types import Backup, backup_loader
from app.api.context import Info
from app.api.errors import query_errors
from app.api.scalars import BigInt
from app.db.repositories.images import AccountRecord, ImageRecord, MemberRow, VisibleImage
from app.db.tables import Account as AccountRow
from app.db.tables import Image as ImageRow
from app.domain import enums as d
from app.domain.images import Caller
from app.domain.pagination import decode_cursor, decode_datetime, encode_cursor
from app.domain.rules import validate_page_size
from app.services.access import relation


@strawberry.type
class OperatingSystem:
    type: OsType
    platform: str = strawberry.field(description="e.g. Ubuntu, CentOS, Debian, Windows, EulerOS, Other.")
    version: str = strawberry.field(description="e.g. `Ubuntu 22.04 server 64bit`.")
    bits: int


@strawberry.type
class Tag:
    key: str
    value: str


@strawberry.type(description="One disk an image provisions.")
class ImageDisk:
    role: DiskRole
    size_gb: int
    stored_bytes: BigInt | None = strawberry.field(description="Bytes actually stored for this disk.")


@strawberry.type(description="Where the image's data came from (`__data_origin`).")
class ImageOrigin:
    type: OriginType
    ref: str | None


@strawberry.type
class ImageMember:
    image_id: strawberry.ID
    account: AccountRef
    status: MemberStatus
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, row: MemberRow) -> ImageMember:
        m = row.member
        return cls(
            image_id=strawberry.ID(m.image_id),
            account=AccountRef(id=strawberry.ID(m.account_id), name=row.account_name),
            status=d.MemberStatus(m.status),
            created_at=m.created_at,
            updated_at=m.updated_at,
        )


@strawberry.type
class ImageMemberEdge:
    cursor: str
    node: ImageMember


@strawberry.type
class ImageMemberConnection:
    edges: list[ImageMemberEdge]
    page_info: PageInfo
    total_count: int


@strawberry.interface
class ImageBase(Node):
    id: strawberry.ID
    name: str
    description: str
    kind: ImageKind
    status: ImageStatus
    region: str
    disk_format: DiskFormat
    os: OperatingSystem | None = strawberry.field(description="Null for data disk images.")
    min_disk_gb: int
    min_ram_mb: int = strawberry.field(description="0 means unrestricted.")
    max_ram_mb: int | None = strawberry.field(description="Null means unrestricted.")
    size_bytes: BigInt | None
    virtual_size_bytes: BigInt | None
    checksum: str | None = strawberry.field(description="`sha256:<hex>` of the stored data; null until ACTIVE.")
    boot_mode: BootMode
    nic_multi_queue: bool
    sriov_driver: bool
    quick_provisioning: bool
    encrypted: bool
    kms_key_id: strawberry.ID | None
    protected: bool
    disks: list[ImageDisk]
    origin: ImageOrigin
    version: int
    created_at: datetime
    updated_at: datetime
    row: strawberry.Private[ImageRow | ImageRecord]

    @strawberry.field
    async def tags(self, info: Info) -> list[Tag]:
        return [Tag(key=t.key, value=t.value) for t in await info.context.tags.load(self.row.id)]


@strawberry.type
class PublicImage(ImageBase):
    pass


@strawberry.type
class PrivateImage(ImageBase):
    owner_row: strawberry.Private[AccountRow | AccountRecord]

    @strawberry.field
    def owner(self) -> Account:
        return Account.of(self.owner_row)

    @strawberry.field(description="The accounts this image is shared with.")  # type: ignore[untyped-decorator]
    async def members(
        self, info: Info, status: list[MemberStatus] | None = None, first: int | None = None, after: str | None = None
    ) -> ImageMemberConnection:
        rows = await info.context.members.load(self.row.id)
        if status is not None:
            wanted = {s.value for s in status}
            rows = [r for r in rows if r.member.status in wanted]
        with query_errors():
            size = validate_page_size(first)
            start = 0
            if after:
                # The cursor is a place in the members' order, (shared at, account id): the
                # member it names may be gone (unshared) or filtered out since (it answered),
                # and the page goes on after that place instead of ending.
                value, account_id = decode_cursor(after, "members")
                place = (decode_datetime(value), account_id)
                start = next((i for i, r in enumerate(rows) if (r.member.created_at, r.member.account_id) > place),
                             len(rows))
        window = rows[start : start + size]
        edges = [ImageMemberEdge(cursor=encode_cursor("members", r.member.created_at, r.member.account_id),
                                 node=ImageMember.of(r)) for r in window]
        return ImageMemberConnection(
            edges=edges,
            page_info=PageInfo.of([e.cursor for e in edges], start + size < len(rows), bool(after)),
            total_count=len(rows),
        )

    @strawberry.field(description="Set for FULL_ECS images.")  # type: ignore[untyped-decorator]
    async def backup(self, info: Info) -> Backup | None:
        if self.row.backup_id is None:
            return None
        row = await backup_loader(info).load(self.row.backup_id)
        return Backup.of(row) if row is not None else None


@strawberry.type
class SharedImage(ImageBase):
    owner: AccountRef = strawberry.field(description="Only id and name of another account are visible.")
    membership: ImageMember = strawberry.field(description="The caller's own membership of this image.")


Image = Annotated[
    PublicImage | PrivateImage | SharedImage,
    strawberry.union("Image", description="What an image looks like to the caller: whose it is decides its type."),
]


def _base_fields(row: ImageRow | ImageRecord, owned: bool) -> dict[str, Any]:
    """`owned`: the caller owns the image. The origin's ref names the owner's own resources
    (the `bucket:key` it was uploaded to, a server, a volume, a source image): others see only
    the origin's type."""
    os = None
    if row.os_type is not None:
        os = OperatingSystem(
            type=d.OsType(row.os_type), platform=row.os_platform or "", version=row.os_version or "",
            bits=row.os_bits or 64,
        )
    return dict(
        id=strawberry.ID(row.id), name=row.name, description=row.description, kind=d.ImageKind(row.kind),
        status=d.ImageStatus(row.status), region=row.region, disk_format=d.DiskFormat(row.disk_format),
        os=os, min_disk_gb=row.min_disk_gb, min_ram_mb=row.min_ram_mb, max_ram_mb=row.max_ram_mb,
        size_bytes=row.size_bytes, virtual_size_bytes=row.virtual_size_bytes, checksum=row.checksum,
        boot_mode=d.BootMode(row.boot_mode), nic_multi_queue=row.nic_multi_queue, sriov_driver=row.sriov_driver,
        quick_provisioning=row.quick_provisioning, encrypted=row.kms_key_id is not None,
        kms_key_id=strawberry.ID(row.kms_key_id) if row.kms_key_id else None, protected=row.protected,
        disks=[
            ImageDisk(role=d.DiskRole(x["role"]), size_gb=int(x["sizeGb"]), stored_bytes=x.get("storedBytes"))
            for x in row.disks
        ],
        origin=ImageOrigin(type=d.OriginType(row.origin_type), ref=row.origin_ref if owned else None),
        version=row.version, created_at=row.created_at, updated_at=row.updated_at, row=row,
    )


def image_of(view: VisibleImage, caller: Caller) -> PublicImage | PrivateImage | SharedImage:
    """The union member the caller's relation to the image decides."""
    rel = relation(view, caller)
    fields = _base_fields(view.image, owned=view.image.owner_id == caller.account_id)
    if rel is d.ImageVisibility.PUBLIC:
        return PublicImage(**fields)
    owner = AccountRef(id=strawberry.ID(view.image.owner_id), name=view.owner_name)
    if rel is d.ImageVisibility.PRIVATE:
        return PrivateImage(**fields, owner_row=view.owner)
    assert view.membership is not None
    return SharedImage(**fields, owner=owner, membership=ImageMember.of(MemberRow(view.membership, caller.name)))


from app.api.accounts import Account  # last: an import cycle, and only resolvers need it
