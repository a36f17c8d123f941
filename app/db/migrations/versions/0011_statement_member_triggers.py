"""membership counts and members text kept once per statement on PostgreSQL

0002's `image_counts` and 0007/0008's members text (`images.csv_shared_with`) were kept by
row triggers on `image_members`: a `shareImages` of 100 images with 100 accounts inserts its
10,000 memberships in one statement, and PostgreSQL then ran 20,000 trigger calls, each an
upsert or an update of one row (1.03 s for the batch against 145 ms for the bare INSERT).
On PostgreSQL, inserts and deletes of memberships are now counted by statement triggers that
read the statement's rows as a transition table: one grouped upsert of the counts and one
update of each image's text per statement. Updates of a membership (its status, one at a
time) keep the row triggers: PostgreSQL allows no column list on an UPDATE trigger with a
transition table, and one membership is one row. The release of a batch's holds (0008) writes
its images' texts in one statement too.

An image's deletion cascades to its memberships after 0002's BEFORE DELETE trigger took them
off the counts: the statement triggers then find no image and count nothing, as the row
triggers did. SQLite has no statement triggers: nothing changes there.

Revision ID: 0011
Revises: 0010
Create Date: 2026-11-28 12:40:00
"""

from __future__ import annotations

import importlib

from alembic import op

revision = '0011'
down_revision = '0010'
branch_labels = None
depends_on = None

counts_0002 = importlib.import_module("app.db.migrations.versions.0002_image_counts")
csv_0007 = importlib.import_module("app.db.migrations.versions.0007_csv_relation_columns")
holds_0008 = importlib.import_module("app.db.migrations.versions.0008_csv_member_text_holds")


def counted(rows: str, sign: str) -> str:
    """What the memberships `rows` (a transition table) add to their accounts' SHARED counts:
    0002's `member`, grouped by the counts' key (an upsert may touch each row once), written
    in key order: the order every other writer locks counter rows in (a hash aggregate's own
    order would let two batches take the same two counters in opposite orders, a deadlock)."""
    return (
        f"INSERT INTO image_counts ({counts_0002.COLUMNS}) SELECT i.region, 'SHARED', m.account_id, m.status, "
        f"i.kind, {sign}count(*) FROM {rows} m JOIN images i ON i.id = m.image_id "
        "WHERE i.visibility <> 'PUBLIC' AND i.owner_id <> m.account_id "
        "GROUP BY i.region, m.account_id, m.status, i.kind ORDER BY i.region, m.account_id, m.status, i.kind "
        f"{counts_0002.UPSERT};"
    )


def texts(rows: str, *, unless_held: bool = True) -> str:
    """The members text of every image of the rows `rows` (memberships or holds), written once
    each; `unless_held`: not while a batch holds the image (0008)."""
    held = " AND NOT EXISTS (SELECT 1 FROM image_csv_holds h WHERE h.image_id = images.id)" if unless_held else ""
    return (
        f"UPDATE images SET csv_shared_with = {csv_0007.postgres_members('images.id')} "
        f"WHERE images.id IN (SELECT DISTINCT image_id FROM {rows}){held};"
    )


def statement_function(name: str, body: str) -> str:
    return f"""CREATE FUNCTION {name}() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  {body}
  RETURN NULL;
END $$"""


UPGRADE = [
    # The row triggers of inserts and deletes go; the functions stay for updates.
    "DROP TRIGGER image_counts_member_change ON image_members",
    "DROP TRIGGER image_csv_members ON image_members",
    ("CREATE TRIGGER image_csv_members AFTER UPDATE ON image_members FOR EACH ROW "
     "EXECUTE FUNCTION image_csv_on_member()"),
    statement_function("image_members_added", counted("added", "+") + "\n  " + texts("added")),
    statement_function("image_members_removed", counted("removed", "-") + "\n  " + texts("removed")),
    ("CREATE TRIGGER image_members_added AFTER INSERT ON image_members REFERENCING NEW TABLE AS added "
     "FOR EACH STATEMENT EXECUTE FUNCTION image_members_added()"),
    ("CREATE TRIGGER image_members_removed AFTER DELETE ON image_members REFERENCING OLD TABLE AS removed "
     "FOR EACH STATEMENT EXECUTE FUNCTION image_members_removed()"),
    # A batch's end releases its holds in one statement: one update of their images' texts.
    "DROP TRIGGER image_csv_hold_release ON image_csv_holds",
    "DROP FUNCTION image_csv_on_hold_release()",
    statement_function("image_csv_on_holds_released", texts("released", unless_held=False)),
    ("CREATE TRIGGER image_csv_hold_release AFTER DELETE ON image_csv_holds REFERENCING OLD TABLE AS released "
     "FOR EACH STATEMENT EXECUTE FUNCTION image_csv_on_holds_released()"),
]

DOWNGRADE = [
    "DROP TRIGGER image_csv_hold_release ON image_csv_holds",
    "DROP FUNCTION image_csv_on_holds_released()",
    *holds_0008.POSTGRES_RELEASE,
    "DROP TRIGGER image_members_removed ON image_members",
    "DROP TRIGGER image_members_added ON image_members",
    "DROP FUNCTION image_members_removed()",
    "DROP FUNCTION image_members_added()",
    "DROP TRIGGER image_csv_members ON image_members",
    ("CREATE TRIGGER image_csv_members AFTER INSERT OR UPDATE OR DELETE ON image_members FOR EACH ROW "
     "EXECUTE FUNCTION image_csv_on_member()"),
    ("CREATE TRIGGER image_counts_member_change AFTER INSERT OR DELETE ON image_members FOR EACH ROW "
     "EXECUTE FUNCTION image_counts_on_member()"),
]


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        for statement in UPGRADE:
            op.execute(statement)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        for statement in DOWNGRADE:
            op.execute(statement)
