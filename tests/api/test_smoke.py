from __future__ import annotations

from app.db.uow import Database
from tests.conftest import GraphQLClient
from tests.factories import make_account, make_image


async def test_private_image_visible_to_owner_only(gql: GraphQLClient, db: Database) -> None:
    alice, alice_token = await make_account(db)
    _, bob_token = await make_account(db)
    image = await make_image(db, alice, tags={"env": "prod"})
    q = "query($id: ID!) { image(id: $id) { __typename ... on ImageBase { id tags { key value } } } }"
    data = await gql.as_(alice_token).execute(q, {"id": image.id})
    assert data["image"] == {"__typename": "PrivateImage", "id": image.id, "tags": [{"key": "env", "value": "prod"}]}
    assert (await gql.as_(bob_token).execute(q, {"id": image.id}))["image"] is None
