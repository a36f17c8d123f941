"""Image tags: at most 10 per image, owner-managed, atomic per request."""

from __future__ import annotations

from app.db.repositories.images import VisibleImage
from app.db.types import utcnow
from app.db.uow import Database
from app.domain.images import Caller
from app.domain.rules import TAGS_PER_IMAGE, tag_text, validate_tags
from app.errors import Invalid, LimitExceeded, NotFound
from app.services.access import require_manager


class TagService:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def _managed(self, uow: object, caller: Caller, image_id: str) -> VisibleImage:
        view: VisibleImage | None = await uow.images.get_visible(image_id, for_update=True)  # type: ignore[attr-defined]
        if view is None:
            raise NotFound("IMAGE_NOT_FOUND", resource_id=image_id)
        require_manager(view, caller)
        return view

    async def add(self, caller: Caller, image_id: str, tags: list[tuple[str, str]]) -> None:
        """Add tags; an existing key gets the new value. Nothing changes on any error."""
        seen = validate_tags(tags)
        if not seen:
            raise Invalid("EMPTY_REQUEST", field="input.tags")
        async with self.db.uow(caller.account_id) as uow:
            await self._managed(uow, caller, image_id)
            existing = {t.key: t.value for t in (await uow.images.tags_of([image_id]))[image_id]}
            if len(existing.keys() | seen.keys()) > TAGS_PER_IMAGE:
                raise LimitExceeded("TOO_MANY_TAGS", limit=TAGS_PER_IMAGE)
            # Only a new key or a new value is a change: tags sent again as the image has them
            # (a form sent back whole) leave version and updatedAt, as updateImage does.
            changed = {key: value for key, value in seen.items() if existing.get(key) != value}
            if changed:
                await uow.images.put_tags(image_id, changed)
                await uow.images.touch(image_id, utcnow())
                await uow.commit()

    async def remove(self, caller: Caller, image_id: str, keys: list[str]) -> None:
        """Remove tags by key; a key the image lacks is TAG_NOT_FOUND and nothing changes."""
        if not keys:
            raise Invalid("EMPTY_REQUEST", field="input.keys")
        keys = [tag_text(key) for key in keys]
        async with self.db.uow(caller.account_id) as uow:
            await self._managed(uow, caller, image_id)
            existing = {t.key for t in (await uow.images.tags_of([image_id]))[image_id]}
            for index, key in enumerate(keys):
                if key not in existing:
                    raise NotFound("TAG_NOT_FOUND", f"The image has no tag {key!r}.", resource_id=image_id)
            await uow.images.delete_tags(image_id, list(dict.fromkeys(keys)))
            await uow.images.touch(image_id, utcnow())
            await uow.commit()
