"""What every long-running service shares: its HTTP endpoints served beside its own work in one
event loop, and one graceful shutdown on SIGTERM/SIGINT."""

from __future__ import annotations

import asyncio
import gc
import logging
import signal
import socket
import time
import weakref
from collections.abc import Awaitable, Callable, Generator
from contextlib import contextmanager
from typing import Any

import uvicorn
from fastapi import FastAPI
from prometheus_client import CollectorRegistry, Histogram
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

# A client has this long to send a request's headers; then its connection is closed (uvicorn
# sets no such limit: half-sent requests held connections open for good).
HEADER_TIMEOUT_S = 10.0


class HeaderTimeout(HttpToolsProtocol):
    """uvicorn's httptools protocol with a deadline for each request's headers, from the
    connection (or the request's first byte) to its last header."""

    header_timeout_s = HEADER_TIMEOUT_S

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()

    def on_message_begin(self) -> None:
        self._disarm()  # each request its own deadline (a kept-alive connection's next one)
        self._arm()
        super().on_message_begin()

    def on_headers_complete(self) -> None:
        self._disarm()
        super().on_headers_complete()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _arm(self) -> None:
        self._header_timer: asyncio.TimerHandle | None = self.loop.call_later(
            self.header_timeout_s, self._too_slow
        )

    def _disarm(self) -> None:  # (an idle kept-alive connection is uvicorn's to time out)
        timer, self._header_timer = getattr(self, "_header_timer", None), None
        if timer is not None:
            timer.cancel()

    def _too_slow(self) -> None:
        self._header_timer = None
        if not self.transport.is_closing():
            self.transport.close()


class _Server(uvicorn.Server):
    """uvicorn inside the service's loop; the service owns SIGTERM/SIGINT and stops it."""

    @contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


async def serve_beside(
    app: Any | None,
    host: str,
    port: int,
    work: Callable[[asyncio.Event], Awaitable[int]],
    *,
    work_without_server: bool = False,
) -> int:
    """Runs `work(stop)` and, when `app` is given, serves it; SIGTERM/SIGINT set `stop`, the
    work finishes what it holds, then the server stops. Returns the work's exit code. The
    port is bound before the work starts: a port in use is an OSError naming it, or, with
    `work_without_server`, an error logged and the work done unserved (the audit trail is
    kept even when its metrics cannot be)."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    server, sockets = None, []
    if app is not None:
        try:
            sockets = [_bound(host, port)]
        except OSError as e:
            if not work_without_server:
                raise OSError(f"cannot serve on {host}:{port}: {e.strerror}") from e
            logging.getLogger("web").error(
                "not serving /healthz, /readyz, /metrics: %s:%s: %s", host, port, e.strerror
            )
            app = None
    if app is not None:
        config = uvicorn.Config(
            app, host=host, port=port, log_config=None, access_log=False, lifespan="off",
            http=HeaderTimeout,
            timeout_graceful_shutdown=3,  # open event streams (the live page) are cut after it
        )  # fmt: skip
        server = _Server(config)
    served = asyncio.create_task(server.serve(sockets=sockets)) if server else None
    settle_collector()
    try:
        return await work(stop)
    finally:
        if server and served:
            server.should_exit = True
            await served


# a young collection after this many new containers (CPython's default is 700), and the older
# generations after 20 and 100 of the one below (10 and 10): see settle_collector
COLLECT_AFTER = (50_000, 20, 100)


def settle_collector() -> None:
    """Call once a service has started. What it built to start (modules, schemas, compiled
    statements: most of its heap) is never garbage, and is kept out of every later collection
    (`gc.freeze`): each full collection walked all of it, ingest's 99,000 objects in 60-73 ms on
    the 2-core test machine, a pause of everything in flight. And collections come less often
    (`COLLECT_AFTER`): with CPython's default a young collection ran every 700 new containers,
    a few times per batch of 100 events, and the objects of every request in flight (alive,
    so kept) moved up a generation each time, to be walked again by the older collections.
    Ingest at batches of 100, alternated three times in the same minutes: 174-186 -> 150-171
    CPU ticks for the same 16,500 events, 7,616-8,381 -> 8,598-9,768 events/s. The price is
    the garbage of up to 50,000 containers between collections, a few MiB."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*COLLECT_AFTER)


GC_PAUSE_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
_GC_PAUSES: weakref.WeakSet[Histogram] = weakref.WeakSet()
_gc_started = 0.0


def observe_gc_pauses(registry: CollectorRegistry) -> Histogram:
    """`safety_monitor_gc_pause_seconds{generation}` in `registry`: how long each garbage
    collection held the process. A collection stops every thread, so a long one delays all
    in flight (a full collection walks every object the service holds: a rules worker's
    thousands of participant states)."""
    pauses = Histogram(
        "safety_monitor_gc_pause_seconds",
        "How long each garbage collection held the process (every thread), by generation",
        ["generation"],
        registry=registry,
        buckets=GC_PAUSE_BUCKETS,
    )
    for generation in range(3):  # made now, not inside the collector's callback
        pauses.labels(str(generation))
    if _on_gc not in gc.callbacks:
        gc.callbacks.append(_on_gc)
    _GC_PAUSES.add(pauses)
    return pauses


def _on_gc(phase: str, info: dict[str, int]) -> None:
    global _gc_started
    if phase == "start":
        _gc_started = time.perf_counter()
        return
    pause = time.perf_counter() - _gc_started
    generation = str(info["generation"])
    for pauses in list(_GC_PAUSES):
        pauses.labels(generation).observe(pause)


def _bound(host: str, port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    sock.set_inheritable(True)
    return sock


def guard(app: FastAPI, count: Callable[[str, int, float], None], log: logging.Logger) -> None:
    """What every HTTP API shares: one error shape for every 4xx, FastAPI's own validation
    errors included (naming the field, never echoing the input), and every request counted by
    `count(route, status, seconds)`, an unhandled error too (as a 500, logged without the
    request's data)."""
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse
    from starlette.exceptions import HTTPException

    def shaped(status: int, detail: str, errors: list[dict[str, str]]) -> JSONResponse:
        return JSONResponse({"detail": detail, "errors": errors}, status_code=status)

    @app.exception_handler(RequestValidationError)
    async def invalid(_: Any, exc: RequestValidationError) -> JSONResponse:
        errors = [
            {"field": ".".join(str(p) for p in e["loc"]), "reason": str(e["msg"])}
            for e in exc.errors()
        ]
        return shaped(422, "invalid request", errors)

    @app.exception_handler(HTTPException)
    async def http_error(_: Any, exc: HTTPException) -> JSONResponse:
        reason = [{"field": "(path)", "reason": str(exc.detail)}]
        return shaped(exc.status_code, str(exc.detail), reason)

    app.add_middleware(_Measured, count=count, log=log, shaped=shaped)


class _Measured:
    """Counts every request by its route's template (never the path: a path may hold a
    participant id) and answers an unhandled error as a 500 in the project's shape, logged
    with its type and frames. Plain ASGI: Starlette's BaseHTTPMiddleware ran each request in a
    task group of its own, a fifth of a small request's cost."""

    def __init__(
        self,
        app: Any,
        count: Callable[[str, int, float], None],
        log: logging.Logger,
        shaped: Callable[[int, str, list[dict[str, str]]], Any],
    ) -> None:
        self.app, self.count, self.log, self.shaped = app, count, log, shaped

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started, status, answered = time.perf_counter(), 500, False

        async def sending(message: Any) -> None:
            nonlocal status, answered
            if message["type"] == "http.response.start":
                status, answered = message["status"], True
            await send(message)

        try:
            await self.app(scope, receive, sending)
        except Exception:  # counted and answered in the project's shape, never leaked
            route = getattr(scope.get("route"), "path", "unmatched")
            self.log.error("unhandled error on %s", route, exc_info=True)
            status = 500
            if not answered:
                reason = [{"field": "(service)", "reason": "logged"}]
                await self.shaped(500, "internal error", reason)(scope, receive, send)
        route = getattr(scope.get("route"), "path", "unmatched")
        self.count(route, status, time.perf_counter() - started)
