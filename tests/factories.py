"""Factories that write rows straight through the repositories (no API for creation yet)."""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from app.db.tables import Account, ApiToken, Image, ImageMember, ImageTag
from app.db.types import new_id, utcnow
from app.db.uow import Database
from app.services.accounts import hash_token, new_token

if TYPE_CHECKING:
    from app.services.registry import Services

_seq = itertools.count(1)


async def make_account(db: Database, name: str | None = None, role: str = "USER") -> tuple[Account, str]:
    """An account and a live token for it."""
    token = new_token()
    account = Account(id=new_id("acc"), name=name or f"user-{next(_seq):05d}", role=role, created_at=utcnow())
    async with db.uow() as uow:
        await uow.accounts.add(account)
        await uow.accounts.add_token(ApiToken(id=new_id("tok"), account_id=account.id, name="t",
                                              token_hash=hash_token(token), created_at=utcnow()))
        await uow.commit()
    return account, token


async def make_token(db: Database, account: Account, name: str, expires_at: datetime | None) -> tuple[ApiToken, str]:
    """A token of `account` expiring at `expires_at` (which may be past), made a day before it."""
    token = new_token()
    created = (expires_at or utcnow()) - timedelta(days=1)
    row = ApiToken(id=new_id("tok"), account_id=account.id, name=name, token_hash=hash_token(token),
                   created_at=created, expires_at=expires_at)
    async with db.uow() as uow:
        await uow.accounts.add_token(row)
        await uow.commit()
    return row, token


async def make_image(db: Database, owner: Account, **fields: Any) -> Image:
    """A private ACTIVE system-disk image of `owner` unless `fields` say otherwise."""
    now = utcnow() + timedelta(microseconds=next(_seq))
    tags: dict[str, str] = fields.pop("tags", {})
    defaults: dict[str, Any] = dict(
        id=new_id("img"), owner_id=owner.id, visibility="PRIVATE", region="region-1",
        name=f"image-{next(_seq):05d}", description="", kind="SYSTEM_DISK", status="ACTIVE", disk_format="RAW",
        os_type="LINUX", os_platform="Ubuntu", os_version="Ubuntu 22.04 server 64bit", os_bits=64,
        min_disk_gb=10, size_bytes=1 << 30, virtual_size_bytes=10 << 30, checksum="sha256:" + "0" * 64,
        quick_provisioning=True, origin_type="NONE",
        disks=[{"role": "SYSTEM", "sizeGb": 10, "storedBytes": 1 << 30}], created_at=now, updated_at=now,
    )
    defaults.update(fields)
    image = Image(**defaults)
    async with db.uow() as uow:
        await uow.images.add(image)
        for key, value in tags.items():
            uow.session.add(ImageTag(image_id=image.id, key=key, value=value))
        await uow.commit()
    return image


async def share(db: Database, image: Image, account: Account, status: str = "ACCEPTED") -> None:
    now = utcnow()
    async with db.uow() as uow:
        uow.session.add(ImageMember(image_id=image.id, account_id=account.id, status=status,
                                    created_at=now, updated_at=now))
        await uow.commit()


async def unshare(db: Database, image: Image, account: Account) -> None:
    """Remove a membership, as one row (the sharing service removes batches)."""
    async with db.uow() as uow:
        member = await uow.session.get(ImageMember, (image.id, account.id))
        assert member is not None
        await uow.session.delete(member)
        await uow.commit()


async def admin_account(db: Database, name: str = "admin") -> Account:
    """The bootstrap administrator the live server created."""
    async with db.uow(write=False) as uow:
        admin = await uow.accounts.get_by_name(name)
    assert admin is not None
    return admin


async def member_rows(db: Database, image_id: str) -> list[tuple[str, str]]:
    """(account id, status) of every membership row of an image, straight from the database."""
    async with db.uow(write=False) as uow:
        rows = (await uow.images.members_of([image_id]))[image_id]
    return sorted((r.member.account_id, r.member.status) for r in rows)


async def tag_rows(db: Database, image_id: str) -> dict[str, str]:
    async with db.uow(write=False) as uow:
        return {t.key: t.value for t in (await uow.images.tags_of([image_id]))[image_id]}


# ---------------------------------------------------------------- images with real data


async def _bytes(data: bytes, piece: int = 1 << 20) -> Any:
    for i in range(0, len(data), piece):
        yield data[i : i + piece]


def data_plane(db: Database, settings: Any) -> tuple[Any, Any]:
    """A chunk store and key provider on the test's own loop, over the same data dir and
    database as the live server (the server's own live on its thread's loop)."""
    from app.datastore.store import ChunkStore
    from app.kms.envelope import load_root_key
    from app.kms.local import LocalKeyProvider
    from app.storage.factory import build_stores, url_secret
    from app.storage.signing import UrlSigner

    stores = build_stores(settings, UrlSigner(url_secret(settings), settings.public_url))
    return ChunkStore(db, stores), LocalKeyProvider(db, load_root_key(settings.effective_kms_root_key_file))


async def make_kms_key(db: Database, settings: Any, owner: Account, alias: str | None = None) -> str:
    from app.domain.images import Caller

    _, kms = data_plane(db, settings)
    info = await kms.create_key(Caller(owner.id, owner.name, owner.role), alias or f"key-{next(_seq)}")
    return str(info.id)


async def make_image_with_data(
    db: Database, settings: Any, owner: Account, data: bytes, *, kms_key_id: str | None = None, **fields: Any
) -> Image:
    """An ACTIVE image whose single disk really holds `data` in the chunk store (sealed with
    a data key of `kms_key_id` when given), as an import or a snapshot would leave it."""
    import secrets as _secrets

    from app.datastore.store import DataKey
    from app.storage.factory import service_bucket

    chunks, kms = data_plane(db, settings)
    region = fields.get("region", "region-1")
    await chunks.stores[region].create_bucket(service_bucket(region))
    key = None
    if kms_key_id is not None:
        plaintext, wrapped = await kms.generate_data_key(owner.id, kms_key_id)
        key = DataKey(kms_key_id, "dk-" + _secrets.token_hex(8), plaintext, wrapped)
    manifest = await chunks.write(region, _bytes(data), key=key)
    role = "DATA" if fields.get("kind") == "DATA_DISK" else "SYSTEM"
    size_gb = max(1, -(-len(data) // 1024**3))
    defaults: dict[str, Any] = dict(
        size_bytes=len(data), virtual_size_bytes=len(data), checksum=manifest.checksum, min_disk_gb=size_gb,
        kms_key_id=kms_key_id, quick_provisioning=True,
        disks=[{"role": role, "sizeGb": size_gb, "storedBytes": manifest.stored_bytes, "manifestId": manifest.id}],
    )
    defaults.update(fields)
    return await make_image(db, owner, **defaults)


@contextlib.asynccontextmanager
async def built_services(settings: Any, db: Database) -> AsyncIterator[Services]:
    """The service layer as the server builds it, each region's service bucket made; closed
    on the way out."""
    from app.bootstrap import build_services
    from app.storage.factory import service_bucket

    built = build_services(settings, db)
    try:
        for region, store in built.chunks.stores.items():
            await store.create_bucket(service_bucket(region))
        yield built
    finally:
        await built.close()
