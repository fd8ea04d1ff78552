"""No participant data in logs, even from a failed statement; SQLite files owner-only."""

from __future__ import annotations

import json
import logging
import stat
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError

from services.logs import JsonFormatter
from services.sql import open_engine


async def test_a_failed_statements_values_reach_neither_its_error_nor_the_log(
    tmp_path: Path,
) -> None:
    engine = open_engine(f"sqlite+aiosqlite:///{tmp_path}/x.db")
    async with engine.begin() as conn:
        await conn.execute(text("CREATE TABLE p (participant_id TEXT PRIMARY KEY)"))
        await conn.execute(text("INSERT INTO p VALUES (:p)"), {"p": "DN-SECRET-007"})
    with pytest.raises(IntegrityError) as e:
        async with engine.begin() as conn:
            await conn.execute(text("INSERT INTO p VALUES (:p)"), {"p": "DN-SECRET-007"})
    await engine.dispose()
    assert "DN-SECRET-007" not in str(e.value)
    record = logging.LogRecord("x", logging.ERROR, __file__, 1, "insert failed", (), None)
    try:
        raise ValueError("participant DN-SECRET-007 born 1950-01-01")
    except ValueError:
        import sys

        record.exc_info = sys.exc_info()
    line = json.loads(JsonFormatter("test").format(record))
    assert "DN-SECRET-007" not in json.dumps(line) and "1950" not in json.dumps(line)
    assert (
        line["exc"].startswith("builtins.ValueError at ")
        and "test_logs_and_engines.py" in line["exc"]
    )
    assert stat.S_IMODE((tmp_path / "x.db").stat().st_mode) == 0o600
    old = tmp_path / "old.db"
    old.touch(mode=0o644)
    await open_engine(f"sqlite+aiosqlite:///{old}").dispose()
    assert stat.S_IMODE(old.stat().st_mode) == 0o600  # an older file is closed too


def test_a_record_logged_with_exc_info_outside_an_except_block_still_formats() -> None:
    record = logging.LogRecord("x", logging.ERROR, __file__, 1, "no error here", (), None)
    record.exc_info = (None, None, None)  # what exc_info=True gives outside an except block
    assert json.loads(JsonFormatter("test").format(record))["exc"] == "no exception"
