"""A disabled or pending-deletion key blocks every operation that must read the data it
protects; re-enabling (or cancelling the deletion, then enabling) restores them."""

from __future__ import annotations

from app.config import Settings
from app.db.uow import Database
from tests.conftest import GraphQLClient
from tests.factories import make_account, make_image_with_data, make_kms_key

REPLICATE = """mutation($id: ID!) { replicateImage(input: {imageId: $id, name: "plain copy"}) {
  __typename ... on KmsKeyError { code keyId } } }"""


async def test_key_states_gate_reads(gql: GraphQLClient, db: Database, settings: Settings) -> None:
    owner, token = await make_account(db)
    me = gql.as_(token)
    key_id = await make_kms_key(db, settings, owner)
    image = await make_image_with_data(db, settings, owner, b"\x21" * 50_000, kms_key_id=key_id)

    async def state(mutation: str, extra: str = "") -> str:
        got = await me.execute(f'mutation($k: ID!) {{ {mutation}(input: {{keyId: $k{extra}}}) {{ __typename '
                               f'... on KmsKeySuccess {{ key {{ state }} }} }} }}', {"k": key_id})
        return str(got[mutation]["key"]["state"])

    assert await state("disableKmsKey") == "DISABLED"
    refused = (await me.execute(REPLICATE, {"id": image.id}))["replicateImage"]
    assert refused == {"__typename": "KmsKeyError", "code": "KMS_KEY_DISABLED", "keyId": key_id}
    assert await state("enableKmsKey") == "ENABLED"
    assert (await me.execute(REPLICATE, {"id": image.id}))["replicateImage"]["__typename"] == "ImageJobSuccess"
    assert await state("scheduleKmsKeyDeletion", ", pendingDays: 7") == "PENDING_DELETION"
    refused = (await me.execute(REPLICATE, {"id": image.id}))["replicateImage"]
    assert refused == {"__typename": "KmsKeyError", "code": "KMS_KEY_PENDING_DELETION", "keyId": key_id}
    assert await state("cancelKmsKeyDeletion") == "DISABLED"
    assert await state("enableKmsKey") == "ENABLED"
    assert (await me.execute(REPLICATE, {"id": image.id}))["replicateImage"]["__typename"] == "ImageJobSuccess"
