"""index of API tokens by expiry

The maintenance round deletes the API tokens that expired longer ago than
IMS_EXPIRED_TOKEN_RETENTION, in batches of those expired longest ago: ix_api_tokens_expires_at
serves each batch from the index, where every batch scanned the whole table before.

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-28 12:00:00
"""

from __future__ import annotations

from alembic import op

revision = '0010'
down_revision = '0009'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_api_tokens_expires_at", "api_tokens", ["expires_at"])


def downgrade() -> None:
    op.drop_index("ix_api_tokens_expires_at", table_name="api_tokens")
