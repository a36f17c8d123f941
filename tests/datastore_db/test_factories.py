"""The data factories other tests build on really store what they claim."""

from __future__ import annotations

import hashlib
import secrets

from app.config import Settings
from app.db.uow import Database
from tests.factories import data_plane, make_account, make_image_with_data, make_kms_key


async def test_image_with_data_reads_back(db: Database, settings: Settings) -> None:
    owner, _ = await make_account(db)
    data = secrets.token_bytes(5 * 1024 * 1024 + 7)
    image = await make_image_with_data(db, settings, owner, data)
    chunks, _ = data_plane(db, settings)
    got = b"".join([p async for p in chunks.read(image.disks[0]["manifestId"])])
    assert got == data and image.checksum == "sha256:" + hashlib.sha256(data).hexdigest()


async def test_encrypted_image_needs_its_key(db: Database, settings: Settings) -> None:
    owner, _ = await make_account(db)
    key_id = await make_kms_key(db, settings, owner)
    data = secrets.token_bytes(100_000)
    image = await make_image_with_data(db, settings, owner, data, kms_key_id=key_id)
    chunks, kms = data_plane(db, settings)
    manifest, _ = await chunks.load(image.disks[0]["manifestId"])
    assert manifest.kms_key_id == key_id and manifest.wrapped_key
    plaintext = await kms.decrypt_data_key(owner.id, key_id, manifest.wrapped_key)
    assert b"".join([p async for p in chunks.read(manifest.id, data_key=plaintext)]) == data
