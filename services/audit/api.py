"""The DSMB API (FastAPI, read-only): query the trail, timelines, registers, verify, export."""
# No `from __future__ import annotations`: FastAPI resolves route annotations at runtime, and
# the dependencies are closures of create_app.

import csv
import io
import json
import logging
import unicodedata
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Annotated, Any, Literal

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from fastapi import Depends, FastAPI, Query, Request, Response
from fastapi.responses import HTMLResponse, JSONResponse, StreamingResponse
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, generate_latest

from contracts.common import Instant
from services.audit.adapters.store import AuditReader, AuditStore, TokenStore
from services.audit.adapters.store import Query as Filter
from services.audit.anchors import Anchors
from services.audit.domain.chain import INDEXED
from services.audit.domain.outcomes import standing
from services.audit.domain.read_models import failed_channels
from services.audit.report import (
    SOC_COLUMNS,
    WhichTrial,
    disposition_rows,
    render_report,
    soc_rows,
    trial_outcomes,
)
from services.audit.verification import verified
from services.web import guard, observe_gc_pauses

log = logging.getLogger("audit.api")

EXPORT_COLUMNS = ("seq", "event_id", *INDEXED, "topic", "partition", "offset", "hash", "canonical")


class _Unauthorized(Exception):
    pass


def _plain(row: dict[str, Any]) -> dict[str, Any]:
    return {k: (v.isoformat() if isinstance(v, datetime) else v) for k, v in row.items()}


def _with_event(row: dict[str, Any]) -> dict[str, Any]:
    out = _plain(row)
    out["event"] = json.loads(out.pop("canonical"))
    return out


def _cell(value: Any) -> Any:
    """A CSV cell a spreadsheet shows as text: a string starting with = + - @ or a control
    character is a formula to Excel or LibreOffice (OWASP CSV injection), so it gets a leading
    apostrophe. Read as a spreadsheet reads it: after Unicode normalisation (a full-width
    U+FF1D is an =) and leading spaces. Numbers are left as numbers."""
    if isinstance(value, str):
        head = unicodedata.normalize("NFKC", value[:64]).lstrip(" \u00a0\u3000")[:1]
        if (
            head in ("=", "+", "-", "@")
            or value[:1] in ("\t", "\r", "\n")
            or (head and unicodedata.category(head) == "Cc")
        ):
            return "'" + value
    return value


def create_app(
    store: AuditStore,
    trusted: dict[str, Ed25519PublicKey],
    anchors: Anchors | None = None,
    signer: str | None = None,  # the key the projection signs with: its chain is verified
) -> FastAPI:
    reader, tokens = AuditReader(store), TokenStore(store)
    registry = CollectorRegistry()
    observe_gc_pauses(registry)
    requests = Counter(
        "safety_monitor_audit_requests_total",
        "DSMB API requests",
        ["route", "status"],
        registry=registry,
    )

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await store.migrate()
        yield
        await store.close()

    app = FastAPI(
        title="Trial safety monitor: DSMB audit API",
        version="1",
        lifespan=lifespan,
        description="Read-only. Every fact as recorded, hash-chained and signed.",
    )

    async def dsmb(request: Request) -> str:
        auth = request.headers.get("authorization", "")
        secret = auth[7:].strip() if auth.lower().startswith("bearer ") else ""
        reader = await tokens.who(secret) if secret else None
        if reader is None:
            raise _Unauthorized
        request.state.reader = reader  # the access log names who read what
        return reader.name

    @app.exception_handler(_Unauthorized)
    async def unauthorized(_: Request, __: Exception) -> JSONResponse:
        return JSONResponse(
            {
                "detail": "a DSMB token is required (Authorization: Bearer ...)",
                "errors": [{"field": "Authorization", "reason": "missing or unknown"}],
            },
            status_code=401,
            headers={"WWW-Authenticate": "Bearer"},
        )

    @app.middleware("http")
    async def access_log(request: Request, call_next: Any) -> Response:
        response: Response = await call_next(request)
        reader = getattr(request.state, "reader", None)
        if reader is not None:
            route = getattr(request.scope.get("route"), "path", request.url.path)
            await tokens.log_access(reader, route, request.url.query, response.status_code)
        return response

    guard(app, lambda route, status, _: requests.labels(route, str(status)).inc(), log)

    Who = Annotated[str, Depends(dsmb)]

    def flt(
        participant_id: str | None = None,
        event_type: str | None = None,
        since: Instant | None = None,  # with a zone, a time that exists in UTC: else 422
        until: Instant | None = None,
        severity: str | None = None,
        rule_id: str | None = None,
    ) -> Filter:
        return Filter(participant_id, event_type, since, until, severity, rule_id)

    Filters = Annotated[Filter, Depends(flt)]

    @app.get("/audit/events", summary="The trail, filtered, in log order (keyset pagination)")
    async def events(
        _: Who,
        f: Filters,
        after_seq: Annotated[int, Query(ge=0, le=2**63 - 1)] = 0,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    ) -> dict[str, Any]:
        rows = await reader.events(f, after_seq, limit)
        nxt = rows[-1]["seq"] if len(rows) == limit else None
        return {"items": [_with_event(r) for r in rows], "next_after_seq": nxt}

    @app.get("/participants/{participant_id}/timeline", summary="One participant's facts")
    async def timeline(_: Who, participant_id: str) -> dict[str, Any]:
        return {
            "participant_id": participant_id,
            "items": [_with_event(r) for r in await reader.timeline(participant_id)],
        }

    @app.get("/participants/{participant_id}/labs", summary="Lab series (corrections marked)")
    async def labs(_: Who, participant_id: str, analyte: str | None = None) -> dict[str, Any]:
        rows = await reader.table("rm_labs", participant_id=participant_id, analyte=analyte)
        rows.sort(key=lambda r: (r["analyte"], r["occurred_at"]))
        # each specimen counts once: `stands` marks the result the report and the rules read
        # (another copy of the same sample, or a corrected value, does not stand)
        stands = standing(rows)
        return {
            "participant_id": participant_id,
            "items": [{**_plain(r), "stands": r["event_id"] in stands} for r in rows],
        }

    @app.get("/alerts", summary="The alert register with current status")
    async def alerts(
        _: Who, status: str | None = None, severity: str | None = None, rule_id: str | None = None
    ) -> dict[str, Any]:
        rows = await reader.table("rm_alerts", status=status, severity=severity, rule_id=rule_id)
        rows.sort(key=lambda r: (str(r["raised_at"]), r["alert_id"]))
        # each channel's latest outcome, and those failing: never only "delivered" while a
        # channel that was owed failed
        return {
            "items": [
                {**_plain(r), "channels": json.loads(r["channels"] or "{}"),
                 "failed_channels": failed_channels(r["channels"])}
                for r in rows
            ]
        }  # fmt: skip

    @app.get("/aes", summary="The AE register (latest version of each AE)")
    async def aes(_: Who, participant_id: str | None = None) -> dict[str, Any]:
        rows = await reader.table("rm_aes", participant_id=participant_id)
        return {
            "items": [
                _plain(r) for r in sorted(rows, key=lambda r: (r["participant_id"], r["ae_id"]))
            ]
        }

    @app.get(
        "/audit/verify",
        summary="Recompute the chain, check the signed checkpoints and compare them with the "
        "checkpoints anchored outside the database",
    )
    async def verify(_: Who) -> JSONResponse:
        verdict = await verified(store, trusted, anchors, signer=signer)
        return JSONResponse(verdict.as_dict(), status_code=200 if verdict.ok else 409)

    @app.get("/audit/export", summary="Export the (filtered) trail as CSV or NDJSON, streamed")
    async def export(
        _: Who, f: Filters, format: Literal["csv", "ndjson"] = "ndjson"
    ) -> StreamingResponse:
        async def ndjson() -> AsyncIterator[bytes]:
            async for row in reader.stream(f):
                yield (json.dumps(_with_event(row)) + "\n").encode()

        async def as_csv() -> AsyncIterator[bytes]:
            buf = io.StringIO()
            writer = csv.writer(buf)
            writer.writerow(EXPORT_COLUMNS)
            async for row in reader.stream(f):
                plain = _plain(row)
                writer.writerow([_cell(plain[c]) for c in EXPORT_COLUMNS])
                yield buf.getvalue().encode()
                buf.seek(0)
                buf.truncate()
            yield buf.getvalue().encode()

        if format == "csv":
            return StreamingResponse(
                as_csv(),
                media_type="text/csv",
                headers={"Content-Disposition": "attachment; filename=audit-trail.csv"},
            )
        return StreamingResponse(ndjson(), media_type="application/x-ndjson")

    async def table(
        rows: Any, trial_id: str | None, fmt: str, name: str, columns: tuple[str, ...]
    ) -> Response:
        try:
            o, _ = await trial_outcomes(reader, trial_id=trial_id)
        except WhichTrial as e:
            return JSONResponse({"field": "trial_id", "error": str(e), "trials": e.held}, 400)
        items = rows(o)
        if fmt == "json":
            return JSONResponse({"trial_id": o.trial_id, "items": items})
        buf = io.StringIO()
        writer = csv.writer(buf)
        writer.writerow(columns)
        writer.writerows([_cell(r[c]) for c in columns] for r in items)
        return Response(
            buf.getvalue(),
            media_type="text/csv",
            headers={"Content-Disposition": f"attachment; filename={name}.csv"},
        )

    @app.get("/tables/disposition", summary="The participant flow (the report's first table)")
    async def disposition(
        _: Who, trial_id: str | None = None, format: Literal["json", "csv"] = "json"
    ) -> Response:
        return await table(
            disposition_rows, trial_id, format, "disposition", ("table", "line", "participants")
        )

    @app.get("/tables/soc-pt", summary="AEs by MedDRA SOC and PT; uncoded by verbatim term")
    async def soc_pt(
        _: Who, trial_id: str | None = None, format: Literal["json", "csv"] = "json"
    ) -> Response:
        return await table(soc_rows, trial_id, format, "aes-by-soc-pt", SOC_COLUMNS)

    @app.get(
        "/report", summary="The DSMB report (self-contained HTML)", response_class=HTMLResponse
    )
    async def report(_: Who, trial_id: str | None = None) -> Response:
        """One trial's report; `trial_id` may be left out while the trail holds one trial."""
        try:
            return HTMLResponse(await render_report(reader, trial_id=trial_id))
        except WhichTrial as e:
            return JSONResponse({"field": "trial_id", "error": str(e), "trials": e.held}, 400)

    @app.get("/healthz", summary="Liveness")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", summary="Readiness: the database answers")
    async def readyz() -> JSONResponse:
        try:
            seq, _ = await reader.head()
        except Exception:  # any database failure is "not ready"
            return JSONResponse({"ready": False}, status_code=503)
        return JSONResponse({"ready": True, "rows": seq})

    @app.get("/metrics", summary="Prometheus metrics")
    async def metrics() -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    return app
