"""What the DSMB report's compliance and locality tables read: an alert's raise time (the
worker's, not the trigger's clinical time) and facts, an AE's source, awareness and entry time,
the first dose's date at the site (study day 0), and each alert's trial (a report is per trial).

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"

_COLUMNS = (
    ("rm_alerts", "recorded_at", sa.DateTime(timezone=True)),
    ("rm_alerts", "facts", sa.Text()),
    ("rm_alerts", "trial_id", sa.String(200)),
    ("rm_aes", "source", sa.String(20)),
    ("rm_aes", "aware_at", sa.DateTime(timezone=True)),
    ("rm_aes", "recorded_at", sa.DateTime(timezone=True)),
    ("rm_participants", "dose_on", sa.String(10)),
)


def upgrade() -> None:
    # As in 0002: a new database has them from the metadata; read models are derived, and
    # `safety-monitor audit rebuild` fills the columns of an older database from the log.
    inspector = sa.inspect(op.get_bind())
    for table, column, kind in _COLUMNS:
        if column not in {c["name"] for c in inspector.get_columns(table)}:
            op.add_column(table, sa.Column(column, kind, nullable=True))


def downgrade() -> None:
    for table, column, _ in _COLUMNS:
        op.drop_column(table, column)
