"""Disks in the chunk store: provisioning by reference, qcow2 conversion, encryption,
copy-on-write writes, and what deleting a server leaves (on SQLite and PostgreSQL)."""

from __future__ import annotations

import asyncio
import secrets
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import event, update

from app.compute.tables import Server
from app.config import Settings
from app.datastore.chunks import CHUNK_SIZE
from app.db.uow import Database
from app.domain.enums import ExportFormat, ImageKind
from app.errors import Conflict, Invalid, KmsKeyProblem, NotSupported
from app.services.compute import VolumeSpec
from app.services.exports import ExportRequest
from app.services.registry import Services
from app.services.server_images import NewImage
from tests.compute.conftest import (
    MiB,
    caller,
    chunk_objects,
    disk_bytes,
    load_image,
    manifest_bytes,
    manifest_count,
    new_server,
    run_jobs,
    sha,
    volumes,
)
from tests.factories import make_account, make_image_with_data, make_kms_key
from tests.hostile_files import add_vmdk_footer, set_vmdk_footer_capacity, write_vhd


@contextmanager
def statements(db: Database) -> Iterator[list[str]]:
    seen: list[str] = []

    def record(conn: object, cursor: object, statement: str, *args: object) -> None:
        seen.append(statement)

    engines = {id(e): e for e in (db.engine, db.write_engine)}.values()
    for engine in engines:
        event.listen(engine.sync_engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        for engine in engines:
            event.remove(engine.sync_engine, "before_cursor_execute", record)


async def test_quick_images_are_provisioned_by_reference_in_constant_work(
    db: Database, settings: Settings, services: Services
) -> None:
    owner, _ = await make_account(db)
    small = await make_image_with_data(db, settings, owner, secrets.token_bytes(MiB))
    big = await make_image_with_data(db, settings, owner, secrets.token_bytes(12 * CHUNK_SIZE))
    manifests, objects = await manifest_count(db), await chunk_objects(services)
    counts = []
    for image in (small, big):
        with statements(db) as seen:
            server = await new_server(services, owner, image)
        counts.append(len(seen))
        [system] = await volumes(services, owner, server)
        assert system.manifest_id == image.disks[0]["manifestId"]
    # Same work whatever the image's size, and not a byte or manifest more in the store.
    assert counts[0] == counts[1]
    assert (await manifest_count(db), await chunk_objects(services)) == (manifests, objects)


def _qemu(*args: str) -> None:
    subprocess.run(["qemu-img", *args], check=True, capture_output=True)


@pytest.mark.parametrize("encrypted", [False, True])
async def test_a_qcow2_image_is_converted_to_raw_once(
    db: Database, settings: Settings, services: Services, tmp_path: Path, encrypted: bool
) -> None:
    owner, _ = await make_account(db)
    raw = bytearray(9 * MiB)
    raw[MiB : 2 * MiB] = secrets.token_bytes(MiB)
    raw[7 * MiB : 7 * MiB + 4096] = secrets.token_bytes(4096)
    (tmp_path / "disk.raw").write_bytes(raw)
    _qemu("convert", "-f", "raw", "-O", "qcow2", str(tmp_path / "disk.raw"), str(tmp_path / "disk.qcow2"))
    _qemu("convert", "-f", "qcow2", "-O", "raw", str(tmp_path / "disk.qcow2"), str(tmp_path / "expected.raw"))
    expected = (tmp_path / "expected.raw").read_bytes()
    key = await make_kms_key(db, settings, owner) if encrypted else None
    image = await make_image_with_data(
        db, settings, owner, (tmp_path / "disk.qcow2").read_bytes(), kms_key_id=key, disk_format="QCOW2",
        quick_provisioning=False, virtual_size_bytes=len(raw), min_disk_gb=1,
    )
    server = await new_server(services, owner, image)
    [system] = await volumes(services, owner, server)
    assert system.manifest_id != image.disks[0]["manifestId"]
    assert await manifest_bytes(services, system.manifest_id, owner.id) == expected
    converted, _ = await services.chunks.load(system.manifest_id)
    source, _ = await services.chunks.load(image.disks[0]["manifestId"])
    assert (system.kms_key_id, converted.kms_key_id, converted.data_key_id) == (key, key, source.data_key_id)
    work = settings.data_dir / "work"  # temporary files removed (the process's scratch locks stay)
    assert [p for p in work.rglob("*") if p.is_file() and p.name != ".lock"] == []


@pytest.mark.parametrize("made_by", ["conversion", "sealed copy"])
async def test_disk_data_is_recorded_only_with_the_disk(
    db: Database, settings: Settings, services: Services, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    made_by: str,
) -> None:
    """A disk's new manifest (a qcow2 image converted to raw, a plain image copied under a KMS
    key) is recorded in the transaction that makes the disk: when that transaction fails, as
    when the process dies before it, no manifest is left that nobody holds, and garbage
    collection takes the chunks written for it once their grace period is over."""
    owner, _ = await make_account(db)
    data = secrets.token_bytes(2 * MiB)
    if made_by == "conversion":
        (tmp_path / "disk.raw").write_bytes(data)
        _qemu("convert", "-f", "raw", "-O", "qcow2", str(tmp_path / "disk.raw"), str(tmp_path / "disk.qcow2"))
        image = await make_image_with_data(db, settings, owner, (tmp_path / "disk.qcow2").read_bytes(),
                                           disk_format="QCOW2", quick_provisioning=False,
                                           virtual_size_bytes=len(data), min_disk_gb=1)
        key = None
    else:
        image = await make_image_with_data(db, settings, owner, data)
        key = await make_kms_key(db, settings, owner)
    manifests, objects = await manifest_count(db), await chunk_objects(services)

    left: list[int] = []

    async def dies(*_args: object, **_kwargs: object) -> None:
        left.append(await manifest_count(db))  # what a kill -9 at this point would leave
        raise RuntimeError("the process dies here")

    monkeypatch.setattr(services.compute, "_take", dies)  # the disk's transaction, before its rows
    with pytest.raises(RuntimeError, match="the process dies here"):
        await new_server(services, owner, image, kms_key_id=key)
    assert left == [manifests]
    assert await manifest_count(db) == manifests
    assert await chunk_objects(services) > objects  # written, held by no manifest
    services.chunks.grace = timedelta(0)
    for _ in range(2):  # sealed chunks are never claimed: adopted as orphans, then deleted
        await services.chunks.collect("region-1")
    assert await chunk_objects(services) == objects

    monkeypatch.undo()
    server = await new_server(services, owner, image, kms_key_id=key)
    [system] = await volumes(services, owner, server)
    assert await manifest_count(db) == manifests + 1
    assert await manifest_bytes(services, system.manifest_id, owner.id) == data


async def test_a_converted_disk_larger_than_asked_for_is_refused_on_its_own_field(
    db: Database, settings: Settings, services: Services, tmp_path: Path
) -> None:
    """A data disk image's minDiskGb need not cover its file's virtual size: the raw disk its
    conversion makes can be larger than the disk asked for, which is refused on the field
    that sized it, with nothing recorded."""
    owner, _ = await make_account(db)
    _qemu("create", "-f", "qcow2", str(tmp_path / "big.qcow2"), "1025M")
    image = await make_image_with_data(
        db, settings, owner, (tmp_path / "big.qcow2").read_bytes(), kind="DATA_DISK", disk_format="QCOW2",
        quick_provisioning=False, virtual_size_bytes=1025 * MiB, min_disk_gb=1,
    )
    system = await make_image_with_data(db, settings, owner, secrets.token_bytes(MiB))
    manifests = await manifest_count(db)
    with pytest.raises(Invalid) as volume:
        await services.compute.create_volume(caller(owner), VolumeSpec("v", 1, image_id=image.id))
    with pytest.raises(Invalid) as server:
        await new_server(services, owner, system, data_disks=[1, (1, image.id)])
    for refused in (volume, server):
        assert refused.value.code == "DISK_SMALLER_THAN_IMAGE"
        assert refused.value.message == f"The image's disk is {1025 * MiB} bytes: 1 GiB is too small."
    assert (volume.value.field, server.value.field) == ("input.sizeGb", "input.dataDisks[1].sizeGb")
    assert await manifest_count(db) == manifests
    assert (await services.compute.list_servers(caller(owner), 10, None)).total == 0


async def test_a_stored_qcow2_naming_a_host_file_provisions_nothing(
    db: Database, settings: Settings, services: Services, tmp_path: Path
) -> None:
    """Inspected again before qemu-img converts it: a qcow2 whose stored bytes name an
    external data file (one stored before imports checked that what they store is what they
    inspected) is a typed refusal, and no disk, manifest or work file is left."""
    owner, _ = await make_account(db)
    secret = tmp_path / "secret.raw"
    secret.write_bytes(b"HOST-SECRET".ljust(MiB, b"\0"))
    _qemu("create", "-f", "qcow2", "-o", f"data_file={secret},data_file_raw=on", str(tmp_path / "evil.qcow2"), "1M")
    image = await make_image_with_data(
        db, settings, owner, (tmp_path / "evil.qcow2").read_bytes(), disk_format="QCOW2",
        quick_provisioning=False, virtual_size_bytes=MiB, min_disk_gb=1,
    )
    manifests = await manifest_count(db)
    with pytest.raises(Invalid) as refused:
        await new_server(services, owner, image)
    assert refused.value.code == "IMAGE_DATA_INVALID"
    assert refused.value.message.startswith(f"Image {image.id}'s stored data is not a safe QCOW2 file (unsafe QCOW2")
    assert await manifest_count(db) == manifests
    assert (await services.compute.list_servers(caller(owner), 10, None)).total == 0
    work = settings.data_dir / "work"
    assert [p for p in work.rglob("*") if p.is_file() and p.name != ".lock"] == []


async def test_a_stored_qcow2_that_qemu_img_cannot_read_provisions_nothing(
    db: Database, settings: Settings, services: Services, tmp_path: Path
) -> None:
    """A header that passes inspection over a body qemu-img cannot read (an unaligned L2 table
    offset in the L1 table): a typed refusal naming the image, not an internal error, and no
    disk, manifest or work file is left."""
    owner, _ = await make_account(db)
    (tmp_path / "disk.raw").write_bytes(secrets.token_bytes(MiB))
    _qemu("convert", "-f", "raw", "-O", "qcow2", str(tmp_path / "disk.raw"), str(tmp_path / "bad.qcow2"))
    data = bytearray((tmp_path / "bad.qcow2").read_bytes())
    l1 = int.from_bytes(data[40:48], "big")
    data[l1 : l1 + 8] = ((1 << 63) | 0x10200).to_bytes(8, "big")
    image = await make_image_with_data(db, settings, owner, bytes(data), disk_format="QCOW2",
                                       quick_provisioning=False, virtual_size_bytes=MiB, min_disk_gb=1)
    manifests = await manifest_count(db)
    with pytest.raises(Invalid) as refused:
        await new_server(services, owner, image)
    assert refused.value.code == "IMAGE_DATA_INVALID"
    assert refused.value.message.startswith(f"Image {image.id}'s stored QCOW2 data could not be converted (")
    assert "unaligned" in refused.value.message
    assert str(settings.data_dir) not in refused.value.message
    assert await manifest_count(db) == manifests
    assert (await services.compute.list_servers(caller(owner), 10, None)).total == 0
    work = settings.data_dir / "work"
    assert [p for p in work.rglob("*") if p.is_file() and p.name != ".lock"] == []


async def test_a_stored_vmdk_whose_footer_claims_another_size_provisions_nothing(
    db: Database, settings: Settings, services: Services, tmp_path: Path
) -> None:
    """A VMDK whose first header says 2 MiB and whose footer (the header qemu-img reads) says
    3 GiB, stored before imports refused it: the inspection before the conversion refuses it
    too, instead of qemu-img writing a 3 GiB disk for the 1 GiB one asked for."""
    owner, _ = await make_account(db)
    (tmp_path / "disk.raw").write_bytes(secrets.token_bytes(2 * MiB))
    _qemu("convert", "-f", "raw", "-O", "vmdk", "-o", "subformat=streamOptimized", str(tmp_path / "disk.raw"),
          str(tmp_path / "s.vmdk"))
    hostile = set_vmdk_footer_capacity(add_vmdk_footer(tmp_path / "s.vmdk", tmp_path / "f.vmdk"), 3 << 30)
    image = await make_image_with_data(db, settings, owner, hostile.read_bytes(), disk_format="VMDK",
                                       quick_provisioning=False, virtual_size_bytes=2 * MiB, min_disk_gb=1)
    manifests = await manifest_count(db)
    with pytest.raises(Invalid) as refused:
        await new_server(services, owner, image)
    assert refused.value.code == "IMAGE_DATA_INVALID"
    assert refused.value.message.startswith(f"Image {image.id}'s stored data is not a safe VMDK file (unsafe VMDK")
    assert "VMDK footer gives another capacity than its header" in refused.value.message
    assert await manifest_count(db) == manifests
    assert (await services.compute.list_servers(caller(owner), 10, None)).total == 0
    work = settings.data_dir / "work"
    assert [p for p in work.rglob("*") if p.is_file() and p.name != ".lock"] == []


async def test_a_stored_file_larger_than_its_recorded_size_is_refused_before_conversion(
    db: Database, settings: Settings, services: Services, tmp_path: Path
) -> None:
    """A VHD recorded at the 2 MiB of its original size (as imports recorded VHDs before they
    read the size qemu-img reads) whose current size makes it a 3 GiB disk: the inspection
    before the conversion finds the real size and refuses the 1 GiB disk asked for, before
    qemu-img converts it and its data is stored (the size check after the conversion comes
    after the whole disk was written: 1.5 TiB of it for a 3 MiB file)."""
    owner, _ = await make_account(db)
    vhd = write_vhd(tmp_path / "h.vhd", original=2 * MiB, current=3 * 1024 * MiB, creator=b"win ",
                    first_block=secrets.token_bytes(2 * MiB))
    image = await make_image_with_data(db, settings, owner, vhd.read_bytes(), kind="DATA_DISK", disk_format="VHD",
                                       quick_provisioning=False, virtual_size_bytes=2 * MiB, min_disk_gb=1)
    manifests, objects = await manifest_count(db), await chunk_objects(services)
    with pytest.raises(Invalid) as refused:
        await services.compute.create_volume(caller(owner), VolumeSpec("v", 1, image_id=image.id))
    assert (refused.value.code, refused.value.field) == ("DISK_SMALLER_THAN_IMAGE", "input.sizeGb")
    assert refused.value.message == f"The image's disk is {3 * 1024 * MiB} bytes: 1 GiB is too small."
    # Nothing converted: not a chunk of the disk's data was stored.
    assert (await manifest_count(db), await chunk_objects(services)) == (manifests, objects)
    work = settings.data_dir / "work"
    assert [p for p in work.rglob("*") if p.is_file() and p.name != ".lock"] == []


async def test_a_disk_holds_a_quick_image_whole(db: Database, settings: Settings, services: Services) -> None:
    """A data disk image's minDiskGb does not bound its data (DESIGN: 1-2048 whatever the
    file): a raw DATA_DISK import of 1 GiB + 4 MiB declared with minDiskGb 1, or the quick copy
    of such a qcow2 import. A disk made from it by reference must still hold all of it: a
    1 GiB volume or data disk is refused, as it is for a converted image, and a 2 GiB one is
    made."""
    owner, _ = await make_account(db)
    data = bytes(1024 * MiB) + secrets.token_bytes(4 * MiB)
    image = await make_image_with_data(db, settings, owner, data, kind="DATA_DISK", min_disk_gb=1)
    system = await make_image_with_data(db, settings, owner, secrets.token_bytes(MiB))
    manifests = await manifest_count(db)
    refcount = (await services.chunks.head(image.disks[0]["manifestId"])).refcount
    with pytest.raises(Invalid) as volume:
        await services.compute.create_volume(caller(owner), VolumeSpec("v", 1, image_id=image.id))
    with pytest.raises(Invalid) as server:
        await new_server(services, owner, system, data_disks=[(1, image.id)])
    for refused in (volume, server):
        assert refused.value.code == "DISK_SMALLER_THAN_IMAGE"
        assert refused.value.message == f"The image's disk is {len(data)} bytes: 1 GiB is too small."
    assert (volume.value.field, server.value.field) == ("input.sizeGb", "input.dataDisks[0].sizeGb")
    # Under a KMS key the plain image is copied sealed: the size is refused before that copy,
    # not after 1 GiB of it was written.
    key = await make_kms_key(db, settings, owner)
    objects = await chunk_objects(services)
    with pytest.raises(Invalid) as sealed:
        await services.compute.create_volume(caller(owner), VolumeSpec("v", 1, image_id=image.id, kms_key_id=key))
    assert (sealed.value.code, sealed.value.field) == ("DISK_SMALLER_THAN_IMAGE", "input.sizeGb")
    assert await chunk_objects(services) == objects
    assert await manifest_count(db) == manifests
    assert (await services.chunks.head(image.disks[0]["manifestId"])).refcount == refcount
    assert (await services.compute.list_servers(caller(owner), 10, None)).total == 0
    made = await services.compute.create_volume(caller(owner), VolumeSpec("v", 2, image_id=image.id))
    assert (made.size_gb, made.manifest_id) == (2, image.disks[0]["manifestId"])


async def test_kms_key_encrypts_new_blank_disks_and_copies_of_plain_images(
    db: Database, settings: Settings, services: Services
) -> None:
    owner, _ = await make_account(db)
    key = await make_kms_key(db, settings, owner)
    data = secrets.token_bytes(5 * MiB)
    plain = await make_image_with_data(db, settings, owner, data)
    server = await new_server(services, owner, plain, data_disks=[2], kms_key_id=key)
    system, blank = await volumes(services, owner, server)
    assert (system.kms_key_id, blank.kms_key_id) == (key, key)
    assert system.manifest_id != plain.disks[0]["manifestId"]  # sealed copy of the plain image
    assert await manifest_bytes(services, system.manifest_id, owner.id) == data
    blank_manifest, refs = await services.chunks.load(blank.manifest_id)
    assert (blank_manifest.size, refs, blank_manifest.kms_key_id) == (0, [], key)
    await services.compute.write_volume(blank.id, MiB, b"secret" * 1000)
    assert (await manifest_bytes(services, (await volumes(services, owner, server))[1].manifest_id, owner.id))[
        MiB : MiB + 6000] == b"secret" * 1000

    await services.key_provider.disable_key(caller(owner), key)
    with pytest.raises(KmsKeyProblem) as refused:
        await services.compute.create_volume(caller(owner), VolumeSpec("v", 1, kms_key_id=key))
    assert refused.value.code == "KMS_KEY_DISABLED"


async def test_kms_key_seals_a_plain_disk_of_a_full_ecs_image_under_another_key(
    db: Database, settings: Settings, services: Services
) -> None:
    """A full-ECS image under a key may hold a plain disk (the blank data disk of a server made
    from an encrypted image). A server made from it with kmsKeyId seals that disk under the
    key, as any plain disk: never a silently unencrypted disk when a key was asked for."""
    owner, _ = await make_account(db)
    image_key, key = await make_kms_key(db, settings, owner), await make_kms_key(db, settings, owner)
    sealed = await make_image_with_data(db, settings, owner, secrets.token_bytes(MiB), kms_key_id=image_key)
    source = await new_server(services, owner, sealed, data_disks=[2])
    await services.compute.write_volume((await volumes(services, owner, source))[1].id, MiB, b"data" * 1000)
    made = await services.server_images.from_server(caller(owner), source.id, NewImage("full", ImageKind.FULL_ECS))
    await run_jobs(services)
    full = await load_image(db, made.image_ids[0])
    assert full is not None and (full.status, full.kms_key_id) == ("ACTIVE", image_key)
    plain_disk = full.disks[1]["manifestId"]
    assert (await services.chunks.head(plain_disk)).kms_key_id is None

    server = await new_server(services, owner, full, kms_key_id=key)
    system, data = await volumes(services, owner, server)
    assert (system.kms_key_id, system.manifest_id) == (image_key, full.disks[0]["manifestId"])
    assert data.kms_key_id == key and data.manifest_id != plain_disk
    assert (await services.chunks.head(data.manifest_id)).kms_key_id == key
    assert (await manifest_bytes(services, data.manifest_id, owner.id))[MiB : MiB + 4000] == b"data" * 1000


async def test_writes_are_copy_on_write(db: Database, settings: Settings, services: Services) -> None:
    owner, _ = await make_account(db)
    data = secrets.token_bytes(2 * CHUNK_SIZE + 123)
    image = await make_image_with_data(db, settings, owner, data)
    server = await new_server(services, owner, image, data_disks=[1])
    system, blank = await volumes(services, owner, server)
    objects = await chunk_objects(services)

    # Across a chunk boundary: two chunks change, the third is still the image's.
    at = CHUNK_SIZE - 10
    await services.compute.write_volume(system.id, at, b"z" * 20)
    system, _ = await volumes(services, owner, server)
    expected = data[:at] + b"z" * 20 + data[at + 20 :]
    assert await disk_bytes(services, system) == expected
    assert await manifest_bytes(services, image.disks[0]["manifestId"], owner.id) == data
    _, refs = await services.chunks.load(system.manifest_id)
    _, image_refs = await services.chunks.load(image.disks[0]["manifestId"])
    assert [r.digest == i.digest for r, i in zip(refs, image_refs, strict=True)] == [False, False, True]
    assert await chunk_objects(services) == objects + 2

    # Past the end: the short last chunk grows, the gap reads as zeros.
    end = 4 * CHUNK_SIZE + 5
    await services.compute.write_volume(system.id, end, b"tail")
    system, _ = await volumes(services, owner, server)
    grown = expected + bytes(end - len(expected)) + b"tail"
    assert await disk_bytes(services, system) == grown
    # A blank disk's first write; the previous manifests of the volume are gone.
    await services.compute.write_volume(blank.id, 3, b"abc")
    _, blank = await volumes(services, owner, server)
    assert await disk_bytes(services, blank) == b"\0\0\0abc"
    with pytest.raises(ValueError):
        await services.compute.write_volume(blank.id, 1024**3 - 1, b"xx")
    assert await manifest_count(db) == 3  # the image's, the system disk's, the data disk's


async def test_deleting_a_server_keeps_its_images_readable(
    db: Database, settings: Settings, services: Services
) -> None:
    owner, _ = await make_account(db)
    image = await make_image_with_data(db, settings, owner, secrets.token_bytes(3 * MiB))
    server = await new_server(services, owner, image, data_disks=[1])
    system, data = await volumes(services, owner, server)
    await services.compute.write_volume(system.id, 0, b"boot" * 100)
    await services.compute.write_volume(data.id, 5 * MiB, secrets.token_bytes(MiB))
    system, data = await volumes(services, owner, server)
    disks = [await disk_bytes(services, v) for v in (system, data)]
    me = caller(owner)
    made = [await services.server_images.from_server(me, server.id, NewImage(f"i{k}", k))
            for k in (ImageKind.SYSTEM_DISK, ImageKind.FULL_ECS)]
    assert [j.status for j in await run_jobs(services)] == ["SUCCESS", "SUCCESS"]
    await services.compute.delete_server(me, server.id)
    system_image, full_image = [await load_image(db, m.image_ids[0]) for m in made]
    assert system_image is not None and full_image is not None
    assert system_image.checksum == sha(disks[0])
    for disk, content in zip(full_image.disks, disks, strict=True):
        assert sha(await manifest_bytes(services, disk["manifestId"], owner.id)) == sha(content)
    assert sha(await manifest_bytes(services, system_image.disks[0]["manifestId"], owner.id)) == sha(disks[0])
    # A server made from the image boots the saved disk.
    again = await new_server(services, owner, system_image)
    assert await disk_bytes(services, (await volumes(services, owner, again))[0]) == disks[0]


async def test_images_inherit_the_licensed_origin(db: Database, settings: Settings, services: Services) -> None:
    admin, _ = await make_account(db, role="ADMIN")
    owner, _ = await make_account(db)
    public = await make_image_with_data(db, settings, admin, b"w" * 1000, visibility="PUBLIC",
                                        os_type="WINDOWS", os_platform="Windows", os_version="Windows Server 2022")
    free = await make_image_with_data(db, settings, admin, b"d" * 1000, visibility="PUBLIC", os_platform="Debian")
    me = caller(owner)
    licensed, plain = await new_server(services, owner, public), await new_server(services, owner, free)
    assert (licensed.licensed_platform, licensed.os_platform, plain.licensed_platform) == ("Windows", "Windows", None)
    made = [await services.server_images.from_server(me, s.id, NewImage("x", ImageKind.SYSTEM_DISK))
            for s in (licensed, plain)]
    from_volume = await services.server_images.from_volume(
        me, (await volumes(services, owner, licensed))[0].id, NewImage("v", ImageKind.DATA_DISK))
    await run_jobs(services)
    images = [await load_image(db, m.image_ids[0]) for m in (*made, from_volume)]
    assert [(i.licensed_platform, i.os_type) for i in images if i] == [
        ("Windows", "WINDOWS"), (None, "LINUX"), ("Windows", None)]
    # A server made from the private copy is still of licensed origin.
    assert images[0] is not None
    assert (await new_server(services, owner, images[0])).licensed_platform == "Windows"


async def test_a_full_ecs_image_keeps_the_licensed_origin_of_each_disk(
    db: Database, settings: Settings, services: Services
) -> None:
    admin, _ = await make_account(db, role="ADMIN")
    owner, _ = await make_account(db)
    me = caller(owner)
    windows = await make_image_with_data(db, settings, admin, b"w" * 1000, visibility="PUBLIC",
                                         os_type="WINDOWS", os_platform="Windows", os_version="Windows Server 2022")
    linux = await make_image_with_data(db, settings, owner, b"l" * 1000, os_platform="Debian")
    # A data disk image of a Windows system disk, on the data disk of a Linux server.
    licensed = await new_server(services, owner, windows)
    data_image = await services.server_images.from_volume(
        me, (await volumes(services, owner, licensed))[0].id, NewImage("win-data", ImageKind.DATA_DISK))
    await run_jobs(services)
    server = await new_server(services, owner, linux, data_disks=[(1, data_image.image_ids[0])])
    assert [v.licensed_platform for v in await volumes(services, owner, server)] == [None, "Windows"]
    made = await services.server_images.from_server(me, server.id, NewImage("full", ImageKind.FULL_ECS))
    await run_jobs(services)
    full = await load_image(db, made.image_ids[0])
    assert full is not None and full.status == "ACTIVE"
    # Its origin chain holds the Windows image (through the data disk).
    assert full.licensed_platform == "Windows"
    # A server made from it: the data disk is still of Windows origin, the system disk is not.
    again = await new_server(services, owner, full)
    system, data = await volumes(services, owner, again)
    assert (again.licensed_platform, system.licensed_platform, data.licensed_platform) == (None, None, "Windows")
    # So an image of that data disk cannot be exported, as the one it came from cannot.
    copy = await services.server_images.from_volume(me, data.id, NewImage("copy", ImageKind.DATA_DISK))
    await run_jobs(services)
    image = await load_image(db, copy.image_ids[0])
    assert image is not None and (image.status, image.licensed_platform) == ("ACTIVE", "Windows")
    await services.storage.create_bucket(me, "exports", None)
    with pytest.raises(NotSupported) as refused:
        await services.exports.export(me, ExportRequest(image.id, "exports", "d.qcow2", ExportFormat.QCOW2))
    assert refused.value.code == "EXPORT_NOT_SUPPORTED"
    # The system disk alone stays exportable: its chain holds no licensed image.
    system_image = await services.server_images.from_volume(me, system.id, NewImage("sys", ImageKind.DATA_DISK))
    await run_jobs(services)
    plain = await load_image(db, system_image.image_ids[0])
    assert plain is not None and plain.licensed_platform is None


async def test_only_running_or_stopped_servers_are_imaged(
    db: Database, settings: Settings, services: Services
) -> None:
    owner, _ = await make_account(db)
    image = await make_image_with_data(db, settings, owner, b"x" * 100)
    server = await new_server(services, owner, image)
    for status, ok in (("STOPPED", True), ("BUILDING", False)):
        async with db.uow() as uow:
            await uow.session.execute(update(Server).where(Server.id == server.id).values(status=status))  # type: ignore[arg-type]
            await uow.commit()
        call = services.server_images.from_server(caller(owner), server.id, NewImage("s", ImageKind.SYSTEM_DISK))
        if ok:
            await call
        else:
            with pytest.raises(Conflict) as refused:
                await call
            assert refused.value.code == "SERVER_NOT_READY"


async def test_concurrent_writes_to_one_volume_lose_nothing_silently(
    db: Database, settings: Settings, services: Services
) -> None:
    owner, _ = await make_account(db)
    image = await make_image_with_data(db, settings, owner, b"x" * 100)
    [system] = await volumes(services, owner, await new_server(services, owner, image))
    results = await asyncio.gather(*(services.compute.write_volume(system.id, i * CHUNK_SIZE, b"w") for i in range(3)),
                                   return_exceptions=True)
    written = [i for i, r in enumerate(results) if r is None]
    assert written and all(isinstance(r, RuntimeError) for r in results if r is not None)
    [system] = await volumes(services, owner, await _server_of(db, system.server_id))
    content = await disk_bytes(services, system)
    assert [content[i * CHUNK_SIZE : i * CHUNK_SIZE + 1] == b"w" for i in written] == [True] * len(written)


async def _server_of(db: Database, server_id: str | None) -> Server:
    async with db.uow(write=False) as uow:
        server = await uow.session.get(Server, server_id)
    assert server is not None
    return server
