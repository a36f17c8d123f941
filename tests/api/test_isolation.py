"""Tenant isolation: another account's private image does not exist for a stranger."""

from __future__ import annotations

from typing import Any

from app.db.uow import Database
from tests.api.ops import (
    GET_NODE,
    add_tags,
    delete_images,
    error,
    get_image,
    list_ids,
    publish,
    remove_tags,
    set_protection,
    update_image,
    without_message,
)
from tests.conftest import GraphQLClient
from tests.factories import make_account, make_image, member_rows, share, tag_rows, unshare

EVERY_MEMBER_STATUS = {"memberStatus": ["ACCEPTED", "PENDING", "REJECTED"]}


async def _every_mutation(client: GraphQLClient, image_id: str) -> list[dict[str, Any]]:
    return [
        await update_image(client, id=image_id, name="taken"),
        await update_image(client, id=image_id, description="taken", expectedVersion=1),
        await set_protection(client, image_id, True),
        await publish(client, image_id),
        await add_tags(client, image_id, {"owner": "me"}),
        await remove_tags(client, image_id, ["env"]),
        await delete_images(client, [image_id]),
    ]


async def _assert_invisible(client: GraphQLClient, image_id: str) -> None:
    assert await get_image(client, image_id) is None
    assert (await client.execute(GET_NODE, {"id": image_id}))["node"] is None
    for flt in ({}, EVERY_MEMBER_STATUS, {"ids": [image_id]}, {**EVERY_MEMBER_STATUS, "ids": [image_id]},
                {"visibility": ["SHARED"], **EVERY_MEMBER_STATUS}, {"visibility": ["PRIVATE"]}):
        assert image_id not in await list_ids(client, filter=flt), flt


async def test_a_stranger_gets_not_found_from_everything(gql: GraphQLClient, db: Database) -> None:
    alice, alice_t = await make_account(db)
    _, erin_t = await make_account(db)
    image = await make_image(db, alice, tags={"env": "prod"})
    before = await get_image(gql.as_(alice_t), image.id)
    not_found = error("NotFoundError", "IMAGE_NOT_FOUND", resourceId=image.id)
    for client in (gql.as_(erin_t), gql):  # a user, and an administrator: neither may see it
        for result in await _every_mutation(client, image.id):
            assert without_message(result) == not_found
        await _assert_invisible(client, image.id)
    assert await get_image(gql.as_(alice_t), image.id) == before
    assert await tag_rows(db, image.id) == {"env": "prod"}


async def test_a_batch_naming_a_foreign_image_is_not_found_and_deletes_nothing(
    gql: GraphQLClient, db: Database
) -> None:
    alice, _ = await make_account(db)
    erin, erin_t = await make_account(db)
    foreign = await make_image(db, alice)
    own = await make_image(db, erin)
    result = await delete_images(gql.as_(erin_t), [own.id, foreign.id])
    assert without_message(result) == error("NotFoundError", "IMAGE_NOT_FOUND", resourceId=foreign.id)
    assert await list_ids(gql.as_(erin_t)) == [own.id]


async def test_a_former_member_loses_sight_of_the_image(gql: GraphQLClient, db: Database) -> None:
    alice, _ = await make_account(db)
    bob, bob_t = await make_account(db)
    image = await make_image(db, alice, tags={"env": "prod"})
    await share(db, image, bob)
    q = gql.as_(bob_t)
    seen = await get_image(q, image.id)
    assert seen is not None and seen["__typename"] == "SharedImage"
    assert without_message(await update_image(q, id=image.id, name="x")) == error("ForbiddenError", "NOT_OWNER")

    await unshare(db, image, bob)
    assert await member_rows(db, image.id) == []
    await _assert_invisible(q, image.id)
    not_found = error("NotFoundError", "IMAGE_NOT_FOUND", resourceId=image.id)
    for result in await _every_mutation(q, image.id):
        assert without_message(result) == not_found


async def test_members_in_any_status_see_the_image_but_not_its_members(gql: GraphQLClient, db: Database) -> None:
    alice, _ = await make_account(db)
    bob, bob_t = await make_account(db)
    carol, _ = await make_account(db)
    image = await make_image(db, alice)
    await share(db, image, bob, "REJECTED")
    await share(db, image, carol, "ACCEPTED")
    response = await gql.as_(bob_t).raw(
        "query($id: ID!) { image(id: $id) { ... on SharedImage { members { totalCount } } } }", {"id": image.id})
    # SharedImage has no `members` field: other members are invisible to a member.
    assert response.status_code == 200
    assert response.json()["errors"][0]["message"].startswith("Cannot query field 'members' on type 'SharedImage'.")
    seen = await get_image(gql.as_(bob_t), image.id)
    assert seen is not None and seen["membership"]["status"] == "REJECTED"
    assert image.id not in await list_ids(gql.as_(bob_t))


ORIGIN = "query($id: ID!) { image(id: $id) { __typename ... on ImageBase { origin { type ref } } } }"


async def test_only_the_owner_sees_where_an_image_came_from(gql: GraphQLClient, db: Database) -> None:
    """The origin's ref names the owner's own resources (`bucket:key` of an upload, a server,
    a volume, a private source image): a member or any viewer of a public image sees the type."""
    alice, alice_t = await make_account(db)
    bob, bob_t = await make_account(db)
    shared = await make_image(db, alice, origin_type="FILE", origin_ref="alice-private:payroll/q3.raw")
    await share(db, shared, bob, "PENDING")
    public = await make_image(db, alice, visibility="PUBLIC", origin_type="SERVER", origin_ref="srv-alicesserver")
    for image, origin in ((shared, {"type": "FILE", "ref": "alice-private:payroll/q3.raw"}),
                          (public, {"type": "SERVER", "ref": "srv-alicesserver"})):
        owner_view = (await gql.as_(alice_t).execute(ORIGIN, {"id": image.id}))["image"]
        assert owner_view["origin"] == origin
        other_view = (await gql.as_(bob_t).execute(ORIGIN, {"id": image.id}))["image"]
        assert other_view["__typename"] in ("SharedImage", "PublicImage")
        assert other_view["origin"] == {"type": origin["type"], "ref": None}
