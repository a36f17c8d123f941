"""GraphQL over the websocket (graphql-transport-ws): the limits and checks of the HTTP edge
hold there too."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import update
from sqlmodel import col

from app.config import Settings
from app.db.tables import ApiToken, Job
from app.db.types import utcnow
from app.db.uow import Database
from app.http import MAX_BODY_BYTES
from tests.api.ops import mutate
from tests.api.ws import Socket, socket
from tests.bench.common import served
from tests.conftest import GraphQLClient, LiveServer, free_port
from tests.factories import make_account

JOB_UPDATED = "subscription($id: ID!) { jobUpdated(id: $id) { id status } }"


@pytest.fixture
def ims_serve(settings: Settings, tmp_path: Path) -> Iterator[str]:
    """A real `ims serve` process (the production launch path), without job workers."""
    port = free_port()
    settings = replace(settings, workers=0, maintenance_interval=0, public_url=f"http://127.0.0.1:{port}")
    with served({**os.environ, **settings.to_env()}, port, tmp_path / "server.log") as url:
        yield url


def _subscribe_frame(size: int) -> str:
    """A subscribe message of exactly `size` bytes: the document padded with spaces."""
    frame = json.dumps({"id": "1", "type": "subscribe",
                        "payload": {"query": JOB_UPDATED, "variables": {"id": "job-nothing"}}})
    return frame.replace(JOB_UPDATED, JOB_UPDATED + " " * (size - len(frame)))


async def test_a_websocket_message_over_the_body_limit_closes_the_socket(ims_serve: str, settings: Settings) -> None:
    assert settings.admin_token
    assert MAX_BODY_BYTES == 1024 * 1024
    async with socket(ims_serve, settings.admin_token) as ws:
        at_limit = _subscribe_frame(MAX_BODY_BYTES)
        assert len(at_limit.encode()) == MAX_BODY_BYTES
        await ws.send_text(at_limit)
        # Read and run: the subscription answers that there is no such job.
        assert await ws.until_done("1") == [
            {"id": "1", "type": "next", "payload": {"data": None, "errors": [{
                "message": "No job with this id is visible to the caller.",
                "extensions": {"code": "JOB_NOT_FOUND", "resourceId": "job-nothing"}}]}},
            {"id": "1", "type": "complete"},
        ]
    for size in (MAX_BODY_BYTES + 1, 2 * MAX_BODY_BYTES):
        async with socket(ims_serve, settings.admin_token) as ws:
            await ws.send_text(_subscribe_frame(size))
            # Closed as "message too big" before anything is read from it: no answer to it.
            assert await ws.recv() is None
            assert ws.close_code == 1009


# ---------------------------------------------------------------- authentication while open

CREATE_BUCKET = 'mutation { createBucket(input: {name: "over-the-socket"}) { __typename } }'


async def _spare_token(me: GraphQLClient) -> tuple[str, str]:
    """A second token of `me`'s account: (token, its id)."""
    created = await mutate(me, "createApiToken", {"name": "socket"},
                           "... on CreateApiTokenSuccess { token apiToken { id } }")
    return created["token"], created["apiToken"]["id"]


async def _revoke(me: GraphQLClient, _db: Database, token_id: str) -> None:
    revoked = await mutate(me, "revokeApiToken", {"id": token_id}, "... on RevokeApiTokenSuccess { revokedId }")
    assert revoked["revokedId"] == token_id


async def _expire(_me: GraphQLClient, db: Database, token_id: str) -> None:
    async with db.uow() as uow:
        await uow.session.execute(update(ApiToken).where(col(ApiToken.id) == token_id)
                                  .values(expires_at=utcnow() - timedelta(seconds=1)))
        await uow.commit()


Invalidate = Callable[[GraphQLClient, Database, str], Awaitable[None]]
INVALIDATIONS = [pytest.param(_revoke, id="revoked"), pytest.param(_expire, id="expired")]


async def _job_updated(ws: Socket, op_id: str, job_id: str) -> dict[str, object]:
    """Subscribe to the job; its first update."""
    await ws.subscribe(op_id, "subscription($id: ID!) { jobUpdated(id: $id) { id status progress } }", {"id": job_id})
    first = await ws.recv()
    assert first is not None and first["id"] == op_id and first["type"] == "next", first
    update: dict[str, object] = first["payload"]["data"]["jobUpdated"]
    return update


async def _a_job(me: GraphQLClient) -> str:
    """A job of `me`'s account that stays INIT (the live server runs no workers)."""
    data = await me.execute("mutation { exportImageList(input: {visibility: PRIVATE}) {"
                            " ... on ExportJobSuccess { job { id } } } }")
    job_id: str = data["exportImageList"]["job"]["id"]
    return job_id


async def _bucket_names(me: GraphQLClient) -> list[str]:
    return [b["name"] for b in (await me.execute("{ buckets { name } }"))["buckets"]]


@pytest.mark.parametrize("invalidate", INVALIDATIONS)
async def test_an_operation_after_the_token_stopped_being_valid_closes_the_socket(
    live_server: LiveServer, gql: GraphQLClient, db: Database, invalidate: Invalidate,
    caplog: pytest.LogCaptureFixture,
) -> None:
    _, main_token = await make_account(db)
    me = gql.as_(main_token)
    token, token_id = await _spare_token(me)
    job_id = await _a_job(me)
    with caplog.at_level(logging.ERROR):
        async with socket(live_server.url, token) as ws:
            assert await _job_updated(ws, "1", job_id) == {"id": job_id, "status": "INIT", "progress": 0.0}
            await invalidate(me, db, token_id)
            assert (await gql.as_(token).raw("{ viewer { account { name } } }")).status_code == 401
            await ws.send_text(json.dumps({"id": "2", "type": "subscribe", "payload": {"query": CREATE_BUCKET}}))
            # Closed as graphql-transport-ws closes a refused connection_init, and nothing ran.
            assert await ws.recv() is None
            assert ws.close_code == 4403
    assert await _bucket_names(me) == []
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []


@pytest.mark.parametrize("invalidate", INVALIDATIONS)
async def test_a_subscription_sends_nothing_more_once_its_token_stopped_being_valid(
    live_server: LiveServer, gql: GraphQLClient, db: Database, invalidate: Invalidate,
    caplog: pytest.LogCaptureFixture,
) -> None:
    _, main_token = await make_account(db)
    me = gql.as_(main_token)
    token, token_id = await _spare_token(me)
    job_id = await _a_job(me)
    with caplog.at_level(logging.ERROR):
        async with socket(live_server.url, token) as ws:
            assert await _job_updated(ws, "1", job_id) == {"id": job_id, "status": "INIT", "progress": 0.0}
            await invalidate(me, db, token_id)
            async with db.uow() as uow:  # the subscription wakes up to this change
                await uow.session.execute(update(Job).where(col(Job.id) == job_id).values(progress=0.5))
                await uow.commit()
            assert await ws.recv() is None
            assert ws.close_code == 4403
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []


async def test_queries_and_mutations_are_refused_over_the_websocket(
    live_server: LiveServer, gql: GraphQLClient, db: Database, caplog: pytest.LogCaptureFixture
) -> None:
    """The websocket carries subscriptions; queries and mutations go over HTTP."""
    _, token = await make_account(db)
    me = gql.as_(token)
    job_id = await _a_job(me)
    with caplog.at_level(logging.ERROR):
        async with socket(live_server.url, token) as ws:
            await ws.subscribe("1", CREATE_BUCKET)
            assert await ws.until_done("1") == [
                {"id": "1", "type": "error", "payload": [{"message": "mutations are not allowed"}]}]
            await ws.subscribe("2", "{ viewer { account { name } } }")
            assert await ws.until_done("2") == [
                {"id": "2", "type": "error", "payload": [{"message": "queries are not allowed"}]}]
            # The socket stays open for subscriptions.
            assert await _job_updated(ws, "3", job_id) == {"id": job_id, "status": "INIT", "progress": 0.0}
    assert await _bucket_names(me) == []
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []


async def test_a_document_that_does_not_parse_closes_the_socket_as_the_protocol_says(
    live_server: LiveServer, gql: GraphQLClient, db: Database, caplog: pytest.LogCaptureFixture
) -> None:
    """graphql-transport-ws closes the socket with 4400 on a subscribe message whose document
    does not parse; a document that parses but does not validate is an `error` message."""
    _, token = await make_account(db)
    with caplog.at_level(logging.ERROR):
        async with socket(live_server.url, token) as ws:
            await ws.subscribe("1", "subscription { nope }")
            assert await ws.until_done("1") == [{"id": "1", "type": "error", "payload": [{
                "message": "Cannot query field 'nope' on type 'Subscription'.",
                "locations": [{"line": 1, "column": 16}]}]}]
            await ws.subscribe("2", "subscription { jobUpdated(id: ")
            assert await ws.recv() is None
            assert ws.close_code == 4400
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []


@pytest.mark.parametrize("message", [
    '{"id": "1", "type": "subscribe", "payload": "x"}',
    "[]",
    "null",
    '{"id": "1", "type": "subscribe", "payload": {"query": 5}}',
    '{"id": "1", "type": "subscribe", "payload": {"query": "subscription { health }", "variables": "x"}}',
    '{"id": [], "type": "subscribe", "payload": {"query": "subscription { health }"}}',
    '{"id": {}, "type": "complete"}',
    '{"id": null, "type": "subscribe", "payload": {"query": "subscription { health }"}}',
    '{"type": "subscribe", "payload": {"query": "subscription { health }"}}',
])
async def test_a_malformed_message_closes_the_socket_as_the_protocol_says(
    live_server: LiveServer, gql: GraphQLClient, db: Database, caplog: pytest.LogCaptureFixture, message: str
) -> None:
    """A message that is not an object, an operation id that is not a string, or a subscribe
    payload without a document string, is graphql-transport-ws's invalid message (4400), not a
    traceback and an abrupt close."""
    _, token = await make_account(db)
    with caplog.at_level(logging.ERROR):
        async with socket(live_server.url, token) as ws:
            await ws.send_text(message)
            assert await ws.recv() is None
            assert ws.close_code == 4400
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []


async def test_an_unknown_operation_name_closes_the_socket_as_the_protocol_says(
    live_server: LiveServer, gql: GraphQLClient, db: Database, caplog: pytest.LogCaptureFixture
) -> None:
    """An operation name the document does not define: 4400, as graphql-transport-ws closes on
    an operation that cannot be determined (it was a masked internal error)."""
    _, token = await make_account(db)
    with caplog.at_level(logging.ERROR):
        async with socket(live_server.url, token) as ws:
            await ws.send_text(json.dumps({"id": "1", "type": "subscribe", "payload": {
                "query": 'subscription A { jobUpdated(id: "job-x") { id } }', "operationName": "B"}}))
            assert await ws.recv() is None
            assert ws.close_code == 4400
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []
