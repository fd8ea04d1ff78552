"""The hardening table on the real broker: every finding of the hardening issue tried again
through HTTP, the CLI and the topics (tests/faults/hardening.py). Each case must hold; the table
is printed (pytest -s, or `python -m tests.faults --hardening`)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.faults.hardening import run_all, table

pytestmark = [pytest.mark.integration, pytest.mark.faults]


async def test_every_hardening_case_holds(kafka: str, tmp_path: Path) -> None:
    cases = await run_all(kafka, tmp_path)
    print("\n" + table(cases))
    assert len(cases) >= 29
    assert [c for c in cases if not c.ok] == []
