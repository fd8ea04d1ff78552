from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from services.ingest.bootstrap import IngestParts, build
from services.ingest.domain.policy import Role
from services.ingest.settings import IngestSettings


@dataclass
class Api:
    parts: IngestParts
    client: httpx.AsyncClient
    site_a: str  # secret of a key for site "sardjito"
    site_b: str  # secret of a key for site "other"
    admin: str

    def h(self, secret: str, **extra: str) -> dict[str, str]:
        return {"X-API-Key": secret, **extra}


async def make_api(bootstrap: str, db: Path, **settings: object) -> Api:
    parts = build(
        IngestSettings(
            kafka_bootstrap=bootstrap,
            ingest_database_url=f"sqlite+aiosqlite:///{db}",
            ingest_kafka_timeout_s=3,
            # the CDISC pilot files of ../shared/data are another study, accepted by name
            **({"ingest_other_trial_ids": ["CDISCPILOT01"]} | settings),
        )
    )
    await parts.store.create()
    _, a = await parts.store.add_key(Role.SITE, "sardjito")
    _, b = await parts.store.add_key(Role.SITE, "other")
    _, admin = await parts.store.add_key(Role.ADMIN, None)
    client = httpx.AsyncClient(
        transport=httpx.ASGITransport(app=parts.app), base_url="http://ingest"
    )
    return Api(parts, client, a, b, admin)


@pytest.fixture
async def api(kafka: str, tmp_path: Path) -> AsyncIterator[Api]:
    a = await make_api(kafka, tmp_path / "ingest.db")
    try:
        yield a
    finally:
        await a.client.aclose()
        await a.parts.log.close()
        await a.parts.store.close()
