"""What every service's SQL store shares: Alembic migrations run on the caller's connection."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def upgrade(sync_connection: Any, migrations: Path, version_table: str = "alembic_version") -> None:
    """Runs `migrations` to head on this connection (called through `conn.run_sync`). Each
    service keeps its own version table, so two services may share one database."""
    from alembic import command
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(migrations))
    cfg.attributes["connection"] = sync_connection
    cfg.attributes["version_table"] = version_table
    command.upgrade(cfg, "head")


def insert_for(conn: Any) -> Any:
    """INSERT with ON CONFLICT (do nothing / do update), in the connection's dialect."""
    from sqlalchemy.dialects import postgresql, sqlite

    return postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert


def run_env() -> None:
    """The body of each service's migrations/env.py."""
    from alembic import context

    attributes = context.config.attributes
    context.configure(
        connection=attributes["connection"],
        target_metadata=None,
        version_table=attributes.get("version_table", "alembic_version"),
    )
    with context.begin_transaction():
        context.run_migrations()
