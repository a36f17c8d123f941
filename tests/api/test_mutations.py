"""Image metadata, tag, delete and account mutations: outcomes and the state they leave."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from app.db.uow import Database
from tests.api.ops import (
    add_tags,
    delete_images,
    error,
    get_image,
    list_ids,
    mutate,
    publish,
    remove_tags,
    set_protection,
    update_image,
    without_message,
)
from tests.conftest import GraphQLClient
from tests.factories import admin_account, make_account, make_image, member_rows, share, tag_rows

#: The fields a refused mutation must leave as they were.
STATE = ("name", "description", "version", "minRamMb", "maxRamMb", "bootMode", "nicMultiQueue", "sriovDriver",
         "protected", "tags", "updatedAt")


def state(image: dict[str, Any] | None) -> dict[str, Any]:
    assert image is not None
    return {k: image[k] for k in STATE}


# ---------------------------------------------------------------- updateImage


async def test_owner_updates_every_field_and_the_version_moves_by_one(gql: GraphQLClient, db: Database) -> None:
    alice, alice_t = await make_account(db, "alice")
    image = await make_image(db, alice, name="old", min_ram_mb=512, max_ram_mb=4096)
    q = gql.as_(alice_t)
    result = await update_image(q, id=image.id, name="新的 name-1.0_x", description="a (nice) image",
                                minRamMb=1024, maxRamMb=8192, nicMultiQueue=True, sriovDriver=True,
                                bootMode="UEFI")
    assert result["__typename"] == "UpdateImageSuccess"
    updated = result["image"]
    assert updated["__typename"] == "PrivateImage"
    assert {k: updated[k] for k in ("name", "description", "minRamMb", "maxRamMb", "nicMultiQueue", "sriovDriver",
                                    "bootMode", "version")} == {
        "name": "新的 name-1.0_x", "description": "a (nice) image", "minRamMb": 1024, "maxRamMb": 8192,
        "nicMultiQueue": True, "sriovDriver": True, "bootMode": "UEFI", "version": 2}
    assert state(await get_image(q, image.id)) == state(updated)

    # Omitted fields stay; an explicit null clears maxRamMb.
    cleared = (await update_image(q, id=image.id, maxRamMb=None))["image"]
    assert (cleared["maxRamMb"], cleared["minRamMb"], cleared["name"], cleared["version"]) == (
        None, 1024, "新的 name-1.0_x", 3)
    back = (await update_image(q, id=image.id, bootMode="BIOS", expectedVersion=3))["image"]
    assert (back["bootMode"], back["maxRamMb"], back["version"]) == ("BIOS", None, 4)


async def test_stale_expected_version_conflicts_and_changes_nothing(gql: GraphQLClient, db: Database) -> None:
    alice, alice_t = await make_account(db)
    image = await make_image(db, alice)
    q = gql.as_(alice_t)
    before = state(await get_image(q, image.id))
    result = await update_image(q, id=image.id, name="renamed", expectedVersion=before["version"] + 1)
    assert without_message(result) == error("ConflictError", "VERSION_CONFLICT")
    assert state(await get_image(q, image.id)) == before
    ok = await update_image(q, id=image.id, name="renamed", expectedVersion=before["version"])
    assert (ok["image"]["name"], ok["image"]["version"]) == ("renamed", before["version"] + 1)
    stale = await update_image(q, id=image.id, name="again", expectedVersion=before["version"])
    assert stale["code"] == "VERSION_CONFLICT"
    assert (await get_image(q, image.id) or {})["name"] == "renamed"


async def test_an_update_that_changes_nothing_keeps_the_version(gql: GraphQLClient, db: Database) -> None:
    """`version` is incremented on every change: a request naming no field, or only the values
    the image has (a form sent back whole), is no change and leaves version and updatedAt."""
    alice, alice_t = await make_account(db)
    image = await make_image(db, alice, name="same", description="d", min_ram_mb=512, max_ram_mb=None)
    q = gql.as_(alice_t)
    before = state(await get_image(q, image.id))
    empty = await update_image(q, id=image.id)
    assert empty["__typename"] == "UpdateImageSuccess"
    assert state(empty["image"]) == before
    same = await update_image(q, id=image.id, expectedVersion=before["version"], name="same", description="d",
                              minRamMb=512, maxRamMb=None, bootMode="BIOS", nicMultiQueue=False,
                              sriovDriver=False)
    assert state(same["image"]) == before
    assert state(await get_image(q, image.id)) == before
    stale = await update_image(q, id=image.id, expectedVersion=before["version"] + 1)
    assert without_message(stale) == error("ConflictError", "VERSION_CONFLICT")
    changed = (await update_image(q, id=image.id, name="same", description="new"))["image"]
    assert (changed["description"], changed["version"]) == ("new", before["version"] + 1)
    assert changed["updatedAt"] != before["updatedAt"]


async def test_only_the_owner_updates_and_refusals_change_nothing(gql: GraphQLClient, db: Database) -> None:
    alice, alice_t = await make_account(db)
    bob, bob_t = await make_account(db)
    _, erin_t = await make_account(db)
    image = await make_image(db, alice)
    await share(db, image, bob)
    before = state(await get_image(gql.as_(alice_t), image.id))

    member = await update_image(gql.as_(bob_t), id=image.id, name="mine now")
    assert without_message(member) == error("ForbiddenError", "NOT_OWNER")
    stranger = await update_image(gql.as_(erin_t), id=image.id, name="mine now")
    assert without_message(stranger) == error("NotFoundError", "IMAGE_NOT_FOUND", resourceId=image.id)
    admin = await update_image(gql, id=image.id, name="mine now")
    assert without_message(admin) == error("NotFoundError", "IMAGE_NOT_FOUND", resourceId=image.id)
    assert state(await get_image(gql.as_(alice_t), image.id)) == before


async def test_public_images_are_read_only_to_users_and_writable_by_admins(gql: GraphQLClient, db: Database) -> None:
    admin = await admin_account(db)
    _, alice_t = await make_account(db)
    public = await make_image(db, admin, visibility="PUBLIC", name="CentOS")
    before = state(await get_image(gql, public.id))
    refused = await update_image(gql.as_(alice_t), id=public.id, name="mine")
    assert without_message(refused) == error("ForbiddenError", "PUBLIC_IMAGE_READ_ONLY")
    assert state(await get_image(gql, public.id)) == before
    done = await update_image(gql, id=public.id, name="CentOS 9", minRamMb=2048)
    assert done["image"]["__typename"] == "PublicImage"
    assert (done["image"]["name"], done["image"]["minRamMb"], done["image"]["version"]) == (
        "CentOS 9", 2048, before["version"] + 1)


async def test_only_active_images_are_updated(gql: GraphQLClient, db: Database) -> None:
    alice, alice_t = await make_account(db)
    q = gql.as_(alice_t)
    for status in ("QUEUED", "SAVING", "KILLED"):
        image = await make_image(db, alice, status=status)
        before = state(await get_image(q, image.id))
        result = await update_image(q, id=image.id, name="new name")
        assert without_message(result) == error("ConflictError", "IMAGE_NOT_ACTIVE"), status
        assert state(await get_image(q, image.id)) == before


async def test_data_disk_images_take_only_name_and_description(gql: GraphQLClient, db: Database) -> None:
    alice, alice_t = await make_account(db)
    image = await make_image(db, alice, kind="DATA_DISK", os_type=None, os_platform=None, os_version=None)
    q = gql.as_(alice_t)
    before = state(await get_image(q, image.id))
    refused_changes: list[dict[str, Any]] = [
        {"minRamMb": 1024}, {"maxRamMb": 4096}, {"maxRamMb": None}, {"bootMode": "UEFI"},
        {"nicMultiQueue": True}, {"sriovDriver": False}, {"name": "ok", "minRamMb": 0},
    ]
    for changes in refused_changes:
        result = await update_image(q, id=image.id, **changes)
        assert without_message(result) == error("NotSupportedError", "DATA_DISK_FIELDS"), changes
    assert state(await get_image(q, image.id)) == before
    ok = await update_image(q, id=image.id, name="data-1", description="volume data")
    assert (ok["image"]["name"], ok["image"]["description"], ok["image"]["version"]) == (
        "data-1", "volume data", before["version"] + 1)


async def test_ram_name_and_description_rules(gql: GraphQLClient, db: Database) -> None:
    alice, alice_t = await make_account(db)
    image = await make_image(db, alice, min_ram_mb=2048, max_ram_mb=4096)
    q = gql.as_(alice_t)
    before = state(await get_image(q, image.id))
    refused: list[tuple[dict[str, Any], str, str]] = [
        ({"minRamMb": 8192}, "INVALID_RAM_RANGE", "input.minRamMb"),  # above the stored max
        ({"maxRamMb": 1024}, "INVALID_RAM_RANGE", "input.maxRamMb"),  # below the stored min
        ({"maxRamMb": -1}, "INVALID_RAM_RANGE", "input.maxRamMb"),
        ({"minRamMb": 1024, "maxRamMb": 512}, "INVALID_RAM_RANGE", "input.minRamMb"),
        ({"minRamMb": -1}, "INVALID_RAM_RANGE", "input.minRamMb"),
        ({"minRamMb": 0, "maxRamMb": 1_048_577}, "INVALID_RAM_RANGE", "input.maxRamMb"),
        ({"minRamMb": 1_048_577, "maxRamMb": None}, "INVALID_RAM_RANGE", "input.minRamMb"),
        ({"name": " padded"}, "INVALID_NAME", "input.name"),
        ({"name": "x" * 129}, "INVALID_NAME", "input.name"),
        ({"name": ""}, "INVALID_NAME", "input.name"),
        ({"name": "a<b"}, "INVALID_NAME", "input.name"),
        ({"description": "x" * 1025}, "INVALID_DESCRIPTION", "input.description"),
        ({"description": "line\nbreak"}, "INVALID_DESCRIPTION", "input.description"),
        ({"description": "<b>"}, "INVALID_DESCRIPTION", "input.description"),
    ]
    for changes, code, field in refused:
        result = await update_image(q, id=image.id, **changes)
        assert without_message(result) == error("ValidationError", code, field=field), changes
    assert state(await get_image(q, image.id)) == before
    edge = (await update_image(q, id=image.id, minRamMb=1_048_576, maxRamMb=None, name="x" * 128,
                               description="d" * 1024))["image"]
    assert (edge["minRamMb"], edge["maxRamMb"], edge["name"], len(edge["description"])) == (
        1_048_576, None, "x" * 128, 1024)
    equal = (await update_image(q, id=image.id, minRamMb=0, maxRamMb=0))["image"]
    assert (equal["minRamMb"], equal["maxRamMb"]) == (0, 0)


async def test_a_description_typed_with_combining_accents_counts_its_characters_as_shown(
    gql: GraphQLClient, db: Database
) -> None:
    """1,000 "é" sent decomposed (e + U+0301, as some keyboards send it: 2,000 code points) are
    1,000 characters, within the 1,024 a description holds; it is stored composed, as names are."""
    alice, alice_t = await make_account(db)
    image = await make_image(db, alice)
    q = gql.as_(alice_t)
    done = await update_image(q, id=image.id, description="e\u0301" * 1000, name="Cafe\u0301")
    assert done["__typename"] == "UpdateImageSuccess", done
    assert (done["image"]["description"], done["image"]["name"]) == ("\u00e9" * 1000, "Caf\u00e9")
    assert (await get_image(q, image.id) or {})["description"] == "\u00e9" * 1000
    too_long = await update_image(q, id=image.id, description="e\u0301" * 1025)
    assert without_message(too_long) == error("ValidationError", "INVALID_DESCRIPTION", field="input.description")
    assert (await get_image(q, image.id) or {})["description"] == "\u00e9" * 1000


# ---------------------------------------------------------------- setImageProtection


async def test_set_image_protection(gql: GraphQLClient, db: Database) -> None:
    admin = await admin_account(db)
    alice, alice_t = await make_account(db)
    bob, bob_t = await make_account(db)
    _, erin_t = await make_account(db)
    image = await make_image(db, alice)
    await share(db, image, bob)
    q = gql.as_(alice_t)

    on = (await set_protection(q, image.id, True))["image"]
    assert (on["__typename"], on["protected"], on["version"]) == ("PrivateImage", True, 2)
    same = (await set_protection(q, image.id, True))["image"]
    assert (same["protected"], same["version"]) == (True, 2)  # no change, no new version
    assert without_message(await set_protection(gql.as_(bob_t), image.id, False)) == error(
        "ForbiddenError", "NOT_OWNER")
    assert without_message(await set_protection(gql.as_(erin_t), image.id, False)) == error(
        "NotFoundError", "IMAGE_NOT_FOUND", resourceId=image.id)
    assert (await get_image(q, image.id) or {})["protected"] is True
    off = (await set_protection(q, image.id, False))["image"]
    assert (off["protected"], off["version"]) == (False, 3)

    public = await make_image(db, admin, visibility="PUBLIC")
    assert without_message(await set_protection(q, public.id, True)) == error(
        "ForbiddenError", "PUBLIC_IMAGE_READ_ONLY")
    assert (await set_protection(gql, public.id, True))["image"]["protected"] is True


# ---------------------------------------------------------------- publishImage


async def test_admin_publishes_its_own_image_and_memberships_go(gql: GraphQLClient, db: Database) -> None:
    admin = await admin_account(db)
    bob, bob_t = await make_account(db)
    image = await make_image(db, admin, name="golden")
    await share(db, image, bob, "PENDING")
    assert await member_rows(db, image.id) == [(bob.id, "PENDING")]

    result = await publish(gql, image.id)
    assert result["__typename"] == "UpdateImageSuccess"
    assert (result["image"]["__typename"], result["image"]["version"]) == ("PublicImage", 2)
    assert await member_rows(db, image.id) == []
    seen = await get_image(gql.as_(bob_t), image.id)
    assert seen is not None and seen["__typename"] == "PublicImage"
    assert without_message(await publish(gql, image.id)) == error("ConflictError", "ALREADY_PUBLIC")


async def test_publish_refusals(gql: GraphQLClient, db: Database) -> None:
    admin = await admin_account(db)
    alice, alice_t = await make_account(db)
    own_by_user = await make_image(db, alice)
    shared_with_admin = await make_image(db, alice)
    await share(db, shared_with_admin, admin)
    encrypted = await make_image(db, admin, kms_key_id="key-1")
    full_ecs = await make_image(db, admin, kind="FULL_ECS")
    queued = await make_image(db, admin, status="QUEUED")
    cases: list[tuple[GraphQLClient, str, dict[str, Any]]] = [
        (gql.as_(alice_t), own_by_user.id, error("ForbiddenError", "ADMIN_REQUIRED")),
        (gql, own_by_user.id, error("NotFoundError", "IMAGE_NOT_FOUND", resourceId=own_by_user.id)),
        (gql, shared_with_admin.id, error("ForbiddenError", "NOT_OWNER")),
        (gql, encrypted.id, error("NotSupportedError", "PUBLISH_NOT_SUPPORTED")),
        (gql, full_ecs.id, error("NotSupportedError", "PUBLISH_NOT_SUPPORTED")),
        (gql, queued.id, error("ConflictError", "IMAGE_NOT_ACTIVE")),
        (gql, "img-unknown", error("NotFoundError", "IMAGE_NOT_FOUND", resourceId="img-unknown")),
    ]
    for client, image_id, expected in cases:
        assert without_message(await publish(client, image_id)) == expected, expected
    assert await list_ids(gql.as_(alice_t), filter={"visibility": ["PUBLIC"]}) == []
    assert await member_rows(db, shared_with_admin.id) == [(admin.id, "ACCEPTED")]


# ---------------------------------------------------------------- tags


async def test_tags_are_limited_to_ten_and_replacing_does_not_count(gql: GraphQLClient, db: Database) -> None:
    alice, alice_t = await make_account(db)
    nine = {f"k{i}": f"v{i}" for i in range(9)}
    image = await make_image(db, alice, tags=nine)
    q = gql.as_(alice_t)

    too_many = await add_tags(q, image.id, {"new1": "a", "new2": "b"})
    assert without_message(too_many) == error("LimitExceededError", "TOO_MANY_TAGS", limit=10)
    assert await tag_rows(db, image.id) == nine

    tenth = await add_tags(q, image.id, {"k0": "replaced", "k9": "v9"})
    assert tenth["image"]["tags"] == sorted(
        [{"key": k, "value": v} for k, v in {**nine, "k0": "replaced", "k9": "v9"}.items()], key=lambda t: t["key"])
    assert tenth["image"]["version"] == 2

    eleventh = await add_tags(q, image.id, {"k10": "x"})
    assert without_message(eleventh) == error("LimitExceededError", "TOO_MANY_TAGS", limit=10)
    replaced = await add_tags(q, image.id, {"k1": "again", "k2": ""})
    assert replaced["__typename"] == "UpdateImageSuccess"
    assert len(replaced["image"]["tags"]) == 10
    assert (await tag_rows(db, image.id))["k1"] == "again"
    assert (await tag_rows(db, image.id))["k2"] == ""

    empty = await make_image(db, alice)
    eleven = {f"t{i}": "x" for i in range(11)}
    assert without_message(await add_tags(q, empty.id, eleven)) == error(
        "LimitExceededError", "TOO_MANY_TAGS", limit=10)
    assert await tag_rows(db, empty.id) == {}


async def test_adding_tags_the_image_already_has_keeps_the_version(gql: GraphQLClient, db: Database) -> None:
    """`version` is incremented on every change: tags sent again with the values the image has
    (also a key sent decomposed) are no change and leave version and updatedAt, as updateImage
    and setImageProtection do; one new value among them is one change."""
    alice, alice_t = await make_account(db)
    image = await make_image(db, alice, tags={"env": "prod", "Café": "crème"})
    q = gql.as_(alice_t)
    before = state(await get_image(q, image.id))
    same = await add_tags(q, image.id, {"env": "prod", "Cafe\u0301": "cre\u0300me"})
    assert same["__typename"] == "UpdateImageSuccess", same
    assert state(same["image"]) == before
    assert state(await get_image(q, image.id)) == before
    changed = (await add_tags(q, image.id, {"env": "prod", "Café": "brûlée"}))["image"]
    assert (changed["version"], changed["tags"]) == (before["version"] + 1, [
        {"key": "Café", "value": "brûlée"}, {"key": "env", "value": "prod"}])
    assert changed["updatedAt"] != before["updatedAt"]


async def test_tag_input_is_validated_before_anything_is_written(gql: GraphQLClient, db: Database) -> None:
    alice, alice_t = await make_account(db)
    image = await make_image(db, alice, tags={"env": "prod"})
    q = gql.as_(alice_t)
    cases: list[tuple[list[tuple[str, str]], dict[str, Any]]] = [
        ([("ok", "1"), ("bad.key", "v")], error("ValidationError", "INVALID_TAG_KEY", field="input.tags[1].key")),
        ([("k" * 37, "v")], error("ValidationError", "INVALID_TAG_KEY", field="input.tags[0].key")),
        ([("", "v")], error("ValidationError", "INVALID_TAG_KEY", field="input.tags[0].key")),
        ([("ok", "v" * 44)], error("ValidationError", "INVALID_TAG_VALUE", field="input.tags[0].value")),
        ([("ok", "a b")], error("ValidationError", "INVALID_TAG_VALUE", field="input.tags[0].value")),
        ([("dup", "1"), ("dup", "2")], error("ValidationError", "DUPLICATE_TAG_KEY", field="input.tags[1].key")),
        ([], error("ValidationError", "EMPTY_REQUEST", field="input.tags")),
    ]
    for tags, expected in cases:
        result = await mutate(q, "addImageTags", {"imageId": image.id,
                                                  "tags": [{"key": k, "value": v} for k, v in tags]}, "")
        assert without_message(result) == expected, tags
    assert await tag_rows(db, image.id) == {"env": "prod"}
    ok = await add_tags(q, image.id, {"k" * 36: "v.1-2_" + "x" * 37, "环境": "生产"})
    assert ok["__typename"] == "UpdateImageSuccess"
    assert await tag_rows(db, image.id) == {"env": "prod", "k" * 36: "v.1-2_" + "x" * 37, "环境": "生产"}


async def test_tags_typed_with_combining_marks_are_one_tag_whichever_form_is_sent(
    gql: GraphQLClient, db: Database
) -> None:
    """Some keyboards send "é" as "e" and a combining accent; Devanagari's vowel signs are marks
    that never compose. Both are accepted, stored composed, and found, filtered on and removed
    whichever form a request uses."""
    alice, alice_t = await make_account(db)
    image = await make_image(db, alice)
    q = gql.as_(alice_t)
    ok = await add_tags(q, image.id, {"Cafe\u0301": "cre\u0300me", "हिंदी": "मान"})
    assert ok["__typename"] == "UpdateImageSuccess", ok
    assert await tag_rows(db, image.id) == {"Café": "crème", "हिंदी": "मान"}
    again = await add_tags(q, image.id, {"Café": "brûlée"})  # the same key, composed: a new value
    assert again["__typename"] == "UpdateImageSuccess", again
    assert await tag_rows(db, image.id) == {"Café": "brûlée", "हिंदी": "मान"}
    for key, value in (("Cafe\u0301", "bru\u0302le\u0301e"), ("Café", "brûlée")):
        assert await list_ids(q, filter={"tags": [{"key": key, "value": value}]}) == [image.id]
    done = await remove_tags(q, image.id, ["Cafe\u0301"])
    assert done["__typename"] == "UpdateImageSuccess", done
    assert await tag_rows(db, image.id) == {"हिंदी": "मान"}


async def test_removing_tags_is_all_or_nothing(gql: GraphQLClient, db: Database) -> None:
    alice, alice_t = await make_account(db)
    image = await make_image(db, alice, tags={"a": "1", "b": "2", "c": "3"})
    q = gql.as_(alice_t)
    missing = await remove_tags(q, image.id, ["a", "nope", "b"])
    assert without_message(missing) == error("NotFoundError", "TAG_NOT_FOUND", resourceId=image.id)
    assert await tag_rows(db, image.id) == {"a": "1", "b": "2", "c": "3"}
    assert (await get_image(q, image.id) or {})["version"] == 1
    empty = await remove_tags(q, image.id, [])
    assert without_message(empty) == error("ValidationError", "EMPTY_REQUEST", field="input.keys")
    done = await remove_tags(q, image.id, ["a", "c"])
    assert (done["image"]["tags"], done["image"]["version"]) == ([{"key": "b", "value": "2"}], 2)
    assert await tag_rows(db, image.id) == {"b": "2"}


async def test_only_the_owner_tags(gql: GraphQLClient, db: Database) -> None:
    admin = await admin_account(db)
    alice, alice_t = await make_account(db)
    bob, bob_t = await make_account(db)
    _, erin_t = await make_account(db)
    image = await make_image(db, alice, tags={"env": "prod"})
    await share(db, image, bob)
    public = await make_image(db, admin, visibility="PUBLIC", tags={"os": "linux"})
    not_found = error("NotFoundError", "IMAGE_NOT_FOUND", resourceId=image.id)
    for client, expected in ((gql.as_(bob_t), error("ForbiddenError", "NOT_OWNER")),
                             (gql.as_(erin_t), not_found), (gql, not_found)):
        assert without_message(await add_tags(client, image.id, {"x": "y"})) == expected
        assert without_message(await remove_tags(client, image.id, ["env"])) == expected
    assert await tag_rows(db, image.id) == {"env": "prod"}

    read_only = error("ForbiddenError", "PUBLIC_IMAGE_READ_ONLY")
    assert without_message(await add_tags(gql.as_(alice_t), public.id, {"x": "y"})) == read_only
    assert without_message(await remove_tags(gql.as_(alice_t), public.id, ["os"])) == read_only
    assert (await add_tags(gql, public.id, {"x": "y"}))["image"]["__typename"] == "PublicImage"
    assert await tag_rows(db, public.id) == {"os": "linux", "x": "y"}


# ---------------------------------------------------------------- deleteImages


async def test_delete_batch_is_atomic(gql: GraphQLClient, db: Database) -> None:
    alice, alice_t = await make_account(db)
    q = gql.as_(alice_t)
    plain = await make_image(db, alice)
    protected = await make_image(db, alice, protected=True)
    queued = await make_image(db, alice, status="QUEUED")
    saving = await make_image(db, alice, status="SAVING")
    cases: list[tuple[list[str], dict[str, Any]]] = [
        ([plain.id, protected.id], error("ForbiddenError", "IMAGE_PROTECTED")),
        ([plain.id, queued.id], error("ConflictError", "IMAGE_BUSY")),
        ([saving.id, plain.id], error("ConflictError", "IMAGE_BUSY")),
        ([plain.id, "img-unknown"], error("NotFoundError", "IMAGE_NOT_FOUND", resourceId="img-unknown")),
        ([], error("ValidationError", "EMPTY_REQUEST", field="input.ids")),
        ([plain.id] * 101, error("ValidationError", "TOO_MANY_ITEMS", field="input.ids")),
    ]
    everything = {plain.id, protected.id, queued.id, saving.id}
    for ids, expected in cases:
        assert without_message(await delete_images(q, ids)) == expected, expected
        assert set(await list_ids(q)) == everything
    # Unprotected, it goes.
    await set_protection(q, protected.id, False)
    done = await delete_images(q, [plain.id, protected.id, plain.id])
    assert done == {"__typename": "DeleteImagesSuccess", "deletedIds": [plain.id, protected.id]}
    assert set(await list_ids(q)) == {queued.id, saving.id}


async def test_deleted_image_is_gone_with_its_memberships_and_tags(gql: GraphQLClient, db: Database) -> None:
    alice, alice_t = await make_account(db)
    bob, bob_t = await make_account(db)
    image = await make_image(db, alice, tags={"env": "prod"})
    killed = await make_image(db, alice, status="KILLED")
    await share(db, image, bob)
    q = gql.as_(alice_t)
    assert (await delete_images(q, [image.id, killed.id]))["deletedIds"] == [image.id, killed.id]
    for client in (q, gql.as_(bob_t)):
        assert await get_image(client, image.id) is None
        assert await list_ids(client) == []
    assert await member_rows(db, image.id) == []
    assert await tag_rows(db, image.id) == {}
    again = await delete_images(q, [image.id])
    assert without_message(again) == error("NotFoundError", "IMAGE_NOT_FOUND", resourceId=image.id)


async def test_who_may_delete(gql: GraphQLClient, db: Database) -> None:
    admin = await admin_account(db)
    alice, alice_t = await make_account(db)
    bob, bob_t = await make_account(db)
    image = await make_image(db, alice)
    await share(db, image, bob)
    public = await make_image(db, admin, visibility="PUBLIC")
    assert without_message(await delete_images(gql.as_(bob_t), [image.id])) == error("ForbiddenError", "NOT_OWNER")
    assert without_message(await delete_images(gql, [image.id])) == error(
        "NotFoundError", "IMAGE_NOT_FOUND", resourceId=image.id)
    assert without_message(await delete_images(gql.as_(alice_t), [public.id])) == error(
        "ForbiddenError", "PUBLIC_IMAGE_READ_ONLY")
    assert await member_rows(db, image.id) == [(bob.id, "ACCEPTED")]
    assert (await delete_images(gql, [public.id]))["deletedIds"] == [public.id]
    assert await get_image(gql.as_(alice_t), public.id) is None


# ---------------------------------------------------------------- accounts and tokens

CREATE_ACCOUNT_SUCCESS = "... on CreateAccountSuccess { token account { id name role } }"
VIEWER = "{ viewer { account { id name role } } }"


async def create_account(client: GraphQLClient, name: str, role: str | None = None) -> dict[str, Any]:
    input = {"name": name} if role is None else {"name": name, "role": role}
    return await mutate(client, "createAccount", input, CREATE_ACCOUNT_SUCCESS)


async def test_admin_creates_accounts_whose_token_works(gql: GraphQLClient, db: Database) -> None:
    created = await create_account(gql, "team-a_1")
    assert created["__typename"] == "CreateAccountSuccess"
    assert (created["account"]["name"], created["account"]["role"]) == ("team-a_1", "USER")
    assert created["token"].startswith("ims_")
    me = await gql.as_(created["token"]).execute(VIEWER)
    assert me["viewer"]["account"] == created["account"]

    second_admin = await create_account(gql, "ops", "ADMIN")
    assert second_admin["account"]["role"] == "ADMIN"
    by_new_admin = await create_account(gql.as_(second_admin["token"]), "made-by-ops")
    assert by_new_admin["__typename"] == "CreateAccountSuccess"

    refused = await create_account(gql.as_(created["token"]), "sneaky")
    assert without_message(refused) == error("ForbiddenError", "ADMIN_REQUIRED")
    assert without_message(await create_account(gql, "team-a_1")) == error("ConflictError", "ACCOUNT_EXISTS")
    for bad in ("ab", "Upper", "has space", "x" * 65, "-lead", "émile", "", "alice\n"):
        assert without_message(await create_account(gql, bad)) == error(
            "ValidationError", "INVALID_ACCOUNT_NAME", field="input.name"), bad
    names = {e["node"]["name"] for e in (await gql.execute("{ accounts { edges { node { name } } } }"))[
        "accounts"]["edges"]}
    assert names == {"admin", "team-a_1", "ops", "made-by-ops"}


TOKEN_SUCCESS = "... on CreateApiTokenSuccess { token apiToken { id name expiresAt lastUsedAt } }"
REVOKE_SUCCESS = "... on RevokeApiTokenSuccess { revokedId }"


async def test_node_finds_the_callers_own_api_tokens(gql: GraphQLClient, db: Database) -> None:
    """ApiToken implements Node: node(id:) refetches the caller's own token, as viewer.apiTokens
    lists it (it answered null for every token id), and no other account's, administrators'
    included; a revoked token is gone."""
    _, alice_t = await make_account(db)
    q = gql.as_(alice_t)
    created = await mutate(q, "createApiToken", {"name": "ci"}, TOKEN_SUCCESS)
    token_id = created["apiToken"]["id"]
    node = "query($id: ID!) { node(id: $id) { __typename id ... on ApiToken { name } } }"
    assert (await q.execute(node, {"id": token_id}))["node"] == {"__typename": "ApiToken", "id": token_id, "name": "ci"}
    _, bob_t = await make_account(db)
    for other in (gql.as_(bob_t), gql):  # another user, an administrator
        assert (await other.execute(node, {"id": token_id}))["node"] is None
    await mutate(q, "revokeApiToken", {"id": token_id}, REVOKE_SUCCESS)
    assert (await q.execute(node, {"id": token_id}))["node"] is None
    assert (await q.execute(node, {"id": "tok-unknown"}))["node"] is None


async def test_api_tokens_are_created_listed_and_revoked(gql: GraphQLClient, db: Database,
                                                         http: httpx.AsyncClient) -> None:
    alice, alice_t = await make_account(db)
    _, bob_t = await make_account(db)
    q = gql.as_(alice_t)
    created = await mutate(q, "createApiToken", {"name": "ci", "expiresInDays": 30}, TOKEN_SUCCESS)
    assert created["__typename"] == "CreateApiTokenSuccess"
    token, meta = created["token"], created["apiToken"]
    expires = datetime.fromisoformat(meta["expiresAt"])
    assert abs(expires - (datetime.now(UTC) + timedelta(days=30))) < timedelta(minutes=1)
    assert meta["lastUsedAt"] is None
    assert (await gql.as_(token).execute(VIEWER))["viewer"]["account"]["id"] == alice.id
    listed = (await q.execute("{ viewer { apiTokens { id name lastUsedAt } } }"))["viewer"]["apiTokens"]
    assert len(listed) == 2
    [mine] = [t for t in listed if t["id"] == meta["id"]]
    assert mine["name"] == "ci"
    assert abs(datetime.fromisoformat(mine["lastUsedAt"]) - datetime.now(UTC)) < timedelta(minutes=1)

    # Another account cannot revoke it, and it keeps working.
    foreign = await mutate(gql.as_(bob_t), "revokeApiToken", {"id": meta["id"]}, REVOKE_SUCCESS)
    assert without_message(foreign) == error("NotFoundError", "TOKEN_NOT_FOUND", resourceId=meta["id"])
    assert (await gql.as_(token).raw(VIEWER)).status_code == 200

    revoked = await mutate(q, "revokeApiToken", {"id": meta["id"]}, REVOKE_SUCCESS)
    assert revoked == {"__typename": "RevokeApiTokenSuccess", "revokedId": meta["id"]}
    response = await gql.as_(token).raw(VIEWER)
    assert response.status_code == 401
    assert response.json()["errors"][0]["message"].startswith("authentication required")
    again = await mutate(q, "revokeApiToken", {"id": meta["id"]}, REVOKE_SUCCESS)
    assert again["code"] == "TOKEN_NOT_FOUND"


async def test_api_token_input_bounds(gql: GraphQLClient, db: Database) -> None:
    _, alice_t = await make_account(db)
    q = gql.as_(alice_t)
    for days in (1, 3650, None):
        created = await mutate(q, "createApiToken", {"name": f"t{days}", "expiresInDays": days}, TOKEN_SUCCESS)
        assert created["__typename"] == "CreateApiTokenSuccess", days
        assert (created["apiToken"]["expiresAt"] is None) is (days is None)
    for days in (0, -1, 3651):
        refused = await mutate(q, "createApiToken", {"name": "t", "expiresInDays": days}, TOKEN_SUCCESS)
        assert without_message(refused) == error("ValidationError", "INVALID_EXPIRY", field="input.expiresInDays")
    # IMS_ADMIN_TOKEN marks the environment's token; control and format characters (a newline,
    # an escape, a right-to-left override showing the name reversed) and line separators.
    for name in ("", "x" * 65, " pad", "IMS_ADMIN_TOKEN", "ci\nprod", "ci\x1b[31m", "ci\u202eyek",
                 "ci\u2028x", "tab\there", "e\u0301" * 65):
        refused = await mutate(q, "createApiToken", {"name": name}, TOKEN_SUCCESS)
        assert without_message(refused) == error("ValidationError", "INVALID_NAME", field="input.name"), name
    # Punctuation and any script are names; composed (NFC) as stored, 64 characters as shown.
    for name, stored in (("ci/deploy: prod", "ci/deploy: prod"), ("e\u0301" * 64, "\u00e9" * 64)):
        created = await mutate(q, "createApiToken", {"name": name}, TOKEN_SUCCESS)
        assert created["apiToken"]["name"] == stored
    tokens = (await q.execute("{ viewer { apiTokens { name } } }"))["viewer"]["apiTokens"]
    assert len(tokens) == 6


async def test_a_token_never_outlives_the_token_creating_it(gql: GraphQLClient, db: Database) -> None:
    """A token made with an expiring token expires with it at the latest: a leaked one-day token
    could mint a token that never expires, or one of ten years."""
    _, alice_t = await make_account(db)
    short = await mutate(gql.as_(alice_t), "createApiToken", {"name": "short", "expiresInDays": 2}, TOKEN_SUCCESS)
    limit = datetime.fromisoformat(short["apiToken"]["expiresAt"])
    q = gql.as_(short["token"])
    for days in (None, 3, 3650):
        made = await mutate(q, "createApiToken", {"name": f"from-short-{days}", "expiresInDays": days}, TOKEN_SUCCESS)
        assert datetime.fromisoformat(made["apiToken"]["expiresAt"]) == limit, days
    sooner = await mutate(q, "createApiToken", {"name": "sooner", "expiresInDays": 1}, TOKEN_SUCCESS)
    assert abs(datetime.fromisoformat(sooner["apiToken"]["expiresAt"]) - (limit - timedelta(days=1))) < timedelta(
        minutes=1)
    # The account's token that never expires still makes one that never expires.
    lasting = await mutate(gql.as_(alice_t), "createApiToken", {"name": "lasting"}, TOKEN_SUCCESS)
    assert lasting["apiToken"]["expiresAt"] is None
    listed = {t["name"]: t["expiresAt"] for t in (await q.execute("{ viewer { apiTokens { name expiresAt } } }"))[
        "viewer"]["apiTokens"]}
    assert [listed[f"from-short-{d}"] for d in (None, 3, 3650)] == [short["apiToken"]["expiresAt"]] * 3


# ---------------------------------------------------------------- quotas

QUOTAS = "{ viewer { quotas { resource used limit } } }"
QUOTA_SUCCESS = "... on SetQuotaSuccess { quota { resource used limit } }"


async def test_quotas_default_usage_and_set_quota(gql: GraphQLClient, db: Database) -> None:
    admin = await admin_account(db)
    alice, alice_t = await make_account(db)
    bob, _ = await make_account(db)
    for status in ("ACTIVE", "KILLED", "QUEUED", "SAVING"):
        await make_image(db, alice, status=status)
    await make_image(db, alice, region="region-2")  # another region
    shared = await make_image(db, bob)
    await share(db, shared, alice)  # shared images do not count for their recipients
    await make_image(db, admin, visibility="PUBLIC")
    q = gql.as_(alice_t)

    assert (await q.execute(QUOTAS))["viewer"]["quotas"] == [
        {"resource": "PRIVATE_IMAGES", "used": 4, "limit": 50},
        {"resource": "CONCURRENT_REPLICATIONS", "used": 0, "limit": 5},
        {"resource": "CONCURRENT_CREATIONS", "used": 0, "limit": 40},
    ]
    set_input = {"accountId": alice.id, "resource": "PRIVATE_IMAGES", "limit": 7}
    refused = await mutate(q, "setQuota", set_input, QUOTA_SUCCESS)
    assert without_message(refused) == error("ForbiddenError", "ADMIN_REQUIRED")
    done = await mutate(gql, "setQuota", set_input, QUOTA_SUCCESS)
    assert done == {"__typename": "SetQuotaSuccess", "quota": {"resource": "PRIVATE_IMAGES", "used": 4, "limit": 7}}
    await mutate(gql, "setQuota", {**set_input, "resource": "CONCURRENT_CREATIONS", "limit": 0}, QUOTA_SUCCESS)
    assert (await q.execute(QUOTAS))["viewer"]["quotas"] == [
        {"resource": "PRIVATE_IMAGES", "used": 4, "limit": 7},
        {"resource": "CONCURRENT_REPLICATIONS", "used": 0, "limit": 5},
        {"resource": "CONCURRENT_CREATIONS", "used": 0, "limit": 0},
    ]
    assert (await gql.as_((await make_account(db))[1]).execute(QUOTAS))["viewer"]["quotas"][0] == {
        "resource": "PRIVATE_IMAGES", "used": 0, "limit": 50}

    for limit in (-1, 100_001):
        bad = await mutate(gql, "setQuota", {**set_input, "limit": limit}, QUOTA_SUCCESS)
        assert without_message(bad) == error("ValidationError", "INVALID_QUOTA", field="input.limit")
    unknown = await mutate(gql, "setQuota", {**set_input, "accountId": "acc-unknown"}, QUOTA_SUCCESS)
    assert without_message(unknown) == error("NotFoundError", "ACCOUNT_NOT_FOUND", resourceId="acc-unknown")
    assert (await q.execute(QUOTAS))["viewer"]["quotas"][0]["limit"] == 7


# ---------------------------------------------------------------- accounts query

ACCOUNTS = "query($first: Int, $after: String) { accounts(first: $first, after: $after) { totalCount " \
           "pageInfo { hasNextPage hasPreviousPage endCursor } edges { node { id name role } } } }"


async def test_accounts_query_pages_for_admins(gql: GraphQLClient, db: Database) -> None:
    for i in range(4):
        await make_account(db, f"user-{i}")
    seen: list[str] = []
    after = None
    while True:
        page = (await gql.execute(ACCOUNTS, {"first": 2, "after": after}))["accounts"]
        assert page["totalCount"] == 5
        assert page["pageInfo"]["hasPreviousPage"] is (after is not None)
        seen += [e["node"]["name"] for e in page["edges"]]
        if not page["pageInfo"]["hasNextPage"]:
            break
        after = page["pageInfo"]["endCursor"]
    assert sorted(seen) == ["admin", "user-0", "user-1", "user-2", "user-3"]
    assert len(seen) == 5


async def test_accounts_cursor_is_this_lists_own(gql: GraphQLClient, db: Database) -> None:
    """The accounts list's cursor is opaque and refused when it is not its own, as every
    connection's: an account id taken for a place among the ids, text that was no cursor gave
    an empty last page and another list's cursor the list from its start again, both with
    hasPreviousPage, instead of INVALID_CURSOR."""
    from app.domain.pagination import encode_cursor

    alice, _ = await make_account(db, "alice")
    server_cursor = encode_cursor("servers:created_at:DESC", "2020-01-01T00:00:00+00:00", "srv-1")
    for after in ("garbage!!", alice.id, server_cursor, encode_cursor("accounts:id:ASC", "acc-a", "acc-b")):
        body = (await gql.raw(ACCOUNTS, {"first": 2, "after": after})).json()
        assert body["data"] is None, after
        [err] = body["errors"]
        assert (err["path"], err["extensions"]) == (["accounts"], {
            "code": "INVALID_CURSOR", "classification": "ValidationError", "field": "after"}), after
    # An empty cursor is none, as on the other lists: the first page.
    page = (await gql.execute(ACCOUNTS, {"first": 5, "after": ""}))["accounts"]
    assert (len(page["edges"]), page["pageInfo"]["hasPreviousPage"]) == (2, False)


async def test_accounts_query_refuses_users_with_a_clear_error(gql: GraphQLClient, db: Database,
                                                               caplog: pytest.LogCaptureFixture) -> None:
    _, alice_t = await make_account(db)
    with caplog.at_level(logging.ERROR, logger="app.api"):
        response = await gql.as_(alice_t).raw(ACCOUNTS)
    assert response.status_code == 200
    body = response.json()
    assert body["data"] is None
    [err] = body["errors"]
    assert err["path"] == ["accounts"]
    assert err["message"] == "Only administrators may do this."
    assert err["extensions"] == {"code": "ADMIN_REQUIRED", "classification": "ForbiddenError"}
    assert [r for r in caplog.records if r.name == "app.api"] == []  # expected, so not logged as a failure
    too_many = (await gql.raw(ACCOUNTS, {"first": 1001})).json()
    assert too_many["errors"][0]["extensions"] == {"code": "INVALID_PAGE_SIZE", "classification": "ValidationError", "field": "first"}


async def test_query_field_failures_are_shown_with_their_code_not_masked(gql: GraphQLClient, db: Database) -> None:
    """jobs and kmsKeys had no wrapper of their own: every query field's expected failure is
    shown by the schema-wide mechanism."""
    _, token = await make_account(db)
    from app.domain.pagination import encode_cursor

    beyond_utc = "0001-01-01T00:00:00+05:00"  # a date-time, but none that UTC can hold
    for field, ordering in (("jobs", "jobs:created_at:DESC"), ("kmsKeys", "kms:CREATED_AT:ASC"),
                            ("servers", "servers:created_at:DESC")):
        for after in ("garbage!", encode_cursor(ordering, beyond_utc, "x-1")):
            response = await gql.as_(token).raw(f'{{ {field}(first: 5, after: "{after}") {{ totalCount }} }}')
            [err] = response.json()["errors"]
            assert err["extensions"] == {"code": "INVALID_CURSOR", "classification": "ValidationError",
                                         "field": "after"}, (field, after)
            assert err["message"] != "Internal server error"
