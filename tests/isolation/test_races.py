"""Races over real HTTP: one winner per version, deletes racing replications, exports racing
each other and deletes."""

from __future__ import annotations

import asyncio
from typing import Any

from app.config import Settings
from app.db.uow import Database
from tests.conftest import GraphQLClient
from tests.factories import make_account, make_image, make_image_with_data

UPDATE = """mutation($id: ID!, $v: Int!, $n: String!) { updateImage(input: {id: $id, expectedVersion: $v, name: $n}) {
  __typename ... on UserError { code } } }"""


async def test_concurrent_updates_one_winner_per_version(gql: GraphQLClient, db: Database) -> None:
    owner, token = await make_account(db)
    image = await make_image(db, owner)
    me = gql.as_(token)
    for round_ in range(3):
        version = image.version + round_
        results = await asyncio.gather(*(
            me.execute(UPDATE, {"id": image.id, "v": version, "n": f"name {round_} {i}"}) for i in range(8)
        ))
        outcomes = sorted(r["updateImage"]["__typename"] for r in results)
        assert outcomes == ["ConflictError"] * 7 + ["UpdateImageSuccess"]
        assert {r["updateImage"].get("code") for r in results} == {None, "VERSION_CONFLICT"}
    final = await me.execute("query($id: ID!) { image(id: $id) { ... on ImageBase { version } } }", {"id": image.id})
    assert final["image"]["version"] == image.version + 3


async def test_delete_racing_replications(gql: GraphQLClient, db: Database, settings: Settings) -> None:
    """Whatever wins, the invariants hold: the source is gone or intact, and every accepted
    copy holds its own reference to the data."""
    owner, token = await make_account(db)
    me = gql.as_(token)
    for attempt in range(3):
        image = await make_image_with_data(db, settings, owner, bytes([attempt + 1]) * 60_000)
        def replicate(image_id: str) -> Any:
            return me.execute('mutation($id: ID!) { replicateImage(input: {imageId: $id, name: "c"}) { __typename } }',
                              {"id": image_id})

        delete = me.execute("mutation($id: ID!) { deleteImages(input: {ids: [$id]}) { __typename } }", {"id": image.id})
        results = await asyncio.gather(replicate(image.id), replicate(image.id), delete)
        kinds = [next(iter(r.values()))["__typename"] for r in results]
        assert kinds[2] in ("DeleteImagesSuccess", "ConflictError")
        async with db.uow(owner.id, write=False) as uow:
            manifest = await uow.chunks.manifest(image.disks[0]["manifestId"])
        copies = kinds[:2].count("ImageJobSuccess")
        source_alive = kinds[2] != "DeleteImagesSuccess"
        expected_refs = copies + (1 if source_alive else 0)
        if expected_refs == 0:
            assert manifest is None
        else:
            assert manifest is not None and manifest.refcount == expected_refs, (kinds, manifest)


async def test_concurrent_exports_of_one_image_one_winner(gql: GraphQLClient, db: Database, settings: Settings) -> None:
    """One export per image at a time, whatever the interleaving: one job, and one reference
    taken on the image's data; an export racing a delete leaves the data held exactly as
    many times as there are holders."""
    owner, token = await make_account(db)
    me = gql.as_(token)
    await me.execute('mutation { createBucket(input: {name: "race-exports"}) { __typename } }')
    export = """mutation($id: ID!, $k: String!) { exportImage(input: {imageId: $id, bucket: "race-exports", key: $k}) {
      __typename ... on UserError { code } } }"""
    image = await make_image_with_data(db, settings, owner, b"\x07" * 60_000)
    results = await asyncio.gather(*(me.execute(export, {"id": image.id, "k": f"k{i}"}) for i in range(8)))
    outcomes = sorted((r["exportImage"]["__typename"], r["exportImage"].get("code")) for r in results)
    assert outcomes == [("ConflictError", "EXPORT_IN_PROGRESS")] * 7 + [("ExportJobSuccess", None)]
    async with db.uow(owner.id, write=False) as uow:
        manifest = await uow.chunks.manifest(image.disks[0]["manifestId"])
    assert manifest is not None and manifest.refcount == 2  # the image and its one export

    for attempt in range(3):
        raced = await make_image_with_data(db, settings, owner, bytes([attempt + 9]) * 60_000)
        delete = me.execute("mutation($id: ID!) { deleteImages(input: {ids: [$id]}) { __typename } }", {"id": raced.id})
        got = await asyncio.gather(me.execute(export, {"id": raced.id, "k": f"d{attempt}"}), delete)
        exported = got[0]["exportImage"]["__typename"] == "ExportJobSuccess"
        deleted = got[1]["deleteImages"]["__typename"] == "DeleteImagesSuccess"
        assert deleted  # an export only reads: it never holds a delete up
        async with db.uow(owner.id, write=False) as uow:
            manifest = await uow.chunks.manifest(raced.disks[0]["manifestId"])
        if exported:
            assert manifest is not None and manifest.refcount == 1, got
        else:
            assert got[0]["exportImage"]["code"] == "IMAGE_NOT_FOUND" and manifest is None, (got, manifest)
