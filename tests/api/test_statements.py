"""SQL statements per request: a page of images with tags and members costs two, whatever
its size: the caller's token, then the page with its total, tags and members. A page of
backups with their images costs five, whatever its size."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from sqlalchemy import event

from app.compute.tables import Backup
from app.db.tables import ImageMember, ImageTag
from app.db.types import new_id, utcnow
from app.db.uow import Database
from tests.conftest import GraphQLClient, LiveServer
from tests.factories import make_account, make_image

STATEMENTS = 2  # DESIGN §4 allows 4

PAGE = """
query {
  images(first: 50) {
    totalCount
    edges { node {
      __typename
      ... on ImageBase { id name tags { key value } }
      ... on PrivateImage {
        owner { name }
        members { totalCount edges { node { account { name } status } } }
      }
      ... on SharedImage { owner { name } membership { status } }
    } }
  }
}
"""


@contextmanager
def count_statements(live_server: LiveServer) -> Iterator[list[str]]:
    """Every statement the live server's engines send while the block runs."""
    db = live_server.app.state.runtime.services.db
    engines = list({id(e.sync_engine): e.sync_engine for e in (db.engine, db.write_engine)}.values())
    engines += db.reads.sync_engines
    statements: list[str] = []

    def record(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        statements.append(statement)

    for engine in engines:
        event.listen(engine, "before_cursor_execute", record)
    try:
        yield statements
    finally:
        for engine in engines:
            event.remove(engine, "before_cursor_execute", record)


@pytest.mark.parametrize("size", [5, 50])
async def test_a_page_costs_a_constant_number_of_statements(
    size: int, gql: GraphQLClient, db: Database, live_server: LiveServer
) -> None:
    alice, alice_t = await make_account(db, "alice")
    bob, bob_t = await make_account(db, "bob")
    carol, _ = await make_account(db, "carol")
    own = [await make_image(db, alice) for _ in range(size - size // 5)]
    shared = [await make_image(db, bob) for _ in range(size // 5)]  # bob's, shared with alice
    now = utcnow()
    async with db.uow() as uow:
        for image in own:
            uow.session.add_all([ImageTag(image_id=image.id, key=k, value="v") for k in ("env", "team", "app")])
            uow.session.add_all([ImageMember(image_id=image.id, account_id=a.id, status=s, created_at=now,
                                             updated_at=now) for a, s in ((bob, "ACCEPTED"), (carol, "PENDING"))])
        for image in shared:
            uow.session.add(ImageTag(image_id=image.id, key="shared", value="yes"))
            uow.session.add(ImageMember(image_id=image.id, account_id=alice.id, status="ACCEPTED", created_at=now,
                                        updated_at=now))
        await uow.commit()

    q = gql.as_(alice_t)
    await q.execute("{ viewer { account { id } } }")  # warm-up: the token's last_used_at write
    with count_statements(live_server) as statements:
        data = await q.execute(PAGE)
    page = data["images"]
    assert page["totalCount"] == size
    assert len(page["edges"]) == size
    nodes = [e["node"] for e in page["edges"]]
    private = [n for n in nodes if n["__typename"] == "PrivateImage"]
    shared_nodes = [n for n in nodes if n["__typename"] == "SharedImage"]
    assert (len(private), len(shared_nodes)) == (len(own), len(shared))
    for node in private:
        assert node["owner"] == {"name": "alice"}
        assert len(node["tags"]) == 3
        assert node["members"]["totalCount"] == 2
        assert sorted((m["node"]["account"]["name"], m["node"]["status"]) for m in node["members"]["edges"]) == [
            ("bob", "ACCEPTED"), ("carol", "PENDING")]
    for node in shared_nodes:
        assert (node["owner"], node["membership"], node["tags"]) == (
            {"name": "bob"}, {"status": "ACCEPTED"}, [{"key": "shared", "value": "yes"}])
    assert len(statements) == STATEMENTS, "\n\n".join(statements)
    assert "api_tokens" in statements[0]
    assert all(table in statements[1] for table in ("image_tags", "image_members", "image_counts"))

    # The same request from another caller costs the same: nothing is cached across requests.
    await gql.as_(bob_t).execute("{ viewer { account { id } } }")
    with count_statements(live_server) as again:
        await gql.as_(bob_t).execute(PAGE)
    assert len(again) == STATEMENTS, "\n\n".join(again)


@pytest.mark.parametrize("size", [2, 20])
async def test_a_page_of_backups_with_their_images_costs_a_constant_number_of_statements(
    size: int, gql: GraphQLClient, db: Database, live_server: LiveServer
) -> None:
    """Each backup's image is one DataLoader batch: no statement per row."""
    alice, alice_t = await make_account(db)
    rows = [Backup(id=new_id("bak"), account_id=alice.id, server_id=new_id("srv"), region="region-1",
                   size_bytes=1 << 30, new_bytes=0, disks=[], created_at=utcnow()) for _ in range(size)]
    async with db.uow() as uow:
        await uow.compute.add(*rows)
        await uow.commit()
    images = {b.id: await make_image(db, alice, kind="FULL_ECS", backup_id=b.id) for b in rows[::2]}
    q = gql.as_(alice_t)
    await q.execute("{ viewer { account { id } } }")  # warm-up: the token's last_used_at write
    page = "{ backups(first: 50) { totalCount edges { node { id image { id name tags { key } } } } } }"
    with count_statements(live_server) as statements:
        data = await q.execute(page)
    assert data["backups"]["totalCount"] == size
    got = {e["node"]["id"]: e["node"]["image"] for e in data["backups"]["edges"]}
    assert got == {b.id: {"id": images[b.id].id, "name": images[b.id].name, "tags": []} if b.id in images else None
                   for b in rows}
    # The token, the page and its total, the images, their tags.
    assert len(statements) == 5, "\n\n".join(statements)
