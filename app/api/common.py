"""Types shared by every feature: Node, PageInfo, enums, connection helpers."""

from __future__ import annotations

from typing import Any

import strawberry
from graphql import FieldNode, FragmentSpreadNode, InlineFragmentNode, SelectionSetNode

from app.domain import enums as d

# strawberry.enum marks the domain's enums as GraphQL enums and returns them unchanged; the
# aliases keep the annotations plain classes for mypy.
strawberry.enum(d.AccountRole)
strawberry.enum(d.ImageVisibility, description="How an image relates to the caller.")
strawberry.enum(d.ImageKind)
strawberry.enum(d.ImageStatus)
strawberry.enum(d.DiskFormat)
strawberry.enum(d.BootMode)
strawberry.enum(d.OsType)
strawberry.enum(d.DiskRole)
strawberry.enum(d.OriginType)
strawberry.enum(d.MemberStatus)
strawberry.enum(d.OrderDirection)
strawberry.enum(d.ImageOrderField)
strawberry.enum(d.QuotaResource)
strawberry.enum(d.JobStatus)
strawberry.enum(d.JobType)
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


@strawberry.interface
class Node:
    id: strawberry.ID


@strawberry.type
class PageInfo:
    has_next_page: bool
    has_previous_page: bool
    start_cursor: str | None
    end_cursor: str | None

    @classmethod
    def of(cls, cursors: list[str], has_next: bool, has_previous: bool) -> PageInfo:
        return cls(
            has_next_page=has_next,
            has_previous_page=has_previous,
            start_cursor=cursors[0] if cursors else None,
            end_cursor=cursors[-1] if cursors else None,
        )


@strawberry.type
class AccountRef:
    id: strawberry.ID
    name: str


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
