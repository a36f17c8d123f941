"""Image catalog queries and metadata mutations."""

from __future__ import annotations

import unicodedata
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Annotated

import strawberry

from app.api.common import (
    BootMode,
    DiskFormat,
    ImageKind,
    ImageOrderField,
    ImageStatus,
    ImageVisibility,
    MemberStatus,
    OrderDirection,
    OsType,
    PageInfo,
    selects,
)
from app.api.context import Info
from app.api.errors import (
    ConflictError,
    ForbiddenError,
    LimitExceededError,
    NotFoundError,
    NotSupportedError,
    ValidationError,
    payload,
    query_errors,
)
from app.api.image_types import Image, image_of
from app.domain import enums as d
from app.domain.images import ImageOrder as DomainOrder
from app.domain.images import ImageQuery, TagMatch
from app.domain.rules import FILTER_VALUES_MAX, NAME_MAX, TAGS_PER_IMAGE, tag_text
from app.errors import Invalid, NotFound
from app.services.images import UNSET, ImageChanges


@strawberry.type
class ImageEdge:
    cursor: str
    node: Image


@strawberry.type
class ImageConnection:
    edges: list[ImageEdge]
    page_info: PageInfo
    total_count: int


@strawberry.input
class TagInput:
    key: str
    value: str


@strawberry.input
class TagFilter:
    key: str
    value: str | None = strawberry.field(default=None, description="Null matches any value of the key.")


@strawberry.input
class ImageFilter:
    visibility: list[ImageVisibility] | None = strawberry.field(
        default=None, description="Which union members to return; default all three."
    )
    kind: list[ImageKind] | None = None
    status: list[ImageStatus] | None = None
    region: str | None = strawberry.field(default=None, description="Region id; default the server's default region.")
    name_contains: str | None = strawberry.field(default=None, description="Case-insensitive substring of the name.")
    os_type: list[OsType] | None = None
    platform: list[str] | None = None
    disk_format: list[DiskFormat] | None = None
    encrypted: bool | None = None
    kms_key_id: strawberry.ID | None = None
    protected: bool | None = None
    tags: list[TagFilter] | None = strawberry.field(default=None, description="Every tag must match.")
    member_status: list[MemberStatus] | None = strawberry.field(
        default=None, description="For SHARED images: which memberships to include; default [ACCEPTED]."
    )
    created_after: datetime | None = None
    created_before: datetime | None = None
    ids: list[strawberry.ID] | None = None


@strawberry.input
class ImageOrder:
    field: ImageOrderField
    direction: OrderDirection


def _set(values: list[object] | None, enum: type) -> frozenset[object] | None:
    return None if values is None else frozenset(enum(v) for v in values)


def _aware(value: datetime | None, field: str) -> datetime | None:
    """A filter's date-time with its offset (without one, which instant it names depends on
    the server's time zone), in UTC; one that UTC cannot hold (`0001-01-01T00:00:00+05:00`)
    is refused too."""
    if value is None:
        return None
    try:
        if value.utcoffset() is None:
            raise ValueError("no UTC offset")
        return value.astimezone(UTC)
    except (ValueError, OverflowError) as exc:
        raise Invalid("INVALID_DATETIME", field=field) from exc


def _tag_matches(tags: list[TagFilter]) -> tuple[tuple[TagMatch, ...], bool]:
    """The filter's tag conditions, one per key, and whether they can match at all.

    A key asked for with a value and without one is the condition with the value; a key asked
    for with two different values matches no image (a tag has one value). More than
    TAGS_PER_IMAGE different keys match no image either (it has no more tags), and each key is
    one more condition in every arm of the page statement (a thousand outgrew SQLite's
    expression depth): refused."""
    values: dict[str, set[str | None]] = {}
    for t in tags:  # composed as stored (see `tag_text`)
        values.setdefault(tag_text(t.key), set()).add(None if t.value is None else tag_text(t.value))
    if len(values) > TAGS_PER_IMAGE:
        raise Invalid("TOO_MANY_ITEMS", f"A filter names at most {TAGS_PER_IMAGE} tag keys.", field="filter.tags")
    matches, possible = [], True
    for key, asked in values.items():
        concrete = sorted(v for v in asked if v is not None)
        possible = possible and len(concrete) <= 1
        matches.append(TagMatch(key, concrete[0] if concrete else None))
    return tuple(matches), possible


def _values(values: Sequence[str] | None, field: str) -> frozenset[str] | None:
    """A list filter's distinct values; more than FILTER_VALUES_MAX are refused."""
    if values is None:
        return None
    distinct = frozenset(str(v) for v in values)
    if len(distinct) > FILTER_VALUES_MAX:
        raise Invalid("TOO_MANY_ITEMS", f"A filter names at most {FILTER_VALUES_MAX} values in {field}.", field=field)
    return distinct


def to_query(f: ImageFilter | None, region: str) -> ImageQuery:
    if f is None:
        return ImageQuery(region=region)
    tags, possible = _tag_matches(f.tags or [])
    ids = _values(f.ids, "filter.ids")
    platforms = _values(f.platform, "filter.platform")
    # Composed as stored names are (validate_name): "Cafe\u0301" finds "Café".
    name_contains = unicodedata.normalize("NFC", f.name_contains) if f.name_contains else None
    possible = possible and len(name_contains or "") <= NAME_MAX  # (a longer pattern: SQLite's LIKE refused it)
    return ImageQuery(
        region=region,
        visibility=frozenset(d.ImageVisibility(v) for v in f.visibility) if f.visibility is not None
        else frozenset(d.ImageVisibility),
        kinds=_set(f.kind, d.ImageKind),  # type: ignore[arg-type]
        statuses=_set(f.status, d.ImageStatus),  # type: ignore[arg-type]
        name_contains=name_contains if possible else None,  # no ids: nothing to match
        os_types=_set(f.os_type, d.OsType),  # type: ignore[arg-type]
        platforms=platforms,
        disk_formats=_set(f.disk_format, d.DiskFormat),  # type: ignore[arg-type]
        encrypted=f.encrypted,
        kms_key_id=str(f.kms_key_id) if f.kms_key_id is not None else None,
        protected=f.protected,
        tags=tags,
        member_statuses=frozenset(d.MemberStatus(s) for s in f.member_status) if f.member_status is not None
        else frozenset({d.MemberStatus.ACCEPTED}),
        created_after=_aware(f.created_after, "filter.createdAfter"),
        created_before=_aware(f.created_before, "filter.createdBefore"),
        # Tag conditions no image can meet, or a name longer than any name: no ids.
        ids=frozenset() if not possible else ids,
    )


@strawberry.type
class ImageQueries:
    @strawberry.field
    async def image(self, info: Info, id: strawberry.ID) -> Image | None:
        try:
            view = await info.context.services.images.get(info.context.me, str(id), info.context.reader)
        except NotFound:
            return None
        return image_of(view, info.context.me)

    @strawberry.field
    async def images(
        self,
        info: Info,
        filter: ImageFilter | None = None,
        order_by: ImageOrder | None = None,
        first: int | None = None,
        after: str | None = None,
    ) -> ImageConnection:
        svc = info.context.services.images
        order = DomainOrder(d.ImageOrderField(order_by.field), d.OrderDirection(order_by.direction)) \
            if order_by else DomainOrder()
        with query_errors():
            region = svc.check_region(filter.region if filter else None, field="filter.region")
            page = await svc.list(
                info.context.me, to_query(filter, region), order, first, after, with_total=selects(info, "totalCount"),
                with_tags=selects(info, "edges", "node", "tags"),
                with_members=selects(info, "edges", "node", "members"),
            )
        me = info.context.me
        # The page brought the tags and members its selection shows: their loaders need not
        # ask the database again.
        tags = {v.image.id: v.tags for v in page.items if v.tags is not None}
        members = {v.image.id: v.members for v in page.items if v.members is not None}
        if tags:
            info.context.tags.prime_many(tags)
        if members:
            info.context.members.prime_many(members)
        edges = [ImageEdge(cursor=c, node=image_of(v, me)) for v, c in zip(page.items, page.cursors, strict=True)]
        return ImageConnection(
            edges=edges,
            page_info=PageInfo.of(page.cursors, page.has_next, page.has_previous),
            total_count=page.total if page.total is not None else 0,
        )


# ---------------------------------------------------------------- mutations


@strawberry.type
class UpdateImageSuccess:
    image: Image


@strawberry.input
class UpdateImageInput:
    id: strawberry.ID
    expected_version: int | None = None
    name: str | None = None
    description: str | None = None
    min_ram_mb: int | None = None
    max_ram_mb: int | None = strawberry.field(default=strawberry.UNSET, description="Null clears the limit.")
    nic_multi_queue: bool | None = None
    sriov_driver: bool | None = None
    boot_mode: BootMode | None = None


UpdateImagePayload = Annotated[
    UpdateImageSuccess | NotFoundError | ValidationError | ForbiddenError | ConflictError | NotSupportedError,
    strawberry.union("UpdateImagePayload"),
]


@strawberry.input
class SetImageProtectionInput:
    id: strawberry.ID
    protected: bool


SetImageProtectionPayload = Annotated[
    UpdateImageSuccess | NotFoundError | ForbiddenError, strawberry.union("SetImageProtectionPayload")
]


@strawberry.input
class PublishImageInput:
    id: strawberry.ID


PublishImagePayload = Annotated[
    UpdateImageSuccess | NotFoundError | ForbiddenError | ConflictError | NotSupportedError,
    strawberry.union("PublishImagePayload"),
]


@strawberry.input
class ImageTagsInput:
    image_id: strawberry.ID
    tags: list[TagInput] = strawberry.field(description="Added, or their value replaced when the key exists.")


@strawberry.input
class RemoveImageTagsInput:
    image_id: strawberry.ID
    keys: list[str]


ImageTagsPayload = Annotated[
    UpdateImageSuccess | NotFoundError | ValidationError | ForbiddenError | LimitExceededError,
    strawberry.union("ImageTagsPayload"),
]


@strawberry.input
class DeleteImagesInput:
    ids: list[strawberry.ID]
    delete_backups: bool | None = strawberry.field(
        default=False, description="For FULL_ECS images: also delete their backups. Kept ones are listed by `backups` "
                                   "and deleted by `deleteBackups`.")


@strawberry.type
class DeleteImagesSuccess:
    deleted_ids: list[strawberry.ID]


DeleteImagesPayload = Annotated[
    DeleteImagesSuccess | NotFoundError | ForbiddenError | ConflictError | ValidationError,
    strawberry.union("DeleteImagesPayload"),
]


async def _image_success(info: Info, image_id: str) -> UpdateImageSuccess:
    info.context.clear_loaders()
    view = await info.context.services.images.get(info.context.me, image_id)
    return UpdateImageSuccess(image=image_of(view, info.context.me))


@strawberry.type
class ImageMutations:
    @strawberry.mutation
    async def update_image(self, info: Info, input: UpdateImageInput) -> UpdateImagePayload:
        changes = ImageChanges(
            name=input.name, description=input.description, min_ram_mb=input.min_ram_mb,
            max_ram_mb=UNSET if input.max_ram_mb is strawberry.UNSET else input.max_ram_mb,
            nic_multi_queue=input.nic_multi_queue, sriov_driver=input.sriov_driver,
            boot_mode=d.BootMode(input.boot_mode) if input.boot_mode is not None else None,
        )

        async def run() -> UpdateImageSuccess:
            view = await info.context.services.images.update(info.context.me, str(input.id), changes,
                                                             input.expected_version)
            info.context.clear_loaders()
            return UpdateImageSuccess(image=image_of(view, info.context.me))

        return await payload((NotFoundError, ValidationError, ForbiddenError, ConflictError, NotSupportedError), run())

    @strawberry.mutation
    async def set_image_protection(self, info: Info, input: SetImageProtectionInput) -> SetImageProtectionPayload:
        async def run() -> UpdateImageSuccess:
            view = await info.context.services.images.set_protection(info.context.me, str(input.id), input.protected)
            return UpdateImageSuccess(image=image_of(view, info.context.me))

        return await payload((NotFoundError, ForbiddenError), run())

    @strawberry.mutation
    async def publish_image(self, info: Info, input: PublishImageInput) -> PublishImagePayload:
        async def run() -> UpdateImageSuccess:
            view = await info.context.services.images.publish(info.context.me, str(input.id))
            info.context.clear_loaders()
            return UpdateImageSuccess(image=image_of(view, info.context.me))

        return await payload((NotFoundError, ForbiddenError, ConflictError, NotSupportedError), run())

    @strawberry.mutation
    async def add_image_tags(self, info: Info, input: ImageTagsInput) -> ImageTagsPayload:
        async def run() -> UpdateImageSuccess:
            await info.context.services.tags.add(info.context.me, str(input.image_id),
                                                 [(t.key, t.value) for t in input.tags])
            return await _image_success(info, str(input.image_id))

        return await payload((NotFoundError, ValidationError, ForbiddenError, LimitExceededError), run())

    @strawberry.mutation
    async def remove_image_tags(self, info: Info, input: RemoveImageTagsInput) -> ImageTagsPayload:
        async def run() -> UpdateImageSuccess:
            await info.context.services.tags.remove(info.context.me, str(input.image_id), list(input.keys))
            return await _image_success(info, str(input.image_id))

        return await payload((NotFoundError, ValidationError, ForbiddenError, LimitExceededError), run())

    @strawberry.mutation
    async def delete_images(self, info: Info, input: DeleteImagesInput) -> DeleteImagesPayload:
        async def run() -> DeleteImagesSuccess:
            ids = await info.context.services.images.delete(
                info.context.me, [str(i) for i in input.ids], bool(input.delete_backups)
            )
            info.context.clear_loaders()
            return DeleteImagesSuccess(deleted_ids=[strawberry.ID(i) for i in ids])

        return await payload((NotFoundError, ForbiddenError, ConflictError, ValidationError), run())
