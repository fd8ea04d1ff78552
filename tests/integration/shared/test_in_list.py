"""in_list: `column IN` a list of strings bound as one parameter, on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import Column, MetaData, String, Table, bindparam, select
from sqlalchemy.ext.asyncio import AsyncEngine

from services.sql import in_list, open_engine
from tests.integration.shared.conftest import engine_with

metadata = MetaData()
things = Table(
    "in_list_things",
    metadata,
    Column("k", String(60), primary_key=True),
    Column("owner", String(20), nullable=False),
)
_BY_KEY = select(things.c.k, things.c.owner).where(in_list(things.c.k, "keys"))
_FORGET = things.delete().where(in_list(things.c.owner, "owners"), things.c.k != bindparam("keep"))

# text a JSON array or an SQL array must carry unchanged: quotes, commas, braces, backslashes,
# letters past ASCII
ODD = ['it\'s "quoted"', "a,b", "{x}", "back\\slash", "naïve ✓ 日本", "NULL", ""]


@pytest.fixture
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    async with engine_with(database_url, metadata) as engine:
        yield engine


async def test_rows_whose_column_is_in_the_list_and_no_others(engine: AsyncEngine) -> None:
    rows = [{"k": k, "owner": "odd"} for k in ODD] + [
        {"k": f"k{n}", "owner": f"o{n % 3}"} for n in range(50)
    ]
    async with engine.begin() as conn:
        await conn.execute(things.insert(), rows)
        found = await conn.execute(_BY_KEY, {"keys": [*ODD, "k7", "k49", "absent", "k7"]})
        assert dict(found.all()) == {**{k: "odd" for k in ODD}, "k7": "o1", "k49": "o1"}
        assert (await conn.execute(_BY_KEY, {"keys": []})).all() == []
        # one statement, two lists and a plain parameter beside them
        done = await conn.execute(_FORGET, {"owners": ["o0", "o2"], "keep": "k3"})
        assert done.rowcount == 32  # 17 rows of o0 and 16 of o2, less k3 kept
        left = await conn.execute(select(things.c.k))
        assert {r[0] for r in left} == {*ODD, "k3"} | {f"k{n}" for n in range(1, 50, 3)}


async def test_a_long_list_is_one_parameter(engine: AsyncEngine) -> None:
    keys = [f"key-{n}" for n in range(40_000)]
    async with engine.begin() as conn:
        await conn.execute(things.insert(), [{"k": k, "owner": "x"} for k in keys[::1000]])
        found = await conn.execute(_BY_KEY, {"keys": keys})
        assert sorted(r[0] for r in found) == sorted(keys[::1000])


async def test_on_sqlite_each_value_is_looked_up_in_the_index_not_the_table_scanned(
    tmp_path: Path,
) -> None:
    engine = open_engine(f"sqlite+aiosqlite:///{tmp_path / 'p.db'}")
    async with engine.begin() as conn:
        await conn.run_sync(metadata.create_all)
        sql = str(_BY_KEY.compile(conn.sync_connection))
        plan = " / ".join(
            r[-1] for r in await conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {sql}", ('["a"]',))
        )
    await engine.dispose()
    assert plan.startswith("SEARCH in_list_things USING INDEX"), plan
