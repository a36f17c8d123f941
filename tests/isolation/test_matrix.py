"""The tenant-isolation matrix: every image operation against every caller role, and the
account-private resources (jobs, servers, volumes, backups, buckets, KMS keys) against owner,
stranger, administrator and no token. The expected outcome of every cell comes from the two
tables below, which a reader can review at a glance.

Roles: owner; PENDING, ACCEPTED and REJECTED members; a former member (unshared); a
stranger; an administrator (who has no access to private images); no token (HTTP 401).
Outcomes: a payload `__typename`, `Private`/`Shared` for the union member an image query
returns, `null`, `listed`/`unlisted` for membership in the default `images` list, `401`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import pytest

from app.compute.tables import Backup
from app.config import Settings
from app.db.tables import Account, Image
from app.db.types import new_id, utcnow
from app.db.uow import Database
from tests.conftest import GraphQLClient
from tests.factories import make_account, make_image_with_data, make_kms_key, share, unshare

ROLES = ("owner", "pending", "accepted", "rejected", "former", "stranger", "admin", "anonymous")

#: operation → outcome per role, in ROLES order. Members may look and (ACCEPTED) use; only the
#: owner manages; everyone else cannot tell the image exists.
IMAGE_MATRIX: dict[str, tuple[str, ...]] = {
    "image": ("Private", "Shared", "Shared", "Shared", "null", "null", "null", "401"),
    "node": ("Private", "Shared", "Shared", "Shared", "null", "null", "null", "401"),
    "images": ("listed", "unlisted", "listed", "unlisted", "unlisted", "unlisted", "unlisted", "401"),
    "updateImage": ("UpdateImageSuccess", *["ForbiddenError"] * 3, *["NotFoundError"] * 3, "401"),
    "setImageProtection": ("UpdateImageSuccess", *["ForbiddenError"] * 3, *["NotFoundError"] * 3, "401"),
    "addImageTags": ("UpdateImageSuccess", *["ForbiddenError"] * 3, *["NotFoundError"] * 3, "401"),
    "removeImageTags": ("UpdateImageSuccess", *["ForbiddenError"] * 3, *["NotFoundError"] * 3, "401"),
    "shareImages": ("ShareImagesSuccess", *["ForbiddenError"] * 3, *["NotFoundError"] * 3, "401"),
    "unshareImages": ("UnshareImagesSuccess", *["ForbiddenError"] * 3, *["NotFoundError"] * 3, "401"),
    "updateImageMembership": ("ForbiddenError", *["UpdateImageMembershipSuccess"] * 3, *["NotFoundError"] * 3, "401"),
    "replicateImage": ("ImageJobSuccess", "NotFoundError", "ImageJobSuccess", "NotFoundError",
                       *["NotFoundError"] * 3, "401"),
    "createServer": ("CreateServerSuccess", "NotFoundError", "CreateServerSuccess", "NotFoundError",
                     *["NotFoundError"] * 3, "401"),
    "createVolume": ("CreateVolumeSuccess", "NotFoundError", "CreateVolumeSuccess", "NotFoundError",
                     *["NotFoundError"] * 3, "401"),
    "exportImage": ("ExportJobSuccess", *["ForbiddenError"] * 3, *["NotFoundError"] * 3, "401"),
    "deleteImages": ("DeleteImagesSuccess", *["ForbiddenError"] * 3, *["NotFoundError"] * 3, "401"),
}

PRIVATE_ROLES = ("owner", "stranger", "admin", "anonymous")
#: Resources only their account sees; the administrator is no exception.
PRIVATE_MATRIX: dict[str, tuple[str, ...]] = {
    "job": ("Job", "null", "null", "401"),
    "server": ("Server", "null", "null", "401"),
    "volume": ("Volume", "null", "null", "401"),
    "servers": ("listed", "unlisted", "unlisted", "401"),
    "volumes": ("listed", "unlisted", "unlisted", "401"),
    "deleteVolumes": ("DeleteVolumesSuccess", "NotFoundError", "NotFoundError", "401"),
    "backup": ("Backup", "null", "null", "401"),
    "backups": ("listed", "unlisted", "unlisted", "401"),
    "deleteBackups": ("DeleteBackupsSuccess", "NotFoundError", "NotFoundError", "401"),
    "createUploadUrl": ("CreateUploadUrlSuccess", "NotFoundError", "NotFoundError", "401"),
    "buckets": ("listed", "unlisted", "unlisted", "401"),
    "kmsKeys": ("listed", "unlisted", "unlisted", "401"),
    "disableKmsKey": ("KmsKeySuccess", "NotFoundError", "NotFoundError", "401"),
    "deleteServer": ("DeleteServerSuccess", "NotFoundError", "NotFoundError", "401"),
    "stopServer": ("StopServerSuccess", "NotFoundError", "NotFoundError", "401"),
    "startServer": ("StartServerSuccess", "NotFoundError", "NotFoundError", "401"),
    "exportImageList": ("ExportJobSuccess", "NotFoundError", "NotFoundError", "401"),
}


@dataclass
class World:
    db: Database
    settings: Settings
    gql: GraphQLClient
    owner: Account
    image: Image
    tokens: dict[str, str | None]
    accounts: dict[str, Account]
    extra: dict[str, str]


async def world(db: Database, settings: Settings, gql: GraphQLClient) -> World:
    owner, owner_token = await make_account(db)
    image = await make_image_with_data(db, settings, owner, b"\x11" * 100_000, tags={"keep": "x"})
    tokens: dict[str, str | None] = {"owner": owner_token, "admin": gql.token, "anonymous": None}
    accounts = {"owner": owner}
    for role in ("pending", "accepted", "rejected", "former", "stranger"):
        account, token = await make_account(db)
        tokens[role], accounts[role] = token, account
        if role in ("pending", "accepted", "rejected", "former"):
            await share(db, image, account, {"former": "ACCEPTED"}.get(role, role.upper()))
    await unshare(db, image, accounts["former"])
    accounts["target"], _ = await make_account(db)  # whom shareImages names: no role's own account
    return World(db, settings, gql, owner, image, tokens, accounts, {})


Outcome = Callable[[World, GraphQLClient], Awaitable[str]]


async def typename(client: GraphQLClient, query: str, variables: dict[str, Any]) -> str:
    response = await client.raw(query, variables)
    if response.status_code == 401:
        return "401"
    body = response.json()
    assert "errors" not in body, body
    [value] = body["data"].values()
    if value is None:
        return "null"
    return str(value["__typename"])


def image_op(query: str, variables: Callable[[World], dict[str, Any]]) -> Outcome:
    async def run(w: World, client: GraphQLClient) -> str:
        return await typename(client, query, variables(w))
    return run


async def image_query(w: World, client: GraphQLClient, field: str) -> str:
    got = await typename(client, f'query($id: ID!) {{ {field}(id: $id) {{ __typename }} }}', {"id": w.image.id})
    return {"PrivateImage": "Private", "SharedImage": "Shared"}.get(got, got)


async def listed(w: World, client: GraphQLClient, query: str, path: Callable[[dict[str, Any]], list[str]],
                 wanted: str) -> str:
    response = await client.raw(query)
    if response.status_code == 401:
        return "401"
    body = response.json()
    assert "errors" not in body, body
    return "listed" if wanted in path(body["data"]) else "unlisted"


async def export_image(w: World, client: GraphQLClient) -> str:
    """Into the owner's bucket: the others are refused before the bucket is looked at."""
    if "bucket" not in w.extra:
        owner = w.gql.as_(w.tokens["owner"])
        await owner.execute('mutation { createBucket(input: {name: "owners-exports"}) { __typename } }')
        w.extra["bucket"] = "owners-exports"
    return await typename(client, 'mutation($id: ID!) { exportImage(input: {imageId: $id, bucket: "owners-exports", '
                                  'key: "disk.qcow2"}) { __typename } }', {"id": w.image.id})


IMAGE_OPS: dict[str, Outcome] = {
    "image": lambda w, c: image_query(w, c, "image"),
    "node": lambda w, c: image_query(w, c, "node"),
    "images": lambda w, c: listed(w, c, "{ images(first: 1000) { edges { node { ... on ImageBase { id } } } } }",
                                  lambda d: [e["node"]["id"] for e in d["images"]["edges"]], w.image.id),
    "updateImage": image_op("mutation($id: ID!) { updateImage(input: {id: $id, name: \"renamed\"}) { __typename } }",
                            lambda w: {"id": w.image.id}),
    "setImageProtection": image_op(
        "mutation($id: ID!) { setImageProtection(input: {id: $id, protected: false}) { __typename } }",
        lambda w: {"id": w.image.id}),
    "addImageTags": image_op(
        'mutation($id: ID!) { addImageTags(input: {imageId: $id, tags: [{key: "k", value: "v"}]}) { __typename } }',
        lambda w: {"id": w.image.id}),
    "removeImageTags": image_op(
        'mutation($id: ID!) { removeImageTags(input: {imageId: $id, keys: ["keep"]}) { __typename } }',
        lambda w: {"id": w.image.id}),
    "shareImages": image_op(
        "mutation($id: ID!, $a: ID!) { shareImages(input: {imageIds: [$id], accountIds: [$a]}) { __typename } }",
        lambda w: {"id": w.image.id, "a": w.accounts["target"].id}),
    "unshareImages": image_op(
        "mutation($id: ID!, $a: ID!) { unshareImages(input: {imageIds: [$id], accountIds: [$a]}) { __typename } }",
        lambda w: {"id": w.image.id, "a": w.accounts["accepted"].id}),
    "updateImageMembership": image_op(
        "mutation($id: ID!) { updateImageMembership(input: {imageIds: [$id], status: ACCEPTED}) { __typename } }",
        lambda w: {"id": w.image.id}),
    "replicateImage": image_op(
        'mutation($id: ID!) { replicateImage(input: {imageId: $id, name: "copy"}) { __typename } }',
        lambda w: {"id": w.image.id}),
    "createServer": image_op(
        'mutation($id: ID!) { createServer(input: {name: "srv", imageId: $id}) { __typename } }',
        lambda w: {"id": w.image.id}),
    "createVolume": image_op(
        'mutation($id: ID!) { createVolume(input: {name: "vol", sizeGb: 1, imageId: $id}) { __typename } }',
        lambda w: {"id": w.image.id}),
    "exportImage": lambda w, c: export_image(w, c),
    "deleteImages": image_op("mutation($id: ID!) { deleteImages(input: {ids: [$id]}) { __typename } }",
                             lambda w: {"id": w.image.id}),
}


@pytest.mark.parametrize("operation", sorted(IMAGE_MATRIX))
async def test_image_operations_by_role(operation: str, gql: GraphQLClient, db: Database,
                                        settings: Settings) -> None:
    w = await world(db, settings, gql)
    expected = dict(zip(ROLES, IMAGE_MATRIX[operation], strict=True))
    # The owner goes last: its mutations change the image the other roles are tried on.
    order = [r for r in ROLES if r != "owner"] + ["owner"]
    got = {role: await IMAGE_OPS[operation](w, gql.as_(w.tokens[role])) for role in order}
    assert got == expected


async def private_world(db: Database, settings: Settings, gql: GraphQLClient) -> World:
    w = await world(db, settings, gql)
    owner = gql.as_(w.tokens["owner"])
    made = await owner.execute('mutation($id: ID!) { createServer(input: {name: "mine", imageId: $id}) { '
                               '... on CreateServerSuccess { server { id volumes { id } } } } }', {"id": w.image.id})
    server = made["createServer"]["server"]
    w.extra.update(server=server["id"], volume=server["volumes"][0]["id"])
    detached = await owner.execute('mutation { createVolume(input: {name: "spare", sizeGb: 1}) { '
                                   '... on CreateVolumeSuccess { volume { id } } } }')
    w.extra["detached"] = detached["createVolume"]["volume"]["id"]
    # A backup kept after its full-ECS image was deleted (no worker runs jobs here to save one).
    backup = Backup(id=new_id("bak"), account_id=w.owner.id, server_id=server["id"], region="region-1",
                    size_bytes=1 << 30, new_bytes=0, disks=[], created_at=utcnow())
    async with db.uow() as uow:
        await uow.compute.add(backup)
        await uow.commit()
    w.extra["backup"] = backup.id
    await owner.execute('mutation { createBucket(input: {name: "isolation-bucket"}) { __typename } }')
    w.extra["key"] = await make_kms_key(db, settings, w.owner)
    copy = await owner.execute('mutation($id: ID!) { replicateImage(input: {imageId: $id, name: "c"}) { '
                               '... on ImageJobSuccess { job { id } } } }', {"id": w.image.id})
    w.extra["job"] = copy["replicateImage"]["job"]["id"]
    return w


PRIVATE_OPS: dict[str, Outcome] = {
    "job": lambda w, c: typename(c, "query($id: ID!) { job(id: $id) { __typename } }", {"id": w.extra["job"]}),
    "server": lambda w, c: typename(c, "query($id: ID!) { server(id: $id) { __typename } }", {"id": w.extra["server"]}),
    "volume": lambda w, c: typename(c, "query($id: ID!) { volume(id: $id) { __typename } }", {"id": w.extra["volume"]}),
    "servers": lambda w, c: listed(w, c, "{ servers { edges { node { id } } } }",
                                   lambda d: [e["node"]["id"] for e in d["servers"]["edges"]], w.extra["server"]),
    "volumes": lambda w, c: listed(w, c, "{ volumes { edges { node { id } } } }",
                                   lambda d: [e["node"]["id"] for e in d["volumes"]["edges"]], w.extra["detached"]),
    "deleteVolumes": lambda w, c: typename(
        c, "mutation($v: ID!) { deleteVolumes(input: {ids: [$v]}) { __typename } }", {"v": w.extra["detached"]}),
    "backup": lambda w, c: typename(c, "query($id: ID!) { node(id: $id) { __typename } }", {"id": w.extra["backup"]}),
    "backups": lambda w, c: listed(w, c, "{ backups { edges { node { id } } } }",
                                   lambda d: [e["node"]["id"] for e in d["backups"]["edges"]], w.extra["backup"]),
    "deleteBackups": lambda w, c: typename(
        c, "mutation($b: ID!) { deleteBackups(input: {ids: [$b]}) { __typename } }", {"b": w.extra["backup"]}),
    "createUploadUrl": lambda w, c: typename(
        c, 'mutation { createUploadUrl(input: {bucket: "isolation-bucket", key: "k"}) { __typename } }', {}),
    "buckets": lambda w, c: listed(w, c, "{ buckets { name } }", lambda d: [b["name"] for b in d["buckets"]],
                                   "isolation-bucket"),
    "kmsKeys": lambda w, c: listed(w, c, "{ kmsKeys { edges { node { id } } } }",
                                   lambda d: [e["node"]["id"] for e in d["kmsKeys"]["edges"]], w.extra["key"]),
    "disableKmsKey": lambda w, c: typename(
        c, "mutation($k: ID!) { disableKmsKey(input: {keyId: $k}) { __typename } }", {"k": w.extra["key"]}),
    "deleteServer": lambda w, c: typename(
        c, "mutation($s: ID!) { deleteServer(input: {id: $s}) { __typename } }", {"s": w.extra["server"]}),
    "stopServer": lambda w, c: typename(
        c, "mutation($s: ID!) { stopServer(input: {id: $s}) { __typename } }", {"s": w.extra["server"]}),
    "startServer": lambda w, c: typename(
        c, "mutation($s: ID!) { startServer(input: {id: $s}) { __typename } }", {"s": w.extra["server"]}),
    "exportImageList": lambda w, c: typename(
        c, 'mutation { exportImageList(input: {visibility: PRIVATE, bucket: "isolation-bucket"}) { __typename } }', {}),
}


@pytest.mark.parametrize("operation", sorted(PRIVATE_MATRIX))
async def test_private_resources_by_role(operation: str, gql: GraphQLClient, db: Database,
                                         settings: Settings) -> None:
    w = await private_world(db, settings, gql)
    expected = dict(zip(PRIVATE_ROLES, PRIVATE_MATRIX[operation], strict=True))
    order = ["stranger", "admin", "anonymous", "owner"]
    got = {role: await PRIVATE_OPS[operation](w, gql.as_(w.tokens[role])) for role in order}
    assert got == expected


def test_matrix_size() -> None:
    """What the README's reliability section reports."""
    cells = sum(len(v) for v in IMAGE_MATRIX.values()) + sum(len(v) for v in PRIVATE_MATRIX.values())
    assert cells == len(IMAGE_MATRIX) * len(ROLES) + len(PRIVATE_MATRIX) * len(PRIVATE_ROLES) == 188
