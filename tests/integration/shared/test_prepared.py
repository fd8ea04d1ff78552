"""Prepared: a statement run as its own text, on SQLite and PostgreSQL, with the same answers
as SQLAlchemy's execution of it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import (
    Column,
    Connection,
    DateTime,
    Integer,
    MetaData,
    String,
    Table,
    event,
    func,
    select,
)
from sqlalchemy.ext.asyncio import AsyncEngine

from services.sql import Prepared, in_list, insert_for, when
from tests.integration.shared.conftest import engine_with
from tests.integration.shared.test_in_list import ODD

metadata = MetaData()
rows_t = Table(
    "prepared_rows",
    metadata,
    Column("k", String(60), primary_key=True),
    Column("n", Integer, nullable=False),
    Column("at", DateTime(timezone=True), nullable=False),
)
_BY_KEY = select(rows_t.c.k, rows_t.c.n, rows_t.c.at).where(in_list(rows_t.c.k, "keys"))
_BY_KEY_TEXT = Prepared(_BY_KEY)
_DROP_TEXT = Prepared(rows_t.delete().where(in_list(rows_t.c.k, "keys"), rows_t.c.n > 40))
_ADD = Prepared(
    lambda conn: (
        insert_for(conn)(rows_t)
        .on_conflict_do_nothing(index_elements=["k"])
        .values({"at": func.now()})
    ),
    columns=("k", "n"),
)


@pytest.fixture
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    async with engine_with(database_url, metadata) as engine:
        yield engine


def _work(conn: Connection) -> tuple[list[Any], list[Any], int, list[bool]]:
    compiled: list[bool] = []  # for each statement sent: whether SQLAlchemy compiled it

    @event.listens_for(conn, "before_cursor_execute")
    def _seen(_: Any, cursor: Any, statement: str, params: Any, context: Any, many: bool) -> None:
        compiled.append(context.compiled is not None)

    _ADD.run_many(conn, [(k, n) for n, k in enumerate(ODD)] + [(f"k{n}", n) for n in range(50)])
    _ADD.run_many(conn, [("k3", 999)])  # there already: left as it is
    _ADD.run_many(conn, [])
    wanted = {"keys": [*ODD, "k3", "k45", "absent"]}
    as_text = sorted(tuple(r) for r in _BY_KEY_TEXT.run(conn, wanted))
    event.remove(conn, "before_cursor_execute", _seen)
    as_expression = sorted(tuple(r) for r in conn.execute(_BY_KEY, wanted))
    dropped = _DROP_TEXT.run(conn, {"keys": ["k3", "k45", "k46", "absent"]}).rowcount
    return as_text, as_expression, dropped, compiled


async def test_a_prepared_statement_answers_as_its_expression_does(engine: AsyncEngine) -> None:
    async with engine.begin() as conn:
        as_text, as_expression, dropped, compiled = await conn.run_sync(_work)
    # every write and read above went to the database as its text, past SQLAlchemy's compiler
    assert compiled == [False] * 3
    assert [(k, n) for k, n, _ in as_text] == sorted(
        [(k, n) for n, k in enumerate(ODD)] + [("k3", 3), ("k45", 45)]
    )
    # a time as the driver gives it (SQLite: text, no zone) is, through `when`, the expression's
    for (k, _, raw), (k2, _, at) in zip(as_text, as_expression, strict=True):
        assert k == k2 and when(raw) == (at if at.tzinfo else at.replace(tzinfo=UTC))
        assert abs(when(raw) - datetime.now(UTC)) < timedelta(minutes=5)
    assert dropped == 2  # k45 and k46: n > 40; k3 stays


def test_when_reads_each_form_a_driver_gives() -> None:
    at = datetime(2026, 11, 26, 13, 5, tzinfo=UTC)
    assert when("2026-11-26 13:05:00") == at
    assert when("2026-11-26 13:05:00.250000") == at + timedelta(milliseconds=250)
    assert when(at) == at
    assert when(datetime(2026, 11, 26, 13, 5)) == at
