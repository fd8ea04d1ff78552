"""Every timestamp column of the log in UTC; the DSMB access log.

SQLite keeps no offset: a `+07:00` time was stored as its local wall time, so `verify` failed an
untouched trail and time filters were off by the offset. Rows already stored are rewritten from
their hashed JSON (the hash covers the JSON, not the column), under the append-only triggers
lifted for this one statement and put back.

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import json
from datetime import datetime

import sqlalchemy as sa
from alembic import op

from services.audit.adapters.tables import audit_access, audit_log
from services.audit.domain.chain import indexed

revision = "0004"
down_revision = "0003"


def _append_only(table: str, dialect: str) -> list[str]:
    if dialect == "postgresql":
        return [
            f"CREATE TRIGGER {table}_append_only BEFORE UPDATE OR DELETE ON {table} "
            "FOR EACH ROW EXECUTE FUNCTION audit_append_only()",
            f"CREATE TRIGGER {table}_no_truncate BEFORE TRUNCATE ON {table} "
            "FOR EACH STATEMENT EXECUTE FUNCTION audit_append_only()",
        ]
    return [
        f"CREATE TRIGGER {table}_no_{action.lower()} BEFORE {action} ON {table} "
        f"BEGIN SELECT RAISE(ABORT, '{table} is append-only'); END"
        for action in ("UPDATE", "DELETE")
    ]


def upgrade() -> None:
    bind = op.get_bind()
    dialect = bind.dialect.name
    audit_access.create(bind, checkfirst=True)
    for statement in _append_only("audit_access", dialect):
        op.execute(statement)
    if dialect != "sqlite":
        return  # PostgreSQL's timestamptz kept the instant
    rows = bind.execute(sa.select(audit_log.c.seq, audit_log.c.canonical)).all()
    fixes = [
        (seq, indexed(canonical))
        for seq, canonical in rows
        if any(
            not str(json.loads(canonical)[k]).endswith(("Z", "+00:00"))
            for k in ("occurred_at", "recorded_at")
        )
    ]
    if not fixes:
        return
    op.execute("DROP TRIGGER audit_log_no_update")
    for seq, want in fixes:
        bind.execute(
            audit_log.update()
            .where(audit_log.c.seq == seq)
            .values(
                occurred_at=datetime.fromisoformat(str(want["occurred_at"])).replace(tzinfo=None),
                recorded_at=datetime.fromisoformat(str(want["recorded_at"])).replace(tzinfo=None),
            )
        )
    op.execute(_append_only("audit_log", dialect)[0])


def downgrade() -> None:
    raise NotImplementedError("the audit log is never rewritten back")
