"""Each alert's latest outcome per channel in the register: a channel that failed is named
beside one that delivered (the status alone said "delivered" while the email failed).

Revision ID: 0006
Revises: 0005
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"


def upgrade() -> None:
    # as in 0005: a new database has it from the metadata; `audit rebuild` fills an older one
    inspector = sa.inspect(op.get_bind())
    if "channels" not in {c["name"] for c in inspector.get_columns("rm_alerts")}:
        op.add_column("rm_alerts", sa.Column("channels", sa.Text(), nullable=True))


def downgrade() -> None:
    op.drop_column("rm_alerts", "channels")
