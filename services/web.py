"""What every long-running service shares: its HTTP endpoints served beside its own work in one
event loop, and one graceful shutdown on SIGTERM/SIGINT."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Awaitable, Callable, Generator
from contextlib import contextmanager
from typing import Any

import uvicorn


class _Server(uvicorn.Server):
    """uvicorn inside the service's loop; the service owns SIGTERM/SIGINT and stops it."""

    @contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


async def serve_beside(
    app: Any | None, host: str, port: int, work: Callable[[asyncio.Event], Awaitable[int]]
) -> int:
    """Runs `work(stop)` and, when `app` is given, serves it; SIGTERM/SIGINT set `stop`, the
    work finishes what it holds, then the server stops. Returns the work's exit code."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    server = None
    if app is not None:
        config = uvicorn.Config(
            app, host=host, port=port, log_config=None, access_log=False, lifespan="off",
            timeout_graceful_shutdown=3,  # open event streams (the live page) are cut after it
        )  # fmt: skip
        server = _Server(config)
    served = asyncio.create_task(server.serve()) if server else None
    try:
        return await work(stop)
    finally:
        if server and served:
            server.should_exit = True
            await served
