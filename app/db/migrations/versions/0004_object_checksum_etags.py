"""entity tags of recorded object checksums

A recorded checksum was trusted while the object's size and modification time were those
recorded. S3 dates have one-second resolution (a file's mtime ticks every few milliseconds),
so an object replaced by another of the same size within that time kept the old checksum.
The store's entity tag of the version hashed is now recorded too and must match. Rows
recorded before have none: they are recomputed once, when the object is next asked for.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-27 17:50:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlmodel.sql.sqltypes import AutoString

revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('object_checksums', schema=None) as batch_op:
        batch_op.add_column(sa.Column('etag', AutoString(length=200), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('object_checksums', schema=None) as batch_op:
        batch_op.drop_column('etag')
