"""A client that never finishes its headers loses its connection (uvicorn sets no such limit:
150 half-sent requests held connections open for good)."""

from __future__ import annotations

import asyncio

import pytest
import uvicorn
from fastapi import FastAPI

from services.web import HeaderTimeout
from tests.conftest import free_port


class Quick(HeaderTimeout):
    header_timeout_s = 0.5


async def test_half_sent_headers_are_cut_and_whole_requests_are_served(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    app = FastAPI()

    @app.get("/ok")
    async def ok() -> dict[str, str]:
        return {"ok": "yes"}

    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, port=port, http=Quick, log_config=None, lifespan="off")
    )
    served = asyncio.create_task(server.serve())
    try:
        while not server.started:
            await asyncio.sleep(0.02)
        slow = [await asyncio.open_connection("127.0.0.1", port) for _ in range(20)]
        for _, w in slow:
            w.write(b"POST /ok HTTP/1.1\r\nHost: x\r\nContent-Type: applic")
            await w.drain()
        # a kept-alive client sending whole requests, slower than the deadline between them
        r, w = await asyncio.open_connection("127.0.0.1", port)
        for _ in range(2):
            w.write(b"GET /ok HTTP/1.1\r\nHost: x\r\n\r\n")
            await w.drain()
            head = await asyncio.wait_for(r.readuntil(b"\r\n\r\n"), 5)
            assert head.startswith(b"HTTP/1.1 200")
            await asyncio.wait_for(r.readexactly(12), 5)  # {"ok":"yes"}
            await asyncio.sleep(0.8)  # idle between requests: not a header's deadline
        async with asyncio.timeout(5):
            for reader, _ in slow:  # each cut: end of stream, no answer
                assert await reader.read() == b""
        # and the kept-alive connection's next request, half sent, is cut too
        w.write(b"GET /ok HTTP/1.1\r\nHost")
        await w.drain()
        async with asyncio.timeout(5):
            assert await r.read() == b""
        w.close()
    finally:
        server.should_exit = True
        await served
