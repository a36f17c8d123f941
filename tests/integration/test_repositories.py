"""Repositories against real SQLite and PostgreSQL: compare-and-set and visibility."""

from __future__ import annotations

from app.db.tables import Image
from app.db.uow import Database
from app.domain.images import ImageOrder, ImageQuery
from tests.factories import make_account, make_image, share


async def _row(db: Database, image_id: str) -> Image:
    async with db.uow(write=False) as uow:
        image = await uow.session.get(Image, image_id)
    assert image is not None
    return image


async def test_compare_and_set_applies_only_on_the_expected_version_and_status(db: Database) -> None:
    alice, _ = await make_account(db)
    image = await make_image(db, alice, name="before")

    async with db.uow(alice.id) as uow:
        assert await uow.images.compare_and_set(image.id, 2, {"name": "wrong version"}) is False
        assert await uow.images.compare_and_set(image.id, 1, {"name": "wrong status"},
                                                expected_status="KILLED") is False
        await uow.commit()
    unchanged = await _row(db, image.id)
    assert (unchanged.name, unchanged.version, unchanged.updated_at) == ("before", 1, image.updated_at)

    async with db.uow(alice.id) as uow:
        assert await uow.images.compare_and_set(image.id, 1, {"name": "after"}) is True
        # The second writer with the same expectation loses.
        assert await uow.images.compare_and_set(image.id, 1, {"name": "lost"}) is False
        await uow.commit()
    changed = await _row(db, image.id)
    assert (changed.name, changed.version) == ("after", 2)

    async with db.uow(alice.id) as uow:
        assert await uow.images.compare_and_set(image.id, 2, {"protected": True}, expected_status=None) is True
        assert await uow.images.compare_and_set("img-missing", 1, {"name": "x"}) is False
        # Not committed: the unit of work rolls back on exit.
    assert (await _row(db, image.id)).version == 2


async def test_get_visible_applies_the_visibility_rules(db: Database) -> None:
    admin, _ = await make_account(db, "root", role="ADMIN")
    alice, _ = await make_account(db)
    bob, _ = await make_account(db)
    carol, _ = await make_account(db)
    erin, _ = await make_account(db)
    private = await make_image(db, alice)
    public = await make_image(db, admin, visibility="PUBLIC")
    await share(db, private, bob, "ACCEPTED")
    await share(db, private, carol, "REJECTED")

    async def visible(caller_id: str, image_id: str) -> tuple[str, str | None] | None:
        async with db.uow(caller_id, write=False) as uow:
            view = await uow.images.get_visible(image_id)
        if view is None:
            return None
        assert view.image.id == image_id
        return view.owner.id, view.membership.status if view.membership else None

    assert await visible(alice.id, private.id) == (alice.id, None)
    assert await visible(bob.id, private.id) == (alice.id, "ACCEPTED")
    assert await visible(carol.id, private.id) == (alice.id, "REJECTED")
    assert await visible(erin.id, private.id) is None
    assert await visible(admin.id, private.id) is None
    assert await visible("", private.id) is None
    for caller in (alice, bob, erin, admin):
        assert await visible(caller.id, public.id) == (admin.id, None)
    assert await visible(alice.id, "img-missing") is None

    async with db.uow(erin.id, write=False) as uow:
        assert set(await uow.images.get_many_visible([private.id, public.id])) == {public.id}
    async with db.uow(bob.id, write=False) as uow:
        assert set(await uow.images.get_many_visible([private.id, public.id, "img-missing"])) == {
            private.id, public.id}


async def test_page_never_returns_rows_the_caller_may_not_see(db: Database) -> None:
    alice, _ = await make_account(db)
    bob, _ = await make_account(db)
    erin, _ = await make_account(db)
    mine = await make_image(db, erin)
    alices = [await make_image(db, alice) for _ in range(3)]
    await share(db, alices[0], erin, "PENDING")

    async with db.uow(erin.id, write=False) as uow:
        items, has_next, total = await uow.images.page(ImageQuery(region="region-1"), ImageOrder(), 10, None,
                                                       with_total=True)
        assert ([v.image.id for v in items], has_next, total) == ([mine.id], False, 1)
        assert await uow.images.count(ImageQuery(region="region-1")) == 1
        assert await uow.images.count(ImageQuery(region="region-2")) == 0
    async with db.uow(bob.id, write=False) as uow:
        items, _, total = await uow.images.page(ImageQuery(region="region-1"), ImageOrder(), 10, None,
                                                with_total=True)
        assert (items, total) == ([], 0)
