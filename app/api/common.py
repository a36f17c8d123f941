"""Types shared by every feature: Node, PageInfo, enums, connection helpers."""

from __future__ import annotations

from typing import Any

import strawberry
from graphql import FieldNode, FragmentSpreadNode, InlineFragmentNode, SelectionSetNode

from app.domain import enums as d

AccountRole = strawberry.enum(d.AccountRole)
ImageVisibility = strawberry.enum(
    d.ImageVisibility,
    description="How an image relates to the caller.",
)
ImageKind = strawberry.enum(d.ImageKind)
ImageStatus = strawberry.enum(d.ImageStatus)
DiskFormat = strawberry.enum(d.DiskFormat)
BootMode = strawberry.enum(d.BootMode)
OsType = strawberry.enum(d.OsType)
DiskRole = strawberry.enum(d.DiskRole)
OriginType = strawberry.enum(d.OriginType)
MemberStatus = strawberry.enum(d.MemberStatus)
OrderDirection = strawberry.enum(d.OrderDirection)
ImageOrderField = strawberry.enum(d.ImageOrderField)
QuotaResource = strawberry.enum(d.QuotaResource)
JobStatus = strawberry.enum(d.JobStatus)
JobType = strawberry.enum(d.JobType)


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


def selects(info: Any, name: str) -> bool:
    """Whether the current field's selection (through fragments) asks for `name`."""
    fragments = info._raw_info.fragments

    def walk(selection_set: SelectionSetNode | None) -> bool:
        if selection_set is None:
            return False
        for sel in selection_set.selections:
            if isinstance(sel, FieldNode) and sel.name.value == name:
                return True
            if isinstance(sel, InlineFragmentNode) and walk(sel.selection_set):
                return True
            if isinstance(sel, FragmentSpreadNode):
                frag = fragments.get(sel.name.value)
                if frag is not None and walk(frag.selection_set):
                    return True
        return False

    return any(walk(node.selection_set) for node in info._raw_info.field_nodes)
