"""KMS keys and grants over HTTP: every mutation's success and error codes, and isolation."""

from __future__ import annotations

import stat
from datetime import datetime, timedelta
from typing import Any

import pytest

from app.db.uow import Database
from tests.conftest import GraphQLClient, LiveServer
from tests.factories import make_account

KEY_FIELDS = "id alias description state isDefault createdAt deletionDate grants { id grantee { id name } operations }"
ERRORS = "... on UserError { __typename code message }"
FIELD = "... on ValidationError { field }"
RESOURCE = "... on NotFoundError { resourceId }"

CREATE_KEY = f"""mutation($input: CreateKmsKeyInput!) {{ createKmsKey(input: $input) {{
  ... on KmsKeySuccess {{ key {{ {KEY_FIELDS} }} }} {ERRORS} {FIELD} }} }}"""
CREATE_GRANT = f"""mutation($input: CreateKmsGrantInput!) {{ createKmsGrant(input: $input) {{
  ... on KmsGrantSuccess {{ grant {{ id grantee {{ id name }} operations createdAt }} }} {ERRORS} {FIELD} {RESOURCE} }} }}"""
REVOKE_GRANT = f"""mutation($input: RevokeKmsGrantInput!) {{ revokeKmsGrant(input: $input) {{
  ... on RevokeKmsGrantSuccess {{ revokedId }} {ERRORS} {RESOURCE} }} }}"""
LIST_KEYS = f"""query($first: Int, $after: String) {{ kmsKeys(first: $first, after: $after) {{
  totalCount pageInfo {{ hasNextPage hasPreviousPage endCursor }} edges {{ cursor node {{ {KEY_FIELDS} }} }} }} }}"""
STATE_MUTATIONS = ("enableKmsKey", "disableKmsKey", "scheduleKmsKeyDeletion", "cancelKmsKeyDeletion")


def state_mutation(name: str) -> str:
    return f"""mutation($input: KmsKeyStateInput!) {{ {name}(input: $input) {{
  ... on KmsKeySuccess {{ key {{ {KEY_FIELDS} }} }} {ERRORS} {FIELD} {RESOURCE} }} }}"""


async def create_key(client: GraphQLClient, alias: str, description: str | None = None) -> dict[str, Any]:
    variables: dict[str, Any] = {"alias": alias}
    if description is not None:
        variables["description"] = description
    data = await client.execute(CREATE_KEY, {"input": variables})
    return data["createKmsKey"]  # type: ignore[no-any-return]


async def change(client: GraphQLClient, name: str, key_id: str, pending_days: int | None = None) -> dict[str, Any]:
    variables: dict[str, Any] = {"keyId": key_id}
    if pending_days is not None:
        variables["pendingDays"] = pending_days
    return (await client.execute(state_mutation(name), {"input": variables}))[name]  # type: ignore[no-any-return]


async def grant(client: GraphQLClient, key_id: str, grantee: str, operations: list[str]) -> dict[str, Any]:
    data = await client.execute(
        CREATE_GRANT, {"input": {"keyId": key_id, "granteeAccountId": grantee, "operations": operations}}
    )
    return data["createKmsGrant"]  # type: ignore[no-any-return]


def error(payload: dict[str, Any]) -> tuple[str, str]:
    return payload["__typename"], payload["code"]


async def users(db: Database, gql: GraphQLClient, n: int) -> list[tuple[str, str, GraphQLClient]]:
    """(account id, name, client) of `n` fresh accounts."""
    out = []
    for _ in range(n):
        account, token = await make_account(db)
        out.append((account.id, account.name, gql.as_(token)))
    return out


async def test_create_key_and_list_it(gql: GraphQLClient, db: Database) -> None:
    [(_, _, alice)] = await users(db, gql, 1)
    created = (await create_key(alice, "team/disks_1", "Disks of team 1"))["key"]
    assert {k: created[k] for k in ("alias", "description", "state", "isDefault", "deletionDate", "grants")} == {
        "alias": "team/disks_1", "description": "Disks of team 1", "state": "ENABLED", "isDefault": False,
        "deletionDate": None, "grants": [],
    }
    assert created["id"].startswith("key-")
    assert (await create_key(alice, "plain"))["key"]["description"] == ""
    listed = (await alice.execute(LIST_KEYS))["kmsKeys"]
    assert listed["totalCount"] == 2
    assert [e["node"]["alias"] for e in listed["edges"]] == ["team/disks_1", "plain"]
    node = await alice.execute("query($id: ID!) { node(id: $id) { __typename id } }", {"id": created["id"]})
    assert node["node"] == {"__typename": "KmsKey", "id": created["id"]}


@pytest.mark.parametrize(
    ("alias", "description", "expected", "field"),
    [
        ("", None, ("ValidationError", "INVALID_KMS_ALIAS"), "input.alias"),
        ("bad alias!", None, ("ValidationError", "INVALID_KMS_ALIAS"), "input.alias"),
        ("x" * 256, None, ("ValidationError", "INVALID_KMS_ALIAS"), "input.alias"),
        ("ims/default", None, ("ValidationError", "KMS_ALIAS_RESERVED"), "input.alias"),
        ("ok", "<script>", ("ValidationError", "INVALID_DESCRIPTION"), "input.description"),
        ("taken", None, ("ConflictError", "KMS_ALIAS_EXISTS"), None),
    ],
)
async def test_create_key_errors(
    gql: GraphQLClient, db: Database, alias: str, description: str | None, expected: tuple[str, str],
    field: str | None,
) -> None:
    [(_, _, alice)] = await users(db, gql, 1)
    await create_key(alice, "taken")
    payload = await create_key(alice, alias, description)
    assert (error(payload), payload.get("field")) == (expected, field)
    assert (await alice.execute(LIST_KEYS))["kmsKeys"]["totalCount"] == 1


async def test_key_state_mutations(gql: GraphQLClient, db: Database) -> None:
    [(_, _, alice)] = await users(db, gql, 1)
    key_id = (await create_key(alice, "k"))["key"]["id"]
    assert (await change(alice, "disableKmsKey", key_id))["key"]["state"] == "DISABLED"
    assert (await change(alice, "enableKmsKey", key_id))["key"]["state"] == "ENABLED"
    before = datetime.now().astimezone()
    pending = (await change(alice, "scheduleKmsKeyDeletion", key_id, 7))["key"]
    assert pending["state"] == "PENDING_DELETION"
    deletion = datetime.fromisoformat(pending["deletionDate"])
    assert before + timedelta(days=7) <= deletion <= datetime.now().astimezone() + timedelta(days=7)
    for name in ("enableKmsKey", "disableKmsKey", "scheduleKmsKeyDeletion"):
        assert error(await change(alice, name, key_id)) == ("ConflictError", "KMS_KEY_PENDING_DELETION")
    cancelled = (await change(alice, "cancelKmsKeyDeletion", key_id))["key"]
    assert (cancelled["state"], cancelled["deletionDate"]) == ("DISABLED", None)
    assert error(await change(alice, "cancelKmsKeyDeletion", key_id)) == (
        "ConflictError", "KMS_KEY_NOT_PENDING_DELETION"
    )
    default_days = (await change(alice, "scheduleKmsKeyDeletion", key_id))["key"]["deletionDate"]
    assert datetime.fromisoformat(default_days) - deletion > timedelta(days=22)


@pytest.mark.parametrize(("name", "days"), [("scheduleKmsKeyDeletion", 6), ("scheduleKmsKeyDeletion", 1097),
                                             ("enableKmsKey", 7), ("disableKmsKey", 7), ("cancelKmsKeyDeletion", 7)])
async def test_pending_days_errors(gql: GraphQLClient, db: Database, name: str, days: int) -> None:
    [(_, _, alice)] = await users(db, gql, 1)
    key_id = (await create_key(alice, "k"))["key"]["id"]
    payload = await change(alice, name, key_id, days)
    assert (error(payload), payload["field"]) == (("ValidationError", "INVALID_PENDING_DAYS"), "input.pendingDays")
    assert (await alice.execute(LIST_KEYS))["kmsKeys"]["edges"][0]["node"]["state"] == "ENABLED"


@pytest.mark.parametrize("name", STATE_MUTATIONS)
async def test_state_mutations_on_keys_not_the_callers(gql: GraphQLClient, db: Database, name: str) -> None:
    (_, _, alice), (bob_id, _, bob) = await users(db, gql, 2)
    key_id = (await create_key(alice, "k"))["key"]["id"]
    await grant(alice, key_id, bob_id, ["DESCRIBE_KEY", "DECRYPT_DATA_KEY"])
    for client, target in ((alice, "key-missing"), (bob, key_id)):
        payload = await change(client, name, target, 7 if name == "scheduleKmsKeyDeletion" else None)
        assert (error(payload), payload["resourceId"]) == (("NotFoundError", "KMS_KEY_NOT_FOUND"), target)
    assert (await alice.execute(LIST_KEYS))["kmsKeys"]["edges"][0]["node"]["state"] == "ENABLED"


async def test_grant_and_revoke(gql: GraphQLClient, db: Database) -> None:
    (_, _, alice), (bob_id, bob_name, bob) = await users(db, gql, 2)
    key_id = (await create_key(alice, "k"))["key"]["id"]
    made = (await grant(alice, key_id, bob_id, ["DECRYPT_DATA_KEY", "DESCRIBE_KEY"]))["grant"]
    assert made["id"].startswith("grt-")
    assert (made["grantee"], made["operations"]) == ({"id": bob_id, "name": bob_name},
                                                     ["DESCRIBE_KEY", "DECRYPT_DATA_KEY"])
    assert (await grant(alice, key_id, bob_id, ["DESCRIBE_KEY", "DECRYPT_DATA_KEY"]))["grant"]["id"] == made["id"]
    owner_view = (await alice.execute(LIST_KEYS))["kmsKeys"]["edges"][0]["node"]
    assert [g["id"] for g in owner_view["grants"]] == [made["id"]]
    revoke = {"input": {"keyId": key_id, "grantId": made["id"]}}
    assert error((await bob.execute(REVOKE_GRANT, revoke))["revokeKmsGrant"]) == ("NotFoundError", "KMS_KEY_NOT_FOUND")
    assert (await alice.execute(REVOKE_GRANT, revoke))["revokeKmsGrant"] == {"revokedId": made["id"]}
    again = (await alice.execute(REVOKE_GRANT, revoke))["revokeKmsGrant"]
    assert (error(again), again["resourceId"]) == (("NotFoundError", "GRANT_NOT_FOUND"), made["id"])
    assert (await bob.execute(LIST_KEYS))["kmsKeys"]["totalCount"] == 0


async def test_grant_errors(gql: GraphQLClient, db: Database) -> None:
    (alice_id, _, alice), (bob_id, _, bob) = await users(db, gql, 2)
    key_id = (await create_key(alice, "k"))["key"]["id"]
    bob_key = (await create_key(bob, "k"))["key"]["id"]
    cases = [
        (key_id, "acc-nobody", ["DECRYPT_DATA_KEY"], ("NotFoundError", "ACCOUNT_NOT_FOUND")),
        (key_id, alice_id, ["DECRYPT_DATA_KEY"], ("ValidationError", "KMS_GRANT_TO_SELF")),
        (key_id, bob_id, [], ("ValidationError", "INVALID_GRANT_OPERATIONS")),
        (bob_key, bob_id, ["DESCRIBE_KEY"], ("NotFoundError", "KMS_KEY_NOT_FOUND")),
        ("key-missing", bob_id, ["DESCRIBE_KEY"], ("NotFoundError", "KMS_KEY_NOT_FOUND")),
        # Another's key or none: whether the grantee exists is not told (no account-id oracle).
        (bob_key, "acc-nobody", ["DESCRIBE_KEY"], ("NotFoundError", "KMS_KEY_NOT_FOUND")),
        ("key-missing", "acc-nobody", ["DESCRIBE_KEY"], ("NotFoundError", "KMS_KEY_NOT_FOUND")),
    ]
    for target, grantee, operations, expected in cases:
        assert error(await grant(alice, target, grantee, operations)) == expected
    for client in (alice, bob):
        nodes = [e["node"] for e in (await client.execute(LIST_KEYS))["kmsKeys"]["edges"]]
        assert [n["grants"] for n in nodes] == [[]]


async def test_isolation_and_describe_grants(gql: GraphQLClient, db: Database) -> None:
    (_, _, alice), (bob_id, _, bob), (carol_id, _, carol), (_, _, dave) = await users(db, gql, 4)
    key_id = (await create_key(alice, "shared"))["key"]["id"]
    node_q = "query($id: ID!) { node(id: $id) { ... on KmsKey { id grants { id } } } }"
    for client in (bob, carol, dave):
        assert (await client.execute(LIST_KEYS))["kmsKeys"] == {
            "totalCount": 0, "edges": [],
            "pageInfo": {"hasNextPage": False, "hasPreviousPage": False, "endCursor": None},
        }
        assert (await client.execute(node_q, {"id": key_id}))["node"] is None
    bob_grant = (await grant(alice, key_id, bob_id, ["DESCRIBE_KEY"]))["grant"]
    await grant(alice, key_id, carol_id, ["DECRYPT_DATA_KEY"])
    bob_view = (await bob.execute(LIST_KEYS))["kmsKeys"]
    assert bob_view["totalCount"] == 1
    assert [g["id"] for g in bob_view["edges"][0]["node"]["grants"]] == [bob_grant["id"]]
    assert (await bob.execute(node_q, {"id": key_id}))["node"] == {"id": key_id, "grants": [{"id": bob_grant["id"]}]}
    assert (await carol.execute(LIST_KEYS))["kmsKeys"]["totalCount"] == 0
    assert (await carol.execute(node_q, {"id": key_id}))["node"] is None
    assert len((await alice.execute(node_q, {"id": key_id}))["node"]["grants"]) == 2
    assert error(await grant(bob, key_id, carol_id, ["DESCRIBE_KEY"])) == ("NotFoundError", "KMS_KEY_NOT_FOUND")


async def test_kms_keys_pages(gql: GraphQLClient, db: Database) -> None:
    [(_, _, alice)] = await users(db, gql, 1)
    aliases = [f"k{i}" for i in range(5)]
    for alias in aliases:
        await create_key(alice, alias)
    seen: list[str] = []
    after: str | None = None
    for expected_next in (True, True, False):
        page = (await alice.execute(LIST_KEYS, {"first": 2, "after": after}))["kmsKeys"]
        assert (page["totalCount"], page["pageInfo"]["hasNextPage"]) == (5, expected_next)
        assert page["pageInfo"]["hasPreviousPage"] is (after is not None)
        seen += [e["node"]["alias"] for e in page["edges"]]
        after = page["pageInfo"]["endCursor"]
    assert seen == aliases
    # An empty cursor is none, as on every other list: the first page, nothing before it.
    page = (await alice.execute(LIST_KEYS, {"first": 2, "after": ""}))["kmsKeys"]
    assert ([e["node"]["alias"] for e in page["edges"]], page["pageInfo"]["hasPreviousPage"]) == (aliases[:2], False)


def test_server_start_creates_the_root_key_file(live_server: LiveServer) -> None:
    path = live_server.settings.effective_kms_root_key_file
    assert path.parent == live_server.settings.data_dir
    assert (stat.S_IMODE(path.stat().st_mode), path.stat().st_size) == (0o600, 32)
