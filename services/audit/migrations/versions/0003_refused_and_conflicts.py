"""Refused messages keep their exact bytes; conflicting reuses of an event_id are kept apart.

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from services.audit.adapters.tables import audit_conflicts

revision = "0003"
down_revision = "0002"


def upgrade() -> None:
    # 0001 creates the tables from the current metadata: a new database has all of this already
    bind = op.get_bind()
    inspector = sa.inspect(bind)
    if "raw_base64" not in {c["name"] for c in inspector.get_columns("audit_undecodable")}:
        op.add_column("audit_undecodable", sa.Column("raw_base64", sa.Text, nullable=True))
    audit_conflicts.create(bind, checkfirst=True)


def downgrade() -> None:
    op.drop_table("audit_conflicts")
    op.drop_column("audit_undecodable", "raw_base64")
