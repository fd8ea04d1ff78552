"""Long-running work that never stops in silence: a loop whose step fails is logged with its
cause and tried again after a backoff; a loop that ends before its service is told to stop ends
the service with an error naming it, so that its supervisor (systemd, compose, Kubernetes)
restarts it. Every service's loops run under these."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any


class LoopDied(RuntimeError):
    """A loop that must run until its service stops ended: the process exits non-zero."""


def backoff(attempt: int, cap_s: float, base_s: float = 0.5) -> float:
    """Seconds to wait before try `attempt` (1, 2, ...): doubling from `base_s`, at most
    `cap_s`, with jitter (a half to the whole of it), so that many clients coming back at once
    do not come back together."""
    return float(min(cap_s, base_s * 2 ** min(max(attempt - 1, 0), 30)) * random.uniform(0.5, 1))


async def pause(stop: asyncio.Event, seconds: float) -> None:
    """Sleeps `seconds`, or until `stop` is set."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)


async def retrying(
    name: str,
    run: Callable[[], Awaitable[None]],
    stop: asyncio.Event,
    log: logging.Logger,
    *,
    cap_s: float = 30.0,
    on_failure: Callable[[BaseException], None] | None = None,
    fatal: tuple[type[BaseException], ...] = (),
    grace_s: float = 3.0,
) -> None:
    """`run()` until `stop`: when it raises, the error is logged with its cause, `on_failure`
    is told, and it runs again after a backoff (that grows while it keeps failing; a run that
    lasted a minute starts the count again). `fatal` errors are not retried: they propagate.
    Once `stop` is set, `run` has `grace_s` to return before it is cancelled (a broker that
    does not answer never holds a SIGTERM). `run` returning before `stop` is a bug: LoopDied."""
    attempt = 0
    loop = asyncio.get_running_loop()
    while not stop.is_set():
        started = loop.time()
        try:
            await _until_stopped(run(), stop, grace_s)
        except asyncio.CancelledError as e:
            task = asyncio.current_task()
            if task is None or task.cancelling():
                raise  # this loop is being stopped
            failure: Exception = RuntimeError(f"cancelled from inside: {e!r}")  # (a client's)
        except fatal:
            raise
        except Exception as e:
            failure = e
        else:
            if not stop.is_set():
                raise LoopDied(f"{name} returned while the service runs")
            continue
        attempt = 1 if loop.time() - started > 60 else attempt + 1
        wait = backoff(attempt, cap_s)
        log.error(
            "%s failed (%s: %s); trying again in %.1f s", name, type(failure).__name__,
            failure, wait, exc_info=failure, extra={"loop": name, "attempt": attempt},
        )  # fmt: skip
        if on_failure is not None:
            on_failure(failure)
        await pause(stop, wait)


async def _until_stopped(work: Awaitable[None], stop: asyncio.Event, grace_s: float) -> None:
    """`work` to its end, or, once `stop` is set, for `grace_s` more and then cancelled."""
    task = asyncio.ensure_future(work)
    stopped = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait({task, stopped}, return_when=asyncio.FIRST_COMPLETED)
        if not task.done():
            done, _ = await asyncio.wait({task}, timeout=grace_s)
            if not done:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
                return
        await task
    finally:
        stopped.cancel()
        if not task.done():  # (we are being cancelled)
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)


async def supervise(
    loops: dict[str, Coroutine[Any, Any, None]], stop: asyncio.Event, log: logging.Logger
) -> None:
    """Runs every loop until `stop`. One that ends first (a bug: each retries its own
    failures) ends them all and raises LoopDied naming it."""
    tasks: dict[asyncio.Task[Any], str] = {
        asyncio.create_task(coro, name=name): name for name, coro in loops.items()
    }
    stopped = asyncio.create_task(stop.wait())
    try:
        done, _ = await asyncio.wait([*tasks, stopped], return_when=asyncio.FIRST_COMPLETED)
        # (a loop that ends as the stop comes is stopping, not dead)
        dead = [t for t in done if t is not stopped] if not stop.is_set() else []
        if dead:
            task = dead[0]
            error = task.exception() if not task.cancelled() else None
            log.critical(
                "the %s loop ended (%r): stopping, for the supervisor to restart the service",
                tasks[task], error, extra={"loop": tasks[task]},
            )  # fmt: skip
            raise LoopDied(f"the {tasks[task]} loop ended: {error!r}") from error
    finally:
        stop.set()
        stopped.cancel()
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, stopped, return_exceptions=True)
