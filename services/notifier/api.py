"""The notifier's HTTP face: health, metrics, and acknowledgement by a signed link (a phone, no
login: GET shows the alert and a button, POST acknowledges, so a link previewer acknowledges
nothing) or by `POST /alerts/{id}/ack` with a bearer token."""

from __future__ import annotations

import json
import logging
import math
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import parse_qs

from fastapi import APIRouter, FastAPI, Header, HTTPException, Request, Response
from fastapi.responses import (
    FileResponse,
    HTMLResponse,
    JSONResponse,
    RedirectResponse,
    StreamingResponse,
)
from jinja2 import Environment, FileSystemLoader, select_autoescape
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from contracts import Severity
from services.notifier.domain.throttle import Throttle
from services.notifier.domain.tokens import (
    AckGrant,
    BadToken,
    check_ack_token,
    check_session_token,
    session_token,
)
from services.notifier.render import TEMPLATES
from services.notifier.service import Notifier
from services.web import guard

log = logging.getLogger("notifier.api")

STATIC = Path(__file__).parent / "static"


SESSION = "sm_session"
SESSION_TTL = timedelta(hours=12)


def build_api(
    notifier: Notifier, link_secret: bytes, api_tokens: dict[str, str], *, secure: bool = False
) -> FastAPI:
    app = FastAPI(title="safety-monitor notifier")
    guard(
        app,
        lambda route, status, _: notifier.metrics.requests.labels(route, str(status)).inc(),
        log,
    )
    pages = Environment(loader=FileSystemLoader(TEMPLATES), autoescape=select_autoescape())
    app.include_router(_health(notifier))
    app.include_router(_board(notifier, pages, link_secret, api_tokens, secure))

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
        by, at = tracker["acknowledged_by"], tracker["acknowledged_at"]
        when = f" at {at:%Y-%m-%d %H:%M} UTC" if at else ""
        heading = (
            f"Acknowledged by {by}" if changed else
            f"Already {tracker['status']}" + (f" by {by}{when}" if by else "") if done else
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
        alert_id: str,
        request: Request,
        authorization: Annotated[str | None, Header()] = None,
        x_safety_monitor: Annotated[str | None, Header()] = None,
    ) -> dict[str, Any]:
        who = api_tokens.get((authorization or "").removeprefix("Bearer ").strip())
        if not who and x_safety_monitor == "1":
            # the live page: its session cookie (SameSite=Strict) and a header no other site
            # can send without a CORS preflight this server never grants
            who = _session(request, link_secret, api_tokens)
        if not who:
            raise HTTPException(401, "a bearer token or a session is required")
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
            "acknowledged_at": at.isoformat() if (at := tracker["acknowledged_at"]) else None,
        }

    return app


def _session(request: Request, secret: bytes, tokens: dict[str, str]) -> str | None:
    try:
        cookie = request.cookies.get(SESSION, "")
        return check_session_token(secret, cookie, datetime.now(UTC), tokens)
    except BadToken:
        return None


def _same_origin(request: Request) -> bool:
    """Whether a form post comes from this server's own page: a browser names the origin of
    a cross-site post (Origin, Sec-Fetch-Site); a client that names none is not a browser."""
    if request.headers.get("sec-fetch-site", "same-origin") not in ("same-origin", "none"):
        return False
    origin = request.headers.get("origin")
    if origin is None:
        return True
    host = request.headers.get("host", "")
    return origin.split("://", 1)[-1] == host


def _board(
    notifier: Notifier, pages: Environment, secret: bytes, tokens: dict[str, str], secure: bool
) -> APIRouter:
    """The live page: sign in with a token, then the open alerts, pushed as they change."""
    router = APIRouter()

    @router.get("/", response_class=HTMLResponse)
    async def board(request: Request) -> HTMLResponse:
        who = _session(request, secret, tokens)
        if who is None:
            return HTMLResponse(pages.get_template("login.html.j2").render(error=None))
        html = pages.get_template("board.html.j2").render(
            who=who, board=await notifier.board(), severities=[s.value for s in Severity]
        )
        return HTMLResponse(html, headers={"Cache-Control": "no-store"})

    throttle = Throttle()

    @router.post("/login")
    async def login(request: Request) -> Response:
        if not _same_origin(request):
            raise HTTPException(403, "sign in from this site's own page")
        address, now = request.client.host if request.client else "?", datetime.now(UTC)
        if wait := throttle.wait(address, now):
            html = pages.get_template("login.html.j2").render(
                error=f"Too many attempts; try again in {math.ceil(wait)} s."
            )
            return HTMLResponse(
                html, status_code=429, headers={"Retry-After": str(math.ceil(wait))}
            )
        form = parse_qs((await request.body()).decode(errors="replace"))
        token = (form.get("token") or [""])[0].strip()
        who = tokens.get(token)
        if who is None:
            throttle.failed(address, now)
            html = pages.get_template("login.html.j2").render(error="Unknown token.")
            return HTMLResponse(html, status_code=401)
        cookie = session_token(secret, who, token, datetime.now(UTC) + SESSION_TTL)
        response = RedirectResponse("/", status_code=303)
        response.set_cookie(
            SESSION, cookie, max_age=int(SESSION_TTL.total_seconds()), httponly=True,
            samesite="strict", secure=secure,
        )  # fmt: skip
        return response

    @router.get("/events")
    async def events(request: Request) -> StreamingResponse:
        if _session(request, secret, tokens) is None:
            raise HTTPException(401, "sign in first")

        async def stream() -> AsyncIterator[str]:
            seen = -1
            while not await request.is_disconnected():
                if notifier.version != seen:
                    seen = notifier.version
                    yield f"event: board\ndata: {json.dumps(await notifier.board())}\n\n"
                else:
                    yield ": still here\n\n"
                await notifier.wait_change(seen, timeout_s=15)

        headers = {"Cache-Control": "no-store", "X-Accel-Buffering": "no"}
        return StreamingResponse(stream(), media_type="text/event-stream", headers=headers)

    @router.get("/static/board.js")
    async def script() -> FileResponse:
        return FileResponse(STATIC / "board.js", media_type="text/javascript")

    return router


def _health(notifier: Notifier) -> APIRouter:
    router = APIRouter()

    @router.get("/healthz")
    async def healthz() -> JSONResponse:
        # liveness: a loop that must run has ended (the process is on its way out)
        if not notifier.alive():
            return JSONResponse({"status": "a loop has ended"}, status_code=503)
        return JSONResponse({"status": "ok"})

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
