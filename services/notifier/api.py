"""The notifier's HTTP face: health, metrics, and acknowledgement by a signed link (a phone, no
login: GET shows the alert and a button, POST acknowledges, so a link previewer acknowledges
nothing) or by `POST /alerts/{id}/ack` with a bearer token."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, FastAPI, Header, HTTPException, Response
from fastapi.responses import HTMLResponse, JSONResponse
from jinja2 import Environment, FileSystemLoader, select_autoescape
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from services.notifier.domain.tokens import AckGrant, BadToken, check_ack_token
from services.notifier.render import TEMPLATES
from services.notifier.service import Notifier


def build_api(notifier: Notifier, link_secret: bytes, api_tokens: dict[str, str]) -> FastAPI:
    app = FastAPI(title="safety-monitor notifier")
    pages = Environment(loader=FileSystemLoader(TEMPLATES), autoescape=select_autoescape())
    app.include_router(_health(notifier))

    def grant(token: str) -> AckGrant:
        try:
            return check_ack_token(link_secret, token, datetime.now(UTC))
        except BadToken as e:
            raise HTTPException(403, f"this link cannot acknowledge anything: {e}") from None

    async def page(token: str, changed: bool) -> HTMLResponse:
        g = grant(token)
        alerts = await notifier.store.alerts([g.alert_id])
        tracker = await notifier.store.tracker(g.alert_id)
        if tracker is None:
            raise HTTPException(404, "no such alert")
        done = tracker["status"] != "open"
        by = tracker["acknowledged_by"]
        heading = (
            f"Acknowledged by {by}" if changed else
            f"Already {tracker['status']}" + (f" by {by}" if by else "") if done else
            "Acknowledge this alert"
        )  # fmt: skip
        html = pages.get_template("ack.html.j2").render(
            heading=heading, alert=alerts.get(g.alert_id), recipient=g.recipient,
            can_ack=not done, detail=f"Status: {tracker['status']}",
        )  # fmt: skip
        return HTMLResponse(html, headers={"Cache-Control": "no-store"})

    @app.get("/ack/{token}", response_class=HTMLResponse)
    async def ack_page(token: str) -> HTMLResponse:
        return await page(token, changed=False)

    @app.post("/ack/{token}", response_class=HTMLResponse)
    async def ack_by_link(token: str) -> HTMLResponse:
        g = grant(token)
        changed = await notifier.acknowledge(g.alert_id, g.recipient)
        return await page(token, changed=changed)

    @app.post("/alerts/{alert_id}/ack")
    async def ack_by_token(
        alert_id: str, authorization: Annotated[str | None, Header()] = None
    ) -> dict[str, Any]:
        who = api_tokens.get((authorization or "").removeprefix("Bearer ").strip())
        if not who:
            raise HTTPException(401, "a bearer token is required")
        tracker = await notifier.store.tracker(alert_id)
        if tracker is None:
            raise HTTPException(404, "no such alert")
        changed = await notifier.acknowledge(alert_id, who)
        tracker = await notifier.store.tracker(alert_id)
        assert tracker is not None
        return {
            "alert_id": alert_id,
            "acknowledged": changed,  # False: it was already acknowledged (or closed)
            "status": tracker["status"],
            "acknowledged_by": tracker["acknowledged_by"],
        }

    return app


def _health(notifier: Notifier) -> APIRouter:
    router = APIRouter()

    @router.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @router.get("/readyz")
    async def readyz() -> JSONResponse:
        try:
            depth = await notifier.store.depth()
        except Exception:
            return JSONResponse({"ready": False, "database": False}, status_code=503)
        ok = notifier.consuming
        body = {"ready": ok, "database": True, "consuming": ok, "outbox_depth": depth}
        return JSONResponse(body, status_code=200 if ok else 503)

    @router.get("/metrics")
    async def metrics() -> Response:
        return Response(generate_latest(notifier.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    return router
