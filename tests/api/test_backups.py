"""Full-ECS backups kept after their image, through the live server over HTTP: `backups` lists
the caller's (newest first, with their image, null once it is deleted), `deleteBackups`
deletes them all or nothing and releases their references as `deleteImages(deleteBackups:
true)` does, so garbage collection takes the chunks no one else holds; another account sees
and deletes none of them.

The live server runs one job worker, so the FULL_ECS jobs really run.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from app.compute.tables import Backup
from app.config import Settings
from app.datastore.tables import Chunk
from app.db.uow import Database
from app.domain.rules import BATCH_MAX
from tests.api.replication_helpers import collect_garbage, manifest
from tests.api.test_compute_api import create_server, image_from_server, quick_image, wait_job
from tests.compute.conftest import GiB, MiB
from tests.conftest import GraphQLClient
from tests.factories import data_plane, make_account

BACKUPS = """query($first: Int, $after: String) { backups(first: $first, after: $after) {
  totalCount pageInfo { hasNextPage hasPreviousPage startCursor endCursor }
  edges { cursor node { id serverId sizeBytes newBytes image { id status } } } } }"""
DELETE = """mutation($ids: [ID!]!) { deleteBackups(input: {ids: $ids}) { __typename
  ... on DeleteBackupsSuccess { deletedIds } ... on UserError { code message }
  ... on NotFoundError { resourceId } ... on ValidationError { field } } }"""
NODE = "query($id: ID!) { node(id: $id) { __typename id ... on Backup { serverId image { id } } } }"
IN_USE = ("Backup {} is image {}'s: delete the image with deleteImages (deleteBackups: true), or delete the "
          "image first.")


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return replace(settings, workers=1, job_poll_interval=0.05)


async def full_ecs(q: GraphQLClient, server_id: str) -> dict[str, Any]:
    """An ACTIVE FULL_ECS image of the server (its job run), with its backup."""
    made = await image_from_server(q, serverId=server_id, kind="FULL_ECS")
    job = await wait_job(q, made["job"]["id"])
    assert job["status"] == "SUCCESS", job
    return job["images"][0]  # type: ignore[no-any-return]


async def delete_images(q: GraphQLClient, ids: list[str], delete_backups: bool = False) -> None:
    data = await q.execute("""mutation($input: DeleteImagesInput!) { deleteImages(input: $input) {
      __typename ... on DeleteImagesSuccess { deletedIds } } }""", {"input": {"ids": ids, "deleteBackups": delete_backups}})
    assert data["deleteImages"] == {"__typename": "DeleteImagesSuccess", "deletedIds": ids}


async def kept_backup(q: GraphQLClient, server_id: str) -> str:
    """The backup of a FULL_ECS image of the server, kept when the image is deleted."""
    image = await full_ecs(q, server_id)
    await delete_images(q, [image["id"]])
    return str(image["backup"]["id"])


async def backups(q: GraphQLClient, **variables: Any) -> dict[str, Any]:
    return (await q.execute(BACKUPS, variables))["backups"]  # type: ignore[no-any-return]


async def delete_backups(q: GraphQLClient, ids: list[str]) -> dict[str, Any]:
    return (await q.execute(DELETE, {"ids": ids}))["deleteBackups"]  # type: ignore[no-any-return]


def not_found(backup_id: str) -> dict[str, Any]:
    return {"__typename": "NotFoundError", "code": "BACKUP_NOT_FOUND",
            "message": "No backup with this id belongs to the caller.", "resourceId": backup_id}


def in_use(backup_id: str, image_id: str) -> dict[str, Any]:
    return {"__typename": "ConflictError", "code": "BACKUP_IN_USE", "message": IN_USE.format(backup_id, image_id)}


async def backup_row(db: Database, backup_id: str) -> Backup | None:
    async with db.uow(write=False) as uow:
        return await uow.compute.backup_any(backup_id)


async def manifest_refs(db: Database, manifest_ids: list[str]) -> list[int | None]:
    """Each manifest's reference count; None once its last reference went (the row with it)."""
    return [found.refcount if (found := await manifest(db, i)) else None for i in manifest_ids]


async def chunk_refs(db: Database, digests: set[str]) -> dict[str, int]:
    async with db.uow(write=False) as uow:
        return {d: (await uow.session.get(Chunk, ("region-1", d))).refcount for d in sorted(digests)}  # type: ignore[union-attr]


# ---------------------------------------------------------------- a kept backup's way out


async def backup_manifests(db: Database, backup_id: str) -> list[str]:
    """The manifests of the backup's disks, in disk order."""
    row = await backup_row(db, backup_id)
    assert row is not None
    return [d["manifestId"] for d in row.disks]


async def test_a_kept_backup_is_listed_then_deleted_and_its_chunks_collected(
    gql: GraphQLClient, db: Database, settings: Settings
) -> None:
    alice, alice_t = await make_account(db)
    q = gql.as_(alice_t)
    source = await quick_image(db, settings, alice)  # 5 MiB of random data: two stored chunks
    server = (await create_server(q, imageId=source.id, dataDisks=[{"sizeGb": 1}]))["server"]
    image = await full_ecs(q, server["id"])
    backup_id = image["backup"]["id"]
    manifests = await backup_manifests(db, backup_id)
    assert manifests[0] == source.disks[0]["manifestId"]  # the server's system disk is the image's data
    chunks, _ = data_plane(db, settings)
    digests = {r.digest for r in (await chunks.load(manifests[0]))[1] if r.digest}
    assert len(digests) == 2

    # The image goes, its backup stays; so do the server and the source image: now only the
    # backup holds the data.
    await delete_images(q, [image["id"]], delete_backups=False)
    deleted = await q.execute("mutation($id: ID!) { deleteServer(input: {id: $id}) { __typename } }",
                              {"id": server["id"]})
    assert deleted == {"deleteServer": {"__typename": "DeleteServerSuccess"}}
    await delete_images(q, [source.id])
    assert await manifest_refs(db, manifests) == [1, 1]
    assert await chunk_refs(db, digests) == {d: 1 for d in digests}
    assert await collect_garbage(db, settings) == 0

    listed = await backups(q)
    assert listed["totalCount"] == 1
    assert [e["node"] for e in listed["edges"]] == [{
        "id": backup_id, "serverId": server["id"], "sizeBytes": 2 * GiB, "newBytes": 5 * MiB, "image": None}]
    node = await q.execute(NODE, {"id": backup_id})
    assert node == {"node": {"__typename": "Backup", "id": backup_id, "serverId": server["id"], "image": None}}

    assert await delete_backups(q, [backup_id]) == {"__typename": "DeleteBackupsSuccess", "deletedIds": [backup_id]}
    assert await backup_row(db, backup_id) is None
    # Its references went as deleteImages(deleteBackups: true) lets them go: the manifests with
    # their last one, the chunks to no reference, and garbage collection takes them.
    assert await manifest_refs(db, manifests) == [None, None]
    assert await chunk_refs(db, digests) == {d: 0 for d in digests}
    assert await collect_garbage(db, settings) == 2
    assert await backups(q) == {"totalCount": 0, "edges": [], "pageInfo": {
        "hasNextPage": False, "hasPreviousPage": False, "startCursor": None, "endCursor": None}}
    assert await q.execute(NODE, {"id": backup_id}) == {"node": None}
    assert await delete_backups(q, [backup_id]) == not_found(backup_id)


async def test_a_backup_whose_image_exists_is_in_use_and_stays(
    gql: GraphQLClient, db: Database, settings: Settings
) -> None:
    alice, alice_t = await make_account(db)
    q = gql.as_(alice_t)
    source = await quick_image(db, settings, alice)
    server = (await create_server(q, imageId=source.id, dataDisks=[{"sizeGb": 1}]))["server"]
    image = await full_ecs(q, server["id"])
    backup_id = image["backup"]["id"]
    manifests = await backup_manifests(db, backup_id)
    refs = await manifest_refs(db, manifests)
    assert refs == [4, 3]  # the system disk: the source, the server's disk, the image, the backup

    [edge] = (await backups(q))["edges"]
    assert edge["node"]["image"] == {"id": image["id"], "status": "ACTIVE"}
    assert await delete_backups(q, [backup_id]) == in_use(backup_id, image["id"])
    assert await backup_row(db, backup_id) is not None
    assert await manifest_refs(db, manifests) == refs
    assert [e["node"]["id"] for e in (await backups(q))["edges"]] == [backup_id]

    # deleteImages(deleteBackups: true) takes both, each with its references.
    await delete_images(q, [image["id"]], delete_backups=True)
    assert await backup_row(db, backup_id) is None
    assert await manifest_refs(db, manifests) == [n - 2 for n in refs if n is not None]
    assert (await backups(q))["totalCount"] == 0


async def test_another_account_sees_and_deletes_none_of_them(
    gql: GraphQLClient, db: Database, settings: Settings
) -> None:
    alice, alice_t = await make_account(db)
    _, bob_t = await make_account(db)
    q, bob = gql.as_(alice_t), gql.as_(bob_t)
    source = await quick_image(db, settings, alice)
    server = (await create_server(q, imageId=source.id))["server"]
    kept = await kept_backup(q, server["id"])
    used = (await full_ecs(q, server["id"]))["backup"]["id"]
    manifests = await backup_manifests(db, kept)
    refs = await manifest_refs(db, manifests)

    assert (await backups(bob))["totalCount"] == 0
    assert (await backups(bob))["edges"] == []
    for backup_id in (kept, used):
        assert await q.execute(NODE, {"id": backup_id}) != {"node": None}
        assert await bob.execute(NODE, {"id": backup_id}) == {"node": None}
        # Another account's backup is missing, whether or not its image exists.
        assert await delete_backups(bob, [backup_id]) == not_found(backup_id)
    assert await delete_backups(bob, ["bak-nothing", kept]) == not_found("bak-nothing")
    assert await backup_row(db, kept) is not None
    assert await manifest_refs(db, manifests) == refs
    assert [e["node"]["id"] for e in (await backups(q))["edges"]] == [used, kept]


async def test_a_batch_with_one_refused_backup_deletes_nothing(
    gql: GraphQLClient, db: Database, settings: Settings
) -> None:
    alice, alice_t = await make_account(db)
    q = gql.as_(alice_t)
    source = await quick_image(db, settings, alice)
    server = (await create_server(q, imageId=source.id))["server"]
    first, second = await kept_backup(q, server["id"]), await kept_backup(q, server["id"])
    image = await full_ecs(q, server["id"])
    used = image["backup"]["id"]

    assert await delete_backups(q, [first, "bak-nothing", second]) == not_found("bak-nothing")
    assert await delete_backups(q, [first, used, second]) == in_use(used, image["id"])
    assert (await backups(q))["totalCount"] == 3
    assert await delete_backups(q, []) == {"__typename": "ValidationError", "code": "EMPTY_REQUEST",
                                           "message": "The request names nothing to act on.", "field": "input.ids"}
    too_many = await delete_backups(q, [first] * (BATCH_MAX + 1))
    assert (too_many["code"], too_many["field"]) == ("TOO_MANY_ITEMS", "input.ids")
    assert (await backups(q))["totalCount"] == 3

    # Ids named twice are one; the answer keeps the request's order.
    done = await delete_backups(q, [second, first, second])
    assert done == {"__typename": "DeleteBackupsSuccess", "deletedIds": [second, first]}
    assert [e["node"]["id"] for e in (await backups(q))["edges"]] == [used]


# ---------------------------------------------------------------- the list


async def test_backups_are_paged_newest_first(gql: GraphQLClient, db: Database, settings: Settings) -> None:
    alice, alice_t = await make_account(db)
    q = gql.as_(alice_t)
    source = await quick_image(db, settings, alice)
    web = (await create_server(q, imageId=source.id, name="web"))["server"]
    db_server = (await create_server(q, imageId=source.id, name="db"))["server"]
    made = [await kept_backup(q, web["id"]), await kept_backup(q, db_server["id"])]
    live = await full_ecs(q, web["id"])
    made.append(live["backup"]["id"])

    page1 = await backups(q, first=2)
    assert [e["node"]["id"] for e in page1["edges"]] == [made[2], made[1]]
    assert [e["node"]["serverId"] for e in page1["edges"]] == [web["id"], db_server["id"]]
    assert [e["node"]["image"] for e in page1["edges"]] == [{"id": live["id"], "status": "ACTIVE"}, None]
    assert page1["totalCount"] == 3
    assert page1["pageInfo"] == {"hasNextPage": True, "hasPreviousPage": False,
                                 "startCursor": page1["edges"][0]["cursor"], "endCursor": page1["edges"][1]["cursor"]}
    page2 = await backups(q, first=2, after=page1["pageInfo"]["endCursor"])
    assert [e["node"]["id"] for e in page2["edges"]] == [made[0]]
    assert (page2["totalCount"], page2["pageInfo"]["hasNextPage"], page2["pageInfo"]["hasPreviousPage"]) == (
        3, False, True)
    assert [e["node"]["id"] for e in (await backups(q))["edges"]] == made[::-1]  # first defaults to 50

    for variables, code in (({"first": 1001}, "INVALID_PAGE_SIZE"), ({"first": -1}, "INVALID_PAGE_SIZE"),
                            ({"after": "not-a-cursor"}, "INVALID_CURSOR")):
        body = (await q.raw(BACKUPS, variables)).json()
        assert body["data"] is None and [e["extensions"]["code"] for e in body["errors"]] == [code], variables
    # A cursor of another list is not one of this list's.
    servers = await q.execute("{ servers(first: 1) { pageInfo { endCursor } } }")
    body = (await q.raw(BACKUPS, {"after": servers["servers"]["pageInfo"]["endCursor"]})).json()
    assert [e["extensions"]["code"] for e in body["errors"]] == ["INVALID_CURSOR"]
