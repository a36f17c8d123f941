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


@strawberry.type(description="The operating system a system disk, full-ECS or ISO image boots.")
class OperatingSystem:
    type: OsType = strawberry.field(description="The OS family.")
    platform: str = strawberry.field(
        description="The distribution or product, 1-64 characters: e.g. Ubuntu, CentOS, Debian, "
        "Windows, EulerOS, Other. `images(filter: {platform})` matches it case-insensitively."
    )
    version: str = strawberry.field(
        description="The release in words, 1-128 characters: e.g. `Ubuntu 22.04 server 64bit`."
    )
    bits: int = strawberry.field(description="32 or 64.")


@strawberry.type(
    description="A key-value label on an image, at most 10 per image; only the image's owner (an "
    "administrator, for a public image) sets them."
)
class Tag:
    key: str = strawberry.field(
        description="1-36 letters (any script), digits, `_` or `-`; an image has one tag per key."
    )
    value: str = strawberry.field(
        description="0-43 letters (any script), digits, `_`, `.` or `-`; may be empty."
    )


@strawberry.type(
    description="One disk an image provisions: one for system disk, data disk and ISO images; the "
    "system disk and then every data disk for full-ECS images."
)
class ImageDisk:
    role: DiskRole = strawberry.field(
        description="Whether it becomes a server's system disk or a data disk."
    )
    size_gb: int = strawberry.field(description="The disk's size in GiB.")
    stored_bytes: BigInt | None = strawberry.field(
        description="Bytes actually stored for this disk (sparse regions excluded); null until "
        "known."
    )


@strawberry.type(description="Where the image's data came from (`__data_origin`).")
class ImageOrigin:
    type: OriginType = strawberry.field(description="What kind of source the data came from.")
    ref: str | None = strawberry.field(
        description="The source server, volume or image id, or `bucket:key` of the imported file. "
        "Null for callers other than the image's owner (it names the owner's own resources) and "
        "when there is none."
    )


@strawberry.type(
    description="An account a private image is shared with, and its answer to the share."
)
class ImageMember:
    image_id: strawberry.ID = strawberry.field(description="The shared image.")
    account: AccountRef = strawberry.field(description="The member account.")
    status: MemberStatus = strawberry.field(
        description="`PENDING` until the member accepts or rejects the share with "
        "`updateImageMembership`."
    )
    created_at: datetime = strawberry.field(
        description="When the image was shared with the account (UTC)."
    )
    updated_at: datetime = strawberry.field(description="When `status` last changed (UTC).")

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


@strawberry.type(description="One member in an `ImageMemberConnection`.")
class ImageMemberEdge:
    cursor: str = strawberry.field(
        description="Opaque; pass it as `after` to get the members after this one."
    )
    node: ImageMember = strawberry.field(description="The membership.")


@strawberry.type(
    description="A page of an image's members, in the order they were shared (oldest first)."
)
class ImageMemberConnection:
    edges: list[ImageMemberEdge] = strawberry.field(description="The members of this page.")
    page_info: PageInfo = strawberry.field(
        description="Cursors of this page and whether more follow."
    )
    total_count: int = strawberry.field(
        description="Members matching the `status` argument, on every page."
    )


@strawberry.interface(description="The fields every member of the `Image` union has.")
class ImageBase(Node):
    id: strawberry.ID = strawberry.field(
        description="The image's id (`img-…`), also for `node(id:)`."
    )
    name: str = strawberry.field(description="1-128 characters; not unique.")
    description: str = strawberry.field(
        description="At most 1024 characters; empty when none was given."
    )
    kind: ImageKind = strawberry.field(description="What the image provisions.")
    status: ImageStatus = strawberry.field(
        description="`QUEUED` → `SAVING` → `ACTIVE`, or `KILLED` when its job fails; only `ACTIVE` "
        "images provision servers and volumes."
    )
    region: str = strawberry.field(
        description="The id of the region the image and its data live in (see `regions`)."
    )
    disk_format: DiskFormat = strawberry.field(
        description="The format the data is stored in: an imported file's own format (known once "
        "the image is `ACTIVE`); `RAW` for images made from servers and volumes and for "
        "replicated copies."
    )
    os: OperatingSystem | None = strawberry.field(description="Null for data disk images.")
    min_disk_gb: int = strawberry.field(
        description="The smallest disk, in GiB, made from this image: a server's system disk, or a "
        "volume or data disk for a data disk image (`DISK_SMALLER_THAN_IMAGE` below it)."
    )
    min_ram_mb: int = strawberry.field(
        description="Memory a server made from it needs at least, in MiB; 0 means unrestricted."
    )
    max_ram_mb: int | None = strawberry.field(
        description="Memory a server made from it supports at most, in MiB (at most 1048576); "
        "null means unrestricted."
    )
    size_bytes: BigInt | None = strawberry.field(
        description="Bytes of the image's data (an imported image: its file's size); null until "
        "the image is `ACTIVE`."
    )
    virtual_size_bytes: BigInt | None = strawberry.field(
        description="Bytes of the disk the data describes (a full-ECS image: all its disks "
        "together); null until known (an import: until the file is inspected)."
    )
    checksum: str | None = strawberry.field(
        description="`sha256:<hex>` of the stored data (a full-ECS image: of its system disk); "
        "null until ACTIVE."
    )
    boot_mode: BootMode = strawberry.field(
        description="The firmware servers made from this image boot with."
    )
    nic_multi_queue: bool = strawberry.field(
        description="The OS supports NIC multi-queue; set with `updateImage`."
    )
    sriov_driver: bool = strawberry.field(
        description="The OS has an SR-IOV network driver; set with `updateImage`."
    )
    quick_provisioning: bool = strawberry.field(
        description="Servers can be created from this image without converting its data first: "
        "true for images stored raw (made from servers or volumes, replicated, or imported from a "
        "RAW file)."
    )
    encrypted: bool = strawberry.field(
        description="The data is encrypted under the KMS key `kmsKeyId`."
    )
    kms_key_id: strawberry.ID | None = strawberry.field(
        description="The KMS key the data is encrypted under; null when not encrypted. An image's "
        "key never changes: `replicateImage` makes a copy under another key."
    )
    protected: bool = strawberry.field(
        description="A protected image cannot be deleted (`IMAGE_PROTECTED`) until "
        "`setImageProtection` unprotects it."
    )
    disks: list[ImageDisk] = strawberry.field(
        description="The disks it provisions, system disk first; empty for an imported image until "
        "it is `ACTIVE`."
    )
    origin: ImageOrigin = strawberry.field(description="Where the data came from.")
    version: int = strawberry.field(
        description="Incremented on every change (metadata, tags, status, protection); pass it "
        "back as `expectedVersion` to `updateImage` for optimistic concurrency."
    )
    created_at: datetime = strawberry.field(description="When the image was created (UTC).")
    updated_at: datetime = strawberry.field(description="When the image last changed (UTC).")
    row: strawberry.Private[ImageRow | ImageRecord]

    @strawberry.field(  # type: ignore[untyped-decorator]
        description="The image's tags, by key (at most 10)."
    )
    async def tags(self, info: Info) -> list[Tag]:
        return [Tag(key=t.key, value=t.value) for t in await info.context.tags.load(self.row.id)]


@strawberry.type(
    description="An image an administrator provides to every account: read-only to all but "
    "administrators."
)
class PublicImage(ImageBase):
    pass


@strawberry.type(
    description="An image the caller's account owns; the accounts it is shared with see it as a "
    "`SharedImage`."
)
class PrivateImage(ImageBase):
    owner_row: strawberry.Private[AccountRow | AccountRecord]

    @strawberry.field(description="The caller's own account.")  # type: ignore[untyped-decorator]
    def owner(self) -> Account:
        return Account.of(self.owner_row)

    @strawberry.field(  # type: ignore[untyped-decorator]
        description="The accounts this image is shared with, in the order it was shared with them "
        "(oldest first)."
    )
    async def members(
        self,
        info: Info,
        status: Annotated[
            list[MemberStatus] | None,
            strawberry.argument(description="Only memberships in these statuses; null: all."),
        ] = None,
        first: Annotated[
            int | None,
            strawberry.argument(
                description="Page size: 0 to 1000, default 50 (`INVALID_PAGE_SIZE`)."
            ),
        ] = None,
        after: Annotated[
            str | None,
            strawberry.argument(
                description="The `cursor` of the member this page follows; null: from the first."
            ),
        ] = None,
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

    @strawberry.field(  # type: ignore[untyped-decorator]
        description="The differential backup a FULL_ECS image is made from; null for other kinds."
    )
    async def backup(self, info: Info) -> Backup | None:
        if self.row.backup_id is None:
            return None
        row = await backup_loader(info).load(self.row.backup_id)
        return Backup.of(row) if row is not None else None


@strawberry.type(
    description="Another account's private image shared with the caller. An `ACCEPTED` member may "
    "create servers and volumes from it and replicate it; nothing else."
)
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
