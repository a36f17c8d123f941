"""an image's members text written once per batch of membership changes

0007's triggers write an image's members text (`images.csv_shared_with`) again at each change
of one of its memberships, aggregating all of its members each time: a batch that shares an
image with n accounts read n(n+1)/2 member rows for it (100 images shared with 256 accounts in
one request: 2.35 s of statements on SQLite, against 0.30 s before 0007; an unshare the same).
`image_csv_holds` lists the images whose text a batch writes once, at its end: the membership
triggers leave an image held there alone, and deleting its row there writes its text. The
sharing repository holds a batch's images for the batch's statements, in the batch's
transaction (a rollback takes the holds with it; a commit finds none).

Tags are left as 0007 made them: an image has at most 10.

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-28 10:00:00
"""

from __future__ import annotations

import importlib
from collections.abc import Callable

import sqlalchemy as sa
import sqlmodel.sql.sqltypes
from alembic import op

revision = '0008'
down_revision = '0007'
branch_labels = None
depends_on = None

#: 0007's text builders and triggers, as that revision left them.
csv_0007 = importlib.import_module("app.db.migrations.versions.0007_csv_relation_columns")

#: Writes the members text `members` (SQL) to the image `image_id` (SQL).
SetMembers = Callable[[str, str], str]


def set_members_unless_held(members: str, image_id: str) -> str:
    return (f"UPDATE images SET csv_shared_with = {members} WHERE id = {image_id} "
            f"AND NOT EXISTS (SELECT 1 FROM image_csv_holds h WHERE h.image_id = {image_id});")


def sqlite_member_triggers(set_members: SetMembers) -> list[str]:
    """0007's three membership triggers, each writing with `set_members`."""
    def refresh(image_id: str) -> str:
        return set_members(csv_0007.sqlite_members(image_id), image_id)

    return [
        f"CREATE TRIGGER image_csv_members_insert AFTER INSERT ON image_members BEGIN {refresh('NEW.image_id')} END",
        f"CREATE TRIGGER image_csv_members_delete AFTER DELETE ON image_members BEGIN {refresh('OLD.image_id')} END",
        (f"CREATE TRIGGER image_csv_members_update AFTER UPDATE ON image_members BEGIN "
         f"{refresh('OLD.image_id')} {refresh('NEW.image_id')} END"),
    ]


def postgres_member_triggers(set_members: SetMembers) -> list[str]:
    return [
        csv_0007.postgres_row_function(
            "image_csv_on_member", lambda image_id: set_members(csv_0007.postgres_members(image_id), image_id)),
        ("CREATE TRIGGER image_csv_members AFTER INSERT OR UPDATE OR DELETE ON image_members FOR EACH ROW "
         "EXECUTE FUNCTION image_csv_on_member()"),
    ]


SQLITE_DROP_MEMBER_TRIGGERS = [f"DROP TRIGGER image_csv_members_{event}" for event in ("insert", "delete", "update")]
POSTGRES_DROP_MEMBER_TRIGGERS = ["DROP TRIGGER image_csv_members ON image_members",
                                 "DROP FUNCTION image_csv_on_member()"]

SQLITE_RELEASE = [
    (f"CREATE TRIGGER image_csv_hold_release AFTER DELETE ON image_csv_holds BEGIN "
     f"{csv_0007.set_members(csv_0007.sqlite_members('OLD.image_id'), 'OLD.image_id')} END"),
]
POSTGRES_RELEASE = [
    f"""CREATE FUNCTION image_csv_on_hold_release() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  {csv_0007.set_members(csv_0007.postgres_members('OLD.image_id'), 'OLD.image_id')}
  RETURN NULL;
END $$""",
    ("CREATE TRIGGER image_csv_hold_release AFTER DELETE ON image_csv_holds FOR EACH ROW "
     "EXECUTE FUNCTION image_csv_on_hold_release()"),
]


def upgrade() -> None:
    op.create_table(
        'image_csv_holds',
        sa.Column('image_id', sqlmodel.sql.sqltypes.AutoString(length=40), nullable=False),
        sa.PrimaryKeyConstraint('image_id'),
    )
    if op.get_bind().dialect.name == "postgresql":
        statements = [*POSTGRES_DROP_MEMBER_TRIGGERS, *postgres_member_triggers(set_members_unless_held),
                      *POSTGRES_RELEASE]
    else:
        statements = [*SQLITE_DROP_MEMBER_TRIGGERS, *sqlite_member_triggers(set_members_unless_held),
                      *SQLITE_RELEASE]
    for statement in statements:
        op.execute(statement)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        statements = ["DROP TRIGGER image_csv_hold_release ON image_csv_holds",
                      "DROP FUNCTION image_csv_on_hold_release()",
                      *POSTGRES_DROP_MEMBER_TRIGGERS, *postgres_member_triggers(csv_0007.set_members)]
    else:
        statements = ["DROP TRIGGER image_csv_hold_release",
                      *SQLITE_DROP_MEMBER_TRIGGERS, *sqlite_member_triggers(csv_0007.set_members)]
    for statement in statements:
        op.execute(statement)
    op.drop_table('image_csv_holds')
