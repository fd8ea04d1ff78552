"""Loops that never stop in silence (services/supervise.py)."""

from __future__ import annotations

import asyncio
import logging

import pytest

from services.supervise import LoopDied, retrying, supervise

log = logging.getLogger("test")


async def test_a_failing_step_is_retried_and_the_stop_ends_it() -> None:
    stop, runs = asyncio.Event(), []

    async def step() -> None:
        runs.append(1)
        if len(runs) < 3:
            raise OSError("the broker is away")
        await stop.wait()

    task = asyncio.create_task(retrying("step", step, stop, log, cap_s=0.01))
    while len(runs) < 3:
        await asyncio.sleep(0.01)
    stop.set()
    await asyncio.wait_for(task, 5)
    assert len(runs) == 3


async def test_a_loop_that_ends_while_the_service_runs_ends_the_service() -> None:
    stop = asyncio.Event()

    async def forever() -> None:
        await stop.wait()

    async def quits() -> None:
        return

    with pytest.raises(LoopDied, match="the quits loop ended"):
        await supervise({"forever": forever(), "quits": quits()}, stop, log)
    assert stop.is_set()  # the others were stopped too


async def test_loops_ending_with_the_stop_are_not_dead() -> None:
    stop = asyncio.Event()

    async def until_stop() -> None:
        await stop.wait()

    running = asyncio.create_task(supervise({"a": until_stop(), "b": until_stop()}, stop, log))
    await asyncio.sleep(0.05)
    stop.set()
    await asyncio.wait_for(running, 5)  # no LoopDied


async def test_a_step_that_hangs_is_cut_after_the_grace_once_stopped() -> None:
    stop = asyncio.Event()

    async def hangs() -> None:
        await asyncio.sleep(3600)  # a client waiting on a broker that is away

    task = asyncio.create_task(retrying("hangs", hangs, stop, log, grace_s=0.1))
    await asyncio.sleep(0.05)
    stop.set()
    await asyncio.wait_for(task, 2)
