"""Sharing private images with other accounts, and the members' answers.

Every call is one atomic batch: each (image, account) pair passes every rule or nothing
changes, and the first failure is raised. The checks run in a fixed order, so "the first
error" is well defined:

    shareImages     the input (batches, not the caller itself) → each image in request order
                    (visible, not public, owned, ACTIVE, not under the default key) → each
                    account exists → per image: KMS grants of every recipient, member limit
    unshareImages   the input → each image (visible, managed by the caller) → each pair is
                    a membership
    updateImageMembership
                    the input (status ACCEPTED or REJECTED) → each image (visible, the caller
                    is a member)

Concurrency: shares lock the image rows (id order) before counting members, so two requests
racing for the last free member slots cannot both take them; on SQLite, BEGIN IMMEDIATE
serializes writers anyway.
"""

from __future__ import annotations

from collections.abc import Mapping

from app.db.repositories.images import MemberRow, VisibleImage
from app.db.types import utcnow
from app.db.uow import Database, UnitOfWork, retrying_deadlocks
from app.domain.enums import ImageKind, ImageStatus, ImageVisibility, MemberStatus
from app.domain.images import Caller
from app.domain.rules import MEMBERS_PER_FULL_ECS_IMAGE, MEMBERS_PER_IMAGE, validate_batch
from app.errors import (
    Conflict,
    Forbidden,
    Invalid,
    KmsKeyProblem,
    LimitExceeded,
    NotFound,
    NotSupported,
    register_codes,
)
from app.kms.port import GrantOperation, KeyInfo, KeyProvider
from app.services.access import relation, require_manager

SHARING_CODES: dict[str, str] = {
    # ValidationError
    "SHARE_WITH_SELF": "An image cannot be shared with its owner's own account.",
    "INVALID_MEMBER_STATUS": "A member sets its membership to ACCEPTED or REJECTED, never PENDING.",
    # ForbiddenError
    "RESHARE_FORBIDDEN": "Members of a shared image cannot share it further; only its owner can.",
    "NOT_MEMBER": "Only an account the image is shared with may answer the share.",
    # NotSupportedError
    "PUBLIC_IMAGE_NOT_SHAREABLE": "Public images are everyone's already and cannot be shared.",
    "SHARE_DEFAULT_KEY_ENCRYPTED": "Images encrypted with the default key ims/default cannot be shared.",
    # LimitExceededError
    "SHARE_LIMIT": f"An image has at most {MEMBERS_PER_IMAGE} members ({MEMBERS_PER_FULL_ECS_IMAGE} for full-ECS images).",
    # KmsKeyError
    "KMS_GRANT_REQUIRED": "Every recipient needs a DECRYPT_DATA_KEY grant on the image's KMS key first.",
}
register_codes(SHARING_CODES)


def member_limit(kind: str) -> int:
    """How many accounts an image of this kind may be shared with."""
    return MEMBERS_PER_FULL_ECS_IMAGE if kind == ImageKind.FULL_ECS.value else MEMBERS_PER_IMAGE


def _check_shareable(view: VisibleImage | None, image_id: str, caller: Caller) -> VisibleImage:
    if view is None:
        raise NotFound("IMAGE_NOT_FOUND", resource_id=image_id)
    rel = relation(view, caller)
    if rel is ImageVisibility.PUBLIC:
        raise NotSupported("PUBLIC_IMAGE_NOT_SHAREABLE", f"Image {image_id} is public.")
    if rel is ImageVisibility.SHARED:
        raise Forbidden("RESHARE_FORBIDDEN", f"Image {image_id} is shared with you; only its owner shares it.")
    if view.image.status != ImageStatus.ACTIVE.value:
        raise Conflict("IMAGE_NOT_ACTIVE", f"Image {image_id} is {view.image.status}, not ACTIVE.")
    return view


class SharingService:
    def __init__(self, db: Database, provider: KeyProvider) -> None:
        self.db = db
        self.provider = provider

    # ---------------------------------------------------------------- share

    async def share(self, caller: Caller, image_ids: list[str], account_ids: list[str]) -> list[MemberRow]:
        """Share every image with every account. New members are PENDING; an account that is
        already a member keeps its membership as it is. Returns the memberships of every
        pair, in request order (image, then account)."""
        images = validate_batch(image_ids, "input.imageIds")
        accounts = validate_batch(account_ids, "input.accountIds")
        if caller.account_id in accounts:
            raise Invalid("SHARE_WITH_SELF", field=f"input.accountIds[{account_ids.index(caller.account_id)}]")
        # The new memberships' counters are locked as they are inserted (the pairs go in
        # account order, which makes a deadlock rare, not impossible).
        return await retrying_deadlocks(lambda: self._share(caller, images, accounts))

    async def _share(self, caller: Caller, images: list[str], accounts: list[str]) -> list[MemberRow]:
        async with self.db.uow(caller.account_id) as uow:
            views = await uow.images.get_many_visible(images, for_update=True)
            keys: dict[str, KeyInfo] = {}
            for image_id in images:
                view = _check_shareable(views.get(image_id), image_id, caller)
                key_id = view.image.kms_key_id
                if key_id is not None:
                    keys[image_id] = await self._image_key(caller, key_id)
                    if keys[image_id].is_default:
                        raise NotSupported("SHARE_DEFAULT_KEY_ENCRYPTED",
                                           f"Image {image_id} is encrypted with the default key ims/default.")
            found = await uow.accounts.get_many(accounts)
            for account_id in accounts:
                if account_id not in found:
                    raise NotFound("ACCOUNT_NOT_FOUND", resource_id=account_id)
            members = await uow.sharing.member_ids(images)
            new: list[tuple[str, str]] = []
            for image_id in images:
                if image_id in keys:
                    await self._require_grants(keys[image_id].id, accounts)
                fresh = [a for a in accounts if a not in members[image_id]]
                limit = member_limit(views[image_id].image.kind)
                if len(members[image_id]) + len(fresh) > limit:
                    raise LimitExceeded(
                        "SHARE_LIMIT",
                        f"Image {image_id} has {len(members[image_id])} members; {len(fresh)} more would exceed "
                        f"{limit}.",
                        limit=limit,
                    )
                new.extend((image_id, a) for a in fresh)
            new.sort(key=lambda pair: (pair[1], pair[0]))  # counters locked in account order
            await uow.sharing.add(new, MemberStatus.PENDING.value, utcnow())
            rows = await uow.sharing.members(images, accounts)
            await uow.commit()
        return [rows[(i, a)] for i in images for a in accounts]

    async def _image_key(self, caller: Caller, key_id: str) -> KeyInfo:
        """The image's key as its owner sees it; a destroyed key is a KmsKeyError."""
        try:
            return await self.provider.get_key(caller, key_id)
        except NotFound as exc:
            raise KmsKeyProblem("KMS_KEY_NOT_FOUND", key_id=key_id) from exc

    async def _require_grants(self, key_id: str, account_ids: list[str]) -> None:
        for account_id in account_ids:
            if not await self.provider.has_grant(key_id, account_id, GrantOperation.DECRYPT_DATA_KEY):
                raise KmsKeyProblem(
                    "KMS_GRANT_REQUIRED",
                    f"Account {account_id} holds no DECRYPT_DATA_KEY grant on key {key_id}.",
                    key_id=key_id,
                )

    # ---------------------------------------------------------------- unshare

    async def unshare(self, caller: Caller, image_ids: list[str], account_ids: list[str]) -> int:
        """Remove these accounts from these images' members; each pair must be a membership
        (MEMBER_NOT_FOUND otherwise, nothing removed). Returns how many were removed.

        The former members lose sight of the image at once; what they already made from it
        holds its own references to the data and is not touched."""
        images = validate_batch(image_ids, "input.imageIds")
        accounts = validate_batch(account_ids, "input.accountIds")
        return await retrying_deadlocks(lambda: self._unshare(caller, images, accounts))

    async def _unshare(self, caller: Caller, images: list[str], accounts: list[str]) -> int:
        async with self.db.uow(caller.account_id) as uow:
            views = await uow.images.get_many_visible(images, for_update=True)
            for image_id in images:
                view = views.get(image_id)
                if view is None:
                    raise NotFound("IMAGE_NOT_FOUND", resource_id=image_id)
                require_manager(view, caller)
            members = await uow.sharing.member_ids(images)
            for image_id in images:
                for account_id in accounts:
                    if account_id not in members[image_id]:
                        raise NotFound("MEMBER_NOT_FOUND",
                                       f"Account {account_id} is not a member of image {image_id}.",
                                       resource_id=account_id)
            removed = await uow.sharing.remove(images, accounts)
            await uow.commit()
        return removed

    # ---------------------------------------------------------------- membership

    async def update_membership(self, caller: Caller, image_ids: list[str], status: MemberStatus) -> list[MemberRow]:
        """The caller accepts or rejects images shared with it (a rejected image can be
        accepted again until the owner unshares it). Returns the caller's memberships."""
        images = validate_batch(image_ids, "input.imageIds")
        if status is MemberStatus.PENDING:
            raise Invalid("INVALID_MEMBER_STATUS", field="input.status")
        return await retrying_deadlocks(lambda: self._update_membership(caller, images, status))

    async def _update_membership(self, caller: Caller, images: list[str], status: MemberStatus) -> list[MemberRow]:
        async with self.db.uow(caller.account_id) as uow:
            # The images locked first, in id order, as the owner's changes lock them: a status
            # change updates the image row too (its CSV text, migration 0007), and taken after
            # the membership row it deadlocked with an owner's unshare or delete, which lock the
            # image and then its memberships.
            views = await uow.images.get_many_visible(images, for_update=True)
            for image_id in images:
                view = views.get(image_id)
                if view is None:
                    raise NotFound("IMAGE_NOT_FOUND", resource_id=image_id)
                if relation(view, caller) is not ImageVisibility.SHARED:
                    raise Forbidden("NOT_MEMBER", f"Image {image_id} is not shared with you.")
            await self._set_statuses(uow, caller, images, views, status)
            rows = await uow.sharing.members(images, [caller.account_id])
            await uow.commit()
        return [rows[(i, caller.account_id)] for i in images]

    async def _set_statuses(self, uow: UnitOfWork, caller: Caller, images: list[str],
                            views: Mapping[str, VisibleImage], status: MemberStatus) -> None:
        now = utcnow()
        # In id order: each update locks the membership row and then, by trigger, the
        # member's counters; two batches of one member naming the same images in opposite
        # orders each held a membership and waited for the other (a deadlock on PostgreSQL).
        for image_id in sorted(images):
            membership = views[image_id].membership
            assert membership is not None
            if membership.status == status.value:
                continue  # no change, no new updatedAt
            if not await uow.sharing.set_status(image_id, caller.account_id, status.value, now):
                # Unshared between the read and the write: the image is gone for the caller.
                raise NotFound("IMAGE_NOT_FOUND", resource_id=image_id)
