"""Reading the catalog: union typing per caller, every filter, ordering, keyset pagination."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import update
from sqlmodel import col

from app.config import Settings
from app.db.tables import Image, ImageMember
from app.db.uow import Database
from tests.api.ops import GET_IMAGE, GET_NODE, LIST_IMAGES, get_image, list_ids, list_images
from tests.conftest import GraphQLClient
from tests.factories import admin_account, make_account, make_image, share, unshare

ADMIN = "ims_test-admin-token"


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """Two regions: region-1 (the default) and region-2."""
    return replace(settings, regions=("region-1", "region-2"))


# ---------------------------------------------------------------- union typing


async def test_each_caller_sees_the_union_member_of_its_relation(gql: GraphQLClient, db: Database) -> None:
    alice, alice_t = await make_account(db, "alice")
    bob, bob_t = await make_account(db, "bob")
    carol, carol_t = await make_account(db, "carol")
    dave, dave_t = await make_account(db, "dave")
    _, erin_t = await make_account(db, "erin")
    image = await make_image(db, alice, name="web")
    await share(db, image, bob, "ACCEPTED")
    await share(db, image, carol, "PENDING")
    await share(db, image, dave, "REJECTED")

    own = await get_image(gql.as_(alice_t), image.id)
    assert own is not None
    assert own["__typename"] == "PrivateImage"
    assert own["owner"] == {"id": alice.id, "name": "alice"}
    assert own["members"]["totalCount"] == 3
    assert sorted((e["node"]["account"]["name"], e["node"]["status"]) for e in own["members"]["edges"]) == [
        ("bob", "ACCEPTED"), ("carol", "PENDING"), ("dave", "REJECTED")
    ]

    for member, token, status in ((bob, bob_t, "ACCEPTED"), (carol, carol_t, "PENDING"), (dave, dave_t, "REJECTED")):
        seen = await get_image(gql.as_(token), image.id)
        assert seen is not None
        assert seen["__typename"] == "SharedImage"
        assert seen["owner"] == {"id": alice.id, "name": "alice"}
        assert seen["membership"] == {"imageId": image.id, "account": {"id": member.id, "name": member.name},
                                      "status": status}
        node = (await gql.as_(token).execute(GET_NODE, {"id": image.id}))["node"]
        assert node == {"__typename": "SharedImage", "id": image.id, "name": "web"}

    # A stranger, and the administrator (no access to private images), see nothing.
    for token in (erin_t, ADMIN):
        assert await get_image(gql.as_(token), image.id) is None
        assert (await gql.as_(token).execute(GET_NODE, {"id": image.id}))["node"] is None


async def test_public_images_are_public_to_everyone(gql: GraphQLClient, db: Database) -> None:
    _, alice_t = await make_account(db)
    admin = await admin_account(db)
    public = await make_image(db, admin, visibility="PUBLIC", name="Ubuntu 22.04")
    for token in (alice_t, ADMIN):
        seen = await get_image(gql.as_(token), public.id)
        assert seen is not None and seen["__typename"] == "PublicImage" and seen["id"] == public.id
        node = (await gql.as_(token).execute(GET_NODE, {"id": public.id}))["node"]
        assert node == {"__typename": "PublicImage", "id": public.id, "name": "Ubuntu 22.04"}
        assert public.id in await list_ids(gql.as_(token))


async def test_node_resolves_accounts_for_admins_and_self_only(gql: GraphQLClient, db: Database) -> None:
    alice, alice_t = await make_account(db, "alice")
    bob, _ = await make_account(db, "bob")
    q = gql.as_(alice_t)
    assert (await q.execute(GET_NODE, {"id": alice.id}))["node"] == {
        "__typename": "Account", "id": alice.id, "name": "alice", "role": "USER"}
    assert (await q.execute(GET_NODE, {"id": bob.id}))["node"] is None
    assert (await gql.execute(GET_NODE, {"id": bob.id}))["node"] == {
        "__typename": "Account", "id": bob.id, "name": "bob", "role": "USER"}
    for unknown in ("acc-doesnotexist", "img-doesnotexist", "tok-x", "nonsense", ""):
        assert (await gql.execute(GET_NODE, {"id": unknown}))["node"] is None


# ---------------------------------------------------------------- visibility and memberships


async def test_default_list_shows_accepted_shares_and_member_status_selects_others(
    gql: GraphQLClient, db: Database
) -> None:
    alice, _ = await make_account(db)
    bob, bob_t = await make_account(db)
    accepted = await make_image(db, alice)
    pending = await make_image(db, alice)
    rejected = await make_image(db, alice)
    await make_image(db, alice)  # not shared with bob at all
    await share(db, accepted, bob, "ACCEPTED")
    await share(db, pending, bob, "PENDING")
    await share(db, rejected, bob, "REJECTED")
    own = await make_image(db, bob)
    q = gql.as_(bob_t)

    assert set(await list_ids(q)) == {accepted.id, own.id}
    shared_only = {"visibility": ["SHARED"]}
    assert await list_ids(q, filter=shared_only) == [accepted.id]
    assert await list_ids(q, filter={**shared_only, "memberStatus": ["PENDING"]}) == [pending.id]
    assert await list_ids(q, filter={**shared_only, "memberStatus": ["REJECTED"]}) == [rejected.id]
    assert set(await list_ids(q, filter={**shared_only, "memberStatus": ["PENDING", "ACCEPTED", "REJECTED"]})) == {
        accepted.id, pending.id, rejected.id}
    assert await list_ids(q, filter={**shared_only, "memberStatus": []}) == []
    # memberStatus only narrows SHARED images: own images are still listed.
    assert set(await list_ids(q, filter={"memberStatus": ["PENDING"]})) == {pending.id, own.id}


async def test_visibility_filter(gql: GraphQLClient, db: Database) -> None:
    admin = await admin_account(db)
    alice, _ = await make_account(db)
    bob, bob_t = await make_account(db)
    public = await make_image(db, admin, visibility="PUBLIC")
    shared = await make_image(db, alice)
    await share(db, shared, bob)
    own = await make_image(db, bob)
    q = gql.as_(bob_t)
    cases: list[tuple[list[str] | None, set[str]]] = [
        (None, {public.id, shared.id, own.id}),
        (["PUBLIC"], {public.id}),
        (["PRIVATE"], {own.id}),
        (["SHARED"], {shared.id}),
        (["PUBLIC", "SHARED"], {public.id, shared.id}),
        ([], set()),
    ]
    for visibility, expected in cases:
        page = await list_images(q, filter={"visibility": visibility}, first=1000)
        assert {e["node"]["id"] for e in page["edges"]} == expected, visibility
        assert page["totalCount"] == len(expected), visibility
    typenames = {e["node"]["id"]: e["node"]["__typename"] for e in (await list_images(q))["edges"]}
    assert typenames == {public.id: "PublicImage", shared.id: "SharedImage", own.id: "PrivateImage"}


# ---------------------------------------------------------------- filters


async def _filtered(q: GraphQLClient, flt: dict[str, Any]) -> set[str]:
    page = await list_images(q, filter=flt, first=1000)
    ids = {e["node"]["id"] for e in page["edges"]}
    assert page["totalCount"] == len(ids), flt
    return ids


async def test_enum_and_boolean_filters(gql: GraphQLClient, db: Database) -> None:
    alice, alice_t = await make_account(db)
    base = await make_image(db, alice)  # SYSTEM_DISK ACTIVE RAW LINUX/Ubuntu, unencrypted, unprotected
    data = await make_image(db, alice, kind="DATA_DISK", os_type=None, os_platform=None, os_version=None,
                            disk_format="QCOW2")
    iso = await make_image(db, alice, kind="ISO", disk_format="ISO", os_type="OTHER", os_platform="Other")
    win = await make_image(db, alice, os_type="WINDOWS", os_platform="Windows", disk_format="VHD", protected=True)
    killed = await make_image(db, alice, status="KILLED", os_platform="Debian")
    queued = await make_image(db, alice, status="QUEUED", os_platform="CentOS")
    enc1 = await make_image(db, alice, kms_key_id="key-one")
    enc2 = await make_image(db, alice, kms_key_id="key-two", protected=True)
    q = gql.as_(alice_t)
    every = {base.id, data.id, iso.id, win.id, killed.id, queued.id, enc1.id, enc2.id}
    cases: list[tuple[dict[str, Any], set[str]]] = [
        ({}, every),
        ({"kind": ["DATA_DISK"]}, {data.id}),
        ({"kind": ["ISO", "DATA_DISK"]}, {data.id, iso.id}),
        ({"kind": ["FULL_ECS"]}, set()),
        ({"status": ["KILLED"]}, {killed.id}),
        ({"status": ["QUEUED", "KILLED"]}, {killed.id, queued.id}),
        ({"status": ["ACTIVE"]}, every - {killed.id, queued.id}),
        ({"osType": ["WINDOWS"]}, {win.id}),
        ({"osType": ["OTHER", "WINDOWS"]}, {win.id, iso.id}),
        ({"osType": ["LINUX"]}, {base.id, killed.id, queued.id, enc1.id, enc2.id}),
        ({"platform": ["Debian"]}, {killed.id}),
        ({"platform": ["Debian", "CentOS"]}, {killed.id, queued.id}),
        ({"platform": ["Windows"]}, {win.id}),
        ({"diskFormat": ["QCOW2"]}, {data.id}),
        ({"diskFormat": ["VHD", "ISO"]}, {win.id, iso.id}),
        ({"encrypted": True}, {enc1.id, enc2.id}),
        ({"encrypted": False}, every - {enc1.id, enc2.id}),
        ({"kmsKeyId": "key-two"}, {enc2.id}),
        ({"kmsKeyId": "key-none"}, set()),
        ({"protected": True}, {win.id, enc2.id}),
        ({"protected": False}, every - {win.id, enc2.id}),
        ({"protected": True, "encrypted": True}, {enc2.id}),
        ({"kind": ["SYSTEM_DISK"], "status": ["ACTIVE"], "osType": ["LINUX"], "encrypted": False}, {base.id}),
    ]
    for flt, expected in cases:
        assert await _filtered(q, flt) == expected, flt


async def test_name_contains_is_case_insensitive_and_literal(gql: GraphQLClient, db: Database) -> None:
    alice, alice_t = await make_account(db)
    names = ["Alpha-Web", "alphabet", "beta_1", "100%_sure", "x%y", "x_y", "xay", "BETA gamma", "İzmir", "ΟΔΟΣ",
             "Ärger"]
    ids = {n: (await make_image(db, alice, name=n)).id for n in names}
    q = gql.as_(alice_t)
    cases: list[tuple[str, set[str]]] = [
        ("ALPHA", {"Alpha-Web", "alphabet"}),
        ("alpha-w", {"Alpha-Web"}),
        ("Beta", {"beta_1", "BETA gamma"}),
        ("%", {"100%_sure", "x%y"}),
        ("_", {"beta_1", "100%_sure", "x_y"}),
        ("x_y", {"x_y"}),
        ("x%y", {"x%y"}),
        ("%_", {"100%_sure"}),
        ("a g", {"BETA gamma"}),
        ("nothing", set()),
        # Every name is found by itself, whatever its letters (folded alike on both sides).
        ("İzmir", {"İzmir"}),
        ("ΟΔΟΣ", {"ΟΔΟΣ"}),
        ("Ärger", {"Ärger"}),
        ("rger", {"Ärger"}),
        ("A\u0308rger", {"Ärger"}),  # typed with a combining diaeresis: composed as names are
        # Case-insensitive beyond ASCII, alike on SQLite and PostgreSQL (simple lowercase mapping).
        ("ärger", {"Ärger"}),
        ("ÄRGER", {"Ärger"}),
        ("izmir", {"İzmir"}),
        ("İZMİR", {"İzmir"}),
        ("οδος", {"ΟΔΟΣ"}),  # the final sigma is a sigma
        ("Οδοσ", {"ΟΔΟΣ"}),
        # Longer than any name (128): nothing, and no pattern SQLite's LIKE refuses.
        ("x" * 50_000, set()),
        ("%" * 25_000, set()),
    ]
    for needle, expected in cases:
        assert await _filtered(q, {"nameContains": needle}) == {ids[n] for n in expected}, needle


async def test_tag_filters_match_every_tag(gql: GraphQLClient, db: Database) -> None:
    alice, alice_t = await make_account(db)
    prod_web = await make_image(db, alice, tags={"env": "prod", "role": "web"})
    prod_db = await make_image(db, alice, tags={"env": "prod", "role": "db"})
    dev_web = await make_image(db, alice, tags={"env": "dev", "role": "web"})
    empty_value = await make_image(db, alice, tags={"team": ""})
    await make_image(db, alice)
    q = gql.as_(alice_t)
    cases: list[tuple[list[dict[str, Any]], set[str]]] = [
        ([{"key": "env"}], {prod_web.id, prod_db.id, dev_web.id}),
        ([{"key": "env", "value": None}], {prod_web.id, prod_db.id, dev_web.id}),
        ([{"key": "env", "value": "prod"}], {prod_web.id, prod_db.id}),
        ([{"key": "env", "value": "prod"}, {"key": "role", "value": "web"}], {prod_web.id}),
        ([{"key": "env"}, {"key": "role", "value": "web"}], {prod_web.id, dev_web.id}),
        ([{"key": "env", "value": "prod"}, {"key": "team"}], set()),
        ([{"key": "team"}], {empty_value.id}),
        ([{"key": "team", "value": ""}], {empty_value.id}),
        ([{"key": "role", "value": "WEB"}], set()),
        ([{"key": "missing"}], set()),
    ]
    for tags, expected in cases:
        assert await _filtered(q, {"tags": tags}) == expected, tags


async def test_created_range_ids_and_region_filters(gql: GraphQLClient, db: Database) -> None:
    alice, alice_t = await make_account(db)
    t0 = datetime(2021, 1, 1, tzinfo=UTC)
    old = await make_image(db, alice, created_at=t0)
    mid = await make_image(db, alice, created_at=t0 + timedelta(days=1))
    new = await make_image(db, alice, created_at=t0 + timedelta(days=2))
    other_region = await make_image(db, alice, region="region-2", created_at=t0 + timedelta(days=1))
    q = gql.as_(alice_t)
    iso = (t0 + timedelta(days=1)).isoformat()
    cases: list[tuple[dict[str, Any], set[str]]] = [
        ({"createdAfter": iso}, {new.id}),  # strictly after
        ({"createdBefore": iso}, {old.id}),  # strictly before
        ({"createdAfter": t0.isoformat(), "createdBefore": (t0 + timedelta(days=2)).isoformat()}, {mid.id}),
        ({"createdAfter": (t0 - timedelta(seconds=1)).isoformat()}, {old.id, mid.id, new.id}),
        ({"ids": [old.id, new.id, other_region.id, "img-unknown"]}, {old.id, new.id}),
        ({"ids": []}, set()),
        ({"region": "region-1"}, {old.id, mid.id, new.id}),
        ({"region": "region-2"}, {other_region.id}),
        ({"region": "region-2", "createdBefore": iso}, set()),
    ]
    for flt, expected in cases:
        assert await _filtered(q, flt) == expected, flt


async def test_unknown_region_is_a_clear_client_error(gql: GraphQLClient, db: Database) -> None:
    _, alice_t = await make_account(db)
    response = await gql.as_(alice_t).raw(LIST_IMAGES, {"filter": {"region": "region-9"}})
    assert response.status_code == 200
    body = response.json()
    assert body["data"] is None
    [err] = body["errors"]
    assert err["path"] == ["images"]
    assert err["message"] == "Unknown region 'region-9'."
    assert err["extensions"]["code"] == "INVALID_REGION"
    assert err["extensions"]["field"] == "filter.region"


# ---------------------------------------------------------------- ordering


def _expected_order(images: list[Image], field: str, direction: str) -> list[str]:
    def key(i: Image) -> tuple[Any, str]:
        if field == "NAME":
            return (i.name, i.id)
        if field == "SIZE":
            return (-1 if i.size_bytes is None else i.size_bytes, i.id)
        if field == "STATUS":
            return (i.status, i.id)
        return (i.created_at, i.id)

    return [i.id for i in sorted(images, key=key, reverse=direction == "DESC")]


ORDERS = [(f, d) for f in ("CREATED_AT", "NAME", "SIZE", "STATUS") for d in ("ASC", "DESC")]


async def _catalog_with_ties(db: Database) -> tuple[str, list[Image]]:
    alice, alice_t = await make_account(db)
    t0 = datetime(2022, 3, 4, 5, 6, 7, tzinfo=UTC)
    specs: list[dict[str, Any]] = [
        {"name": "delta", "size_bytes": 300, "status": "ACTIVE", "created_at": t0},
        {"name": "alpha", "size_bytes": 100, "status": "KILLED", "created_at": t0},  # created_at tie
        # name and size tie with the previous one
        {"name": "alpha", "size_bytes": 100, "status": "ACTIVE", "created_at": t0 + timedelta(seconds=1)},
        {"name": "alpha", "size_bytes": 200, "status": "QUEUED", "created_at": t0 + timedelta(seconds=2)},
        {"name": "charlie", "size_bytes": None, "status": "SAVING", "created_at": t0 + timedelta(seconds=2)},
        {"name": "bravo", "size_bytes": 5 << 40, "status": "ACTIVE", "created_at": t0 + timedelta(seconds=3)},
        {"name": "bravo", "size_bytes": 300, "status": "ACTIVE", "created_at": t0 + timedelta(seconds=4)},
        {"name": "echo", "size_bytes": None, "status": "ACTIVE", "created_at": t0 + timedelta(seconds=4)},
        {"name": "delta", "size_bytes": 0, "status": "KILLED", "created_at": t0 + timedelta(microseconds=1)},
        {"name": "foxtrot", "size_bytes": 100, "status": "ACTIVE", "created_at": t0 + timedelta(seconds=5)},
    ]
    images = [await make_image(db, alice, **s) for s in specs]
    return alice_t, images


async def test_order_by_each_field_and_direction(gql: GraphQLClient, db: Database) -> None:
    token, images = await _catalog_with_ties(db)
    q = gql.as_(token)
    assert await list_ids(q) == _expected_order(images, "CREATED_AT", "DESC")  # the default order
    for field, direction in ORDERS:
        got = await list_ids(q, orderBy={"field": field, "direction": direction})
        assert got == _expected_order(images, field, direction), (field, direction)


async def test_keyset_pages_cover_every_image_once_in_order(gql: GraphQLClient, db: Database) -> None:
    token, images = await _catalog_with_ties(db)
    q = gql.as_(token)
    for field, direction in ORDERS:
        order = {"field": field, "direction": direction}
        walked: list[str] = []
        after: str | None = None
        pages = 0
        while True:
            page = await list_images(q, orderBy=order, first=3, after=after)
            pages += 1
            assert page["totalCount"] == len(images)
            assert page["pageInfo"]["hasPreviousPage"] is (after is not None)
            edges = page["edges"]
            walked += [e["node"]["id"] for e in edges]
            assert page["pageInfo"]["startCursor"] == edges[0]["cursor"]
            assert page["pageInfo"]["endCursor"] == edges[-1]["cursor"]
            if not page["pageInfo"]["hasNextPage"]:
                break
            after = page["pageInfo"]["endCursor"]
        assert pages == 4, (field, direction)
        assert walked == _expected_order(images, field, direction), (field, direction)
        # Past the end: an empty page that still counts everything.
        tail = await list_images(q, orderBy=order, first=3, after=edges[-1]["cursor"])
        assert (tail["edges"], tail["totalCount"], tail["pageInfo"]["hasNextPage"]) == ([], len(images), False)


async def test_total_count_is_the_filtered_count_whatever_the_cursor(gql: GraphQLClient, db: Database) -> None:
    alice, alice_t = await make_account(db)
    for _ in range(5):
        await make_image(db, alice)
    await make_image(db, alice, status="KILLED")
    q = gql.as_(alice_t)
    flt = {"status": ["ACTIVE"]}
    first = await list_images(q, filter=flt, first=2)
    second = await list_images(q, filter=flt, first=2, after=first["pageInfo"]["endCursor"])
    assert (first["totalCount"], second["totalCount"]) == (5, 5)
    assert len(first["edges"]) == len(second["edges"]) == 2
    zero = await list_images(q, filter=flt, first=0)
    assert zero["edges"] == []
    assert zero["totalCount"] == 5
    assert zero["pageInfo"] == {"hasNextPage": True, "hasPreviousPage": False, "startCursor": None,
                                "endCursor": None}


async def test_default_page_size_is_50(gql: GraphQLClient, db: Database) -> None:
    alice, alice_t = await make_account(db)
    for _ in range(51):
        await make_image(db, alice)
    page = await list_images(gql.as_(alice_t))
    assert (len(page["edges"]), page["totalCount"], page["pageInfo"]["hasNextPage"]) == (50, 51, True)


async def _client_error(q: GraphQLClient, variables: dict[str, Any]) -> dict[str, Any]:
    response = await q.raw(LIST_IMAGES, variables)
    assert response.status_code == 200
    body = response.json()
    assert body["data"] is None
    [err] = body["errors"]
    assert err["path"] == ["images"]
    assert err["message"] != "Internal server error"
    return err  # type: ignore[no-any-return]


async def test_page_size_and_cursor_errors(gql: GraphQLClient, db: Database) -> None:
    alice, alice_t = await make_account(db)
    for _ in range(3):
        await make_image(db, alice)
    q = gql.as_(alice_t)
    for first in (1001, -1):
        err = await _client_error(q, {"first": first})
        assert err["extensions"] == {"code": "INVALID_PAGE_SIZE", "classification": "ValidationError", "field": "first"}
    assert len((await list_images(q, first=1000))["edges"]) == 3

    by_name = await list_images(q, orderBy={"field": "NAME", "direction": "ASC"}, first=1)
    cursor = by_name["pageInfo"]["endCursor"]
    bad_cursors = [
        "garbage!!",
        cursor[:-2] + ("AA" if cursor[-2:] != "AA" else "BB"),  # tampered
        cursor,  # issued for NAME:ASC, used with the default CREATED_AT:DESC
    ]
    for after in bad_cursors:
        err = await _client_error(q, {"first": 1, "after": after})
        assert err["extensions"] == {"code": "INVALID_CURSOR", "classification": "ValidationError", "field": "after"}, after
    err = await _client_error(q, {"first": 1, "after": cursor, "orderBy": {"field": "NAME", "direction": "DESC"}})
    assert err["extensions"]["code"] == "INVALID_CURSOR"
    err = await _client_error(q, {"first": 1, "after": cursor, "orderBy": {"field": "SIZE", "direction": "ASC"}})
    assert err["extensions"]["code"] == "INVALID_CURSOR"


@pytest.mark.parametrize("field,value", [("NAME", 5), ("STATUS", 1.5), ("SIZE", True), ("SIZE", "12"),
                                         ("SIZE", 2**63), ("SIZE", -2), ("CREATED_AT", "0001-01-01T00:00:00+05:00"),
                                         ("CREATED_AT", "9999-12-31T23:00:00-05:00"), ("NAME", "a\x00b")])
async def test_a_cursor_whose_value_has_the_wrong_type_is_invalid(gql: GraphQLClient, db: Database,
                                                                  field: str, value: Any) -> None:
    """Decoded, a cursor's value must have its ordering's type, and a value the database and
    UTC can hold, before it reaches the database (on PostgreSQL asyncpg would refuse the
    argument only there; a size past 64 bits or a date-time past year 9999 in UTC failed as
    an internal error)."""
    from app.domain.pagination import encode_cursor

    alice, alice_t = await make_account(db)
    await make_image(db, alice)
    forged = encode_cursor(f"{field}:ASC", value, "img-x")
    err = await _client_error(gql.as_(alice_t), {"first": 1, "after": forged,
                                                 "orderBy": {"field": field, "direction": "ASC"}})
    assert err["extensions"] == {"code": "INVALID_CURSOR", "classification": "ValidationError", "field": "after"}


@pytest.mark.parametrize("bound", ["createdAfter", "createdBefore"])
async def test_a_date_time_filter_needs_its_offset(gql: GraphQLClient, db: Database, bound: str) -> None:
    alice, alice_t = await make_account(db)
    await make_image(db, alice)
    err = await _client_error(gql.as_(alice_t), {"first": 5, "filter": {bound: "2026-01-01T00:00:00"}})
    assert err["extensions"] == {"code": "INVALID_DATETIME", "classification": "ValidationError",
                                 "field": f"filter.{bound}"}
    page = await list_images(gql.as_(alice_t), first=5, filter={bound: "2000-01-01T00:00:00+02:00"})
    assert len(page["edges"]) == (1 if bound == "createdAfter" else 0)
    for beyond_utc in ("0001-01-01T00:00:00+05:00", "9999-12-31T23:00:00-05:00"):
        err = await _client_error(gql.as_(alice_t), {"first": 5, "filter": {bound: beyond_utc}})
        assert err["extensions"] == {"code": "INVALID_DATETIME", "classification": "ValidationError",
                                     "field": f"filter.{bound}"}, beyond_utc


async def test_a_tag_filter_names_at_most_ten_keys(gql: GraphQLClient, db: Database) -> None:
    """An image has at most 10 tags, one value each: a filter of more keys matches nothing,
    and is refused before each of its conditions reaches the page statement (a thousand
    outgrew SQLite's expression depth). A key asked for with and without a value is one
    condition; asked for with two values it matches no image."""
    alice, alice_t = await make_account(db)
    image = await make_image(db, alice)
    async with db.uow(alice.id) as uow:
        await uow.images.put_tags(image.id, {f"k{i}": "v" for i in range(10)})
        await uow.commit()
    q = gql.as_(alice_t)
    ten = [{"key": f"k{i}", "value": "v"} for i in range(10)]
    keys_only = [{"key": f"k{i}"} for i in range(10)]
    assert len((await list_images(q, first=5, filter={"tags": ten + ten + keys_only}))["edges"]) == 1
    assert (await list_images(q, first=5, filter={"tags": [*ten, {"key": "k0", "value": "w"}]}))["edges"] == []
    for tags in (ten + [{"key": "k10"}], [{"key": f"k{i}"} for i in range(1000)]):
        err = await _client_error(q, {"first": 5, "filter": {"tags": tags}})
        assert err["extensions"] == {"code": "TOO_MANY_ITEMS", "classification": "ValidationError",
                                     "field": "filter.tags"}
        assert err["message"] == "A filter names at most 10 tag keys."


@pytest.mark.parametrize("field", ["ids", "platform"])
async def test_a_list_filter_names_at_most_a_thousand_values(gql: GraphQLClient, db: Database, field: str) -> None:
    """Each value of `ids` or `platform` is a bound parameter in every arm of the page
    statement and of its count: 45,000 of them (394 KB of variables) outgrew what SQLite binds
    and the page failed as an internal error. More than 1,000 distinct values are refused
    with the list's path; repeated ones count once."""
    alice, alice_t = await make_account(db)
    image = await make_image(db, alice, os_platform="Ubuntu")
    q = gql.as_(alice_t)
    value = image.id if field == "ids" else "ubuntu"
    allowed = [value, *(f"v-{i}" for i in range(999))]
    assert [e["node"]["id"] for e in (await list_images(q, first=5, filter={field: allowed + allowed}))["edges"]] \
        == [image.id]
    for values in ([*allowed, "one-more"], [f"v-{i}" for i in range(45_000)]):
        err = await _client_error(q, {"first": 5, "filter": {field: values}})
        assert err["extensions"] == {"code": "TOO_MANY_ITEMS", "classification": "ValidationError",
                                     "field": f"filter.{field}"}
        assert err["message"] == f"A filter names at most 1000 values in filter.{field}."


async def test_image_query_answers_null_for_unknown_ids(gql: GraphQLClient, db: Database) -> None:
    _, alice_t = await make_account(db)
    for unknown in ("img-unknown", "nonsense", ""):
        assert (await gql.as_(alice_t).execute(GET_IMAGE, {"id": unknown}))["image"] is None


MEMBERS = """query($id: ID!, $status: [MemberStatus!], $first: Int, $after: String) { image(id: $id) {
  ... on PrivateImage { members(status: $status, first: $first, after: $after) {
    totalCount pageInfo { hasNextPage hasPreviousPage endCursor } edges { node { account { name } status } } } } } }"""


async def test_members_connection_pages_filters_and_rejects_bad_arguments(gql: GraphQLClient, db: Database) -> None:
    alice, alice_t = await make_account(db)
    image = await make_image(db, alice)
    for name, status in (("m-1", "ACCEPTED"), ("m-2", "PENDING"), ("m-3", "REJECTED")):
        await share(db, image, (await make_account(db, name))[0], status)
    q = gql.as_(alice_t)

    async def members(**variables: Any) -> dict[str, Any]:
        return (await q.execute(MEMBERS, {"id": image.id, **variables}))["image"]["members"]  # type: ignore[no-any-return]

    first = await members(first=2)
    assert (first["totalCount"], len(first["edges"]), first["pageInfo"]["hasNextPage"]) == (3, 2, True)
    rest = await members(first=2, after=first["pageInfo"]["endCursor"])
    assert (len(rest["edges"]), rest["pageInfo"]["hasNextPage"], rest["pageInfo"]["hasPreviousPage"]) == (
        1, False, True)
    names = [e["node"]["account"]["name"] for e in first["edges"] + rest["edges"]]
    assert sorted(names) == ["m-1", "m-2", "m-3"]
    pending = await members(status=["PENDING"])
    assert (pending["totalCount"], pending["edges"]) == (1, [{"node": {"account": {"name": "m-2"}, "status": "PENDING"}}])

    for variables, code in (({"first": 1001}, "INVALID_PAGE_SIZE"), ({"after": "garbage!"}, "INVALID_CURSOR")):
        body = (await q.raw(MEMBERS, {"id": image.id, **variables})).json()
        assert body["data"] == {"image": None}
        [err] = body["errors"]
        assert (err["path"], err["extensions"]["code"]) == (["image", "members"], code)
        assert err["message"] != "Internal server error"


async def test_members_pages_resume_after_the_cursor_when_its_member_is_gone(gql: GraphQLClient, db: Database) -> None:
    """The cursor is the member's place in the order (shared at, account id), not a row to find
    again: unsharing the account it names, or a filter it no longer matches, skips no one."""
    alice, alice_t = await make_account(db)
    image = await make_image(db, alice)
    accounts = [(await make_account(db, name))[0] for name in ("m-1", "m-2", "m-3")]
    for account in accounts:
        await share(db, image, account, "PENDING")
    q = gql.as_(alice_t)

    async def members(**variables: Any) -> dict[str, Any]:
        return (await q.execute(MEMBERS, {"id": image.id, **variables}))["image"]["members"]  # type: ignore[no-any-return]

    def names(page: dict[str, Any]) -> list[str]:
        return [e["node"]["account"]["name"] for e in page["edges"]]

    first = await members(first=1)
    assert names(first) == ["m-1"]
    await unshare(db, image, accounts[0])
    rest = await members(first=1, after=first["pageInfo"]["endCursor"])
    assert (names(rest), rest["totalCount"], rest["pageInfo"]["hasNextPage"], rest["pageInfo"]["hasPreviousPage"]) \
        == (["m-2"], 2, True, True)
    # m-2 answers: no longer PENDING, yet the PENDING list goes on after it.
    async with db.uow() as uow:
        await uow.session.execute(update(ImageMember).where(col(ImageMember.account_id) == accounts[1].id)
                                  .values(status="ACCEPTED"))
        await uow.commit()
    tail = await members(status=["PENDING"], first=1, after=rest["pageInfo"]["endCursor"])
    assert (names(tail), tail["pageInfo"]["hasNextPage"]) == (["m-3"], False)

