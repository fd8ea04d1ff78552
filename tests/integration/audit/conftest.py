from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from services.audit.adapters.store import AuditStore


@pytest.fixture
def audit_url(fresh_database_url: str) -> str:
    return fresh_database_url


@pytest.fixture
async def audit_store(audit_url: str) -> AsyncIterator[AuditStore]:
    store = AuditStore(audit_url)
    await store.migrate()
    try:
        yield store
    finally:
        await store.close()
