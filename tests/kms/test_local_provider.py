"""The KeyProvider contract, run against every adapter (today: local)."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest

from app.db.uow import Database
from app.errors import Conflict, ImsError, Invalid, KmsKeyProblem, NotFound
from app.kms.port import DEFAULT_KEY_ALIAS, GrantOperation, KeyProvider, KeyState
from tests.kms.conftest import Clock
from tests.kms.conftest import new_caller as caller

DESCRIBE = GrantOperation.DESCRIBE_KEY
DECRYPT = GrantOperation.DECRYPT_DATA_KEY


def code_of(info: pytest.ExceptionInfo[ImsError]) -> str:
    return info.value.code


# ---------------------------------------------------------------- the port contract


async def test_provider_implements_the_port(provider: KeyProvider) -> None:
    assert isinstance(provider, KeyProvider)


async def test_data_key_round_trip(provider: KeyProvider, db: Database) -> None:
    alice = await caller(db)
    key = await provider.create_key(alice, "app/disks", "for disks")
    plaintext, wrapped = await provider.generate_data_key(alice.account_id, key.id)
    assert len(plaintext) == 32
    assert plaintext not in wrapped
    assert await provider.decrypt_data_key(alice.account_id, key.id, wrapped) == plaintext


async def test_every_data_key_and_wrapping_is_fresh(provider: KeyProvider, db: Database) -> None:
    alice = await caller(db)
    key = await provider.create_key(alice, "k")
    (p1, w1), (p2, w2) = [await provider.generate_data_key(alice.account_id, key.id) for _ in range(2)]
    assert p1 != p2 and w1 != w2
    assert await provider.decrypt_data_key(alice.account_id, key.id, w2) == p2


@pytest.mark.parametrize("position", [0, 1, 12, 13, 40, -1])
async def test_tampered_wrapped_key_fails(provider: KeyProvider, db: Database, position: int) -> None:
    alice = await caller(db)
    key = await provider.create_key(alice, "k")
    _, wrapped = await provider.generate_data_key(alice.account_id, key.id)
    tampered = bytearray(wrapped)
    tampered[position] ^= 0x01
    with pytest.raises(KmsKeyProblem) as info:
        await provider.decrypt_data_key(alice.account_id, key.id, bytes(tampered))
    assert (info.value.code, info.value.key_id) == ("KMS_INVALID_CIPHERTEXT", key.id)


async def test_wrapped_key_opens_only_under_its_own_key(provider: KeyProvider, db: Database) -> None:
    alice = await caller(db)
    k1 = await provider.create_key(alice, "one")
    k2 = await provider.create_key(alice, "two")
    _, wrapped = await provider.generate_data_key(alice.account_id, k1.id)
    for bad in (wrapped[:-1], b"", wrapped):
        with pytest.raises(KmsKeyProblem) as info:
            await provider.decrypt_data_key(alice.account_id, k2.id if bad is wrapped else k1.id, bad)
        assert code_of(info) == "KMS_INVALID_CIPHERTEXT"


async def test_state_machine(provider: KeyProvider, db: Database, clock: Clock) -> None:
    alice = await caller(db)
    key = await provider.create_key(alice, "k")
    assert (key.state, key.deletion_date, key.is_default) == (KeyState.ENABLED, None, False)
    assert (await provider.disable_key(alice, key.id)).state is KeyState.DISABLED
    assert (await provider.disable_key(alice, key.id)).state is KeyState.DISABLED
    assert (await provider.enable_key(alice, key.id)).state is KeyState.ENABLED
    assert (await provider.enable_key(alice, key.id)).state is KeyState.ENABLED
    pending = await provider.schedule_deletion(alice, key.id, 7)
    assert (pending.state, pending.deletion_date) == (KeyState.PENDING_DELETION, clock.now + timedelta(days=7))
    for change in (provider.enable_key, provider.disable_key):
        with pytest.raises(Conflict) as info:
            await change(alice, key.id)
        assert code_of(info) == "KMS_KEY_PENDING_DELETION"
    with pytest.raises(Conflict) as info:
        await provider.schedule_deletion(alice, key.id, 30)
    assert code_of(info) == "KMS_KEY_PENDING_DELETION"
    cancelled = await provider.cancel_deletion(alice, key.id)
    assert (cancelled.state, cancelled.deletion_date) == (KeyState.DISABLED, None)
    with pytest.raises(Conflict) as info:
        await provider.cancel_deletion(alice, key.id)
    assert code_of(info) == "KMS_KEY_NOT_PENDING_DELETION"
    assert (await provider.get_key(alice, key.id)).state is KeyState.DISABLED


@pytest.mark.parametrize(("days", "ok"), [(6, False), (7, True), (1096, True), (1097, False), (0, False)])
async def test_pending_days_bounds(provider: KeyProvider, db: Database, days: int, ok: bool) -> None:
    alice = await caller(db)
    key = await provider.create_key(alice, "k")
    if ok:
        assert (await provider.schedule_deletion(alice, key.id, days)).state is KeyState.PENDING_DELETION
        return
    with pytest.raises(Invalid) as info:
        await provider.schedule_deletion(alice, key.id, days)
    assert (code_of(info), info.value.field) == ("INVALID_PENDING_DAYS", "input.pendingDays")
    assert (await provider.get_key(alice, key.id)).state is KeyState.ENABLED


async def _expect_kms(provider: KeyProvider, account_id: str, key_id: str, wrapped: bytes, code: str) -> None:
    with pytest.raises(KmsKeyProblem) as info:
        await provider.decrypt_data_key(account_id, key_id, wrapped)
    assert (info.value.code, info.value.key_id) == (code, key_id)
    with pytest.raises(KmsKeyProblem) as info:
        await provider.require_decrypt(account_id, key_id)
    assert info.value.code == code
    assert await provider.can_decrypt(account_id, key_id) is False


async def test_disabled_or_pending_key_blocks_data_until_enabled(provider: KeyProvider, db: Database) -> None:
    alice = await caller(db)
    me = alice.account_id
    key = await provider.create_key(alice, "k")
    plaintext, wrapped = await provider.generate_data_key(me, key.id)
    await provider.disable_key(alice, key.id)
    await _expect_kms(provider, me, key.id, wrapped, "KMS_KEY_DISABLED")
    with pytest.raises(KmsKeyProblem) as info:
        await provider.generate_data_key(me, key.id)
    assert code_of(info) == "KMS_KEY_DISABLED"
    await provider.enable_key(alice, key.id)
    assert await provider.decrypt_data_key(me, key.id, wrapped) == plaintext
    await provider.schedule_deletion(alice, key.id, 7)
    await _expect_kms(provider, me, key.id, wrapped, "KMS_KEY_PENDING_DELETION")
    with pytest.raises(KmsKeyProblem) as info:
        await provider.generate_data_key(me, key.id)
    assert code_of(info) == "KMS_KEY_PENDING_DELETION"
    await provider.cancel_deletion(alice, key.id)
    await _expect_kms(provider, me, key.id, wrapped, "KMS_KEY_DISABLED")
    await provider.enable_key(alice, key.id)
    assert await provider.can_decrypt(me, key.id) is True
    assert await provider.decrypt_data_key(me, key.id, wrapped) == plaintext


async def test_grants_decide_who_decrypts(provider: KeyProvider, db: Database) -> None:
    alice, bob, carol, dave = [await caller(db) for _ in range(4)]
    key = await provider.create_key(alice, "shared")
    plaintext, wrapped = await provider.generate_data_key(alice.account_id, key.id)
    await _expect_kms(provider, bob.account_id, key.id, wrapped, "KMS_KEY_NOT_FOUND")
    g_bob = await provider.create_grant(alice, key.id, bob.account_id, [DECRYPT])
    g_carol = await provider.create_grant(alice, key.id, carol.account_id, [DESCRIBE])
    assert (g_bob.grantee_account_id, g_bob.grantee_name, g_bob.operations) == (bob.account_id, bob.name, (DECRYPT,))
    assert await provider.decrypt_data_key(bob.account_id, key.id, wrapped) == plaintext
    assert await provider.can_decrypt(bob.account_id, key.id) is True
    await _expect_kms(provider, carol.account_id, key.id, wrapped, "KMS_ACCESS_DENIED")
    await _expect_kms(provider, dave.account_id, key.id, wrapped, "KMS_KEY_NOT_FOUND")
    with pytest.raises(KmsKeyProblem) as info:  # a grant never lets others make data keys
        await provider.generate_data_key(bob.account_id, key.id)
    assert code_of(info) == "KMS_ACCESS_DENIED"
    assert await provider.has_grant(key.id, bob.account_id, DECRYPT) is True
    assert await provider.has_grant(key.id, bob.account_id, DESCRIBE) is False
    assert await provider.has_grant(key.id, carol.account_id, DESCRIBE) is True
    assert await provider.has_grant(key.id, dave.account_id, DECRYPT) is False
    await provider.disable_key(alice, key.id)
    await _expect_kms(provider, bob.account_id, key.id, wrapped, "KMS_KEY_DISABLED")
    assert {g.id for g in (await provider.get_key(alice, key.id)).grants} == {g_bob.id, g_carol.id}


async def test_describe_grant_shows_the_key_and_only_the_own_grant(provider: KeyProvider, db: Database) -> None:
    alice, bob, carol = [await caller(db) for _ in range(3)]
    key = await provider.create_key(alice, "shared")
    g_bob = await provider.create_grant(alice, key.id, bob.account_id, [DECRYPT, DESCRIBE])
    await provider.create_grant(alice, key.id, carol.account_id, [DECRYPT])
    seen = await provider.get_key(bob, key.id)
    assert (seen.id, [g.id for g in seen.grants]) == (key.id, [g_bob.id])
    assert g_bob.operations == (DESCRIBE, DECRYPT)
    listed = await provider.list_keys(bob, 10, None)
    assert ([k.id for k in listed.items], listed.total) == ([key.id], 1)
    assert [g.id for g in listed.items[0].grants] == [g_bob.id]
    with pytest.raises(NotFound):  # DECRYPT_DATA_KEY alone does not show the key
        await provider.get_key(carol, key.id)
    assert (await provider.list_keys(carol, 10, None)).total == 0
    for manage in (provider.disable_key, provider.enable_key, provider.cancel_deletion):
        with pytest.raises(NotFound) as info:  # a grantee never manages the key
            await manage(bob, key.id)
        assert code_of(info) == "KMS_KEY_NOT_FOUND"
    with pytest.raises(NotFound):
        await provider.create_grant(bob, key.id, carol.account_id, [DESCRIBE])


async def test_revoke_removes_the_grant(provider: KeyProvider, db: Database) -> None:
    alice, bob = await caller(db), await caller(db)
    key = await provider.create_key(alice, "k")
    _, wrapped = await provider.generate_data_key(alice.account_id, key.id)
    grant = await provider.create_grant(alice, key.id, bob.account_id, [DECRYPT, DESCRIBE])
    with pytest.raises(NotFound):
        await provider.revoke_grant(bob, key.id, grant.id)
    assert await provider.revoke_grant(alice, key.id, grant.id) == grant.id
    await _expect_kms(provider, bob.account_id, key.id, wrapped, "KMS_KEY_NOT_FOUND")
    assert await provider.has_grant(key.id, bob.account_id, DECRYPT) is False
    assert (await provider.get_key(alice, key.id)).grants == ()
    with pytest.raises(NotFound) as info:
        await provider.revoke_grant(alice, key.id, grant.id)
    assert (code_of(info), info.value.resource_id) == ("GRANT_NOT_FOUND", grant.id)


async def test_grant_rules(provider: KeyProvider, db: Database) -> None:
    alice, bob = await caller(db), await caller(db)
    key = await provider.create_key(alice, "k")
    with pytest.raises(Invalid) as info:
        await provider.create_grant(alice, key.id, alice.account_id, [DECRYPT])
    assert code_of(info) == "KMS_GRANT_TO_SELF"
    with pytest.raises(Invalid) as info:
        await provider.create_grant(alice, key.id, bob.account_id, [])
    assert code_of(info) == "INVALID_GRANT_OPERATIONS"
    first = await provider.create_grant(alice, key.id, bob.account_id, [DECRYPT, DECRYPT])
    again = await provider.create_grant(alice, key.id, bob.account_id, [DECRYPT])
    other = await provider.create_grant(alice, key.id, bob.account_id, [DESCRIBE])
    assert first.id == again.id != other.id
    assert first.operations == (DECRYPT,)
    default = await provider.ensure_default_key(alice.account_id)
    with pytest.raises(Invalid) as info:
        await provider.create_grant(alice, default.id, bob.account_id, [DECRYPT])
    assert code_of(info) == "KMS_DEFAULT_KEY_NOT_GRANTABLE"


@pytest.mark.parametrize(
    ("alias", "code"),
    [("", "INVALID_KMS_ALIAS"), ("a" * 256, "INVALID_KMS_ALIAS"), ("has space", "INVALID_KMS_ALIAS"),
     ("ünï", "INVALID_KMS_ALIAS"), ("team\n", "INVALID_KMS_ALIAS"), (DEFAULT_KEY_ALIAS, "KMS_ALIAS_RESERVED"), ("IMS/mine", "KMS_ALIAS_RESERVED")],
)
async def test_invalid_aliases(provider: KeyProvider, db: Database, alias: str, code: str) -> None:
    alice = await caller(db)
    with pytest.raises(Invalid) as info:
        await provider.create_key(alice, alias)
    assert (code_of(info), info.value.field) == (code, "input.alias")
    assert (await provider.list_keys(alice, 10, None)).total == 0


async def test_aliases_are_unique_per_account(provider: KeyProvider, db: Database) -> None:
    alice, bob = await caller(db), await caller(db)
    longest = "a/B_9-" + "x" * 249
    assert (await provider.create_key(alice, longest)).alias == longest
    await provider.create_key(alice, "team/keys")
    with pytest.raises(Conflict) as info:
        await provider.create_key(alice, "team/keys")
    assert code_of(info) == "KMS_ALIAS_EXISTS"
    assert (await provider.create_key(bob, "team/keys")).account_id == bob.account_id


async def test_default_key_is_made_once_and_cannot_be_retired(provider: KeyProvider, db: Database) -> None:
    alice = await caller(db)
    keys = await asyncio.gather(*[provider.ensure_default_key(alice.account_id) for _ in range(4)])
    assert len({k.id for k in keys}) == 1
    key = keys[0]
    assert (key.alias, key.is_default, key.state) == (DEFAULT_KEY_ALIAS, True, KeyState.ENABLED)
    assert (await provider.ensure_default_key(alice.account_id)).id == key.id
    assert [k.id for k in (await provider.list_keys(alice, 10, None)).items] == [key.id]
    for retire in (provider.disable_key(alice, key.id), provider.schedule_deletion(alice, key.id, 7)):
        with pytest.raises(Conflict) as info:
            await retire
        assert code_of(info) == "KMS_DEFAULT_KEY_MANAGED"
    plaintext, wrapped = await provider.generate_data_key(alice.account_id, key.id)
    assert await provider.decrypt_data_key(alice.account_id, key.id, wrapped) == plaintext


async def test_list_pages_oldest_first(provider: KeyProvider, db: Database, clock: Clock) -> None:
    alice, bob = await caller(db), await caller(db)
    made = []
    for i in range(5):
        clock.advance(timedelta(seconds=1))
        made.append((await provider.create_key(alice, f"k{i}")).id)
    await provider.create_key(bob, "not-mine")
    seen: list[str] = []
    after: str | None = None
    while True:
        page = await provider.list_keys(alice, 2, after)
        assert page.total == 5
        seen += [k.id for k in page.items]
        if not page.has_next:
            break
        after = page.cursors[-1]
    assert seen == made


async def test_purge_destroys_keys_only_after_the_date(provider: KeyProvider, db: Database, clock: Clock) -> None:
    alice, bob = await caller(db), await caller(db)
    doomed = await provider.create_key(alice, "doomed")
    saved = await provider.create_key(alice, "saved")
    _, wrapped = await provider.generate_data_key(alice.account_id, doomed.id)
    await provider.create_grant(alice, doomed.id, bob.account_id, [DECRYPT, DESCRIBE])
    await provider.schedule_deletion(alice, doomed.id, 7)
    await provider.schedule_deletion(alice, saved.id, 7)
    await provider.cancel_deletion(alice, saved.id)
    clock.advance(timedelta(days=7) - timedelta(seconds=1))
    assert await provider.purge_due() == 0
    assert (await provider.get_key(alice, doomed.id)).state is KeyState.PENDING_DELETION
    clock.advance(timedelta(seconds=1))
    assert await provider.purge_due() == 1
    assert await provider.purge_due() == 0
    with pytest.raises(NotFound):
        await provider.get_key(alice, doomed.id)
    await _expect_kms(provider, alice.account_id, doomed.id, wrapped, "KMS_KEY_NOT_FOUND")
    assert await provider.has_grant(doomed.id, bob.account_id, DECRYPT) is False
    assert [k.id for k in (await provider.list_keys(alice, 10, None)).items] == [saved.id]
    assert (await provider.list_keys(bob, 10, None)).total == 0


async def test_a_key_past_its_deletion_date_is_gone_before_the_purge(
    provider: KeyProvider, db: Database, clock: Clock
) -> None:
    """The deletion date is when the key is destroyed; the purge only reclaims its row, and may
    run late (IMS_MAINTENANCE_INTERVAL) or never (0). Until then the key must not come back:
    cancelling its deletion (which turned it DISABLED, then enabling it made it usable again)
    would stretch the waiting period past the 7-1096 days it was scheduled for."""
    alice, bob = await caller(db), await caller(db)
    doomed = await provider.create_key(alice, "doomed")
    _, wrapped = await provider.generate_data_key(alice.account_id, doomed.id)
    await provider.create_grant(alice, doomed.id, bob.account_id, [DECRYPT, DESCRIBE])
    await provider.schedule_deletion(alice, doomed.id, 7)
    clock.advance(timedelta(days=7))
    # No purge ran: the row is still there.
    for change in (provider.cancel_deletion, provider.enable_key, provider.disable_key):
        with pytest.raises(NotFound) as info:
            await change(alice, doomed.id)
        assert code_of(info) == "KMS_KEY_NOT_FOUND"
    with pytest.raises(NotFound):
        await provider.create_grant(alice, doomed.id, bob.account_id, [DESCRIBE])
    for who in (alice, bob):
        with pytest.raises(NotFound):
            await provider.get_key(who, doomed.id)
        page = await provider.list_keys(who, 10, None)
        assert (page.items, page.total) == ([], 0)
    await _expect_kms(provider, alice.account_id, doomed.id, wrapped, "KMS_KEY_NOT_FOUND")
    await _expect_kms(provider, bob.account_id, doomed.id, wrapped, "KMS_KEY_NOT_FOUND")
    # Its alias is free again, as after the purge (which reusing it did).
    again = await provider.create_key(alice, "doomed")
    assert again.id != doomed.id
    assert await provider.purge_due() == 0
    async with db.uow(write=False) as uow:
        assert await uow.kms.get_key(doomed.id) is None
    assert (await provider.get_key(alice, again.id)).state is KeyState.ENABLED
