"""The typed per-request context: caller, services, request id and DataLoaders."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import strawberry
from strawberry.dataloader import DataLoader

from app.db.repositories.images import MemberRow, TagFields
from app.db.uow import SharedReader, reading
from app.domain.images import Caller
from app.errors import ImsError
from app.services.registry import Services


class Unauthenticated(Exception):
    """No valid token (the HTTP layer answers 401 before this is ever raised in practice)."""


@dataclass
class Context:
    services: Services
    caller: Caller | None
    request_id: str
    request: Any = None
    response: Any = None
    loaders: dict[str, DataLoader[Any, Any]] = field(default_factory=dict)
    #: The websocket `connection_init` payload (strawberry sets it before `on_ws_connect`).
    connection_params: dict[str, Any] = field(default_factory=dict)
    #: The read session shared by a query request's resolvers (set by SharedReads).
    reader: SharedReader | None = None

    @property
    def me(self) -> Caller:
        if self.caller is None:
            raise Unauthenticated("authentication required")
        return self.caller

    @property
    def tags(self) -> DataLoader[str, list[TagFields]]:
        if "tags" not in self.loaders:
            self.loaders["tags"] = DataLoader(self._load_tags)
        return self.loaders["tags"]

    @property
    def members(self) -> DataLoader[str, list[MemberRow]]:
        if "members" not in self.loaders:
            self.loaders["members"] = DataLoader(self._load_members)
        return self.loaders["members"]

    def clear_loaders(self) -> None:
        """After a mutation, later fields must see the committed state, not a cached one."""
        self.loaders.clear()

    async def _load_tags(self, image_ids: list[str]) -> list[list[TagFields]]:
        async with reading(self.services.db, self.me.account_id, self.reader) as uow:
            found = await uow.images.tag_fields_of(list(image_ids))
        return [found[i] for i in image_ids]

    async def _load_members(self, image_ids: list[str]) -> list[list[MemberRow]]:
        async with reading(self.services.db, self.me.account_id, self.reader) as uow:
            found = await uow.images.members_of(list(image_ids))
        return [found[i] for i in image_ids]


Info = strawberry.Info[Context, None]

__all__ = ["Context", "ImsError", "Info", "Unauthenticated"]
