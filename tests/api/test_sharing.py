"""Sharing over HTTP: shareImages, unshareImages, updateImageMembership — every rule with its
exact error type and code, and the memberships left unchanged after each refusal."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from app.db.tables import Account, Image
from app.db.uow import Database
from app.domain.images import Caller
from app.kms.port import GrantOperation
from tests.api.ops import (
    GET_IMAGE,
    GET_NODE,
    delete_images,
    error,
    get_image,
    list_ids,
    without_message,
)
from tests.conftest import GraphQLClient, LiveServer
from tests.factories import (
    admin_account,
    data_plane,
    make_account,
    make_image,
    make_image_with_data,
    make_kms_key,
    member_rows,
    share,
)

MEMBER = "imageId account { id name } status createdAt updatedAt"
ERRORS = """__typename ... on UserError { code message } ... on NotFoundError { resourceId }
  ... on ValidationError { field }"""
SHARE = f"""mutation($input: ShareImagesInput!) {{ shareImages(input: $input) {{ {ERRORS}
  ... on LimitExceededError {{ limit }} ... on KmsKeyError {{ keyId }}
  ... on ShareImagesSuccess {{ members {{ {MEMBER} }} }} }} }}"""
UNSHARE = f"""mutation($input: UnshareImagesInput!) {{ unshareImages(input: $input) {{ {ERRORS}
  ... on UnshareImagesSuccess {{ removed }} }} }}"""
MEMBERSHIP = f"""mutation($input: UpdateImageMembershipInput!) {{ updateImageMembership(input: $input) {{ {ERRORS}
  ... on UpdateImageMembershipSuccess {{ members {{ {MEMBER} }} }} }} }}"""
QUOTAS = "{ viewer { quotas { resource used limit } } }"
ALL_STATUSES = {"visibility": ["SHARED"], "memberStatus": ["PENDING", "ACCEPTED", "REJECTED"]}


async def share_images(client: GraphQLClient, image_ids: list[str], account_ids: list[str]) -> dict[str, Any]:
    data = await client.execute(SHARE, {"input": {"imageIds": image_ids, "accountIds": account_ids}})
    return data["shareImages"]  # type: ignore[no-any-return]


async def unshare_images(client: GraphQLClient, image_ids: list[str], account_ids: list[str]) -> dict[str, Any]:
    data = await client.execute(UNSHARE, {"input": {"imageIds": image_ids, "accountIds": account_ids}})
    return data["unshareImages"]  # type: ignore[no-any-return]


async def set_membership(client: GraphQLClient, image_ids: list[str], status: str) -> dict[str, Any]:
    data = await client.execute(MEMBERSHIP, {"input": {"imageIds": image_ids, "status": status}})
    return data["updateImageMembership"]  # type: ignore[no-any-return]


def pairs(payload: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(image id, account id, status) of a success payload's members, in order."""
    return [(m["imageId"], m["account"]["id"], m["status"]) for m in payload["members"]]


async def users(db: Database, gql: GraphQLClient, n: int) -> list[tuple[Account, GraphQLClient]]:
    out = []
    for _ in range(n):
        account, token = await make_account(db)
        out.append((account, gql.as_(token)))
    return out


# ---------------------------------------------------------------- the whole life of a share


async def test_share_accept_reject_reaccept_unshare_end_to_end(gql: GraphQLClient, db: Database) -> None:
    (alice, a), (bob, b) = await users(db, gql, 2)
    image = await make_image(db, alice, name="web")
    version = (await get_image(a, image.id) or {})["version"]

    shared = await share_images(a, [image.id], [bob.id])
    assert shared["__typename"] == "ShareImagesSuccess"
    [member] = shared["members"]
    assert {k: member[k] for k in ("imageId", "account", "status")} == {
        "imageId": image.id, "account": {"id": bob.id, "name": bob.name}, "status": "PENDING"}
    assert member["createdAt"] == member["updatedAt"]

    # PENDING: bob sees it by id, as a SharedImage, but not in his default list.
    seen = await get_image(b, image.id)
    assert seen is not None
    assert (seen["__typename"], seen["owner"], seen["membership"]) == (
        "SharedImage", {"id": alice.id, "name": alice.name},
        {"imageId": image.id, "account": {"id": bob.id, "name": bob.name}, "status": "PENDING"})
    assert image.id not in await list_ids(b)
    assert await list_ids(b, filter={"visibility": ["SHARED"], "memberStatus": ["PENDING"]}) == [image.id]
    owned = await get_image(a, image.id)
    assert owned is not None and owned["members"] == {
        "totalCount": 1, "edges": [{"node": {"account": {"id": bob.id, "name": bob.name}, "status": "PENDING"}}]}
    assert owned["version"] == version  # sharing does not change the image itself

    accepted = await set_membership(b, [image.id], "ACCEPTED")
    assert pairs(accepted) == [(image.id, bob.id, "ACCEPTED")]
    assert accepted["members"][0]["updatedAt"] > member["updatedAt"]
    assert await list_ids(b) == [image.id]
    assert (await get_image(b, image.id) or {})["membership"]["status"] == "ACCEPTED"

    assert pairs(await set_membership(b, [image.id], "REJECTED")) == [(image.id, bob.id, "REJECTED")]
    assert await list_ids(b) == []
    assert (await get_image(b, image.id) or {})["membership"]["status"] == "REJECTED"
    assert await list_ids(b, filter={"visibility": ["SHARED"], "memberStatus": ["REJECTED"]}) == [image.id]

    assert pairs(await set_membership(b, [image.id], "ACCEPTED")) == [(image.id, bob.id, "ACCEPTED")]
    assert await list_ids(b) == [image.id]

    assert await unshare_images(a, [image.id], [bob.id]) == {"__typename": "UnshareImagesSuccess", "removed": 1}
    assert await get_image(b, image.id) is None
    assert (await b.execute(GET_NODE, {"id": image.id}))["node"] is None
    assert await list_ids(b, filter=ALL_STATUSES) == []
    assert without_message(await set_membership(b, [image.id], "ACCEPTED")) == error(
        "NotFoundError", "IMAGE_NOT_FOUND", resourceId=image.id)
    assert (await get_image(a, image.id) or {})["members"]["totalCount"] == 0
    assert await member_rows(db, image.id) == []


async def test_sharing_again_is_idempotent_and_keeps_each_status(gql: GraphQLClient, db: Database) -> None:
    (alice, a), (bob, b), (carol, _) = await users(db, gql, 3)
    image = await make_image(db, alice)
    await share_images(a, [image.id], [bob.id])
    await set_membership(b, [image.id], "ACCEPTED")
    again = await share_images(a, [image.id], [bob.id, carol.id, bob.id])  # duplicates collapse
    assert pairs(again) == [(image.id, bob.id, "ACCEPTED"), (image.id, carol.id, "PENDING")]
    assert await member_rows(db, image.id) == sorted([(bob.id, "ACCEPTED"), (carol.id, "PENDING")])


async def test_a_batch_returns_every_pair_in_request_order(gql: GraphQLClient, db: Database) -> None:
    (alice, a), (bob, _), (carol, _) = await users(db, gql, 3)
    first, second = await make_image(db, alice), await make_image(db, alice, kind="DATA_DISK")
    result = await share_images(a, [second.id, first.id], [carol.id, bob.id])
    assert pairs(result) == [(second.id, carol.id, "PENDING"), (second.id, bob.id, "PENDING"),
                             (first.id, carol.id, "PENDING"), (first.id, bob.id, "PENDING")]
    assert await member_rows(db, first.id) == await member_rows(db, second.id) == sorted(
        [(bob.id, "PENDING"), (carol.id, "PENDING")])


async def test_shared_images_do_not_count_against_the_recipients_quota(gql: GraphQLClient, db: Database) -> None:
    (alice, a), (bob, b) = await users(db, gql, 2)
    images = [(await make_image(db, alice)).id for _ in range(3)]
    await share_images(a, images, [bob.id])
    await set_membership(b, images, "ACCEPTED")

    def private_images(data: dict[str, Any]) -> dict[str, Any]:
        return next(q for q in data["viewer"]["quotas"] if q["resource"] == "PRIVATE_IMAGES")

    assert private_images(await b.execute(QUOTAS)) == {"resource": "PRIVATE_IMAGES", "used": 0, "limit": 50}
    assert private_images(await a.execute(QUOTAS))["used"] == 3
    assert set(await list_ids(b)) == set(images)


# ---------------------------------------------------------------- shareImages refusals


async def refused_share(client: GraphQLClient, db: Database, images: list[Image], accounts: list[str],
                        expected: dict[str, Any]) -> None:
    """The share is refused with `expected` and no image's memberships change."""
    before = {i.id: await member_rows(db, i.id) for i in images}
    assert without_message(await share_images(client, [i.id for i in images], accounts)) == expected
    assert {i.id: await member_rows(db, i.id) for i in images} == before


async def test_only_the_owner_shares(gql: GraphQLClient, db: Database) -> None:
    (alice, _), (bob, b), (carol, c), (erin, e) = await users(db, gql, 4)
    image = await make_image(db, alice)
    await share(db, image, bob, "ACCEPTED")
    await share(db, image, carol, "PENDING")
    reshare = error("ForbiddenError", "RESHARE_FORBIDDEN")
    await refused_share(b, db, [image], [erin.id], reshare)
    await refused_share(c, db, [image], [erin.id], reshare)
    not_found = error("NotFoundError", "IMAGE_NOT_FOUND", resourceId=image.id)
    await refused_share(e, db, [image], [bob.id], not_found)
    await refused_share(gql, db, [image], [erin.id], not_found)  # an admin has no access either
    await refused_share(b, db, [], [erin.id], error("ValidationError", "EMPTY_REQUEST", field="input.imageIds"))


async def test_public_images_cannot_be_shared(gql: GraphQLClient, db: Database) -> None:
    admin = await admin_account(db)
    (_, a), (bob, _) = await users(db, gql, 2)
    public = await make_image(db, admin, visibility="PUBLIC")
    expected = error("NotSupportedError", "PUBLIC_IMAGE_NOT_SHAREABLE")
    await refused_share(gql, db, [public], [bob.id], expected)
    await refused_share(a, db, [public], [bob.id], expected)


async def test_only_active_images_are_shared(gql: GraphQLClient, db: Database) -> None:
    (alice, a), (bob, _) = await users(db, gql, 2)
    for status in ("QUEUED", "SAVING", "KILLED"):
        image = await make_image(db, alice, status=status)
        await refused_share(a, db, [image], [bob.id], error("ConflictError", "IMAGE_NOT_ACTIVE"))


async def test_accounts_must_exist_and_not_be_the_caller(gql: GraphQLClient, db: Database) -> None:
    (alice, a), (bob, _) = await users(db, gql, 2)
    image = await make_image(db, alice)
    await refused_share(a, db, [image], [bob.id, alice.id], error(
        "ValidationError", "SHARE_WITH_SELF", field="input.accountIds[1]"))
    # The index is the item's in the request, duplicates included.
    await refused_share(a, db, [image], [bob.id, bob.id, alice.id, alice.id], error(
        "ValidationError", "SHARE_WITH_SELF", field="input.accountIds[2]"))
    await refused_share(a, db, [image], [bob.id, "acc-nosuchaccount"], error(
        "NotFoundError", "ACCOUNT_NOT_FOUND", resourceId="acc-nosuchaccount"))
    await refused_share(a, db, [image], [], error("ValidationError", "EMPTY_REQUEST", field="input.accountIds"))
    await refused_share(a, db, [image], [f"acc-{i}" for i in range(101)], error(
        "ValidationError", "TOO_MANY_ITEMS", field="input.accountIds"))


async def test_a_batch_is_atomic_and_answers_the_first_error(gql: GraphQLClient, db: Database) -> None:
    (alice, a), (bob, _), (erin, _) = await users(db, gql, 3)
    fine = await make_image(db, alice)
    foreign = await make_image(db, erin)
    saving = await make_image(db, alice, status="SAVING")
    await refused_share(a, db, [fine, foreign, saving], [bob.id], error(
        "NotFoundError", "IMAGE_NOT_FOUND", resourceId=foreign.id))
    await refused_share(a, db, [fine, saving, foreign], [bob.id], error("ConflictError", "IMAGE_NOT_ACTIVE"))
    assert pairs(await share_images(a, [fine.id], [bob.id])) == [(fine.id, bob.id, "PENDING")]


# ---------------------------------------------------------------- unshareImages


async def test_owner_unshares_pairs_and_the_count_is_returned(gql: GraphQLClient, db: Database) -> None:
    (alice, a), (bob, b), (carol, _), (dave, _) = await users(db, gql, 4)
    one, two = await make_image(db, alice), await make_image(db, alice)
    await share_images(a, [one.id, two.id], [bob.id, carol.id, dave.id])
    await set_membership(b, [one.id], "ACCEPTED")
    assert (await unshare_images(a, [one.id, two.id], [bob.id, carol.id]))["removed"] == 4
    assert await member_rows(db, one.id) == await member_rows(db, two.id) == [(dave.id, "PENDING")]
    # Sharing again starts a new membership: PENDING, not the old ACCEPTED.
    assert pairs(await share_images(a, [one.id], [bob.id])) == [(one.id, bob.id, "PENDING")]


async def test_unshare_refusals_change_nothing(gql: GraphQLClient, db: Database) -> None:
    admin = await admin_account(db)
    (alice, a), (bob, b), (carol, _), (erin, e) = await users(db, gql, 4)
    image = await make_image(db, alice)
    public = await make_image(db, admin, visibility="PUBLIC")
    await share(db, image, bob, "ACCEPTED")
    await share(db, image, carol, "PENDING")
    before = await member_rows(db, image.id)
    cases: list[tuple[GraphQLClient, list[str], list[str], dict[str, Any]]] = [
        (b, [image.id], [carol.id], error("ForbiddenError", "NOT_OWNER")),
        (b, [image.id], [bob.id], error("ForbiddenError", "NOT_OWNER")),  # a member leaves by rejecting
        (e, [image.id], [bob.id], error("NotFoundError", "IMAGE_NOT_FOUND", resourceId=image.id)),
        (gql, [image.id], [bob.id], error("NotFoundError", "IMAGE_NOT_FOUND", resourceId=image.id)),
        (a, [image.id, public.id], [bob.id], error("ForbiddenError", "PUBLIC_IMAGE_READ_ONLY")),
        (a, [image.id], [bob.id, erin.id], error("NotFoundError", "MEMBER_NOT_FOUND", resourceId=erin.id)),
        (a, [image.id], [bob.id, "acc-nosuchaccount"], error("NotFoundError", "MEMBER_NOT_FOUND",
                                                             resourceId="acc-nosuchaccount")),
        (a, [], [bob.id], error("ValidationError", "EMPTY_REQUEST", field="input.imageIds")),
        (a, [image.id], [], error("ValidationError", "EMPTY_REQUEST", field="input.accountIds")),
    ]
    for client, images, accounts, expected in cases:
        assert without_message(await unshare_images(client, images, accounts)) == expected, expected
        assert await member_rows(db, image.id) == before
    assert without_message(await unshare_images(gql, [public.id], [bob.id])) == error(
        "NotFoundError", "MEMBER_NOT_FOUND", resourceId=bob.id)


async def test_unshared_image_is_gone_for_the_former_member_everywhere(gql: GraphQLClient, db: Database) -> None:
    (alice, a), (bob, b), (carol, _) = await users(db, gql, 3)
    image = await make_image(db, alice)
    await share(db, image, bob, "REJECTED")
    await unshare_images(a, [image.id], [bob.id])
    assert (await b.execute(GET_IMAGE, {"id": image.id}))["image"] is None
    assert await list_ids(b, filter=ALL_STATUSES) == []
    gone = error("NotFoundError", "IMAGE_NOT_FOUND", resourceId=image.id)
    assert without_message(await share_images(b, [image.id], [carol.id])) == gone
    assert without_message(await unshare_images(b, [image.id], [bob.id])) == gone


# ---------------------------------------------------------------- updateImageMembership


async def test_only_the_member_answers_a_share(gql: GraphQLClient, db: Database) -> None:
    admin = await admin_account(db)
    (alice, a), (bob, b), (_, e) = await users(db, gql, 3)
    image = await make_image(db, alice)
    public = await make_image(db, admin, visibility="PUBLIC")
    await share(db, image, bob, "PENDING")
    before = await member_rows(db, image.id)
    not_member = error("ForbiddenError", "NOT_MEMBER")
    cases: list[tuple[GraphQLClient, list[str], str, dict[str, Any]]] = [
        (a, [image.id], "ACCEPTED", not_member),
        (a, [image.id], "REJECTED", not_member),
        (b, [public.id], "ACCEPTED", not_member),
        (e, [image.id], "ACCEPTED", error("NotFoundError", "IMAGE_NOT_FOUND", resourceId=image.id)),
        (b, [image.id], "PENDING", error("ValidationError", "INVALID_MEMBER_STATUS", field="input.status")),
        (b, [], "ACCEPTED", error("ValidationError", "EMPTY_REQUEST", field="input.imageIds")),
    ]
    for client, images, status, expected in cases:
        assert without_message(await set_membership(client, images, status)) == expected, expected
        assert await member_rows(db, image.id) == before


async def test_membership_batches_are_atomic(gql: GraphQLClient, db: Database) -> None:
    (alice, _), (bob, b) = await users(db, gql, 2)
    shared, own = await make_image(db, alice), await make_image(db, bob)
    unshared = await make_image(db, alice)
    await share(db, shared, bob, "PENDING")
    assert without_message(await set_membership(b, [shared.id, unshared.id], "ACCEPTED")) == error(
        "NotFoundError", "IMAGE_NOT_FOUND", resourceId=unshared.id)
    assert without_message(await set_membership(b, [shared.id, own.id], "ACCEPTED")) == error(
        "ForbiddenError", "NOT_MEMBER")
    assert await member_rows(db, shared.id) == [(bob.id, "PENDING")]
    second = await make_image(db, alice)
    await share(db, second, bob, "REJECTED")
    done = await set_membership(b, [second.id, shared.id], "ACCEPTED")
    assert pairs(done) == [(second.id, bob.id, "ACCEPTED"), (shared.id, bob.id, "ACCEPTED")]


async def test_answering_with_the_same_status_changes_nothing(gql: GraphQLClient, db: Database) -> None:
    (alice, a), (bob, b) = await users(db, gql, 2)
    image = await make_image(db, alice)
    await share_images(a, [image.id], [bob.id])
    first = (await set_membership(b, [image.id], "ACCEPTED"))["members"][0]
    again = (await set_membership(b, [image.id], "ACCEPTED"))["members"][0]
    assert again == first


# ---------------------------------------------------------------- encrypted images


async def test_images_under_the_default_key_cannot_be_shared(
    gql: GraphQLClient, db: Database, live_server: LiveServer
) -> None:
    (alice, a), (bob, _) = await users(db, gql, 2)
    _, kms = data_plane(db, live_server.settings)
    default = await kms.ensure_default_key(alice.id)
    image = await make_image_with_data(db, live_server.settings, alice, b"secret" * 1000, kms_key_id=default.id)
    await refused_share(a, db, [image], [bob.id], error("NotSupportedError", "SHARE_DEFAULT_KEY_ENCRYPTED"))
    # Even a grant would not help: the default key is not granted to anyone.
    plain = await make_image(db, alice)
    await refused_share(a, db, [plain, image], [bob.id], error("NotSupportedError", "SHARE_DEFAULT_KEY_ENCRYPTED"))


async def test_a_custom_key_needs_a_decrypt_grant_for_every_recipient(
    gql: GraphQLClient, db: Database, live_server: LiveServer
) -> None:
    (alice, a), (bob, _), (carol, _) = await users(db, gql, 3)
    _, kms = data_plane(db, live_server.settings)
    owner = Caller(alice.id, alice.name, alice.role)
    key_id = await make_kms_key(db, live_server.settings, alice)
    image = await make_image_with_data(db, live_server.settings, alice, b"secret" * 1000, kms_key_id=key_id)
    required = error("KmsKeyError", "KMS_GRANT_REQUIRED", keyId=key_id)

    await refused_share(a, db, [image], [bob.id], required)
    await kms.create_grant(owner, key_id, bob.id, [GrantOperation.DESCRIBE_KEY])
    await refused_share(a, db, [image], [bob.id], required)  # seeing the key is not decrypting with it
    bob_grant = await kms.create_grant(owner, key_id, bob.id, [GrantOperation.DECRYPT_DATA_KEY])
    await refused_share(a, db, [image], [bob.id, carol.id], required)  # carol has none: nobody is added
    await kms.create_grant(owner, key_id, carol.id, [GrantOperation.DESCRIBE_KEY, GrantOperation.DECRYPT_DATA_KEY])
    done = await share_images(a, [image.id], [bob.id, carol.id])
    assert pairs(done) == [(image.id, bob.id, "PENDING"), (image.id, carol.id, "PENDING")]

    # The rule is checked whenever the image is shared, also for existing members.
    await kms.revoke_grant(owner, key_id, bob_grant.id)
    await refused_share(a, db, [image], [bob.id], required)
    # An unencrypted image in the same batch does not change the answer.
    plain = await make_image(db, alice)
    await refused_share(a, db, [plain, image], [bob.id], required)


async def test_concurrent_shares_with_the_same_accounts_do_not_deadlock(gql: GraphQLClient, db: Database) -> None:
    """Each new membership updates its account's SHARED counter (image_counts, by trigger),
    locking it: two owners sharing with [x, y] and [y, x] at once locked them in opposite
    orders and PostgreSQL aborted one share (an internal error). A pause after each member
    insert makes the two overlap every time."""
    if db.engine.dialect.name != "postgresql":
        pytest.skip("PostgreSQL's row locks (SQLite runs one write transaction at a time)")
    from sqlalchemy import text

    alice, alice_t = await make_account(db)
    bob, bob_t = await make_account(db)
    x, _ = await make_account(db)
    y, _ = await make_account(db)
    mine, his = await make_image(db, alice), await make_image(db, bob)
    pause = [
        ("CREATE FUNCTION test_pause_member() RETURNS trigger LANGUAGE plpgsql AS "
         "$$ BEGIN PERFORM pg_sleep(0.3); RETURN NULL; END $$"),
        "CREATE TRIGGER zz_test_pause AFTER INSERT ON image_members FOR EACH ROW EXECUTE FUNCTION test_pause_member()",
    ]
    async with db.engine.begin() as conn:
        for statement in pause:
            await conn.execute(text(statement))
    try:
        first, second = await asyncio.gather(share_images(gql.as_(alice_t), [mine.id], [x.id, y.id]),
                                             share_images(gql.as_(bob_t), [his.id], [y.id, x.id]))
    finally:
        async with db.engine.begin() as conn:
            await conn.execute(text("DROP TRIGGER zz_test_pause ON image_members"))
            await conn.execute(text("DROP FUNCTION test_pause_member()"))
    assert [m["account"]["id"] for m in first["members"]] == [x.id, y.id]
    assert [m["account"]["id"] for m in second["members"]] == [y.id, x.id]
    for account in (x, y):
        async with db.uow(account.id, write=False) as uow:
            counts = await uow.session.execute(text(
                "SELECT member_status, sum(n) FROM image_counts WHERE account_id = :a AND scope = 'SHARED' "
                "GROUP BY member_status"), {"a": account.id})
            assert dict(counts.all()) == {"PENDING": 2}


async def test_concurrent_deletes_of_shared_images_do_not_deadlock(gql: GraphQLClient, db: Database) -> None:
    """Each membership an image's deletion removes updates its account's SHARED counter,
    locking it: Alice's images shared with y then x, Bob's with x then y (in id and storage
    order), deleted at once, locked the counters in opposite orders and PostgreSQL aborted
    one delete (an internal error). A pause after each member delete makes the two overlap
    every time; the loser now runs again."""
    if db.engine.dialect.name != "postgresql":
        pytest.skip("PostgreSQL's row locks (SQLite runs one write transaction at a time)")
    from sqlalchemy import text

    (alice, a), (bob, b), (x, xc), (y, yc) = await users(db, gql, 4)
    mine = [await make_image(db, alice, id=f"img-deadlock-a{i}") for i in (1, 2)]
    his = [await make_image(db, bob, id=f"img-deadlock-b{i}") for i in (1, 2)]
    for image, member in ((mine[0], y), (mine[1], x), (his[0], x), (his[1], y)):
        await share(db, image, member, "PENDING")
    pause = [
        ("CREATE FUNCTION test_pause_member() RETURNS trigger LANGUAGE plpgsql AS "
         "$$ BEGIN PERFORM pg_sleep(0.3); RETURN NULL; END $$"),
        "CREATE TRIGGER zz_test_pause AFTER DELETE ON image_members FOR EACH ROW EXECUTE FUNCTION test_pause_member()",
    ]
    async with db.engine.begin() as conn:
        for statement in pause:
            await conn.execute(text(statement))
    try:
        first, second = await asyncio.gather(delete_images(a, [i.id for i in mine]),
                                             delete_images(b, [i.id for i in his]))
    finally:
        async with db.engine.begin() as conn:
            await conn.execute(text("DROP TRIGGER zz_test_pause ON image_members"))
            await conn.execute(text("DROP FUNCTION test_pause_member()"))
    assert first == {"__typename": "DeleteImagesSuccess", "deletedIds": [i.id for i in mine]}
    assert second == {"__typename": "DeleteImagesSuccess", "deletedIds": [i.id for i in his]}
    for client in (xc, yc):
        assert await list_ids(client, filter=ALL_STATUSES) == []
        assert (await client.execute("{ images(filter: {visibility: [SHARED], memberStatus: [PENDING]}) "
                                     "{ totalCount } }"))["images"]["totalCount"] == 0
