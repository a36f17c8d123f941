"""Reading the catalog and managing image metadata: update, protection, publish, delete."""

from __future__ import annotations

import builtins
from dataclasses import dataclass
from typing import Any

from app.compute.tables import Backup
from app.db.repositories.images import VisibleImage, read_page, sort_value
from app.db.tables import Image
from app.db.types import utcnow
from app.db.uow import Database, SharedReader, reading, retrying_deadlocks
from app.domain.enums import BootMode, ImageKind, ImageOrderField, ImageStatus, ImageVisibility
from app.domain.images import Caller, ImageOrder, ImageQuery
from app.domain.pagination import decode_cursor, decode_datetime, decode_size, encode_cursor
from app.domain.rules import (
    validate_batch,
    validate_description,
    validate_name,
    validate_page_size,
    validate_ram,
)
from app.errors import Conflict, Forbidden, Invalid, NotFound, NotSupported
from app.services.access import relation, require_manager
from app.services.server_images import delete_backup_rows

_UNSET: Any = object()


@dataclass
class ImagePage:
    items: list[VisibleImage]
    has_next: bool
    has_previous: bool
    total: int | None
    cursors: list[str]


@dataclass
class ImageChanges:
    """The fields of `updateImage`; `_UNSET` means not given (maxRamMb may be set to None)."""

    name: str | None = None
    description: str | None = None
    min_ram_mb: int | None = None
    max_ram_mb: Any = _UNSET
    nic_multi_queue: bool | None = None
    sriov_driver: bool | None = None
    boot_mode: BootMode | None = None

    def data_disk_allowed(self) -> bool:
        return (
            self.min_ram_mb is None
            and self.max_ram_mb is _UNSET
            and self.nic_multi_queue is None
            and self.sriov_driver is None
            and self.boot_mode is None
        )


UNSET = _UNSET
#: Catalog pages up to this many rows are read on the event loop (see `list`).
INLINE_PAGE_ROWS = 100


def _ordering(order: ImageOrder) -> str:
    return f"{order.field.value}:{order.direction.value}"


class ImageService:
    def __init__(self, db: Database, regions: tuple[str, ...]) -> None:
        self.db = db
        self.regions = regions

    def check_region(self, region: str | None, field: str = "input.region") -> str:
        if region is None:
            return self.regions[0]
        if region not in self.regions:
            raise Invalid("INVALID_REGION", f"Unknown region {region!r}.", field=field)
        return region

    # ---------------------------------------------------------------- reads

    async def get(self, caller: Caller, image_id: str, reader: SharedReader | None = None) -> VisibleImage:
        async with reading(self.db, caller.account_id, reader) as uow:
            view = await uow.images.get_visible(image_id)
        if view is None:
            raise NotFound("IMAGE_NOT_FOUND", resource_id=image_id)
        return view

    async def list(
        self, caller: Caller, query: ImageQuery, order: ImageOrder, first: int | None, after: str | None,
        *, with_total: bool, with_tags: bool = False, with_members: bool = False,
    ) -> ImagePage:
        size = validate_page_size(first)
        ordering = _ordering(order)
        cursor: tuple[Any, str] | None = None
        if after:
            value, last_id = decode_cursor(after, ordering)
            if order.field is ImageOrderField.CREATED_AT:
                value = decode_datetime(value)
            elif order.field is ImageOrderField.SIZE:
                value = decode_size(value)
            elif type(value) is not str:  # a name or a status
                raise Invalid("INVALID_CURSOR", field="after")
            cursor = (value, last_id)
        # Read whole on Database.reads, apart from the request's shared reader: the page is
        # one statement, a snapshot of its own. A page of up to INLINE_PAGE_ROWS is read right
        # on the event loop (`run_now`), like the token: about a millisecond at 50 rows, and
        # handed to a thread it waited for the GIL behind other requests' resolution — over
        # HTTP with 10 connections, three interleaved runs: p99 246–267 → 120–123 ms, 78–85 →
        # 100–107 q/s. Bigger pages (up to 1,000 rows) go to a thread.
        items, has_next, total = await read_page(
            self.db.reads, caller_id=caller.account_id, query=query, order=order, first=size, after=cursor,
            with_total=with_total, with_tags=with_tags, with_members=with_members, now=size <= INLINE_PAGE_ROWS,
        )
        cursors = [encode_cursor(ordering, sort_value(v.image, order.field), v.image.id) for v in items]
        return ImagePage(items, has_next, cursor is not None, total, cursors)

    # ---------------------------------------------------------------- writes

    async def _load_managed(self, uow: Any, caller: Caller, image_id: str) -> VisibleImage:
        view: VisibleImage | None = await uow.images.get_visible(image_id, for_update=True)
        if view is None:
            raise NotFound("IMAGE_NOT_FOUND", resource_id=image_id)
        require_manager(view, caller)
        return view

    async def update(self, caller: Caller, image_id: str, changes: ImageChanges,
                     expected_version: int | None) -> VisibleImage:
        values: dict[str, Any] = {}
        if changes.name is not None:
            values["name"] = validate_name(changes.name)
        if changes.description is not None:
            values["description"] = validate_description(changes.description)
        async with self.db.uow(caller.account_id) as uow:
            view = await self._load_managed(uow, caller, image_id)
            image = view.image
            if image.status != ImageStatus.ACTIVE.value:
                raise Conflict("IMAGE_NOT_ACTIVE")
            if image.kind == ImageKind.DATA_DISK.value and not changes.data_disk_allowed():
                raise NotSupported("DATA_DISK_FIELDS")
            min_ram = image.min_ram_mb if changes.min_ram_mb is None else changes.min_ram_mb
            max_ram = image.max_ram_mb if changes.max_ram_mb is _UNSET else changes.max_ram_mb
            validate_ram(min_ram, max_ram, min_given=changes.min_ram_mb is not None)
            if changes.min_ram_mb is not None:
                values["min_ram_mb"] = changes.min_ram_mb
            if changes.max_ram_mb is not _UNSET:
                values["max_ram_mb"] = changes.max_ram_mb
            for attr in ("nic_multi_queue", "sriov_driver"):
                if getattr(changes, attr) is not None:
                    values[attr] = getattr(changes, attr)
            if changes.boot_mode is not None:
                values["boot_mode"] = changes.boot_mode.value
            if expected_version is not None and expected_version != image.version:
                raise Conflict("VERSION_CONFLICT", f"The image is at version {image.version}.")
            # Only what differs is a change: a request naming no field, or the values the image
            # has (a form sent back whole), changes nothing, not its version nor updatedAt (as
            # setImageProtection and a member's same answer do).
            values = {k: v for k, v in values.items() if getattr(image, k) != v}
            if values:
                values["updated_at"] = utcnow()
                if not await uow.images.compare_and_set(image.id, image.version, values):
                    raise Conflict("VERSION_CONFLICT", "The image changed concurrently.")
                await uow.commit()
        return await self.get(caller, image_id)

    async def set_protection(self, caller: Caller, image_id: str, protected: bool) -> VisibleImage:
        async with self.db.uow(caller.account_id) as uow:
            view = await self._load_managed(uow, caller, image_id)
            if view.image.protected != protected:
                ok = await uow.images.compare_and_set(
                    image_id, view.image.version, {"protected": protected, "updated_at": utcnow()},
                    expected_status=None,
                )
                if not ok:  # the row is locked (_load_managed): no other writer got between
                    raise RuntimeError(f"image {image_id} changed under its row lock")
                await uow.commit()
        return await self.get(caller, image_id)

    async def publish(self, caller: Caller, image_id: str) -> VisibleImage:
        """An administrator makes one of its own private images public."""
        await retrying_deadlocks(lambda: self._publish(caller, image_id))
        return await self.get(caller, image_id)

    async def _publish(self, caller: Caller, image_id: str) -> None:
        async with self.db.uow(caller.account_id) as uow:
            view = await uow.images.get_visible(image_id, for_update=True)
            if view is None:
                raise NotFound("IMAGE_NOT_FOUND", resource_id=image_id)
            rel = relation(view, caller)
            if not caller.is_admin:
                raise Forbidden("ADMIN_REQUIRED")
            if rel is ImageVisibility.PUBLIC:
                raise Conflict("ALREADY_PUBLIC")
            if rel is ImageVisibility.SHARED:
                raise Forbidden("NOT_OWNER")
            image = view.image
            if image.status != ImageStatus.ACTIVE.value:
                raise Conflict("IMAGE_NOT_ACTIVE")
            if image.kms_key_id is not None or image.kind == ImageKind.FULL_ECS.value:
                raise NotSupported("PUBLISH_NOT_SUPPORTED")
            # A public image is everyone's: memberships no longer mean anything. Deleted first:
            # their rows locked, a member's concurrent answer waits and then finds none.
            # Deleted after the visibility change, an answer committed in between
            # stayed in the members' SHARED counters (the delete found a public image's members
            # and counted nothing off).
            await uow.sharing.remove_every_member([image_id])
            ok = await uow.images.compare_and_set(
                image_id, image.version, {"visibility": ImageVisibility.PUBLIC.value, "updated_at": utcnow()}
            )
            if not ok:
                raise Conflict("VERSION_CONFLICT", "The image changed concurrently.")
            await uow.commit()

    # builtins.list: in this class, `list` names the method above.
    async def delete(
        self, caller: Caller, image_ids: builtins.list[str], delete_backups: bool = False
    ) -> builtins.list[str]:
        """Delete a batch atomically: every image passes every check, or nothing is deleted."""
        ids = validate_batch(image_ids, "input.ids")
        # The memberships go with the images (the foreign key's cascade), each taken off its
        # account's counter.
        return await retrying_deadlocks(lambda: self._delete(caller, ids, delete_backups))

    async def _delete(self, caller: Caller, ids: builtins.list[str], delete_backups: bool) -> builtins.list[str]:
        async with self.db.uow(caller.account_id) as uow:
            views = await uow.images.get_many_visible(ids, for_update=True)
            for image_id in ids:
                view = views.get(image_id)
                if view is None:
                    raise NotFound("IMAGE_NOT_FOUND", resource_id=image_id)
                require_manager(view, caller)
                if view.image.protected:
                    raise Forbidden("IMAGE_PROTECTED", f"Image {image_id} is protected.")
                if view.image.status in (ImageStatus.QUEUED.value, ImageStatus.SAVING.value):
                    raise Conflict("IMAGE_BUSY", f"A job is writing image {image_id}.")
            await uow.images.lock_for_delete(ids)
            # Tags and memberships go by cascade, after their image (whose trigger takes the
            # memberships off the counters while they still exist): deleted before it, each
            # one had migration 0007's trigger aggregate the image's remaining members and
            # write its CSV text again, a statement before the image went (100 images of 256
            # members: 1.8 s of SQLite's write lock instead of 0.2 s).
            await uow.images.delete(ids)
            # The data goes back to the chunk store in the same transaction: a manifest
            # shared with a server, volume or copy keeps living through their references.
            # With their backups (`deleteBackups: true`), in one release: one lock order.
            manifests = [disk["manifestId"] for image_id in ids
                         for disk in views[image_id].image.disks if disk.get("manifestId")]
            backups = await _backups(uow, [views[i].image for i in ids]) if delete_backups else []
            await delete_backup_rows(uow, backups, releasing=manifests)
            await uow.commit()
        return ids


async def _backups(uow: Any, images: list[Image]) -> list[Backup]:
    """The backups of these images' FULL_ECS ones."""
    wanted = [i.backup_id for i in images if i.kind == ImageKind.FULL_ECS.value and i.backup_id]
    return list((await uow.compute.get_backups(wanted)).values())
