"""replicateImage over HTTP: every rule answers with its exact error type and code and leaves
nothing behind (no job, no image, no reference to the source's data), and the quotas hold
under concurrent requests. The data each accepted replication produces is checked in
test_replication_data.py."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from app.bootstrap import build_services
from app.config import Settings
from app.db.tables import Account, Image
from app.db.uow import Database
from app.errors import NotFound
from app.kms.port import GrantOperation
from app.services.replication import REPLICATE_MAX_GIB, ReplicationRequest
from tests.api.ops import error, without_message
from tests.api.replication_helpers import (
    DATA,
    caller,
    disable_key,
    footprint,
    grant,
    replicate,
    two_regions,
)
from tests.conftest import GraphQLClient
from tests.factories import (
    admin_account,
    make_account,
    make_image,
    make_image_with_data,
    make_kms_key,
    share,
    unshare,
)

GiB = 1024**3


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return two_regions(settings)


async def refused(client: GraphQLClient, db: Database, account: Account, source: Image | None, image_id: str,
                  expected: dict[str, Any], **fields: Any) -> None:
    """The replication is refused with `expected` and changes nothing."""
    before = await footprint(db, account, source)
    result = await replicate(client, image_id, **fields)
    assert without_message(result) == expected
    assert await footprint(db, account, source) == before


# ---------------------------------------------------------------- input


async def test_name_and_description_are_validated(gql: GraphQLClient, db: Database) -> None:
    alice, token = await make_account(db)
    image = await make_image(db, alice)
    q = gql.as_(token)
    await refused(q, db, alice, image, image.id, error("ValidationError", "INVALID_NAME", field="input.name"),
                  name=" leading space")
    await refused(q, db, alice, image, image.id, error("ValidationError", "INVALID_NAME", field="input.name"),
                  name="x" * 129)
    await refused(q, db, alice, image, image.id,
                  error("ValidationError", "INVALID_DESCRIPTION", field="input.description"),
                  description="<script>")
    ok = await replicate(q, image.id, name="x" * 128, description="d" * 1024)
    assert ok["__typename"] == "ImageJobSuccess"


async def test_unknown_region_is_invalid_and_the_own_region_is_not_a_target(gql: GraphQLClient, db: Database) -> None:
    alice, token = await make_account(db)
    image = await make_image(db, alice)
    q = gql.as_(token)
    await refused(q, db, alice, image, image.id, error("ValidationError", "INVALID_REGION", field="input.region"),
                  region="mars-1")
    await refused(q, db, alice, image, image.id, error("ValidationError", "SAME_REGION", field="input.region"),
                  region="region-1")


# ---------------------------------------------------------------- who may replicate what


async def test_invisible_images_are_not_found(gql: GraphQLClient, db: Database) -> None:
    alice, _ = await make_account(db)
    bob, bob_t = await make_account(db)
    pending, rejected = await make_image(db, alice), await make_image(db, alice)
    await share(db, pending, bob, "PENDING")
    await share(db, rejected, bob, "REJECTED")
    private = await make_image(db, alice)
    q = gql.as_(bob_t)
    for image in (pending, rejected, private):
        await refused(q, db, bob, image, image.id, error("NotFoundError", "IMAGE_NOT_FOUND", resourceId=image.id))
    await refused(q, db, bob, None, "img-missing", error("NotFoundError", "IMAGE_NOT_FOUND", resourceId="img-missing"))
    # An administrator has no access to other accounts' private images either.
    admin = await admin_account(db)
    await refused(gql, db, admin, private, private.id,
                  error("NotFoundError", "IMAGE_NOT_FOUND", resourceId=private.id))


async def test_public_and_iso_images_are_not_replicated(gql: GraphQLClient, db: Database) -> None:
    admin = await admin_account(db)
    alice, token = await make_account(db)
    public = await make_image(db, admin, visibility="PUBLIC")
    iso = await make_image(db, alice, kind="ISO", disk_format="ISO", quick_provisioning=False)
    bob, bob_t = await make_account(db)
    await share(db, iso, bob)
    expected = error("NotSupportedError", "REPLICATE_NOT_SUPPORTED")
    await refused(gql.as_(token), db, alice, public, public.id, expected)
    await refused(gql, db, admin, public, public.id, expected)
    await refused(gql.as_(token), db, alice, iso, iso.id, expected)
    await refused(gql.as_(bob_t), db, bob, iso, iso.id, expected)


async def test_accepted_members_replicate_system_and_data_disks_only(gql: GraphQLClient, db: Database) -> None:
    alice, _ = await make_account(db)
    bob, bob_t = await make_account(db)
    full_ecs = await make_image(db, alice, kind="FULL_ECS", disks=[
        {"role": "SYSTEM", "sizeGb": 10, "storedBytes": 1}, {"role": "DATA", "sizeGb": 20, "storedBytes": 1}])
    system, data_disk = await make_image(db, alice), await make_image(db, alice, kind="DATA_DISK", os_type=None)
    for image in (full_ecs, system, data_disk):
        await share(db, image, bob)
    q = gql.as_(bob_t)
    await refused(q, db, bob, full_ecs, full_ecs.id, error("ForbiddenError", "NOT_OWNER"), region="region-2")
    for image in (system, data_disk):
        ok = await replicate(q, image.id)
        assert ok["__typename"] == "ImageJobSuccess"
        [copy] = ok["images"]
        assert (copy["__typename"], copy["owner"]["id"], copy["kind"]) == ("PrivateImage", bob.id, image.kind)


async def test_only_active_images_are_replicated(gql: GraphQLClient, db: Database) -> None:
    alice, token = await make_account(db)
    for status in ("QUEUED", "SAVING", "KILLED"):
        image = await make_image(db, alice, status=status)
        await refused(gql.as_(token), db, alice, image, image.id, error("ConflictError", "IMAGE_NOT_ACTIVE"))


async def test_full_ecs_images_replicate_across_regions_only(gql: GraphQLClient, db: Database) -> None:
    alice, token = await make_account(db)
    full_ecs = await make_image(db, alice, kind="FULL_ECS")
    q = gql.as_(token)
    await refused(q, db, alice, full_ecs, full_ecs.id, error("NotSupportedError", "FULL_ECS_CROSS_REGION_ONLY"))
    ok = await replicate(q, full_ecs.id, region="region-2")
    assert ok["__typename"] == "ImageJobSuccess" and ok["images"][0]["region"] == "region-2"


async def test_size_limit_is_on_the_virtual_size(gql: GraphQLClient, db: Database) -> None:
    alice, token = await make_account(db)
    q = gql.as_(token)
    too_big = await make_image(db, alice, virtual_size_bytes=REPLICATE_MAX_GIB * GiB + 1)
    await refused(q, db, alice, too_big, too_big.id,
                  error("LimitExceededError", "REPLICATE_TOO_LARGE", limit=REPLICATE_MAX_GIB))
    largest = await make_image(db, alice, virtual_size_bytes=REPLICATE_MAX_GIB * GiB)
    assert (await replicate(q, largest.id))["__typename"] == "ImageJobSuccess"


# ---------------------------------------------------------------- keys


async def test_cross_region_is_not_for_encrypted_images(gql: GraphQLClient, db: Database, settings: Settings) -> None:
    alice, token = await make_account(db)
    key = await make_kms_key(db, settings, alice)
    sealed = await make_image_with_data(db, settings, alice, DATA, kms_key_id=key)
    plain = await make_image(db, alice)
    q = gql.as_(token)
    expected = error("NotSupportedError", "REPLICATE_ENCRYPTED_CROSS_REGION")
    await refused(q, db, alice, sealed, sealed.id, expected, region="region-2")
    # Nor is a cross-region copy encrypted on the way.
    await refused(q, db, alice, plain, plain.id, expected, region="region-2", kmsKeyId=key)
    await refused(q, db, alice, plain, plain.id, expected, region="region-2", encryptWithDefaultKey=True)


async def test_the_copy_key_differs_from_the_source_key(gql: GraphQLClient, db: Database, settings: Settings) -> None:
    alice, token = await make_account(db)
    key = await make_kms_key(db, settings, alice)
    sealed = await make_image_with_data(db, settings, alice, DATA, kms_key_id=key)
    q = gql.as_(token)
    await refused(q, db, alice, sealed, sealed.id, error("ValidationError", "SAME_KEY", field="input.kmsKeyId"),
                  kmsKeyId=key)
    # The default key too, when the source is sealed with it.
    first = await replicate(q, sealed.id, encryptWithDefaultKey=True)
    assert first["__typename"] == "ImageJobSuccess"
    default_key = first["images"][0]["kmsKeyId"]
    by_default = await make_image_with_data(db, settings, alice, DATA, kms_key_id=default_key)
    await refused(q, db, alice, by_default, by_default.id,
                  error("ValidationError", "SAME_KEY", field="input.encryptWithDefaultKey"), encryptWithDefaultKey=True)


async def test_the_copy_key_must_be_usable_by_the_caller(gql: GraphQLClient, db: Database, settings: Settings) -> None:
    alice, token = await make_account(db)
    carol, _ = await make_account(db)
    image = await make_image(db, alice)
    disabled = await make_kms_key(db, settings, alice)
    await disable_key(db, settings, alice, disabled)
    carols = await make_kms_key(db, settings, carol)
    granted = await make_kms_key(db, settings, carol)
    # A grant lets alice decrypt with carol's key, never make data keys with it.
    await grant(db, settings, carol, granted, alice, GrantOperation.DECRYPT_DATA_KEY)
    q = gql.as_(token)
    for key_id, code in ((disabled, "KMS_KEY_DISABLED"), (carols, "KMS_KEY_NOT_FOUND"),
                         (granted, "KMS_ACCESS_DENIED"), ("key-missing", "KMS_KEY_NOT_FOUND")):
        await refused(q, db, alice, image, image.id, error("KmsKeyError", code, keyId=key_id), kmsKeyId=key_id)


async def test_an_encrypted_source_needs_the_caller_to_decrypt_it(
    gql: GraphQLClient, db: Database, settings: Settings
) -> None:
    alice, alice_t = await make_account(db)
    bob, bob_t = await make_account(db)
    key = await make_kms_key(db, settings, alice)
    sealed = await make_image_with_data(db, settings, alice, DATA, kms_key_id=key)
    await share(db, sealed, bob)
    await refused(gql.as_(bob_t), db, bob, sealed, sealed.id, error("KmsKeyError", "KMS_KEY_NOT_FOUND", keyId=key))
    await grant(db, settings, alice, key, bob, GrantOperation.DESCRIBE_KEY)
    await refused(gql.as_(bob_t), db, bob, sealed, sealed.id, error("KmsKeyError", "KMS_ACCESS_DENIED", keyId=key))
    await disable_key(db, settings, alice, key)
    await refused(gql.as_(alice_t), db, alice, sealed, sealed.id, error("KmsKeyError", "KMS_KEY_DISABLED", keyId=key))
    # A copy under the default key is refused as well, and the default key is not made for it.
    await refused(gql.as_(alice_t), db, alice, sealed, sealed.id, error("KmsKeyError", "KMS_KEY_DISABLED", keyId=key),
                  encryptWithDefaultKey=True)


# ---------------------------------------------------------------- quotas


async def test_a_sixth_concurrent_replication_is_refused(gql: GraphQLClient, db: Database) -> None:
    alice, token = await make_account(db)
    image = await make_image(db, alice)
    q = gql.as_(token)
    for i in range(5):
        assert (await replicate(q, image.id, name=f"copy {i}"))["__typename"] == "ImageJobSuccess"
    await refused(q, db, alice, image, image.id,
                  error("LimitExceededError", "QUOTA_CONCURRENT_REPLICATIONS", limit=5))
    quotas = (await q.execute("{ viewer { quotas { resource used limit } } }"))["viewer"]["quotas"]
    assert {"resource": "CONCURRENT_REPLICATIONS", "used": 5, "limit": 5} in quotas


async def test_private_image_usage_is_shown_per_region(gql: GraphQLClient, db: Database) -> None:
    """PRIVATE_IMAGES is a limit per region: `viewer.quotas(region:)` shows a region's usage (the
    default region's without one); a region the service does not have is INVALID_REGION."""
    alice, token = await make_account(db)
    for region in ("region-1", "region-2", "region-2"):
        await make_image(db, alice, region=region)
    q = gql.as_(token)
    query = "query($r: String) { viewer { quotas(region: $r) { resource used limit } } }"
    for asked, used in ((None, 1), ("region-1", 1), ("region-2", 2)):
        quotas = (await q.execute(query, {"r": asked}))["viewer"]["quotas"]
        assert quotas[0] == {"resource": "PRIVATE_IMAGES", "used": used, "limit": 50}, asked
    for region in ("", "mars-1"):
        body = (await q.raw(query, {"r": region})).json()
        assert [(e["extensions"]["code"], e["extensions"].get("field")) for e in body["errors"]] == [
            ("INVALID_REGION", "region")], region


async def test_concurrent_requests_cannot_overrun_the_quota(gql: GraphQLClient, db: Database) -> None:
    alice, token = await make_account(db)
    image = await make_image(db, alice)
    q = gql.as_(token)
    set_quota = """mutation($input: SetQuotaInput!) { setQuota(input: $input) { __typename } }"""
    await gql.execute(set_quota, {"input": {"accountId": alice.id, "resource": "CONCURRENT_REPLICATIONS", "limit": 3}})
    results = await asyncio.gather(*(replicate(q, image.id, name=f"copy {i}") for i in range(8)))
    kinds = sorted(r["__typename"] for r in results)
    assert kinds == ["ImageJobSuccess"] * 3 + ["LimitExceededError"] * 5
    assert {r["code"] for r in results if r["__typename"] == "LimitExceededError"} == {"QUOTA_CONCURRENT_REPLICATIONS"}
    assert (await footprint(db, alice))["jobs"] == 3


async def test_private_image_quota_counts_in_the_target_region(gql: GraphQLClient, db: Database) -> None:
    alice, token = await make_account(db)
    image = await make_image(db, alice)
    set_quota = """mutation($input: SetQuotaInput!) { setQuota(input: $input) { __typename } }"""
    await gql.execute(set_quota, {"input": {"accountId": alice.id, "resource": "PRIVATE_IMAGES", "limit": 1}})
    q = gql.as_(token)
    await refused(q, db, alice, image, image.id, error("LimitExceededError", "QUOTA_PRIVATE_IMAGES", limit=1))
    # Nor is the account's default key made for a copy refused anyway.
    await refused(q, db, alice, image, image.id, error("LimitExceededError", "QUOTA_PRIVATE_IMAGES", limit=1),
                  encryptWithDefaultKey=True)
    ok = await replicate(q, image.id, region="region-2")
    assert ok["__typename"] == "ImageJobSuccess"
    await refused(q, db, alice, image, image.id, error("LimitExceededError", "QUOTA_PRIVATE_IMAGES", limit=1),
                  region="region-2")


# ---------------------------------------------------------------- races


class _MeanwhileKms:
    """The real provider, running `meanwhile` once while the copy's key is being checked:
    between the first look at the source and the enqueuing transaction."""

    def __init__(self, inner: Any, meanwhile: Callable[[], Awaitable[None]]) -> None:
        self._inner = inner
        self._meanwhile: Callable[[], Awaitable[None]] | None = meanwhile

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    async def generate_data_key(self, account_id: str, key_id: str) -> tuple[bytes, bytes]:
        if self._meanwhile is not None:
            meanwhile, self._meanwhile = self._meanwhile, None
            await meanwhile()
        return await self._inner.generate_data_key(account_id, key_id)  # type: ignore[no-any-return]


@pytest.mark.parametrize("change", ["deleted", "unshared"])
async def test_the_source_is_checked_again_in_the_enqueuing_transaction(
    db: Database, settings: Settings, change: str
) -> None:
    alice, _ = await make_account(db)
    bob, _ = await make_account(db)
    source = await make_image_with_data(db, settings, alice, DATA)
    await share(db, source, bob)
    services = build_services(settings, db)
    try:
        key = await make_kms_key(db, settings, bob)

        async def meanwhile() -> None:
            if change == "deleted":
                await services.images.delete(caller(alice), [source.id])
            else:
                await unshare(db, source, bob)

        services.replication.kms = _MeanwhileKms(services.key_provider, meanwhile)
        before = await footprint(db, bob)
        with pytest.raises(NotFound) as refused:
            await services.replication.replicate(caller(bob), ReplicationRequest(source.id, "copy", kms_key_id=key))
        assert refused.value.code == "IMAGE_NOT_FOUND"
        assert await footprint(db, bob) == before
    finally:
        await services.close()
