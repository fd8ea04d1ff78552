"""Lifecycle facts kept with what they record, produced by their own loop.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

from alembic import op

from services.notifier.adapters.store import facts

revision = "0002"
down_revision = "0001"


def upgrade() -> None:
    facts.create(op.get_bind(), checkfirst=True)  # (0001 makes every table of a new database)


def downgrade() -> None:
    facts.drop(op.get_bind())
