"""What every long-running service shares at start."""

from __future__ import annotations

import asyncio
import gc

from services.web import serve_beside


async def test_a_service_starts_its_work_with_the_start_up_heap_out_of_collections() -> None:
    # a full collection walked ingest's 99,000 start-up objects (60-73 ms): frozen, it walks none;
    # and a young collection ran every 700 new containers, a few times per batch of events
    gc.unfreeze()
    before = gc.get_threshold()
    gc.set_threshold(700, 10, 10)  # CPython's default
    seen: list[tuple[int, tuple[int, int, int]]] = []

    async def work(_: asyncio.Event) -> int:
        seen.append((gc.get_freeze_count(), gc.get_threshold()))
        return 0

    try:
        assert await serve_beside(None, "127.0.0.1", 0, work) == 0
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)
    frozen, threshold = seen[0]
    assert frozen > 10_000  # this test process's modules, at least
    assert threshold == (50_000, 20, 100)
