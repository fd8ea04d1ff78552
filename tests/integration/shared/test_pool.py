"""A PostgreSQL engine keeps the connections its concurrent callers need, rather than opening
and closing them (each open was a TLS handshake and every statement prepared again)."""

from __future__ import annotations

import asyncio

from sqlalchemy import event, text

from services.sql import open_engine
from tests.conftest import postgres_url


async def test_sixteen_callers_at_a_time_open_sixteen_connections_once() -> None:
    engine = open_engine(postgres_url())
    opened = 0

    @event.listens_for(engine.sync_engine, "connect")
    def _count(*_: object) -> None:
        nonlocal opened
        opened += 1

    async def one() -> None:
        async with engine.connect() as conn:
            await conn.execute(text("SELECT pg_sleep(0.02)"))

    try:
        for _ in range(10):  # ten rounds of 16 callers at once
            await asyncio.gather(*(one() for _ in range(16)))
    finally:
        await engine.dispose()
    assert opened <= 16, opened  # with SQLAlchemy's default (5 kept), 105 in these ten rounds
