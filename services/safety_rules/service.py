"""`safety-monitor rules worker`: the worker, its HTTP endpoints, and a graceful shutdown."""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Generator
from contextlib import contextmanager

import uvicorn
from fastapi import FastAPI, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from deploy.kafka.launcher import create_topics
from services.safety_rules.adapters.store import RulesStore
from services.safety_rules.metrics import RulesMetrics
from services.safety_rules.rules_config import load_rules
from services.safety_rules.settings import RulesSettings
from services.safety_rules.worker import RulesWorker, internal_topics

log = logging.getLogger("safety_rules.service")


def web(worker: RulesWorker, metrics: RulesMetrics) -> FastAPI:
    app = FastAPI(title="safety-monitor rules worker", docs_url=None, redoc_url=None)

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz")
    async def readyz() -> JSONResponse:
        ok = worker.ready()
        body = {
            "ready": ok,
            "partitions": len(worker.owned),
            "rebalancing": worker.rebalancing,
            "stalled": sum(o.stalled_since is not None for o in worker.owned.values()),
            "failing": worker.failures > 0 or bool(worker.failing),
            "database_ahead_of_topic": sorted(f"{t}[{p}]" for t, p in worker.mismatched),
        }
        return JSONResponse(body, status_code=200 if ok else 503)

    @app.get("/metrics")
    async def prometheus() -> Response:
        worker.ready()
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    return app


class _Server(uvicorn.Server):
    """uvicorn in the worker's loop; the worker owns SIGTERM/SIGINT and stops the server."""

    @contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


async def serve(settings: RulesSettings) -> int:
    settings.rules_data_dir.mkdir(parents=True, exist_ok=True)
    # the worker's own topic exists before it subscribes (see internal_topics)
    await create_topics(settings.kafka_bootstrap, internal_topics(settings))
    metrics = RulesMetrics()
    store = RulesStore(settings.rules_database_url, settings.rules_app_id)
    worker = RulesWorker(settings, load_rules(settings.rules_file), metrics, store)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    server = None
    if settings.rules_web_enabled:
        config = uvicorn.Config(
            web(worker, metrics),
            host=settings.rules_web_bind,
            port=settings.rules_web_port,
            log_config=None,
            access_log=False,
            lifespan="off",
        )
        server = _Server(config)
    served = asyncio.create_task(server.serve()) if server else None
    try:
        code = await worker.run(stop)
    finally:
        if server and served:
            server.should_exit = True
            await served
        await store.close()
    log.info("stopped", extra={"exit_code": code})
    return code
