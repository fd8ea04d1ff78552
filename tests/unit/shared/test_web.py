"""What every long-running service shares at start."""

from __future__ import annotations

import asyncio
import gc

from services.web import serve_beside


async def test_a_service_starts_its_work_with_the_start_up_heap_out_of_collections() -> None:
    # a full collection walked ingest's 99,000 start-up objects (60-73 ms): frozen, it walks none
    gc.unfreeze()
    frozen: list[int] = []

    async def work(_: asyncio.Event) -> int:
        frozen.append(gc.get_freeze_count())
        return 0

    try:
        assert await serve_beside(None, "127.0.0.1", 0, work) == 0
    finally:
        gc.unfreeze()
    assert frozen[0] > 10_000  # this test process's modules, at least
