"""The site's calendar dates of samples and enrolments, for ages counted as the engine counts them.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"

_COLUMNS = (("rm_labs", "sample_date"), ("rm_participants", "enrolled_on"))


def upgrade() -> None:
    # 0001 creates the tables from the current metadata, so a new database has them already;
    # read models are derived, and `audit rebuild` fills the columns of an older database.
    inspector = sa.inspect(op.get_bind())
    for table, column in _COLUMNS:
        if column not in {c["name"] for c in inspector.get_columns(table)}:
            op.add_column(table, sa.Column(column, sa.String(10), nullable=True))


def downgrade() -> None:
    for table, column in _COLUMNS:
        op.drop_column(table, column)
