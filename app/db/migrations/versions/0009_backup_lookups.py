"""indexes for listing and deleting an account's backups

`backups(first:, after:)` pages an account's backups newest first: (account_id, created_at,
id) serves each keyset page from the index, as ix_servers_account_created does for servers
(the only index before, by server, does not lead with the account). `deleteBackups` refuses a
backup an image still holds, and `Backup.image` finds that image: both look images up by
`backup_id`, which no index served (every request scanned the images).

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-28 10:30:00
"""

from __future__ import annotations

from alembic import op

revision = '0009'
down_revision = '0008'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_backups_account_created", "backups", ["account_id", "created_at", "id"])
    op.create_index("ix_images_backup_id", "images", ["backup_id"])


def downgrade() -> None:
    op.drop_index("ix_images_backup_id", table_name="images")
    op.drop_index("ix_backups_account_created", table_name="backups")
