"""Types shared by every feature: Node, PageInfo, enums, connection helpers."""

from __future__ import annotations

from collections.abc import Mapping
from enum import Enum
from typing import Annotated, Any, TypeVar

import strawberry
from graphql import FieldNode, FragmentSpreadNode, InlineFragmentNode, SelectionSetNode
from strawberry.types.enum import has_enum_definition

from app.domain import enums as d
from app.domain.rules import DEFAULT_QUOTAS, PAGE_SIZE_DEFAULT, PAGE_SIZE_MAX

E = TypeVar("E", bound=Enum)


def describe_enum(cls: type[E], description: str, values: Mapping[E, str], *,
                  name: str | None = None) -> type[E]:
    """Register `cls` as a GraphQL enum (under `name`, else its own) with a description of
    the enum and of each of its values, and return it unchanged. The domain's enums stay
    plain Python (no `strawberry.enum_value` in them): the values' descriptions are set on
    the definition strawberry.enum made. A value left undescribed is refused at import."""
    missing = [m.name for m in cls if m not in values]
    if missing:
        raise ValueError(f"{cls.__name__}: no description of {', '.join(missing)}")
    registered = strawberry.enum(cls, name=name, description=description)
    assert has_enum_definition(registered)
    for value in registered.__strawberry_definition__.values:
        value.description = values[cls(value.value)]
    return cls


describe_enum(d.AccountRole, "What an account may do.", {
    d.AccountRole.ADMIN: ("Manages accounts, quotas and public images; sees no other account's "
                          "private images."),
    d.AccountRole.USER: "Manages its own images, buckets, KMS keys and API tokens.",
})
describe_enum(d.ImageVisibility, "How an image relates to the caller.", {
    d.ImageVisibility.PUBLIC: "Provided to everyone by an administrator.",
    d.ImageVisibility.PRIVATE: "Owned by the caller.",
    d.ImageVisibility.SHARED: "Owned by another account and shared with the caller.",
})
describe_enum(d.ImageKind, "What an image holds and what it provisions.", {
    d.ImageKind.SYSTEM_DISK: "An operating system and software: provisions a server's system disk.",
    d.ImageKind.DATA_DISK: "Data only: provisions a volume (a data disk).",
    d.ImageKind.FULL_ECS: ("A whole server, its system disk and data disks, made from a "
                           "differential backup of the server (`backup`)."),
    d.ImageKind.ISO: "Registered from an ISO file.",
})
describe_enum(d.ImageStatus, "An image's state: `QUEUED` → `SAVING` → `ACTIVE`, or `KILLED`.", {
    d.ImageStatus.QUEUED: "Metadata created, waiting for data.",
    d.ImageStatus.SAVING: "Data being written.",
    d.ImageStatus.ACTIVE: "Usable.",
    d.ImageStatus.KILLED: ("Creation failed; the image holds no usable data. It counts towards "
                           "`PRIVATE_IMAGES` until deleted."),
})
describe_enum(d.DiskFormat, "The format of a disk file, or of an image's stored data.", {
    d.DiskFormat.RAW: ("The disk's bytes as they are. Images made from servers and volumes, and "
                       "replicated copies, are stored RAW."),
    d.DiskFormat.QCOW2: "QEMU copy-on-write.",
    d.DiskFormat.VMDK: "VMware virtual disk.",
    d.DiskFormat.VHD: "Microsoft Virtual Hard Disk.",
    d.DiskFormat.VHDX: "Microsoft Hyper-V virtual hard disk (imported; not an export format).",
    d.DiskFormat.ISO: "An ISO 9660 optical-disc file (`ISO` images).",
})
describe_enum(d.BootMode, "The firmware a server provisioned from the image boots with.", {
    d.BootMode.BIOS: "Legacy BIOS.",
    d.BootMode.UEFI: "UEFI.",
})
describe_enum(d.OsType, "An operating system's family.", {
    d.OsType.LINUX: "Linux.",
    d.OsType.WINDOWS: "Microsoft Windows.",
    d.OsType.OTHER: "Any other operating system.",
})
describe_enum(d.DiskRole, "What a disk is to the server it belongs to.", {
    d.DiskRole.SYSTEM: "The disk the server boots from.",
    d.DiskRole.DATA: "A data disk.",
})
describe_enum(d.OriginType, "What an image's data was made from.", {
    d.OriginType.SERVER: ("A server (`ref`: its id), for `SYSTEM_DISK` and `FULL_ECS` images made "
                          "by `createImageFromServer`."),
    d.OriginType.VOLUME: "A volume (`ref`: its id), by `createImageFromVolume`.",
    d.OriginType.FILE: "A file imported from a bucket by `importImage` (`ref`: `bucket:key`).",
    d.OriginType.IMAGE: "Another image, copied by `replicateImage` (`ref`: the source image's id).",
    d.OriginType.BACKUP: "A backup (`ref`: its id). No operation of the service records it now.",
    d.OriginType.NONE: "Not recorded (`ref` is null).",
})
describe_enum(d.MemberStatus, "A member account's answer to an image shared with it.", {
    d.MemberStatus.PENDING: ("Shared, not answered yet: the member sees the image through "
                             "`image(id:)`, not in the default `images` list."),
    d.MemberStatus.ACCEPTED: ("Accepted: listed in the member's `images`; the member may create "
                              "servers and volumes from it and replicate it."),
    d.MemberStatus.REJECTED: ("Declined: out of the default `images` list. The member may still "
                              "accept it until the owner unshares it."),
})
describe_enum(d.OrderDirection, "The direction of a sort.", {
    d.OrderDirection.ASC: "Ascending: the oldest, smallest or first in order first.",
    d.OrderDirection.DESC: "Descending: the newest, largest or last in order first.",
})
describe_enum(d.ImageOrderField, "What images are sorted by; ties go by id, the same way.", {
    d.ImageOrderField.CREATED_AT: "`createdAt`.",
    d.ImageOrderField.NAME: ("`name`, in Unicode code-point order: case-sensitive, every uppercase "
                             "ASCII letter before every lowercase one (`B` before `a`)."),
    d.ImageOrderField.SIZE: "`sizeBytes`; an image without a size yet sorts below every size.",
    d.ImageOrderField.STATUS: "`status`, by name: `ACTIVE`, `KILLED`, `QUEUED`, `SAVING`.",
})
describe_enum(d.QuotaResource, "A resource an account has a quota of (`setQuota` sets it).", {
    d.QuotaResource.PRIVATE_IMAGES: (
        "Private images per region, in every status; images shared with the account do not "
        f"count. Default {DEFAULT_QUOTAS[d.QuotaResource.PRIVATE_IMAGES]}."),
    d.QuotaResource.CONCURRENT_REPLICATIONS: (
        "Replication jobs (`replicateImage`) not finished yet (`INIT` or `RUNNING`). "
        f"Default {DEFAULT_QUOTAS[d.QuotaResource.CONCURRENT_REPLICATIONS]}."),
    d.QuotaResource.CONCURRENT_CREATIONS: (
        "Image-creation jobs (from a server or volume, full-ECS, import) not finished yet "
        f"(`INIT` or `RUNNING`). Default {DEFAULT_QUOTAS[d.QuotaResource.CONCURRENT_CREATIONS]}."),
})
describe_enum(d.JobStatus, "Where a job is: `INIT` → `RUNNING` → `SUCCESS` or `FAIL`.", {
    d.JobStatus.INIT: "Waiting for a worker.",
    d.JobStatus.RUNNING: ("A worker runs it; `progress` and `step` say how far it is. A job whose "
                          "worker was lost is taken over by another and stays `RUNNING`."),
    d.JobStatus.SUCCESS: "Finished; `images` or `object` hold what it made.",
    d.JobStatus.FAIL: "Failed; `error` says why.",
})
describe_enum(d.JobType, "What a job does, and which mutation started it.", {
    d.JobType.CREATE_IMAGE_FROM_SERVER: ("`createImageFromServer` with `SYSTEM_DISK`: an image of "
                                         "a server's system disk."),
    d.JobType.CREATE_FULL_ECS_IMAGE: ("`createImageFromServer` with `FULL_ECS`: a differential "
                                      "backup of every disk of a server, and its image."),
    d.JobType.CREATE_IMAGE_FROM_VOLUME: "`createImageFromVolume`: an image of a volume.",
    d.JobType.IMPORT_IMAGE: "`importImage`: an image made from a file in a bucket.",
    d.JobType.EXPORT_IMAGE: "`exportImage`: an image written as a file into a bucket (`object`).",
    d.JobType.REPLICATE_IMAGE: "`replicateImage`: a private copy of an image (`images`).",
    d.JobType.EXPORT_IMAGE_LIST: "`exportImageList`: a CSV file listing images (`object`).",
})
AccountRole = d.AccountRole
ImageVisibility = d.ImageVisibility
ImageKind = d.ImageKind
ImageStatus = d.ImageStatus
DiskFormat = d.DiskFormat
BootMode = d.BootMode
OsType = d.OsType
DiskRole = d.DiskRole
OriginType = d.OriginType
MemberStatus = d.MemberStatus
OrderDirection = d.OrderDirection
ImageOrderField = d.ImageOrderField
QuotaResource = d.QuotaResource
JobStatus = d.JobStatus
JobType = d.JobType


#: The `first` argument of every connection field.
First = Annotated[int | None, strawberry.argument(
    description=f"At most this many items: 0 to {PAGE_SIZE_MAX}, default {PAGE_SIZE_DEFAULT}. "
                "Out of range: a top-level error `INVALID_PAGE_SIZE`.",
)]
#: The `after` argument of every connection field.
After = Annotated[str | None, strawberry.argument(
    description="Start after the edge with this `cursor` (a previous page's `pageInfo.endCursor`); "
                "null: from the first item. A cursor of another list or order is a top-level error "
                "`INVALID_CURSOR`.",
)]


@strawberry.interface(description="An object with a global id, which `node(id:)` fetches again.")
class Node:
    id: strawberry.ID = strawberry.field(description="Opaque, and unique across every type.")


@strawberry.type(description="Where a page of a connection lies in its list.")
class PageInfo:
    has_next_page: bool = strawberry.field(description="More items follow this page.")
    has_previous_page: bool = strawberry.field(
        description="`after` was given: the page does not start at the beginning of the list.")
    start_cursor: str | None = strawberry.field(
        description="The first edge's `cursor`; null on an empty page.")
    end_cursor: str | None = strawberry.field(
        description="The last edge's `cursor`, to pass as `after` for the next page; null on an "
                    "empty page.")

    @classmethod
    def of(cls, cursors: list[str], has_next: bool, has_previous: bool) -> PageInfo:
        return cls(
            has_next_page=has_next,
            has_previous_page=has_previous,
            start_cursor=cursors[0] if cursors else None,
            end_cursor=cursors[-1] if cursors else None,
        )


@strawberry.type(description="An account as others see it: its id and name only.")
class AccountRef:
    id: strawberry.ID = strawberry.field(description="The account's id.")
    name: str = strawberry.field(description="The account's name.")


def selects(info: Any, *path: str) -> bool:
    """Whether the current field's selection (through fragments) asks for `path`: a field
    name, or names each below the one before (`"edges", "node", "tags"`)."""
    fragments = info._raw_info.fragments

    def fields(selection_set: SelectionSetNode | None, name: str) -> list[FieldNode]:
        found: list[FieldNode] = []
        if selection_set is None:
            return found
        for sel in selection_set.selections:
            if isinstance(sel, FieldNode) and sel.name.value == name:
                found.append(sel)
            elif isinstance(sel, InlineFragmentNode):
                found += fields(sel.selection_set, name)
            elif isinstance(sel, FragmentSpreadNode):
                frag = fragments.get(sel.name.value)
                if frag is not None:
                    found += fields(frag.selection_set, name)
        return found

    level = [node.selection_set for node in info._raw_info.field_nodes]
    for name in path:
        level = [f.selection_set for s in level for f in fields(s, name)]
        if not level:
            return False
    return True
