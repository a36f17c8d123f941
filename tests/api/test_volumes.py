"""Volumes through the live server over HTTP: `volumes` lists the caller's (newest first, a
server's disks and detached ones), `deleteVolumes` deletes detached ones all or nothing and
releases their references as `deleteServer` releases its disks', so garbage collection takes
the chunks no one else holds while an image made from a volume keeps its own; a server's disk
is VOLUME_IN_USE; another account sees and deletes none of them.

The live server runs no worker: jobs run when a test says so (`run_jobs`), so an image made
from a volume is still QUEUED while the volume is deleted.
"""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from typing import Any

import pytest

from app.compute.tables import Volume
from app.config import Settings
from app.db.uow import Database
from app.domain.rules import BATCH_MAX
from app.services.registry import Services
from tests.api.replication_helpers import collect_garbage, read_back
from tests.api.test_backups import chunk_refs, manifest_refs
from tests.api.test_compute_api import create_server, create_volume, image_from_volume, quick_image
from tests.compute.conftest import MiB, manifest_count, run_jobs
from tests.conftest import GraphQLClient
from tests.factories import built_services, make_account

VOLUMES = """query($first: Int, $after: String) { volumes(first: $first, after: $after) {
  totalCount pageInfo { hasNextPage hasPreviousPage startCursor endCursor }
  edges { cursor node { id name role sizeGb serverId } } } }"""
DELETE = """mutation($ids: [ID!]!) { deleteVolumes(input: {ids: $ids}) { __typename
  ... on DeleteVolumesSuccess { deletedIds } ... on UserError { code message }
  ... on NotFoundError { resourceId } ... on ValidationError { field } } }"""
ONE = "query($id: ID!) { volume(id: $id) { id } node(id: $id) { id } }"
IMAGE = "query($id: ID!) { image(id: $id) { ... on ImageBase { status disks { storedBytes } } } }"


@pytest.fixture
async def services(settings: Settings, db: Database) -> AsyncIterator[Services]:
    """The service layer on the test's loop, over the live server's database and data: it
    writes into volumes as a guest would, and runs the queued jobs."""
    async with built_services(settings, db) as built:
        yield built


async def volumes(q: GraphQLClient, **variables: Any) -> dict[str, Any]:
    return (await q.execute(VOLUMES, variables))["volumes"]  # type: ignore[no-any-return]


async def listed(q: GraphQLClient) -> list[str]:
    return [e["node"]["id"] for e in (await volumes(q))["edges"]]


async def delete_volumes(q: GraphQLClient, ids: list[str]) -> dict[str, Any]:
    return (await q.execute(DELETE, {"ids": ids}))["deleteVolumes"]  # type: ignore[no-any-return]


def not_found(volume_id: str) -> dict[str, Any]:
    return {"__typename": "NotFoundError", "code": "VOLUME_NOT_FOUND",
            "message": "No volume with this id belongs to the caller.", "resourceId": volume_id}


def in_use(volume_id: str, server_id: str) -> dict[str, Any]:
    return {"__typename": "ConflictError", "code": "VOLUME_IN_USE",
            "message": f"Volume {volume_id} is a disk of server {server_id}: it goes with the server (deleteServer)."}


async def volume_row(db: Database, volume_id: str) -> Volume | None:
    async with db.uow(write=False) as uow:
        return await uow.compute.volume_any(volume_id)


async def manifest_of(db: Database, volume_id: str) -> str:
    row = await volume_row(db, volume_id)
    assert row is not None
    return row.manifest_id


async def digests(services: Services, manifest_id: str) -> set[str]:
    return {r.digest for r in (await services.chunks.load(manifest_id))[1] if r.digest}


async def blank_volume(q: GraphQLClient, name: str = "scratch") -> str:
    made = await create_volume(q, name=name, sizeGb=1)
    assert made["__typename"] == "CreateVolumeSuccess", made
    return str(made["volume"]["id"])


# ---------------------------------------------------------------- a detached volume's way out


async def test_a_detached_volume_is_deleted_and_only_its_own_chunks_collected(
    gql: GraphQLClient, db: Database, settings: Settings, services: Services
) -> None:
    alice, alice_t = await make_account(db)
    q = gql.as_(alice_t)
    volume_id = await blank_volume(q)
    first = secrets.token_bytes(5 * MiB)  # two chunks: 4 MiB and 1 MiB
    await services.compute.write_volume(volume_id, 0, first)
    imaged = await manifest_of(db, volume_id)
    made = await image_from_volume(q, volumeId=volume_id)
    [job] = await run_jobs(services)
    assert job.status == "SUCCESS"
    image_id = made["images"][0]["id"]
    # The guest rewrites the first chunk: the volume's manifest now shares only the second
    # chunk with the image's.
    await services.compute.write_volume(volume_id, 0, secrets.token_bytes(4 * MiB))
    current = await manifest_of(db, volume_id)
    kept, shared, own = (await digests(services, imaged) - await digests(services, current),
                         await digests(services, imaged) & await digests(services, current),
                         await digests(services, current) - await digests(services, imaged))
    assert (len(kept), len(shared), len(own)) == (1, 1, 1)
    assert await manifest_refs(db, [imaged, current]) == [1, 1]  # the image's, the volume's
    assert await chunk_refs(db, kept | shared | own) == {**{d: 1 for d in kept | own}, **{d: 2 for d in shared}}

    assert [e["node"] for e in (await volumes(q))["edges"]] == [
        {"id": volume_id, "name": "scratch", "role": "DATA", "sizeGb": 1, "serverId": None}]
    assert await delete_volumes(q, [volume_id]) == {"__typename": "DeleteVolumesSuccess", "deletedIds": [volume_id]}
    assert await volume_row(db, volume_id) is None
    # The volume's one reference went, through the path deleteServer's disks take: its manifest
    # with it, the chunk only it held to no reference; the image's manifest and chunks stay.
    assert await manifest_refs(db, [imaged, current]) == [1, None]
    assert await chunk_refs(db, kept | shared | own) == {**{d: 1 for d in kept | shared}, **{d: 0 for d in own}}
    assert await collect_garbage(db, settings) == 1
    assert await read_back(db, settings, alice, imaged) == first
    assert await q.execute(IMAGE, {"id": image_id}) == {"image": {"status": "ACTIVE", "disks": [{"storedBytes": 5 * MiB}]}}

    assert await volumes(q) == {"totalCount": 0, "edges": [], "pageInfo": {
        "hasNextPage": False, "hasPreviousPage": False, "startCursor": None, "endCursor": None}}
    assert await q.execute(ONE, {"id": volume_id}) == {"volume": None, "node": None}
    assert await delete_volumes(q, [volume_id]) == not_found(volume_id)


async def test_a_volume_an_image_is_being_made_from_can_be_deleted(
    gql: GraphQLClient, db: Database, settings: Settings, services: Services
) -> None:
    """As deleteServer with a server being imaged: the request took the image's own reference,
    so the volume's going changes nothing for the job, which then saves the image."""
    alice, alice_t = await make_account(db)
    q = gql.as_(alice_t)
    volume_id = await blank_volume(q)
    data = secrets.token_bytes(5 * MiB)
    await services.compute.write_volume(volume_id, 0, data)
    manifest_id = await manifest_of(db, volume_id)
    made = await image_from_volume(q, volumeId=volume_id)
    assert (made["images"][0]["status"], made["job"]["status"]) == ("QUEUED", "INIT")
    assert await manifest_refs(db, [manifest_id]) == [2]

    assert await delete_volumes(q, [volume_id]) == {"__typename": "DeleteVolumesSuccess", "deletedIds": [volume_id]}
    assert await manifest_refs(db, [manifest_id]) == [1]
    assert await collect_garbage(db, settings) == 0
    [job] = await run_jobs(services)
    assert (job.status, job.result) == ("SUCCESS", {"imageId": made["images"][0]["id"]})
    image = await q.execute(IMAGE, {"id": made["images"][0]["id"]})
    assert image == {"image": {"status": "ACTIVE", "disks": [{"storedBytes": 5 * MiB}]}}
    assert await read_back(db, settings, alice, manifest_id) == data


async def test_a_servers_disks_are_in_use_until_deleteserver_keeps_them(
    gql: GraphQLClient, db: Database, settings: Settings
) -> None:
    alice, alice_t = await make_account(db)
    q = gql.as_(alice_t)
    source = await quick_image(db, settings, alice)
    server = (await create_server(q, imageId=source.id, dataDisks=[{"sizeGb": 2}]))["server"]
    system, data = (v["id"] for v in server["volumes"])
    assert sorted(await listed(q)) == sorted([system, data])
    assert {e["node"]["id"]: e["node"]["serverId"] for e in (await volumes(q))["edges"]} == {
        system: server["id"], data: server["id"]}
    for volume_id in (system, data):
        assert await delete_volumes(q, [volume_id]) == in_use(volume_id, server["id"])

    done = await q.execute("mutation($id: ID!) { deleteServer(input: {id: $id, deleteVolumes: false}) { __typename } }",
                           {"id": server["id"]})
    assert done == {"deleteServer": {"__typename": "DeleteServerSuccess"}}
    assert [e["node"] for e in (await volumes(q))["edges"]] == [
        {"id": data, "name": "web-1-data1", "role": "DATA", "sizeGb": 2, "serverId": None}]
    manifests = await manifest_count(db)
    assert await delete_volumes(q, [data]) == {"__typename": "DeleteVolumesSuccess", "deletedIds": [data]}
    assert await manifest_count(db) == manifests - 1  # the blank disk's own manifest
    assert await listed(q) == []


async def test_another_account_sees_and_deletes_none_of_them(
    gql: GraphQLClient, db: Database, settings: Settings
) -> None:
    alice, alice_t = await make_account(db)
    _, bob_t = await make_account(db)
    q, bob = gql.as_(alice_t), gql.as_(bob_t)
    source = await quick_image(db, settings, alice)
    server = (await create_server(q, imageId=source.id))["server"]
    attached = server["volumes"][0]["id"]
    detached = (await create_volume(q, sizeGb=1, imageId=source.id))["volume"]["id"]
    manifest_id = source.disks[0]["manifestId"]
    assert await manifest_refs(db, [manifest_id]) == [3]  # the image, the server's disk, the volume

    assert await volumes(bob) == {"totalCount": 0, "edges": [], "pageInfo": {
        "hasNextPage": False, "hasPreviousPage": False, "startCursor": None, "endCursor": None}}
    for volume_id in (detached, attached):
        # Another account's volume is missing, attached or not.
        assert await delete_volumes(bob, [volume_id]) == not_found(volume_id)
        assert await bob.execute(ONE, {"id": volume_id}) == {"volume": None, "node": None}
    assert await delete_volumes(bob, ["vol-nothing", detached]) == not_found("vol-nothing")
    assert await delete_volumes(q, ["vol-nothing"]) == not_found("vol-nothing")
    assert await manifest_refs(db, [manifest_id]) == [3]
    assert await listed(q) == [detached, attached]


async def test_a_batch_with_one_refused_volume_deletes_nothing(
    gql: GraphQLClient, db: Database, settings: Settings
) -> None:
    alice, alice_t = await make_account(db)
    q = gql.as_(alice_t)
    source = await quick_image(db, settings, alice, kind="DATA_DISK", os_type=None)
    first = (await create_volume(q, name="a", sizeGb=1, imageId=source.id))["volume"]["id"]
    second = (await create_volume(q, name="b", sizeGb=1, imageId=source.id))["volume"]["id"]
    system = await quick_image(db, settings, alice)
    server = (await create_server(q, imageId=system.id, dataDisks=[{"sizeGb": 1, "imageId": source.id}]))["server"]
    disk = server["volumes"][1]["id"]
    manifest_id = source.disks[0]["manifestId"]
    assert await manifest_refs(db, [manifest_id]) == [4]  # the image, the two volumes, the server's data disk

    assert await delete_volumes(q, [first, "vol-nothing", second]) == not_found("vol-nothing")
    assert await delete_volumes(q, [first, disk, second]) == in_use(disk, server["id"])
    assert await delete_volumes(q, []) == {"__typename": "ValidationError", "code": "EMPTY_REQUEST",
                                           "message": "The request names nothing to act on.", "field": "input.ids"}
    too_many = await delete_volumes(q, [first] * (BATCH_MAX + 1))
    assert (too_many["__typename"], too_many["code"], too_many["field"]) == (
        "ValidationError", "TOO_MANY_ITEMS", "input.ids")
    assert (await volumes(q))["totalCount"] == 4
    assert await manifest_refs(db, [manifest_id]) == [4]

    # Ids named twice are one, each volume's reference released once; the answer keeps the
    # request's order.
    done = await delete_volumes(q, [second, first, second])
    assert done == {"__typename": "DeleteVolumesSuccess", "deletedIds": [second, first]}
    assert await manifest_refs(db, [manifest_id]) == [2]
    assert sorted(await listed(q)) == sorted(v["id"] for v in server["volumes"])


# ---------------------------------------------------------------- the list


async def test_volumes_are_paged_newest_first(gql: GraphQLClient, db: Database, settings: Settings) -> None:
    alice, alice_t = await make_account(db)
    q = gql.as_(alice_t)
    made = [await blank_volume(q, name) for name in ("a", "b", "c")]

    page1 = await volumes(q, first=2)
    assert [e["node"]["id"] for e in page1["edges"]] == [made[2], made[1]]
    assert [e["node"]["name"] for e in page1["edges"]] == ["c", "b"]
    assert page1["totalCount"] == 3
    assert page1["pageInfo"] == {"hasNextPage": True, "hasPreviousPage": False,
                                 "startCursor": page1["edges"][0]["cursor"], "endCursor": page1["edges"][1]["cursor"]}
    page2 = await volumes(q, first=2, after=page1["pageInfo"]["endCursor"])
    assert [e["node"]["id"] for e in page2["edges"]] == [made[0]]
    assert (page2["totalCount"], page2["pageInfo"]["hasNextPage"], page2["pageInfo"]["hasPreviousPage"]) == (
        3, False, True)
    assert await listed(q) == made[::-1]  # first defaults to 50
    assert (await volumes(q, first=0))["edges"] == []

    for variables, code in (({"first": 1001}, "INVALID_PAGE_SIZE"), ({"first": -1}, "INVALID_PAGE_SIZE"),
                            ({"after": "not-a-cursor"}, "INVALID_CURSOR")):
        body = (await q.raw(VOLUMES, variables)).json()
        assert body["data"] is None and [e["extensions"]["code"] for e in body["errors"]] == [code], variables
    # A cursor of another list is not one of this list's, nor this list's one of another's.
    source = await quick_image(db, settings, alice)
    await create_server(q, imageId=source.id)
    servers = await q.execute("{ servers(first: 1) { pageInfo { endCursor } } }")
    body = (await q.raw(VOLUMES, {"after": servers["servers"]["pageInfo"]["endCursor"]})).json()
    assert [e["extensions"]["code"] for e in body["errors"]] == ["INVALID_CURSOR"]
    body = (await q.raw("query($after: String) { servers(after: $after) { totalCount } }",
                        {"after": page1["pageInfo"]["endCursor"]})).json()
    assert [e["extensions"]["code"] for e in body["errors"]] == ["INVALID_CURSOR"]
