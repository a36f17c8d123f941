"""Jobs through the live server: `job`, `jobs`, and `jobUpdated` over a real websocket."""

from __future__ import annotations

import asyncio
import contextlib
import json
import struct
from dataclasses import dataclass, replace
from typing import Any, Protocol

import pytest
import websocket  # websocket-client

from app.bootstrap import build_services
from app.config import Settings
from app.db.uow import Database
from app.services.registry import Services
from tests.conftest import GraphQLClient, LiveServer
from tests.factories import make_account, make_image
from tests.jobs.conftest import TEST_HANDLERS, enqueue, finished, wait_for
from tests.jobs.handlers import ECHO

PROTOCOL = "graphql-transport-ws"
JOB_FIELDS = "id type status progress step error { code message } images { __typename ... on ImageBase { id status } }"
SUBSCRIBE = f"subscription($id: ID!) {{ jobUpdated(id: $id) {{ {JOB_FIELDS} }} }}"


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """The live server runs one worker with the test handlers."""
    return replace(settings, workers=1, job_poll_interval=0.05, test_job_handlers=TEST_HANDLERS)


@pytest.fixture
async def services(settings: Settings, db: Database) -> Any:
    built = build_services(settings, db)
    yield built
    await built.close()


@dataclass
class WsResult:
    messages: list[dict[str, Any]]
    close_code: int | None


def _ws_session(url: str, init: dict[str, Any], subscribe: dict[str, Any] | None) -> WsResult:
    """One graphql-transport-ws session, run in a thread (websocket-client is blocking)."""
    ws = websocket.create_connection(url.replace("http", "ws", 1) + "/graphql", subprotocols=[PROTOCOL], timeout=20)
    messages: list[dict[str, Any]] = []
    try:
        ws.send(json.dumps({"type": "connection_init", "payload": init}))
        while True:
            opcode, data = ws.recv_data(control_frame=True)
            if opcode == websocket.ABNF.OPCODE_CLOSE:
                return WsResult(messages, struct.unpack("!H", data[:2])[0] if len(data) >= 2 else None)
            if opcode != websocket.ABNF.OPCODE_TEXT:
                continue
            message = json.loads(data)
            messages.append(message)
            if message["type"] == "connection_ack" and subscribe is not None:
                ws.send(json.dumps({"id": "1", "type": "subscribe", "payload": subscribe}))
            if message["type"] in ("complete", "error"):
                return WsResult(messages, None)
    finally:
        with contextlib.suppress(websocket.WebSocketException, OSError):
            ws.close(timeout=1)
        ws.shutdown()  # type: ignore[no-untyped-call]


class Served(Protocol):
    """A running server: the tests' live app, or a real `ims serve` process."""

    @property
    def url(self) -> str: ...


async def ws_session(server: Served, init: dict[str, Any], subscribe: dict[str, Any] | None = None) -> WsResult:
    return await asyncio.to_thread(_ws_session, server.url, init, subscribe)


def subscription(job_id: str) -> dict[str, Any]:
    return {"query": SUBSCRIBE, "variables": {"id": job_id}}


async def test_job_updated_streams_progress_then_success(
    live_server: LiveServer, services: Services, db: Database
) -> None:
    alice, token = await make_account(db)
    image = await make_image(db, alice)
    job = await enqueue(services, alice, "EXPORT_IMAGE_LIST", {"n": 4, "seconds": 0.3}, [image.id])
    result = await ws_session(live_server, {"authorization": f"Bearer {token}"}, subscription(job.id))
    assert result.messages[0] == {"type": "connection_ack"}
    assert result.messages[-1] == {"id": "1", "type": "complete"}
    updates = [m["payload"]["data"]["jobUpdated"] for m in result.messages if m["type"] == "next"]
    assert all("errors" not in m.get("payload", {}) for m in result.messages)
    progress = [u["progress"] for u in updates]
    assert progress == sorted(progress) and 0 < len({p for p in progress if 0 < p < 1})
    assert updates[-1]["status"] == "SUCCESS" and updates[-1]["progress"] == 1.0
    assert {u["status"] for u in updates[:-1]} <= {"INIT", "RUNNING"}
    assert updates[-1]["images"] == [{"__typename": "PrivateImage", "id": image.id, "status": "ACTIVE"}]
    assert updates[-1]["type"] == "EXPORT_IMAGE_LIST" and updates[-1]["error"] is None


async def test_job_updated_shows_a_failure_and_the_images_it_killed(
    live_server: LiveServer, services: Services, db: Database
) -> None:
    alice, token = await make_account(db)
    image = await make_image(db, alice, status="QUEUED")
    job = await enqueue(services, alice, "IMPORT_IMAGE", {"seconds": 0.5}, [image.id])
    result = await ws_session(live_server, {"authorization": f"Bearer {token}"}, subscription(job.id))
    updates = [m["payload"]["data"]["jobUpdated"] for m in result.messages if m["type"] == "next"]
    assert updates[0]["images"][0]["status"] == "QUEUED"
    last = updates[-1]
    assert (last["status"], last["error"]) == ("FAIL", {"code": "UNSAFE_IMAGE_FILE", "message": "qcow2 backing file"})
    assert last["images"] == [{"__typename": "PrivateImage", "id": image.id, "status": "KILLED"}]


@pytest.mark.parametrize("init", [{}, {"authorization": "Bearer ims_wrong"}, {"authorization": "token"}])
async def test_websocket_without_a_valid_token_is_closed(live_server: LiveServer, init: dict[str, Any]) -> None:
    result = await ws_session(live_server, init, subscription("job-x"))
    assert result.messages == [] and result.close_code == 4403


async def test_job_updated_for_another_accounts_job_is_not_found(
    live_server: LiveServer, services: Services, db: Database
) -> None:
    alice, _ = await make_account(db)
    _, bob_token = await make_account(db)
    job = await enqueue(services, alice, ECHO)
    result = await ws_session(live_server, {"authorization": f"Bearer {bob_token}"}, subscription(job.id))
    errors = [e for m in result.messages if m["type"] in ("next", "error")
              for e in (m["payload"] if isinstance(m["payload"], list) else m["payload"].get("errors", []))]
    assert [e["extensions"]["code"] for e in errors] == ["JOB_NOT_FOUND"]
    assert "data" not in json.dumps(errors)


async def test_job_is_visible_to_its_account_only(gql: GraphQLClient, services: Services, db: Database) -> None:
    alice, alice_token = await make_account(db)
    _, bob_token = await make_account(db)
    shared_image = await make_image(db, alice)
    job = await enqueue(services, alice, "EXPORT_IMAGE_LIST", {"n": 1, "seconds": 0}, [shared_image.id])
    await wait_for(db, job.id, finished)
    q = f"query($id: ID!) {{ job(id: $id) {{ {JOB_FIELDS} }} node(id: $id) {{ id }} }}"
    mine = await gql.as_(alice_token).execute(q, {"id": job.id})
    assert mine["job"]["status"] == "SUCCESS" and mine["node"] == {"id": job.id}
    theirs = await gql.as_(bob_token).execute(q, {"id": job.id})
    assert theirs == {"job": None, "node": None}
    listed = await gql.as_(bob_token).execute("{ jobs { totalCount edges { node { id } } } }")
    assert listed["jobs"] == {"totalCount": 0, "edges": []}


async def test_jobs_filters_and_pages(gql: GraphQLClient, services: Services, db: Database) -> None:
    alice, token = await make_account(db)
    image = await make_image(db, alice)
    other = await make_image(db, alice)
    done = await enqueue(services, alice, "EXPORT_IMAGE_LIST", {"n": 1, "seconds": 0}, [image.id])
    await wait_for(db, done.id, finished)
    waiting = [await enqueue(services, alice, "EXPORT_IMAGE", image_ids=[other.id]) for _ in range(3)]
    q = """query($f: JobFilter, $first: Int, $after: String) {
      jobs(filter: $f, first: $first, after: $after) {
        totalCount pageInfo { hasNextPage endCursor } edges { node { id status type } } } }"""
    c = gql.as_(token)
    by_image = (await c.execute(q, {"f": {"imageId": image.id}}))["jobs"]
    assert [e["node"]["id"] for e in by_image["edges"]] == [done.id] and by_image["totalCount"] == 1
    init = (await c.execute(q, {"f": {"status": ["INIT"], "type": ["EXPORT_IMAGE"]}}))["jobs"]
    assert init["totalCount"] == 3
    newest_first = [j.id for j in reversed(waiting)]
    page1 = (await c.execute(q, {"first": 2}))["jobs"]
    assert [e["node"]["id"] for e in page1["edges"]] == newest_first[:2] and page1["pageInfo"]["hasNextPage"]
    page2 = (await c.execute(q, {"first": 2, "after": page1["pageInfo"]["endCursor"]}))["jobs"]
    assert [e["node"]["id"] for e in page2["edges"]] == [newest_first[2], done.id]
    assert not page2["pageInfo"]["hasNextPage"]


async def test_job_object_comes_from_the_result_when_urls_can_be_made(
    gql: GraphQLClient, live_server: LiveServer, services: Services, db: Database
) -> None:
    alice, token = await make_account(db)
    job = await enqueue(services, alice, "EXPORT_IMAGE_LIST", {"n": 1, "seconds": 0, "bucket": "bkt-1"})
    await wait_for(db, job.id, finished)
    q = "query($id: ID!) { job(id: $id) { object { bucket key sizeBytes checksum downloadUrl(expiresInSeconds: 60) } } }"
    default = (await gql.as_(token).execute(q, {"id": job.id}))["job"]["object"]
    assert default["downloadUrl"].startswith(f"{live_server.url}/objects/bkt-1/exports/{job.id}.csv?expires=")
    runtime = live_server.app.state.runtime
    runtime.services.object_urls = lambda bucket, key, expires: f"https://objects/{bucket}/{key}?e={expires}"
    obj = (await gql.as_(token).execute(q, {"id": job.id}))["job"]["object"]
    assert obj == {
        "bucket": "bkt-1", "key": f"exports/{job.id}.csv", "sizeBytes": 1234, "checksum": "sha256:" + "ab" * 32,
        "downloadUrl": f"https://objects/bkt-1/exports/{job.id}.csv?e=60",
    }
