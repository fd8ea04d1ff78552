"""What the shared-SQL tests have in common."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from sqlalchemy import MetaData
from sqlalchemy.ext.asyncio import AsyncEngine

from services.sql import open_engine


@contextlib.asynccontextmanager
async def engine_with(database_url: str, metadata: MetaData) -> AsyncIterator[AsyncEngine]:
    """An engine on the test database with `metadata`'s tables made afresh, dropped after."""
    engine = open_engine(database_url)
    async with engine.begin() as conn:
        await conn.run_sync(metadata.drop_all)
        await conn.run_sync(metadata.create_all)
    try:
        yield engine
    finally:
        async with engine.begin() as conn:
            await conn.run_sync(metadata.drop_all)
        await engine.dispose()
