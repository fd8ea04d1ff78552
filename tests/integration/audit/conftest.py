from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import create_async_engine

from services.audit.adapters.store import AuditStore
from tests.conftest import postgres_url


@pytest.fixture(params=["sqlite", "postgresql"])
async def audit_url(request: pytest.FixtureRequest, tmp_path: object) -> AsyncIterator[str]:
    """A fresh, empty database: a SQLite file, or a new PostgreSQL database dropped after."""
    if request.param == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path}/audit.db"
        return
    admin_url = postgres_url()
    name = f"audit_{uuid.uuid4().hex[:10]}"
    admin = create_async_engine(admin_url, isolation_level="AUTOCOMMIT")
    async with admin.connect() as conn:
        await conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield make_url(admin_url).set(database=name).render_as_string(hide_password=False)
    finally:
        async with admin.connect() as conn:
            await conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        await admin.dispose()


@pytest.fixture
async def audit_store(audit_url: str) -> AsyncIterator[AuditStore]:
    store = AuditStore(audit_url)
    await store.migrate()
    try:
        yield store
    finally:
        await store.close()
