"""GroupCommit: concurrent writers share a transaction, and one writer's failure is its own."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from sqlalchemy import Connection, event, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from services.sql import GroupCommit, open_engine, sqlite_wal
from tests.conftest import postgres_url


def _insert_many(conn: Connection, items: list[str]) -> list[int]:
    """One statement for every caller's row (what makes a shared transaction cheap)."""
    conn.execute(text("INSERT INTO t (k) VALUES (:k)"), [{"k": k} for k in items])
    rows = conn.execute(text("SELECT k, rowid FROM t"))
    ids = dict(rows.all())
    return [ids[k] for k in items]


async def _with_table_t(path: Path) -> AsyncEngine:
    engine = open_engine(f"sqlite+aiosqlite:///{path}")
    sqlite_wal(engine)
    async with engine.begin() as conn:
        await conn.execute(text("CREATE TABLE t (k TEXT PRIMARY KEY)"))
    return engine


async def test_concurrent_writes_share_transactions_and_a_failure_stays_with_its_caller(
    tmp_path: Path,
) -> None:
    engine = await _with_table_t(tmp_path / "g.db")
    async with engine.begin() as conn:
        await conn.execute(text("INSERT INTO t (k) VALUES ('taken')"))
    commits = 0
    writes = GroupCommit(engine)
    assert writes.sync_engine is not None

    @event.listens_for(writes.sync_engine, "commit")
    def _count(_: object) -> None:
        nonlocal commits
        commits += 1

    keys = [f"k{n}" for n in range(40)]
    results = await asyncio.gather(
        *(writes.run(_insert_many, k) for k in keys),
        writes.run(_insert_many, "taken"),  # refused by the primary key
        return_exceptions=True,
    )
    *written, refused = results
    assert isinstance(refused, IntegrityError)
    assert all(isinstance(r, int) for r in written) and len(set(written)) == 40
    async with engine.connect() as conn:
        stored = {r[0] for r in await conn.execute(text("SELECT k FROM t"))}
    assert stored == {"taken", *keys}  # the 40 others were written, once each
    # 41 callers: the first alone, the rest gathered into one transaction; that one failed
    # whole and was written again caller by caller (40 commits), so far fewer than 41 + 40
    # would be without sharing when nothing fails:
    commits_with_failure = commits
    commits = 0
    more = [f"m{n}" for n in range(40)]
    await asyncio.gather(*(writes.run(_insert_many, k) for k in more))
    assert commits <= 2, commits  # 40 concurrent callers, at most two transactions
    assert commits_with_failure <= 42
    await writes.close()
    await engine.dispose()


async def test_with_postgresql_each_write_is_its_own_transaction() -> None:
    engine = open_engine(postgres_url())
    writes = GroupCommit(engine)
    assert not writes.shared
    async with engine.begin() as conn:
        await conn.execute(text("DROP TABLE IF EXISTS group_commit_t"))
        await conn.execute(text("CREATE TABLE group_commit_t (k TEXT PRIMARY KEY)"))

    def insert(conn: Connection, items: list[str]) -> list[str]:
        conn.execute(text("INSERT INTO group_commit_t (k) VALUES (:k)"), [{"k": k} for k in items])
        return items

    got = await asyncio.gather(*(writes.run(insert, f"p{n}") for n in range(10)))
    assert got == [f"p{n}" for n in range(10)]
    with pytest.raises(IntegrityError):
        await writes.run(insert, "p1")
    async with engine.begin() as conn:
        await conn.execute(text("DROP TABLE group_commit_t"))
    await engine.dispose()


async def test_a_write_after_close_fails_at_once_rather_than_waiting_forever(
    tmp_path: Path,
) -> None:
    engine = await _with_table_t(tmp_path / "c.db")
    writes = GroupCommit(engine)
    assert await writes.run(_insert_many, "before") == 1
    await writes.close()
    with pytest.raises(RuntimeError):  # its thread is gone: the caller hears so
        await asyncio.wait_for(writes.run(_insert_many, "after"), timeout=30)
    await engine.dispose()


async def test_writes_submitted_before_close_are_written_and_close_waits_for_them(
    tmp_path: Path,
) -> None:
    engine = await _with_table_t(tmp_path / "d.db")
    writes = GroupCommit(engine)
    keys = [f"w{n}" for n in range(30)]
    pending = [asyncio.ensure_future(writes.run(_insert_many, k)) for k in keys]
    await asyncio.sleep(0)  # every write submitted, most not yet written
    await writes.close()
    async with engine.connect() as conn:  # close returned once the last of them was written
        stored = {r[0] for r in await conn.execute(text("SELECT k FROM t"))}
    assert stored == set(keys)
    assert sorted(await asyncio.gather(*pending)) == list(range(1, 31))  # each caller heard
    await engine.dispose()
