"""image names in code point order on PostgreSQL

`images.name` took the database's collation: under the postgres image's default (en_US.utf8)
`images(orderBy: {field: NAME})` read "alpha", "Alpha", "Äpfel", "b", "B" where SQLite, whose
collation is binary, read "Alpha", "B", "alpha", "b", "Äpfel". The column is collated "C"
now (code point order, as SQLite and the documentation have it); its two name indexes are
rebuilt with it, so the ordering is still served by them. SQLite: nothing to do.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-27 21:00:00
"""

from __future__ import annotations

from alembic import op

revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute('ALTER TABLE images ALTER COLUMN name TYPE VARCHAR(128) COLLATE "C"')


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute('ALTER TABLE images ALTER COLUMN name TYPE VARCHAR(128) COLLATE "default"')
