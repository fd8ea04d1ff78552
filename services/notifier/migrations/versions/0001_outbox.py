"""The notifier's trackers, outbox and consumed offsets.

Revision ID: 0001
Revises:
"""

from __future__ import annotations

from alembic import op

from services.notifier.adapters.store import metadata

revision = "0001"
down_revision = None


def upgrade() -> None:
    metadata.create_all(op.get_bind())


def downgrade() -> None:
    metadata.drop_all(op.get_bind())
