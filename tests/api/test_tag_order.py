"""An image's tags are listed in Unicode code point order wherever they are read — `image(id)`,
`images`, a mutation's payload and the image-list CSV agree — even where the database compares
text in a language's collation (a PostgreSQL database made with en_US puts `a` before `B`)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from sqlalchemy import text

from app.config import Settings
from app.db.uow import Database
from tests.api.ops import add_tags
from tests.conftest import GraphQLClient
from tests.factories import make_account, make_image

KEYS = ["b", "B", "a", "A", "_z", "Z9", "é"]
IN_CODE_POINT_ORDER = sorted(KEYS)  # A B Z9 _z a b é

READ = """query($id: ID!) {
  image(id: $id) { ... on PrivateImage { tags { key } } }
  images(filter: {visibility: [PRIVATE]}) { edges { node { ... on PrivateImage { id tags { key } } } } }
}"""


@pytest.fixture
async def language_collation(db: Database, settings: Settings) -> AsyncIterator[None]:
    """On PostgreSQL, tag keys compared in ICU's en-US collation for the test (restored after);
    on SQLite, BINARY compares UTF-8 bytes, which is code point order already."""
    postgres = settings.database_url.startswith("postgresql")
    if postgres:
        async with db.engine.begin() as conn:
            await conn.execute(text('ALTER TABLE image_tags ALTER COLUMN "key" TYPE VARCHAR(36) COLLATE "en-US-x-icu"'))
    try:
        yield
    finally:
        if postgres:
            async with db.engine.begin() as conn:
                await conn.execute(text('ALTER TABLE image_tags ALTER COLUMN "key" TYPE VARCHAR(36) COLLATE "default"'))


async def test_tags_are_in_code_point_order_on_every_read(
    gql: GraphQLClient, db: Database, language_collation: None
) -> None:
    alice, token = await make_account(db)
    image = await make_image(db, alice)
    me = gql.as_(token)
    added = await add_tags(me, image.id, {key: "v" for key in KEYS})
    assert [t["key"] for t in added["image"]["tags"]] == IN_CODE_POINT_ORDER
    read = await me.execute(READ, {"id": image.id})
    assert [t["key"] for t in read["image"]["tags"]] == IN_CODE_POINT_ORDER
    [node] = [e["node"] for e in read["images"]["edges"]]
    assert [t["key"] for t in node["tags"]] == IN_CODE_POINT_ORDER
