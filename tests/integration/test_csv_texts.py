"""The CSV texts of an image's tags and members (`images.csv_tags`, `images.csv_shared_with`),
kept by the triggers of migration 0007 on each backend: after every change of a tag, a
membership, an account's name or an account, they are what the image-list CSV showed when it
read the relations themselves — pairs sorted in code point order, joined with `;` — and NULL
when there are none."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator

import pytest
from sqlalchemy import delete, insert, select, text, update
from sqlalchemy.exc import IntegrityError
from sqlmodel import col

from app.config import Settings
from app.db.tables import Account, Image, ImageMember, ImageTag
from app.db.types import utcnow
from app.db.uow import Database
from app.domain.images import Caller
from app.domain.rules import MEMBERS_PER_IMAGE, TAGS_PER_IMAGE
from tests.factories import built_services, make_account, make_image, share, unshare

#: Keys whose code point order differs from a case-insensitive, accent-folding or
#: locale order (and from their insertion order below).
KEYS = ["zone", "Env", "env", "\u00e4", "a", "B", "\u65e5\u672c", "_", "1", "app\u0301", "z\u00e9"]


async def stored(db: Database, image_id: str) -> tuple[str | None, str | None]:
    async with db.uow(write=False) as uow:
        row = (await uow.session.execute(
            select(Image.csv_tags, Image.csv_shared_with).where(Image.id == image_id))).one()  # type: ignore[call-overload]
    return row[0], row[1]


async def from_relations(db: Database, image_id: str) -> tuple[str | None, str | None]:
    """The texts as the CSV made them from the relations: sorted pairs, or nothing."""
    async with db.uow(write=False) as uow:
        tags = (await uow.session.execute(
            select(col(ImageTag.key), col(ImageTag.value)).where(col(ImageTag.image_id) == image_id))).all()
        members = (await uow.session.execute(
            select(col(Account.name), col(ImageMember.status))
            .join(Account, col(Account.id) == col(ImageMember.account_id))
            .where(col(ImageMember.image_id) == image_id))).all()
    return (";".join(f"{k}={v}" for k, v in sorted(tags)) or None,
            ";".join(f"{n}:{s}" for n, s in sorted(members)) or None)


async def test_tags_text_follows_every_tag_change_in_code_point_order(db: Database) -> None:
    alice, _ = await make_account(db)
    image = await make_image(db, alice)
    other = await make_image(db, alice, tags={"keep": "me"})
    assert await stored(db, image.id) == (None, None)
    order = random.Random(7)
    keys = KEYS[:]
    order.shuffle(keys)
    for key in keys:  # one at a time, in a shuffled order
        async with db.uow(alice.id) as uow:
            await uow.images.put_tags(image.id, {key: f"v-{key}"})
            await uow.commit()
        assert await stored(db, image.id) == await from_relations(db, image.id)
    assert (await stored(db, image.id))[0] == ";".join(f"{k}=v-{k}" for k in sorted(KEYS))
    async with db.uow(alice.id) as uow:  # new values for some, in one flush
        await uow.images.put_tags(image.id, {"a": "=x;y", "zone": "", "Env": 'q"'})
        await uow.commit()
    tags = (await stored(db, image.id))[0]
    assert tags is not None and tags.startswith('1=v-1;B=v-B;Env=q";_=v-_;a==x;y;')
    assert await stored(db, image.id) == await from_relations(db, image.id)
    async with db.uow(alice.id) as uow:
        await uow.images.delete_tags(image.id, ["zone", "\u00e4", "missing"])
        await uow.commit()
    assert await stored(db, image.id) == await from_relations(db, image.id)
    async with db.uow(alice.id) as uow:
        await uow.images.delete_tags(image.id, KEYS)
        await uow.commit()
    assert await stored(db, image.id) == (None, None)
    assert await stored(db, other.id) == ("keep=me", None)


async def test_members_text_follows_shares_statuses_renames_and_deleted_accounts(db: Database) -> None:
    alice, _ = await make_account(db)
    names = ["zed", "Bea", "\u00e9va", "bob"]
    accounts = {name: (await make_account(db, name))[0] for name in names}
    image = await make_image(db, alice)
    other = await make_image(db, alice)
    for name in ["bob", "\u00e9va", "zed", "Bea"]:
        await share(db, image, accounts[name], "PENDING")
        assert await stored(db, image.id) == await from_relations(db, image.id)
    await share(db, other, accounts["bob"], "ACCEPTED")
    assert (await stored(db, image.id))[1] == "Bea:PENDING;bob:PENDING;zed:PENDING;\u00e9va:PENDING"

    async with db.uow(alice.id) as uow:
        await uow.session.execute(update(ImageMember).where(
            ImageMember.image_id == image.id, ImageMember.account_id == accounts["zed"].id)  # type: ignore[arg-type]
            .values(status="ACCEPTED"))
        await uow.commit()
    assert (await stored(db, image.id))[1] == "Bea:PENDING;bob:PENDING;zed:ACCEPTED;\u00e9va:PENDING"

    await unshare(db, image, accounts["Bea"])
    assert (await stored(db, image.id))[1] == "bob:PENDING;zed:ACCEPTED;\u00e9va:PENDING"

    # An account's new name shows in every image it is a member of, and no other.
    async with db.uow() as uow:
        await uow.session.execute(update(Account).where(Account.id == accounts["bob"].id)  # type: ignore[arg-type]
                                  .values(name="Zoe"))
        await uow.commit()
    assert (await stored(db, image.id))[1] == "Zoe:PENDING;zed:ACCEPTED;\u00e9va:PENDING"
    assert await stored(db, other.id) == (None, "Zoe:ACCEPTED")

    # A deleted account's memberships go with it (the foreign key's cascade).
    async with db.uow() as uow:
        await uow.session.execute(delete(Account).where(Account.id == accounts["zed"].id))  # type: ignore[arg-type]
        await uow.commit()
    assert (await stored(db, image.id))[1] == "Zoe:PENDING;\u00e9va:PENDING"
    assert await stored(db, image.id) == await from_relations(db, image.id)

    for name in ("bob", "\u00e9va"):
        await unshare(db, image, accounts[name])
    assert await stored(db, image.id) == (None, None)


async def test_deleting_an_image_with_tags_and_members_leaves_the_others_texts(db: Database) -> None:
    alice, _ = await make_account(db)
    bob, _ = await make_account(db, "bob")
    doomed = await make_image(db, alice, tags={"a": "1", "b": "2"})
    kept = await make_image(db, alice, tags={"a": "1"})
    await share(db, doomed, bob)
    await share(db, kept, bob, "PENDING")
    async with db.uow(alice.id) as uow:
        await uow.session.execute(delete(Image).where(Image.id == doomed.id))  # type: ignore[arg-type]
        await uow.commit()
    async with db.uow(write=False) as uow:
        left = (await uow.session.execute(text("SELECT count(*) FROM image_tags WHERE image_id = :i"),
                                          {"i": doomed.id})).scalar_one()
    assert left == 0
    assert await stored(db, kept.id) == ("a=1", "bob:PENDING")


async def test_texts_are_in_order_whatever_order_the_rows_are_read_in(db: Database) -> None:
    """SQLite has no ordered aggregate: its triggers join the pairs of a subquery sorted by key
    or by name, which group_concat consumes in that order (SQLite keeps a FROM subquery's
    ORDER BY under an aggregate other than count, min and max). A tag's pairs come from the
    (image_id, key, value) index in key order without any sort: the tests above pass with the
    tags' ORDER BY gone. Here a full image's tags and members are read in an order that is not
    theirs: the writing connection reverses every scan that no ORDER BY fixes (SQLite's
    reverse_unordered_selects; the control below shows it does), and the members' account ids
    bear no relation to their names. PostgreSQL orders inside string_agg."""
    sqlite = db.dialect == "sqlite"
    alice, _ = await make_account(db)
    image = await make_image(db, alice)
    shuffled = random.Random(11)
    keys = [f"key-{n:02d}" for n in range(TAGS_PER_IMAGE)]
    names = [f"member-{n:03d}" for n in range(MEMBERS_PER_IMAGE)]
    ids = [f"acc-csv-{n:03d}" for n in range(MEMBERS_PER_IMAGE)]
    shuffled.shuffle(keys)
    shuffled.shuffle(ids)
    now = utcnow()
    async with db.write_engine.connect() as conn:
        if sqlite:
            await conn.execute(text("PRAGMA reverse_unordered_selects = ON"))
        await conn.execute(insert(Account), [{"id": i, "name": n, "role": "USER", "created_at": now}
                                             for i, n in zip(ids, names, strict=True)])
        for key in keys:
            await conn.execute(insert(ImageTag).values(image_id=image.id, key=key, value=f"v-{key}"))
        for account_id in ids:
            await conn.execute(insert(ImageMember).values(image_id=image.id, account_id=account_id,
                                                          status="PENDING", created_at=now, updated_at=now))
        if sqlite:
            unordered = (await conn.execute(text(
                "SELECT group_concat(pair, ';') FROM (SELECT \"key\" || '=' || value AS pair FROM image_tags "
                "WHERE image_id = :i)"), {"i": image.id})).scalar_one()
            assert unordered == ";".join(f"{k}=v-{k}" for k in sorted(keys, reverse=True))
        await conn.commit()
        if sqlite:
            await conn.execute(text("PRAGMA reverse_unordered_selects = OFF"))
    assert await stored(db, image.id) == (";".join(f"{k}=v-{k}" for k in sorted(keys)),
                                          ";".join(f"{n}:PENDING" for n in names))
    assert await stored(db, image.id) == await from_relations(db, image.id)


#: A trigger of the test's own that notes every write of an image's CSV texts.
WRITES_SEEN = {
    "sqlite": ["CREATE TABLE csv_writes (image_id VARCHAR(40))",
               ("CREATE TRIGGER csv_writes_seen AFTER UPDATE OF csv_tags, csv_shared_with ON images "
                "BEGIN INSERT INTO csv_writes VALUES (NEW.id); END")],
    "postgresql": ["CREATE TABLE csv_writes (image_id VARCHAR(40))",
                   ("CREATE FUNCTION csv_writes_seen() RETURNS trigger LANGUAGE plpgsql AS $$ "
                    "BEGIN INSERT INTO csv_writes VALUES (NEW.id); RETURN NULL; END $$"),
                   ("CREATE TRIGGER csv_writes_seen AFTER UPDATE OF csv_tags, csv_shared_with ON images "
                    "FOR EACH ROW EXECUTE FUNCTION csv_writes_seen()")],
}
WRITES_SEEN_DROP = {
    "sqlite": ["DROP TRIGGER csv_writes_seen", "DROP TABLE csv_writes"],
    "postgresql": ["DROP TRIGGER csv_writes_seen ON images", "DROP FUNCTION csv_writes_seen()",
                   "DROP TABLE csv_writes"],
}


@pytest.fixture
async def csv_writes(db: Database) -> AsyncIterator[None]:
    """`csv_writes` holds the id of each image whose CSV texts are written while the test runs
    (on PostgreSQL, whose schema the tests share, the table and trigger go afterwards)."""
    async with db.write_engine.begin() as conn:
        for statement in WRITES_SEEN[db.dialect]:
            await conn.execute(text(statement))
    try:
        yield
    finally:
        async with db.write_engine.begin() as conn:
            for statement in WRITES_SEEN_DROP[db.dialect]:
                await conn.execute(text(statement))


async def test_deleting_images_writes_no_text_of_theirs_again(db: Database, settings: Settings,
                                                              csv_writes: None) -> None:
    """deleteImages leaves the memberships and tags to the cascade, after their image: deleted
    before it, each one made the trigger aggregate the image's remaining members and write its
    text again, a statement before the image went (a batch of 100 images of 256 members each
    held SQLite's write lock 1.8 s instead of 0.2 s). The images kept keep their texts."""
    alice, _ = await make_account(db)
    members = [(await make_account(db))[0] for _ in range(5)]
    doomed = [await make_image(db, alice, tags={"a": "1", "b": "2"}) for _ in range(2)]
    kept = await make_image(db, alice, tags={"a": "1"})
    for image in [*doomed, kept]:
        for member in members:
            await share(db, image, member, "PENDING")
    async with db.write_engine.begin() as conn:
        await conn.execute(text("DELETE FROM csv_writes"))
    async with built_services(settings, db) as services:
        deleted = await services.images.delete(Caller(alice.id, alice.name, alice.role), [i.id for i in doomed])
    assert deleted == [i.id for i in doomed]
    async with db.uow(write=False) as uow:
        written = (await uow.session.execute(text("SELECT image_id FROM csv_writes"))).scalars().all()
        left = (await uow.session.execute(text(
            "SELECT (SELECT count(*) FROM image_members WHERE image_id IN (:one, :two)), "
            "(SELECT count(*) FROM image_tags WHERE image_id IN (:one, :two))"),
            {"one": doomed[0].id, "two": doomed[1].id})).one()
    assert written == []
    assert tuple(left) == (0, 0)
    assert await stored(db, kept.id) == ("a=1", ";".join(f"{name}:PENDING" for name in sorted(m.name for m in members)))


async def written_texts(db: Database) -> list[str]:
    """The ids of the images whose texts were written since the last call, sorted."""
    async with db.uow() as uow:
        written = (await uow.session.execute(text("SELECT image_id FROM csv_writes"))).scalars().all()
        await uow.session.execute(text("DELETE FROM csv_writes"))
        await uow.commit()
    return sorted(written)


async def test_a_sharing_batch_writes_each_images_members_text_once(db: Database, settings: Settings,
                                                                    csv_writes: None) -> None:
    """Migration 0008: a batch that shares (or unshares) an image with n accounts writes its
    members text once, at the batch's end, not once per membership (n aggregates of up to n
    members: a batch of 100 images and 256 accounts held SQLite's write lock 2.35 s instead of
    0.30 s). The texts are right afterwards and no hold is left behind."""
    alice, _ = await make_account(db)
    accounts = [(await make_account(db))[0] for _ in range(6)]
    images = [await make_image(db, alice) for _ in range(3)]
    bystander = await make_image(db, alice)
    await share(db, bystander, accounts[0], "PENDING")
    await written_texts(db)
    caller = Caller(alice.id, alice.name, alice.role)
    image_ids = [i.id for i in images]
    async with built_services(settings, db) as services:
        await services.sharing.share(caller, image_ids, [a.id for a in accounts])
        assert await written_texts(db) == sorted(image_ids)
        for image in images:
            assert await stored(db, image.id) == (None, ";".join(f"{n}:PENDING" for n in sorted(a.name for a in accounts)))
        removed = await services.sharing.unshare(caller, image_ids, [a.id for a in accounts[:4]])
        assert removed == 12
        assert await written_texts(db) == sorted(image_ids)
    for image in [*images, bystander]:
        assert await stored(db, image.id) == await from_relations(db, image.id)
    assert await stored(db, images[0].id) == (None, ";".join(f"{n}:PENDING" for n in sorted(a.name for a in accounts[4:])))
    async with db.uow(write=False) as uow:
        assert (await uow.session.execute(text("SELECT count(*) FROM image_csv_holds"))).scalar_one() == 0


async def test_a_failed_sharing_batch_leaves_no_hold_and_the_texts_as_they_were(db: Database) -> None:
    """A batch refused half-way (a membership that exists already, made behind the service's
    back) rolls its holds back with it: the text stays, and the next change writes it."""
    alice, _ = await make_account(db)
    bob, _ = await make_account(db)
    carol, _ = await make_account(db)
    image = await make_image(db, alice)
    await share(db, image, bob, "PENDING")
    async with db.uow() as uow:
        with pytest.raises(IntegrityError):
            await uow.sharing.add([(image.id, carol.id), (image.id, bob.id)], "PENDING", utcnow())
    async with db.uow(write=False) as uow:
        assert (await uow.session.execute(text("SELECT count(*) FROM image_csv_holds"))).scalar_one() == 0
    assert await stored(db, image.id) == (None, f"{bob.name}:PENDING")
    await share(db, image, carol, "PENDING")
    assert await stored(db, image.id) == await from_relations(db, image.id)
    assert await stored(db, image.id) == (None, ";".join(f"{a.name}:PENDING" for a in sorted([bob, carol], key=lambda a: a.name)))


async def test_publishing_an_image_writes_its_members_text_once(db: Database, settings: Settings,
                                                                csv_writes: None) -> None:
    """A published image loses its memberships in one batch, held like a sharing batch's:
    its text written once (NULL), not once per membership."""
    admin, _ = await make_account(db, role="ADMIN")
    image = await make_image(db, admin)
    for _ in range(5):
        await share(db, image, (await make_account(db))[0], "ACCEPTED")
    await written_texts(db)
    async with built_services(settings, db) as services:
        await services.images.publish(Caller(admin.id, admin.name, admin.role), image.id)
    assert await written_texts(db) == [image.id]
    assert await stored(db, image.id) == (None, None)
    async with db.uow(write=False) as uow:
        assert (await uow.session.execute(text("SELECT count(*) FROM image_csv_holds"))).scalar_one() == 0
