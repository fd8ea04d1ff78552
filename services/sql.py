"""What every service's SQL store shares: Alembic migrations run on the caller's connection."""

from __future__ import annotations

import asyncio
import weakref
from pathlib import Path
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine

# Alembic keeps its running context in module globals, and SQLAlchemy's asyncio runs each
# migration in a greenlet of the event loop's thread: two stores migrating at once in one
# process must take turns at the asyncio level (a thread lock would deadlock the loop).
_TURNS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Lock] = (
    weakref.WeakKeyDictionary()
)


async def migrate(
    engine: AsyncEngine, migrations: Path, version_table: str = "alembic_version"
) -> None:
    """Runs `migrations` to head on `engine`, one migration at a time in this process."""
    turn = _TURNS.setdefault(asyncio.get_running_loop(), asyncio.Lock())
    async with turn, engine.begin() as conn:
        await conn.run_sync(upgrade, migrations, version_table)


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
