"""Dispositions (how and when each participant left the schedule) and AEs' MedDRA coding, for
the DSMB report's disposition flow and its SOC/PT tables (issue 29).

Revision ID: 0007
Revises: 0006
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"


def upgrade() -> None:
    # as in 0005: a new database has them from the metadata; `audit rebuild` fills an older one
    inspector = sa.inspect(op.get_bind())
    if "meddra" not in {c["name"] for c in inspector.get_columns("rm_aes")}:
        op.add_column("rm_aes", sa.Column("meddra", sa.Text(), nullable=True))
    if "rm_dispositions" not in inspector.get_table_names():
        op.create_table(
            "rm_dispositions",
            sa.Column("event_id", sa.String(36), primary_key=True),
            sa.Column("participant_id", sa.String(64), nullable=False, index=True),
            sa.Column("trial_id", sa.String(200), nullable=False),
            sa.Column("disposition", sa.String(40), nullable=False),
            sa.Column("disposition_date", sa.String(10), nullable=False),
            sa.Column("withdrawal_reason", sa.String(40), nullable=True),
            sa.Column("source_term", sa.String(200), nullable=True),
            sa.Column("superseded_by", sa.String(36), nullable=True),
        )


def downgrade() -> None:
    op.drop_table("rm_dispositions")
    op.drop_column("rm_aes", "meddra")
