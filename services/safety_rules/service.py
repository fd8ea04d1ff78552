"""`safety-monitor rules worker`: the worker, its HTTP endpoints, and a graceful shutdown."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from deploy.kafka.launcher import create_topics
from services.safety_rules.adapters.store import RulesStore
from services.safety_rules.metrics import RulesMetrics
from services.safety_rules.rules_config import load_rules
from services.safety_rules.settings import RulesSettings
from services.safety_rules.worker import RulesWorker, internal_topics
from services.web import serve_beside

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


async def serve(settings: RulesSettings) -> int:
    settings.rules_data_dir.mkdir(parents=True, exist_ok=True)
    # the worker's own topic exists before it subscribes (see internal_topics)
    await create_topics(settings.kafka_bootstrap, internal_topics(settings))
    metrics = RulesMetrics()
    store = RulesStore(settings.rules_database_url, settings.rules_app_id)
    worker = RulesWorker(settings, load_rules(settings.rules_file), metrics, store)
    app = web(worker, metrics) if settings.rules_web_enabled else None
    try:
        code = await serve_beside(app, settings.rules_web_bind, settings.rules_web_port, worker.run)
    finally:
        await store.close()
    log.info("stopped", extra={"exit_code": code})
    return code
