"""The local adapter's own guarantees: the root key file, sealing under it, purged
material gone from the database, and secrets kept out of reprs and logs."""

from __future__ import annotations

import base64
import logging
import os
import stat
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy.exc import IntegrityError

from app.bootstrap import build_key_provider
from app.config import Settings
from app.datastore.store import DataKey, blank_manifest
from app.datastore.tables import Manifest
from app.db.uow import Database
from app.kms.envelope import RootSealer, load_root_key
from app.kms.local import LocalKeyProvider
from app.kms.port import GrantOperation, KmsSealError
from app.kms.tables import KmsKey
from tests.kms.conftest import Clock
from tests.kms.conftest import new_caller as caller

DECRYPT = GrantOperation.DECRYPT_DATA_KEY


async def test_purged_material_is_gone_from_the_database(db: Database, clock: Clock, root_key_file: Path) -> None:
    provider = LocalKeyProvider(db, load_root_key(root_key_file), now=clock)
    alice = await caller(db)
    key = await provider.create_key(alice, "k")
    await provider.schedule_deletion(alice, key.id, 7)
    clock.advance(timedelta(days=8))
    await provider.purge_due()
    async with db.uow(write=False) as uow:
        assert await uow.kms.get_key(key.id) is None
        assert await uow.kms.grants_of([key.id]) == {key.id: []}


def test_root_key_file_is_created_0600_once(root_key_file: Path) -> None:
    key = load_root_key(root_key_file)
    assert len(key) == 32
    assert stat.S_IMODE(root_key_file.stat().st_mode) == 0o600
    assert load_root_key(root_key_file) == key
    assert [p.name for p in root_key_file.parent.iterdir()] == [root_key_file.name]


def test_root_key_file_of_the_wrong_size_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "root.key"
    path.write_bytes(b"short")
    os.chmod(path, 0o600)
    with pytest.raises(KmsSealError, match="32 bytes, not 5") as info:
        load_root_key(path)
    assert "short" not in str(info.value)


def _forms(secret: bytes) -> Iterator[str]:
    yield secret.hex()
    yield base64.b64encode(secret).decode()
    yield base64.urlsafe_b64encode(secret).decode().rstrip("=")
    yield repr(secret)[2:-1]


async def test_secrets_stay_out_of_reprs_and_logs(
    db: Database, clock: Clock, root_key_file: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    root = load_root_key(root_key_file)
    provider = LocalKeyProvider(db, root, now=clock)
    alice, bob = await caller(db), await caller(db)
    key = await provider.create_key(alice, "k")
    await provider.create_grant(alice, key.id, bob.account_id, [DECRYPT])
    plaintext, wrapped = await provider.generate_data_key(alice.account_id, key.id)
    await provider.decrypt_data_key(bob.account_id, key.id, wrapped)
    await provider.schedule_deletion(alice, key.id, 7)
    async with db.uow(write=False) as uow:
        row = await uow.kms.get_key(key.id)
    assert row is not None
    material = RootSealer(root).unseal(key.id, row.sealed_material)
    clock.advance(timedelta(days=7))
    await provider.purge_due()
    texts = [caplog.text, repr(provider), repr(key), repr(row), repr(RootSealer(root)), str(row)]
    assert "KMS key" in caplog.text  # the provider did log, just nothing secret
    for secret in (root, material, plaintext):
        for form in _forms(secret):
            for text in texts:
                assert form not in text


async def test_another_root_key_cannot_unseal(db: Database, root_key_file: Path, tmp_path: Path) -> None:
    provider = LocalKeyProvider(db, load_root_key(root_key_file))
    alice = await caller(db)
    key = await provider.create_key(alice, "k")
    plaintext, wrapped = await provider.generate_data_key(alice.account_id, key.id)
    stranger = LocalKeyProvider(db, load_root_key(tmp_path / "other.key"))
    with pytest.raises(KmsSealError) as info:
        await stranger.decrypt_data_key(alice.account_id, key.id, wrapped)
    assert key.id in str(info.value)
    with pytest.raises(KmsSealError):
        await stranger.generate_data_key(alice.account_id, key.id)
    assert await provider.decrypt_data_key(alice.account_id, key.id, wrapped) == plaintext


async def test_a_missing_root_key_file_is_refused_once_keys_exist(settings: Settings, db: Database) -> None:
    """A lost root key file must not be replaced by a new key silently: every key sealed
    under the old one, and all data encrypted with them, would be unreadable, and only the
    first use of each would tell."""
    path = settings.effective_kms_root_key_file
    provider = await build_key_provider(settings, db)
    alice = await caller(db)
    key = await provider.create_key(alice, "k")
    path.unlink()
    with pytest.raises(KmsSealError, match="root key") as info:
        await build_key_provider(settings, db)
    assert str(path) in str(info.value)
    assert not path.exists()
    assert key.id  # the key's row is untouched, for the day the file is restored


async def test_a_root_key_file_that_does_not_open_the_keys_is_refused(settings: Settings, db: Database) -> None:
    path = settings.effective_kms_root_key_file
    provider = await build_key_provider(settings, db)
    await provider.create_key(await caller(db), "k")
    replaced = path.with_name("replaced.key")
    replaced.write_bytes(os.urandom(32))
    os.chmod(replaced, 0o600)
    os.replace(replaced, path)
    with pytest.raises(KmsSealError, match="root key") as info:
        await build_key_provider(settings, db)
    assert str(path) in str(info.value)


async def test_a_fresh_root_key_file_is_made_while_no_key_exists(settings: Settings, db: Database) -> None:
    path = settings.effective_kms_root_key_file
    assert not path.exists()
    provider = await build_key_provider(settings, db)
    await provider.create_key(await caller(db), "k")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    await build_key_provider(settings, db)  # the same file, which opens the key


async def test_database_errors_do_not_carry_wrapped_keys_or_sealed_material(
    db: Database, root_key_file: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A failing statement's error names its bound parameters, and unexpected errors are
    logged with their traceback (the job worker, MaskErrors): a manifest's wrapped data key or
    a key's sealed material must not be among what they print."""
    provider = LocalKeyProvider(db, load_root_key(root_key_file))
    alice = await caller(db)
    key = await provider.create_key(alice, "k")
    plaintext, wrapped = await provider.generate_data_key(alice.account_id, key.id)
    manifest = blank_manifest("region-1", DataKey(key.id, "dk-1", plaintext, wrapped))
    async with db.uow() as uow:
        await uow.chunks.add_manifest(manifest, [], {}, manifest.created_at)
        row = await uow.kms.get_key(key.id)
        assert row is not None
        sealed = row.sealed_material
        await uow.commit()
    failures: list[Exception] = []
    for again in (blank_manifest("region-1", DataKey(key.id, "dk-1", plaintext, wrapped)),
                  KmsKey(**{**row.model_dump(), "alias": "k2"})):
        again.id = manifest.id if isinstance(again, Manifest) else key.id
        with pytest.raises(IntegrityError) as info:
            async with db.uow() as uow:
                uow.session.add(again)
                await uow.session.flush()
        logging.getLogger("test").error("unexpected error", exc_info=info.value)
        failures.append(info.value)
    texts = [str(e) for e in failures] + [caplog.text]
    assert "INSERT" in caplog.text  # the errors are there, just not the secrets
    for secret in (wrapped, sealed):
        for form in _forms(secret):
            for text in texts:
                assert form not in text
