"""Volumes as their owner sees them: listed (`volumes`) and deleted (`deleteVolumes`).

A volume holds one reference to its disk's manifest. A server's disks go with the server
(`deleteServer`), but a volume made by `createVolume`, or a data disk kept by
`deleteServer(deleteVolumes: false)`, belongs to no server: this is how its owner finds it
again and lets its data go. A volume still attached to a server is refused
(`VOLUME_IN_USE`): it is one of the server's disks, and goes with the server.

An image being made from the volume (`createImageFromVolume`, its job QUEUED or RUNNING)
does not hold the volume back: the request took the image's own reference to the volume's
manifest, in a transaction that locked the volume's row, so deleting the volume lets go of
the volume's reference only, exactly as `deleteServer` does for a server being imaged.
"""

from __future__ import annotations

from dataclasses import dataclass

from app.compute.tables import Volume
from app.db.uow import Database, SharedReader, reading, retrying_deadlocks
from app.domain.images import Caller
from app.domain.pagination import decode_time_cursor, encode_cursor
from app.domain.rules import validate_batch, validate_page_size
from app.errors import Conflict, NotFound, register_codes
from app.services.compute import delete_volume_rows

register_codes({
    "VOLUME_IN_USE": "The volume is a disk of a server and goes with it (deleteServer; with deleteVolumes: false "
                     "the data disks stay, detached).",
})

_ORDERING = "volumes:created_at:DESC"


@dataclass
class VolumePage:
    items: list[Volume]
    has_next: bool
    has_previous: bool
    total: int
    cursors: list[str]


class VolumeService:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def page(self, caller: Caller, first: int | None, after: str | None,
                   reader: SharedReader | None = None) -> VolumePage:
        """The caller's volumes in every region, attached or not, newest first (keyset pages)."""
        size = validate_page_size(first)
        cursor = decode_time_cursor(after, _ORDERING)
        async with reading(self.db, caller.account_id, reader) as uow:
            items, has_next, total = await uow.compute.page_volumes(size, cursor)
        cursors = [encode_cursor(_ORDERING, v.created_at, v.id) for v in items]
        return VolumePage(items, has_next, cursor is not None, total, cursors)

    async def delete(self, caller: Caller, volume_ids: list[str]) -> list[str]:
        """Delete a batch atomically, releasing each volume's reference as `deleteServer`
        releases its disks': every volume is the caller's and attached to no server, or
        nothing is deleted."""
        ids = validate_batch(volume_ids, "input.ids")
        return await retrying_deadlocks(lambda: self._delete(caller, ids))

    async def _delete(self, caller: Caller, ids: list[str]) -> list[str]:
        async with self.db.uow(caller.account_id) as uow:
            # Locked in id order; another account's volume is missing, exactly like an unknown id.
            volumes = await uow.compute.get_volumes(ids, for_update=True)
            for volume_id in ids:
                if volume_id not in volumes:
                    raise NotFound("VOLUME_NOT_FOUND", resource_id=volume_id)
            for volume_id in ids:
                server_id = volumes[volume_id].server_id
                if server_id is not None:
                    raise Conflict("VOLUME_IN_USE", f"Volume {volume_id} is a disk of server {server_id}: it goes "
                                   "with the server (deleteServer).")
            await delete_volume_rows(uow, volumes.values())
            await uow.commit()
        return ids
