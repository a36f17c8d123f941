"""image counts kept by triggers

The `image_counts` table holds, per region, how many images each caller sees without
filters (public ones; its own private ones; others' private ones it is a member of, per
membership status), per image kind. Triggers on `images` and `image_members` keep it in the
transaction of every change, cascades included, so an unfiltered `totalCount` is a sum of
a few rows instead of a count of every visible image (11.7 ms on SQLite for a 100,000-image
catalog; see README "Performance").

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-26 21:40:00
"""

from __future__ import annotations

import sqlalchemy as sa
import sqlmodel.sql.sqltypes
from alembic import op

revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None

COLUMNS = "region, scope, account_id, member_status, kind, n"
UPSERT = "ON CONFLICT (region, scope, account_id, member_status, kind) DO UPDATE SET n = image_counts.n + excluded.n"


def own(row: str, sign: str) -> str:
    """The image `row` (OLD or NEW) itself: PUBLIC in its region, or OWNED by its owner."""
    return (
        f"INSERT INTO image_counts ({COLUMNS}) VALUES ({row}.region, "
        f"CASE WHEN {row}.visibility = 'PUBLIC' THEN 'PUBLIC' ELSE 'OWNED' END, "
        f"CASE WHEN {row}.visibility = 'PUBLIC' THEN '' ELSE {row}.owner_id END, '', {row}.kind, {sign}1) {UPSERT};"
    )


def members_of(row: str, sign: str) -> str:
    """What the image `row`'s memberships add to their accounts' SHARED counts."""
    return (
        f"INSERT INTO image_counts ({COLUMNS}) SELECT {row}.region, 'SHARED', m.account_id, m.status, {row}.kind, "
        f"{sign}count(*) FROM image_members m WHERE m.image_id = {row}.id AND {row}.visibility <> 'PUBLIC' "
        f"AND m.account_id <> {row}.owner_id GROUP BY m.account_id, m.status {UPSERT};"
    )


def member(row: str, sign: str) -> str:
    """One membership `row`, counted while its image exists, is private and is another's."""
    return (
        f"INSERT INTO image_counts ({COLUMNS}) SELECT i.region, 'SHARED', {row}.account_id, {row}.status, i.kind, "
        f"{sign}1 FROM images i WHERE i.id = {row}.image_id AND i.visibility <> 'PUBLIC' "
        f"AND i.owner_id <> {row}.account_id {UPSERT};"
    )


IMAGE_CHANGED = (
    "OLD.visibility <> NEW.visibility OR OLD.owner_id <> NEW.owner_id OR OLD.region <> NEW.region "
    "OR OLD.kind <> NEW.kind OR OLD.id <> NEW.id"
)
MEMBER_CHANGED = "OLD.image_id <> NEW.image_id OR OLD.account_id <> NEW.account_id OR OLD.status <> NEW.status"

# An image's BEFORE DELETE trigger takes its memberships off while they still exist; the
# memberships its deletion cascades to find no image any more and count nothing.
SQLITE_TRIGGERS = [
    f"CREATE TRIGGER image_counts_image_insert AFTER INSERT ON images BEGIN {own('NEW', '+')} END",
    (f"CREATE TRIGGER image_counts_image_delete BEFORE DELETE ON images BEGIN {own('OLD', '-')} "
     f"{members_of('OLD', '-')} END"),
    (f"CREATE TRIGGER image_counts_image_update AFTER UPDATE OF visibility, owner_id, region, kind, id ON images "
     f"WHEN {IMAGE_CHANGED} BEGIN {own('OLD', '-')} {members_of('OLD', '-')} {own('NEW', '+')} "
     f"{members_of('NEW', '+')} END"),
    f"CREATE TRIGGER image_counts_member_insert AFTER INSERT ON image_members BEGIN {member('NEW', '+')} END",
    f"CREATE TRIGGER image_counts_member_delete AFTER DELETE ON image_members BEGIN {member('OLD', '-')} END",
    (f"CREATE TRIGGER image_counts_member_update AFTER UPDATE OF image_id, account_id, status ON image_members "
     f"WHEN {MEMBER_CHANGED} BEGIN {member('OLD', '-')} {member('NEW', '+')} END"),
]

POSTGRES_TRIGGERS = [
    f"""CREATE FUNCTION image_counts_on_image() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF TG_OP IN ('UPDATE', 'DELETE') THEN
    {own('OLD', '-')}
    {members_of('OLD', '-')}
  END IF;
  IF TG_OP IN ('UPDATE', 'INSERT') THEN
    {own('NEW', '+')}
    {members_of('NEW', '+')}
  END IF;
  IF TG_OP = 'DELETE' THEN RETURN OLD; END IF;
  RETURN NEW;
END $$""",
    f"""CREATE FUNCTION image_counts_on_member() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF TG_OP IN ('UPDATE', 'DELETE') THEN
    {member('OLD', '-')}
  END IF;
  IF TG_OP IN ('UPDATE', 'INSERT') THEN
    {member('NEW', '+')}
  END IF;
  RETURN NULL;
END $$""",
    ("CREATE TRIGGER image_counts_image_insert AFTER INSERT ON images FOR EACH ROW "
     "EXECUTE FUNCTION image_counts_on_image()"),
    ("CREATE TRIGGER image_counts_image_delete BEFORE DELETE ON images FOR EACH ROW "
     "EXECUTE FUNCTION image_counts_on_image()"),
    ("CREATE TRIGGER image_counts_image_update AFTER UPDATE OF visibility, owner_id, region, kind, id ON images "
     f"FOR EACH ROW WHEN ({IMAGE_CHANGED}) EXECUTE FUNCTION image_counts_on_image()"),
    ("CREATE TRIGGER image_counts_member_change AFTER INSERT OR DELETE ON image_members FOR EACH ROW "
     "EXECUTE FUNCTION image_counts_on_member()"),
    ("CREATE TRIGGER image_counts_member_update AFTER UPDATE OF image_id, account_id, status ON image_members "
     f"FOR EACH ROW WHEN ({MEMBER_CHANGED}) EXECUTE FUNCTION image_counts_on_member()"),
]

BACKFILL = [
    (f"INSERT INTO image_counts ({COLUMNS}) SELECT region, "
     "CASE WHEN visibility = 'PUBLIC' THEN 'PUBLIC' ELSE 'OWNED' END, "
     "CASE WHEN visibility = 'PUBLIC' THEN '' ELSE owner_id END, '', kind, count(*) FROM images "
     "GROUP BY region, CASE WHEN visibility = 'PUBLIC' THEN 'PUBLIC' ELSE 'OWNED' END, "
     "CASE WHEN visibility = 'PUBLIC' THEN '' ELSE owner_id END, kind"),
    (f"INSERT INTO image_counts ({COLUMNS}) SELECT i.region, 'SHARED', m.account_id, m.status, i.kind, count(*) "
     "FROM image_members m JOIN images i ON i.id = m.image_id "
     "WHERE i.visibility <> 'PUBLIC' AND m.account_id <> i.owner_id GROUP BY i.region, m.account_id, m.status, i.kind"),
]


def upgrade() -> None:
    op.create_table('image_counts',
    sa.Column('region', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
    sa.Column('scope', sqlmodel.sql.sqltypes.AutoString(length=8), nullable=False),
    sa.Column('account_id', sqlmodel.sql.sqltypes.AutoString(length=40), nullable=False),
    sa.Column('member_status', sqlmodel.sql.sqltypes.AutoString(length=8), nullable=False),
    sa.Column('kind', sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
    sa.Column('n', sa.BigInteger(), nullable=False),
    sa.PrimaryKeyConstraint('region', 'scope', 'account_id', 'member_status', 'kind')
    )
    postgres = op.get_bind().dialect.name == "postgresql"
    for statement in POSTGRES_TRIGGERS if postgres else SQLITE_TRIGGERS:
        op.execute(statement)
    for statement in BACKFILL:
        op.execute(statement)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER image_counts_member_update ON image_members")
        op.execute("DROP TRIGGER image_counts_member_change ON image_members")
        op.execute("DROP TRIGGER image_counts_image_update ON images")
        op.execute("DROP TRIGGER image_counts_image_delete ON images")
        op.execute("DROP TRIGGER image_counts_image_insert ON images")
        op.execute("DROP FUNCTION image_counts_on_member()")
        op.execute("DROP FUNCTION image_counts_on_image()")
    else:
        for name in ("image_insert", "image_delete", "image_update", "member_insert", "member_delete",
                     "member_update"):
            op.execute(f"DROP TRIGGER image_counts_{name}")
    op.drop_table('image_counts')
