"""Who may do what to an image: the relation of a caller to an image, in one place."""

from __future__ import annotations

from app.db.repositories.images import VisibleImage
from app.domain.enums import ImageVisibility
from app.domain.images import Caller
from app.errors import Forbidden


def relation(view: VisibleImage, caller: Caller) -> ImageVisibility:
    """PUBLIC, PRIVATE (the caller owns it) or SHARED (the caller is a member)."""
    if view.image.visibility == ImageVisibility.PUBLIC.value:
        return ImageVisibility.PUBLIC
    if view.image.owner_id == caller.account_id:
        return ImageVisibility.PRIVATE
    return ImageVisibility.SHARED


def require_manager(view: VisibleImage, caller: Caller) -> None:
    """Owners manage their private images; administrators manage public images."""
    rel = relation(view, caller)
    if rel is ImageVisibility.PUBLIC and not caller.is_admin:
        raise Forbidden("PUBLIC_IMAGE_READ_ONLY")
    if rel is ImageVisibility.SHARED:
        raise Forbidden("NOT_OWNER")
