"""`stopServer` and `startServer`, through the live server over HTTP: owner only, idempotent,
a compare-and-set on the status, and images still made from a STOPPED server."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime
from typing import Any

import pytest

from app.compute.tables import Server
from app.config import Settings
from app.db.types import utcnow
from app.db.uow import Database
from tests.api.test_compute_api import (
    SERVER,
    create_server,
    err,
    image_from_server,
    quick_image,
    run,
    wait_job,
)
from tests.conftest import GraphQLClient
from tests.factories import make_account


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return replace(settings, workers=1, job_poll_interval=0.05)


async def stop(client: GraphQLClient, server_id: str) -> dict[str, Any]:
    return await run(client, "stopServer", {"id": server_id}, f"... on StopServerSuccess {{ server {{ {SERVER} }} }}")


async def start(client: GraphQLClient, server_id: str) -> dict[str, Any]:
    return await run(client, "startServer", {"id": server_id},
                     f"... on StartServerSuccess {{ server {{ {SERVER} }} }}")


async def stored(db: Database, server_id: str) -> tuple[str, datetime]:
    """The server row's (status, updated_at)."""
    async with db.uow() as uow:
        row = await uow.session.get(Server, server_id)
    assert row is not None
    return row.status, row.updated_at


async def test_stop_then_start_and_each_again_changes_nothing(
    gql: GraphQLClient, db: Database, settings: Settings
) -> None:
    alice, alice_t = await make_account(db)
    q = gql.as_(alice_t)
    server = (await create_server(q, imageId=(await quick_image(db, settings, alice)).id))["server"]
    created = await stored(db, server["id"])
    assert created[0] == "RUNNING"

    stopped = await stop(q, server["id"])
    assert stopped == {"__typename": "StopServerSuccess", "server": {**server, "status": "STOPPED"}}
    status, stopped_at = await stored(db, server["id"])
    assert status == "STOPPED" and stopped_at > created[1]
    # Stopping a STOPPED server succeeds and writes nothing.
    assert await stop(q, server["id"]) == stopped
    assert await stored(db, server["id"]) == ("STOPPED", stopped_at)
    one = "query($id: ID!) { server(id: $id) { status } }"
    assert await q.execute(one, {"id": server["id"]}) == {"server": {"status": "STOPPED"}}

    started = await start(q, server["id"])
    assert started == {"__typename": "StartServerSuccess", "server": {**server, "status": "RUNNING"}}
    status, started_at = await stored(db, server["id"])
    assert status == "RUNNING" and started_at > stopped_at
    assert await start(q, server["id"]) == started
    assert await stored(db, server["id"]) == ("RUNNING", started_at)


async def test_the_status_change_is_a_compare_and_set(gql: GraphQLClient, db: Database, settings: Settings) -> None:
    alice, alice_t = await make_account(db)
    server = (await create_server(gql.as_(alice_t), imageId=(await quick_image(db, settings, alice)).id))["server"]
    before = await stored(db, server["id"])
    async with db.uow(alice.id) as uow:
        # Expecting STOPPED (a stale read) on a RUNNING server changes nothing.
        assert not await uow.compute.set_server_status(server["id"], "STOPPED", "RUNNING", utcnow())
        await uow.commit()
    assert await stored(db, server["id"]) == before
    bob, _ = await make_account(db)
    async with db.uow(bob.id) as uow:
        # Nor does another account's caller, whatever it expects.
        assert not await uow.compute.set_server_status(server["id"], "RUNNING", "STOPPED", utcnow())
        await uow.commit()
    assert await stored(db, server["id"]) == before


async def test_another_accounts_server_is_not_found_and_unchanged(
    gql: GraphQLClient, db: Database, settings: Settings
) -> None:
    alice, alice_t = await make_account(db)
    _, bob_t = await make_account(db)
    image = await quick_image(db, settings, alice)
    running = (await create_server(gql.as_(alice_t), imageId=image.id))["server"]
    halted = (await create_server(gql.as_(alice_t), imageId=image.id, name="web-2"))["server"]
    await stop(gql.as_(alice_t), halted["id"])
    before = (await stored(db, running["id"]), await stored(db, halted["id"]))
    b = gql.as_(bob_t)
    for server_id in (running["id"], halted["id"], "srv-missing"):
        assert await stop(b, server_id) == err("NotFoundError", "SERVER_NOT_FOUND")
        assert await start(b, server_id) == err("NotFoundError", "SERVER_NOT_FOUND")
    assert (await stored(db, running["id"]), await stored(db, halted["id"])) == before
    assert before[0][0] == "RUNNING" and before[1][0] == "STOPPED"


async def test_an_image_of_a_stopped_server_goes_active(gql: GraphQLClient, db: Database, settings: Settings) -> None:
    alice, alice_t = await make_account(db)
    q = gql.as_(alice_t)
    server = (await create_server(q, imageId=(await quick_image(db, settings, alice)).id, systemDiskGb=8))["server"]
    await stop(q, server["id"])
    made = await image_from_server(q, serverId=server["id"])
    assert made["__typename"] == "ImageJobSuccess"
    job = await wait_job(q, made["job"]["id"])
    assert (job["type"], job["status"], job["error"]) == ("CREATE_IMAGE_FROM_SERVER", "SUCCESS", None)
    image = job["images"][0]
    assert (image["kind"], image["status"], image["origin"], [(d["role"], d["sizeGb"]) for d in image["disks"]]) == (
        "SYSTEM_DISK", "ACTIVE", {"type": "SERVER", "ref": server["id"]}, [("SYSTEM", 8)])
    # Imaging leaves the server as it was.
    assert (await stored(db, server["id"]))[0] == "STOPPED"
