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


@strawberry.type(description="One image in an `ImageConnection`.")
class ImageEdge:
    cursor: str = strawberry.field(
        description="Opaque; pass it as `after`, with the same `orderBy`, for the images after "
        "this one."
    )
    node: Image = strawberry.field(description="The image, as the caller sees it.")


@strawberry.type(description="A page of the catalog, in the order `orderBy` asked for.")
class ImageConnection:
    edges: list[ImageEdge] = strawberry.field(description="The images of this page.")
    page_info: PageInfo = strawberry.field(
        description="Cursors of this page and whether more follow."
    )
    total_count: int = strawberry.field(
        description="Images matching the filter, on every page together."
    )


@strawberry.input(
    description="A tag to put on an image: an existing key gets the new value (at most 10 tags "
    "per image)."
)
class TagInput:
    key: str = strawberry.field(
        description="1-36 letters (any script), digits, `_` or `-` (`INVALID_TAG_KEY`); a key "
        "given twice in one request is `DUPLICATE_TAG_KEY`."
    )
    value: str = strawberry.field(
        description="0-43 letters (any script), digits, `_`, `.` or `-` (`INVALID_TAG_VALUE`)."
    )


@strawberry.input(description="A tag an image must have to match.")
class TagFilter:
    key: str = strawberry.field(description="The tag's key, compared exactly.")
    value: str | None = strawberry.field(default=None, description="Null matches any value of the key.")


@strawberry.input(
    description="Which images `images` returns: every condition given must hold, and a null one "
    "does not restrict. A list of values matches any one of them (an empty list: none)."
)
class ImageFilter:
    visibility: list[ImageVisibility] | None = strawberry.field(
        default=None, description="Which union members to return; default all three."
    )
    kind: list[ImageKind] | None = strawberry.field(default=None, description="Any of these kinds.")
    status: list[ImageStatus] | None = strawberry.field(
        default=None, description="Any of these statuses."
    )
    region: str | None = strawberry.field(
        default=None,
        description="Region id; default the server's default region. An unknown region is "
        "`INVALID_REGION`.",
    )
    name_contains: str | None = strawberry.field(
        default=None,
        description="Case-insensitive substring of the name, taken literally (`%` and `_` are "
        "plain characters).",
    )
    os_type: list[OsType] | None = strawberry.field(
        default=None, description="Any of these OS families; data disk images have none."
    )
    platform: list[str] | None = strawberry.field(
        default=None,
        description="Any of these `os.platform` values, each compared whole and "
        "case-insensitively; at most 1000 distinct values (`TOO_MANY_ITEMS`).",
    )
    disk_format: list[DiskFormat] | None = strawberry.field(
        default=None, description="Any of these stored formats."
    )
    encrypted: bool | None = strawberry.field(
        default=None, description="True: encrypted images only; false: unencrypted ones only."
    )
    kms_key_id: strawberry.ID | None = strawberry.field(
        default=None, description="Only images encrypted under this KMS key."
    )
    protected: bool | None = strawberry.field(
        default=None, description="True: protected images only; false: unprotected ones only."
    )
    tags: list[TagFilter] | None = strawberry.field(
        default=None,
        description="Every tag must match. At most 10 distinct keys (`TOO_MANY_ITEMS`); one key "
        "asked for with two different values matches nothing.",
    )
    member_status: list[MemberStatus] | None = strawberry.field(
        default=None, description="For SHARED images: which memberships to include; default [ACCEPTED]."
    )
    created_after: datetime | None = strawberry.field(
        default=None,
        description="Only images created strictly after this instant. It must carry its UTC offset "
        "(`INVALID_DATETIME`).",
    )
    created_before: datetime | None = strawberry.field(
        default=None,
        description="Only images created strictly before this instant. It must carry its UTC "
        "offset (`INVALID_DATETIME`).",
    )
    ids: list[strawberry.ID] | None = strawberry.field(
        default=None,
        description="Only these images; at most 1000 distinct ids (`TOO_MANY_ITEMS`).",
    )


@strawberry.input(
    description="The catalog's order; without one, `CREATED_AT` `DESC`. Ties are broken by image "
    "id in the same direction, so paging never skips or repeats an image."
)
class ImageOrder:
    field: ImageOrderField = strawberry.field(
        description="The sort key. `NAME` and `STATUS` compare in Unicode code point order (`B` "
        "before `a`); `SIZE` is `sizeBytes`, an image without one counting as -1."
    )
    direction: OrderDirection = strawberry.field(description="Ascending or descending.")


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
    @strawberry.field(  # type: ignore[untyped-decorator]
        description="An image the caller may see: a public image, one of its own, or one shared "
        "with it in any membership status. Null when there is none with this id or the caller may "
        "not see it (the two are not told apart)."
    )
    async def image(
        self,
        info: Info,
        id: Annotated[strawberry.ID, strawberry.argument(description="The image's id.")],
    ) -> Image | None:
        try:
            view = await info.context.services.images.get(info.context.me, str(id), info.context.reader)
        except NotFound:
            return None
        return image_of(view, info.context.me)

    @strawberry.field(  # type: ignore[untyped-decorator]
        description="The images the caller sees in one region, a page at a time: public images, "
        "its own, and those shared with it (by default only `ACCEPTED` ones). A bad argument is a "
        "top-level error with its code: `INVALID_PAGE_SIZE`, `INVALID_CURSOR`, `INVALID_REGION`, "
        "`INVALID_DATETIME` or `TOO_MANY_ITEMS`."
    )
    async def images(
        self,
        info: Info,
        filter: Annotated[
            ImageFilter | None,
            strawberry.argument(
                description="Which images; null: every image the caller sees in the default "
                "region (shared ones if `ACCEPTED`)."
            ),
        ] = None,
        order_by: Annotated[
            ImageOrder | None,
            strawberry.argument(description="The order; null: newest first (`CREATED_AT` `DESC`)."),
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
                description="The `cursor` of the image this page follows, from a page of the same "
                "`orderBy` (`INVALID_CURSOR` otherwise); null: from the first."
            ),
        ] = None,
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


@strawberry.type(description="The image after the change, as the caller now sees it.")
class UpdateImageSuccess:
    image: Image = strawberry.field(description="The changed image.")


@strawberry.input(
    description="What `updateImage` changes; a null field (`maxRamMb`: an omitted one) stays as "
    "it is. Data disk images take only `name` and `description` (`DATA_DISK_FIELDS`)."
)
class UpdateImageInput:
    id: strawberry.ID = strawberry.field(description="The image to change.")
    expected_version: int | None = strawberry.field(
        default=None,
        description="The `version` the change is based on: an image at another version is "
        "`VERSION_CONFLICT` and nothing changes. Null: no check.",
    )
    name: str | None = strawberry.field(
        default=None,
        description="1-128 characters: letters (any script), digits, `-`, `.`, `_` and space, no "
        "leading or trailing space (`INVALID_NAME`).",
    )
    description: str | None = strawberry.field(
        default=None,
        description="At most 1024 characters, none of `<`, `>`, CR or LF (`INVALID_DESCRIPTION`); "
        "an empty string clears it.",
    )
    min_ram_mb: int | None = strawberry.field(
        default=None,
        description="In MiB, 0 for unrestricted; `0 <= minRamMb <= maxRamMb <= 1048576` "
        "(`INVALID_RAM_RANGE`).",
    )
    max_ram_mb: int | None = strawberry.field(
        default=strawberry.UNSET,
        description="In MiB, at most 1048576 (`INVALID_RAM_RANGE`). Null clears the limit; "
        "omitted, it stays.",
    )
    nic_multi_queue: bool | None = strawberry.field(
        default=None, description="Whether the OS supports NIC multi-queue."
    )
    sriov_driver: bool | None = strawberry.field(
        default=None, description="Whether the OS has an SR-IOV network driver."
    )
    boot_mode: BootMode | None = strawberry.field(
        default=None, description="The firmware servers made from the image boot with."
    )


UpdateImagePayload = Annotated[
    UpdateImageSuccess | NotFoundError | ValidationError | ForbiddenError | ConflictError | NotSupportedError,
    strawberry.union(
        "UpdateImagePayload",
        description="The changed image, or the error that refused the change (nothing changed).",
    ),
]


@strawberry.input(description="Which image to protect or unprotect.")
class SetImageProtectionInput:
    id: strawberry.ID = strawberry.field(description="The image.")
    protected: bool = strawberry.field(
        description="True: `deleteImages` refuses the image (`IMAGE_PROTECTED`); false: it may be "
        "deleted."
    )


SetImageProtectionPayload = Annotated[
    UpdateImageSuccess | NotFoundError | ForbiddenError,
    strawberry.union(
        "SetImageProtectionPayload",
        description="The image with its new protection, or the error that refused the change.",
    ),
]


@strawberry.input(description="Which image to publish.")
class PublishImageInput:
    id: strawberry.ID = strawberry.field(description="One of the caller's own private images.")


PublishImagePayload = Annotated[
    UpdateImageSuccess | NotFoundError | ForbiddenError | ConflictError | NotSupportedError,
    strawberry.union(
        "PublishImagePayload",
        description="The image, now a `PublicImage`, or the error that refused the change "
        "(nothing changed).",
    ),
]


@strawberry.input(description="Tags to add to one image.")
class ImageTagsInput:
    image_id: strawberry.ID = strawberry.field(description="The image to tag.")
    tags: list[TagInput] = strawberry.field(
        description="Added, or their value replaced when the key exists; at least one "
        "(`EMPTY_REQUEST`)."
    )


@strawberry.input(description="Tags to remove from one image.")
class RemoveImageTagsInput:
    image_id: strawberry.ID = strawberry.field(description="The image to untag.")
    keys: list[str] = strawberry.field(
        description="The keys of the tags to remove; at least one (`EMPTY_REQUEST`)."
    )


ImageTagsPayload = Annotated[
    UpdateImageSuccess | NotFoundError | ValidationError | ForbiddenError | LimitExceededError,
    strawberry.union(
        "ImageTagsPayload",
        description="The image with its tags now, or the error that refused the change (no tag "
        "changed).",
    ),
]


@strawberry.input(description="The images `deleteImages` deletes, all or none.")
class DeleteImagesInput:
    ids: list[strawberry.ID] = strawberry.field(
        description="1-100 image ids (`EMPTY_REQUEST`, `TOO_MANY_ITEMS`); an id given twice counts "
        "once."
    )
    delete_backups: bool | None = strawberry.field(
        default=False, description="For FULL_ECS images: also delete their backups. Kept ones are listed by `backups` "
                                   "and deleted by `deleteBackups`.")


@strawberry.type(description="The images are deleted.")
class DeleteImagesSuccess:
    deleted_ids: list[strawberry.ID] = strawberry.field(
        description="The deleted images' ids, in request order, each once."
    )


DeleteImagesPayload = Annotated[
    DeleteImagesSuccess | NotFoundError | ForbiddenError | ConflictError | ValidationError,
    strawberry.union(
        "DeleteImagesPayload",
        description="The deleted ids, or the error that refused the batch (nothing was deleted).",
    ),
]


async def _image_success(info: Info, image_id: str) -> UpdateImageSuccess:
    info.context.clear_loaders()
    view = await info.context.services.images.get(info.context.me, image_id)
    return UpdateImageSuccess(image=image_of(view, info.context.me))


@strawberry.type
class ImageMutations:
    @strawberry.mutation(  # type: ignore[untyped-decorator]
        description="Change an `ACTIVE` image's metadata: its owner, or an administrator for a "
        "public image. A request that changes nothing leaves `version` and `updatedAt` as they "
        "are. Errors: `IMAGE_NOT_FOUND`; `INVALID_NAME`, `INVALID_DESCRIPTION`, "
        "`INVALID_RAM_RANGE`; `NOT_OWNER`, `PUBLIC_IMAGE_READ_ONLY`; `IMAGE_NOT_ACTIVE`, "
        "`VERSION_CONFLICT`; `DATA_DISK_FIELDS`."
    )
    async def update_image(
        self, info: Info,
        input: Annotated[
            UpdateImageInput, strawberry.argument(description="The image and what to change.")
        ],
    ) -> UpdateImagePayload:
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

    @strawberry.mutation(  # type: ignore[untyped-decorator]
        description="Protect an image from deletion, or lift the protection: its owner, or an "
        "administrator for a public image, in any status. Errors: `IMAGE_NOT_FOUND`; `NOT_OWNER`, "
        "`PUBLIC_IMAGE_READ_ONLY`."
    )
    async def set_image_protection(
        self, info: Info,
        input: Annotated[
            SetImageProtectionInput,
            strawberry.argument(description="The image and its protection."),
        ],
    ) -> SetImageProtectionPayload:
        async def run() -> UpdateImageSuccess:
            view = await info.context.services.images.set_protection(info.context.me, str(input.id), input.protected)
            return UpdateImageSuccess(image=image_of(view, info.context.me))

        return await payload((NotFoundError, ForbiddenError), run())

    @strawberry.mutation(  # type: ignore[untyped-decorator]
        description="Make one of the caller's own `ACTIVE` private images public, visible to every "
        "account, and remove its memberships: administrators only; not for encrypted or FULL_ECS "
        "images. Errors: `IMAGE_NOT_FOUND`; `ADMIN_REQUIRED`, `NOT_OWNER`; `ALREADY_PUBLIC`, "
        "`IMAGE_NOT_ACTIVE`, `VERSION_CONFLICT`; `PUBLISH_NOT_SUPPORTED`."
    )
    async def publish_image(
        self, info: Info,
        input: Annotated[
            PublishImageInput, strawberry.argument(description="The image to publish.")
        ],
    ) -> PublishImagePayload:
        async def run() -> UpdateImageSuccess:
            view = await info.context.services.images.publish(info.context.me, str(input.id))
            info.context.clear_loaders()
            return UpdateImageSuccess(image=image_of(view, info.context.me))

        return await payload((NotFoundError, ForbiddenError, ConflictError, NotSupportedError), run())

    @strawberry.mutation(  # type: ignore[untyped-decorator]
        description="Add tags to an image, or give existing keys new values: its owner, or an "
        "administrator for a public image, in any status; all or nothing. Errors: "
        "`IMAGE_NOT_FOUND`; `EMPTY_REQUEST`, `INVALID_TAG_KEY`, `INVALID_TAG_VALUE`, "
        "`DUPLICATE_TAG_KEY`; `NOT_OWNER`, `PUBLIC_IMAGE_READ_ONLY`; `TOO_MANY_TAGS` (more than 10 "
        "keys on the image)."
    )
    async def add_image_tags(
        self, info: Info,
        input: Annotated[
            ImageTagsInput, strawberry.argument(description="The image and its new tags.")
        ],
    ) -> ImageTagsPayload:
        async def run() -> UpdateImageSuccess:
            await info.context.services.tags.add(info.context.me, str(input.image_id),
                                                 [(t.key, t.value) for t in input.tags])
            return await _image_success(info, str(input.image_id))

        return await payload((NotFoundError, ValidationError, ForbiddenError, LimitExceededError), run())

    @strawberry.mutation(  # type: ignore[untyped-decorator]
        description="Remove tags from an image by key: its owner, or an administrator for a public "
        "image; all or nothing. Errors: `IMAGE_NOT_FOUND`, `TAG_NOT_FOUND` (a key the image "
        "lacks); `EMPTY_REQUEST`; `NOT_OWNER`, `PUBLIC_IMAGE_READ_ONLY`."
    )
    async def remove_image_tags(
        self, info: Info,
        input: Annotated[
            RemoveImageTagsInput,
            strawberry.argument(description="The image and the keys to remove."),
        ],
    ) -> ImageTagsPayload:
        async def run() -> UpdateImageSuccess:
            await info.context.services.tags.remove(info.context.me, str(input.image_id), list(input.keys))
            return await _image_success(info, str(input.image_id))

        return await payload((NotFoundError, ValidationError, ForbiddenError, LimitExceededError), run())

    @strawberry.mutation(  # type: ignore[untyped-decorator]
        description="Delete images, all or none: their owner, or an administrator for public "
        "images. Their memberships go too; servers and volumes made from them keep working, and "
        "their data is reclaimed once nothing uses it. Errors: `IMAGE_NOT_FOUND`; `EMPTY_REQUEST`, "
        "`TOO_MANY_ITEMS`; `NOT_OWNER`, `PUBLIC_IMAGE_READ_ONLY`, `IMAGE_PROTECTED`; `IMAGE_BUSY` "
        "(`QUEUED` or `SAVING`: a job is writing it)."
    )
    async def delete_images(
        self, info: Info,
        input: Annotated[
            DeleteImagesInput, strawberry.argument(description="The images to delete.")
        ],
    ) -> DeleteImagesPayload:
        async def run() -> DeleteImagesSuccess:
            ids = await info.context.services.images.delete(
                info.context.me, [str(i) for i in input.ids], bool(input.delete_backups)
            )
            info.context.clear_loaders()
            return DeleteImagesSuccess(deleted_ids=[strawberry.ID(i) for i in ids])

        return await payload((NotFoundError, ForbiddenError, ConflictError, ValidationError), run())
