"""The ingest HTTP API (FastAPI): thin routes over `Ingest`. OpenAPI at /docs."""
# No `from __future__ import annotations` here: FastAPI resolves route annotations at runtime,
# and the dependencies are closures of create_app.

import asyncio
import hashlib
import json
import logging
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Annotated, Any
from zoneinfo import ZoneInfo

import orjson
from fastapi import Depends, FastAPI, Header, Query, Request, Response
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import Field, TypeAdapter
from starlette.types import ASGIApp, Receive, Scope, Send

from contracts import ClinicalEvent
from contracts.events import loads
from services.ingest.adapters.kafka_log import EventLog, EventTooLarge, LogUnavailable
from services.ingest.adapters.store import IngestStore
from services.ingest.domain.fhir import FhirContext, map_bundle
from services.ingest.domain.mapping import RowError
from services.ingest.domain.policy import SERVER_FIELDS, Principal, dumps
from services.ingest.importer import import_sdtm
from services.ingest.metrics import IngestMetrics
from services.ingest.service import STILL_WRITING, Ingest, Outcome, Refused, Result
from services.ingest.settings import IngestSettings
from services.web import guard, settle_collector

log = logging.getLogger("ingest.api")


class BodyTooLarge(Exception):
    def __init__(self, limit: int) -> None:
        super().__init__(f"over {limit} bytes")


class BadBody(Exception):
    pass


def _request_schema() -> tuple[dict[str, Any], dict[str, Any]]:
    """The OpenAPI request body (one event or a list) from the contracts, without the fields
    the server sets; and the component schemas it refers to."""
    adapter: TypeAdapter[Any] = TypeAdapter(
        Annotated[ClinicalEvent, Field(discriminator="event_type")]
    )
    schema = adapter.json_schema(ref_template="#/components/schemas/{model}")
    components = schema.pop("$defs", {})
    for component in components.values():
        for name in SERVER_FIELDS:
            component.get("properties", {}).pop(name, None)
        if "required" in component:
            component["required"] = [r for r in component["required"] if r not in SERVER_FIELDS]
    body = {"oneOf": [schema, {"type": "array", "items": schema, "minItems": 1}]}
    return body, components


class BodyTooSlow(Exception):
    def __init__(self, seconds: float) -> None:
        super().__init__(f"not received within {seconds:g} s")


async def _read_limited(request: Request, limit: int, timeout_s: float) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise BodyTooLarge(limit)
    chunks, size = [], 0
    try:
        async with asyncio.timeout(timeout_s):  # a body trickled in holds a worker no longer
            async for chunk in request.stream():
                size += len(chunk)
                if size > limit:
                    raise BodyTooLarge(limit)
                chunks.append(chunk)
    except TimeoutError:
        raise BodyTooSlow(timeout_s) from None
    return b"".join(chunks)


def load_json(raw: bytes, max_depth: int) -> Any:
    """The JSON in `raw`, or BadBody: also for NaN/Infinity, integers past 4,300 digits, and
    nesting deeper than `max_depth`."""
    try:
        data = loads(raw)
    except (ValueError, UnicodeDecodeError, RecursionError) as e:
        reason = "nested too deep" if isinstance(e, RecursionError) else str(e)
        raise BadBody(f"not valid JSON: {reason}") from None
    level, todo = 0, [data]
    while todo:
        level += 1
        if level > max_depth:
            raise BadBody(f"JSON nested deeper than {max_depth} levels")
        todo = [
            child
            for node in todo
            for child in (node.values() if isinstance(node, dict) else node)
            if isinstance(child, dict | list)
        ]
    return data


class _Json(JSONResponse):
    """JSON written by orjson: the answer to a batch of 100 took json 132 us to write, orjson
    6. (These answers hold no key but str and no integer past 64 bits.)"""

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


def _error(status: int, detail: str, errors: list[dict[str, Any]], **headers: str) -> JSONResponse:
    return _Json({"detail": detail, "errors": errors}, status_code=status, headers=headers)


def _body_error(status: int, detail: str, reason: str) -> JSONResponse:
    return _error(status, detail, [{"field": "(body)", "reason": reason}])


async def _reconcile(ingest: Ingest, metrics: IngestMetrics, every_s: float) -> None:
    """At start and then every `every_s`: writes whose outcome was left unknown (by this
    process or one that died) are read back from the topic; an error is logged and tried
    again at the next round, never the end of the loop."""
    while True:
        try:
            metrics.unknown_writes.set(await ingest.reconcile())
        except LogUnavailable as e:
            log.info("unknown writes not reconciled yet: %s", e.reason)
        except Exception:
            log.exception("reconciling unknown writes failed; trying again in %s s", every_s)
        await asyncio.sleep(every_s)


def create_app(
    settings: IngestSettings,
    store: IngestStore,
    event_log: EventLog,
    ingest: Ingest,
    metrics: IngestMetrics,
) -> FastAPI:
    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await store.create()
        settle_collector()
        reconciling = asyncio.create_task(_reconcile(ingest, metrics, settings.ingest_reconcile_s))
        yield
        reconciling.cancel()
        await asyncio.gather(reconciling, return_exceptions=True)
        await event_log.close()
        await store.close()

    app = FastAPI(
        title="Trial safety monitor: ingest",
        version="1",
        description="The only way in: JSON events, FHIR R4 Bundles, CDISC SDTM files. A 2xx "
        "means Kafka acknowledged the write (acks=all); 503 means retry the same request.",
        lifespan=lifespan,
    )
    body_schema, components = _request_schema()

    async def caller(request: Request) -> Principal | None:
        """Whose key the request carries (X-API-Key or Authorization: Bearer), if valid."""
        secret = request.headers.get("x-api-key")
        auth = request.headers.get("authorization", "")
        if secret is None and auth.lower().startswith("bearer "):
            secret = auth[7:].strip()
        return await store.principal(secret) if secret else None

    async def principal(
        request: Request,
        x_api_key: Annotated[  # read by caller(); declared here for the OpenAPI document
            str | None, Header(description=_KEY_DOC)
        ] = None,
    ) -> Principal:
        who = await caller(request)
        if who is None:
            raise _UnauthorizedError
        return who

    @app.exception_handler(_UnauthorizedError)
    async def unauthorized(_: Request, __: Exception) -> JSONResponse:
        return _unauthorized()

    zone = ZoneInfo(settings.ingest_site_timezone)
    depth = settings.ingest_max_json_depth

    async def _read(request: Request, limit: int) -> bytes:
        return await _read_limited(request, limit, settings.ingest_body_timeout_s)

    def unavailable(e: LogUnavailable) -> JSONResponse:
        """503, saying why: Kafka unreachable, not taking the write, not acknowledging in time,
        or another request still writing the same events (the broker's address and the
        client's error go to the log only)."""
        if e.reason != STILL_WRITING:
            metrics.kafka_unavailable.inc()
        log.warning("answered 503: %s", e)
        detail = (
            "the event log did not acknowledge: the outcome of what was not acknowledged is "
            "unknown; retry with the same events (a retry is answered from this attempt, "
            "never stored twice; other content under their event_ids is refused)"
            if e.maybe_written
            else "the event log is unavailable: nothing of this request was stored; retry "
            "the same request (it is idempotent)"
        )
        return _error(
            503,
            detail,
            [{"field": "(service)", "reason": e.reason}],
            **{"Retry-After": str(settings.ingest_retry_after_s)},
        )

    async def submit(
        request: Request,
        who: Principal,
        source: str,
        bodies: list[Any],
        idempotency_key: str | None,
        raw: bytes,
    ) -> JSONResponse:
        memo_key = f"{who.key_id}:{idempotency_key}" if idempotency_key else None
        request_sha = hashlib.sha256(raw).hexdigest() if memo_key else ""
        if memo_key:
            remembered = await store.remembered(memo_key)
            if remembered is not None:
                if remembered[0] != request_sha:
                    return _error(
                        422,
                        "Idempotency-Key reused with a different body",
                        [{"field": "Idempotency-Key", "reason": "reused with a different body"}],
                    )
                first = json.loads(remembered[1])
                first["replayed"] = True
                return _Json(first, status_code=200, headers={"Idempotency-Replayed": "true"})
        try:
            results = await ingest.accept(bodies, who, source)
        except Refused as e:
            metrics.refused.labels(source, str(e.status)).inc()
            return _error(e.status, "refused: nothing in this request was stored", e.as_dicts())
        except EventTooLarge as e:
            return _body_error(413, "an event too large for the event log", str(e))
        except LogUnavailable as e:
            return unavailable(e)
        payload = _summary(results)
        # one increment per kind and outcome (a labelled child's lookup, per event, was a
        # visible share of a batch's time)
        for (kind, outcome), n in Counter((r.event.event_type, r.outcome) for r in results).items():
            metrics.events.labels(source, kind, outcome.value).inc(n)
        if memo_key:
            await store.remember(memo_key, request_sha, dumps(payload))
        return _Json(payload, status_code=201 if payload["accepted"] else 200)

    @app.post(
        "/v1/events",
        summary="Submit one event or a batch",
        responses={
            201: {"description": "stored (some new)"},
            200: {"description": "all duplicates"},
            401: {},
            403: {},
            409: {},
            413: {},
            422: {},
            503: {},
        },
        openapi_extra={
            "parameters": [
                {"name": "x-api-key", "in": "header", "description": _KEY_DOC,
                 "schema": {"type": "string"}},
                {"name": "idempotency-key", "in": "header", "description": _IDEMPOTENCY_DOC,
                 "schema": {"type": "string", "maxLength": _IDEMPOTENCY_KEY_MAX}},
            ],
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": body_schema}},
            },
        },
    )  # fmt: skip
    async def post_events(request: Request) -> JSONResponse:
        """Reached through `_Lane` (the headers are read here, not by FastAPI's dependencies:
        the OpenAPI document declares them above)."""
        who = await caller(request)
        if who is None:
            return _unauthorized()
        idempotency_key = request.headers.get("idempotency-key")
        if idempotency_key is not None and len(idempotency_key) > _IDEMPOTENCY_KEY_MAX:
            reason = f"String should have at most {_IDEMPOTENCY_KEY_MAX} characters"
            return _error(
                422, "invalid request", [{"field": "header.idempotency-key", "reason": reason}]
            )
        try:
            raw = await _read(request, settings.ingest_max_body_bytes)
            bodies = _json_events(load_json(raw, depth), settings.ingest_max_batch)
        except BodyTooLarge as e:
            return _body_error(413, "request body too large", str(e))
        except BodyTooSlow as e:
            return _body_error(408, "request body too slow", str(e))
        except BadBody as e:
            return _body_error(400, "malformed request body", str(e))
        return await submit(request, who, "api", bodies, idempotency_key, raw)

    @app.post(
        "/v1/imports/sdtm",
        summary="Import a CDISC SDTM file (DM, EX, LB, AE or DS; CSV or SAS transport .xpt)",
        description="Row by row: rows that map are accepted, the rest are listed with the "
        "reason. Import DM before LB/AE/EX: a record needs its participant's enrolment. The "
        "same file imported twice adds nothing.",
        responses={200: {"description": "the import summary"}, 400: {}, 401: {}, 413: {}, 503: {}},
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {
                    "text/csv": {"schema": {"type": "string"}},
                    "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
                },
            }
        },
    )
    async def post_sdtm(
        request: Request,
        who: Annotated[Principal, Depends(principal)],
        filename: Annotated[
            str,
            Query(
                min_length=1,
                max_length=200,
                pattern=r"^[\w.-]+$",
                description="e.g. lb.csv or ae.xpt",
            ),
        ],
        domain: Annotated[str | None, Query(pattern="^(DM|EX|LB|AE|DS)$")] = None,
    ) -> JSONResponse:
        try:
            data = await _read(request, settings.ingest_max_import_bytes)
            summary = await import_sdtm(filename, data, ingest, who, zone, domain=domain)
        except BodyTooLarge as e:
            return _body_error(413, "file too large", str(e))
        except BodyTooSlow as e:
            return _body_error(408, "request body too slow", str(e))
        except (ValueError, UnicodeDecodeError) as e:
            return _body_error(400, "unreadable file", str(e))
        except LogUnavailable as e:
            return unavailable(e)
        for outcome, n in (
            ("accepted", summary.accepted),
            ("duplicate", summary.duplicates),
            ("rejected", summary.rejected_rows),
        ):
            metrics.import_rows.labels("sdtm", outcome).inc(n)
        return JSONResponse(summary.as_dict())

    @app.post(
        "/fhir/Bundle",
        summary="Submit a FHIR R4 Bundle (transaction, batch or collection)",
        description="ResearchSubject (with its Patient) enrols; Observation gives labs "
        "(LOINC-coded creatinine, eGFR, UACR, TNF-alpha, IL-10); AdverseEvent gives AEs. Each "
        "entry is accepted or rejected on its own, with the reason.",
        responses={
            200: {"description": "per-entry outcome"},
            400: {},
            401: {},
            403: {},
            413: {},
            422: {},
            503: {},
        },
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {
                    "application/fhir+json": {"schema": {"type": "object"}},
                    "application/json": {"schema": {"type": "object"}},
                },
            }
        },
    )
    async def post_bundle(
        request: Request,
        who: Annotated[Principal, Depends(principal)],
        site_id: Annotated[
            str | None,
            Query(
                max_length=200, description="admin keys: the site that ResearchSubjects enrol at"
            ),
        ] = None,
    ) -> JSONResponse:
        if who.site_id is not None and site_id not in (None, who.site_id):
            return _error(
                403,
                "a site key enrols at its own site",
                [{"field": "site_id", "reason": f"this key is for {who.site_id}"}],
            )
        try:
            raw = await _read(request, settings.ingest_max_import_bytes)
            # parsed and mapped off the event loop: a large Bundle never stalls /healthz
            bundle = await asyncio.to_thread(load_json, raw, depth)
        except BodyTooLarge as e:
            return _body_error(413, "Bundle too large", str(e))
        except BodyTooSlow as e:
            return _body_error(408, "request body too slow", str(e))
        except BadBody as e:
            return _body_error(400, "malformed request body", str(e))
        entries = bundle.get("entry") if isinstance(bundle, dict) else None
        cap = settings.ingest_max_bundle_entries
        if isinstance(entries, list) and len(entries) > cap:
            return _body_error(
                413, "Bundle too large", f"{len(entries)} entries; at most {cap} in one Bundle "
                "(SAFETY_MONITOR_INGEST_MAX_BUNDLE_ENTRIES): send it in parts",
            )  # fmt: skip
        ctx = FhirContext(settings.ingest_trial_id, who.site_id or site_id, zone)
        try:
            mapped = await asyncio.to_thread(map_bundle, bundle, ctx)
            results, rejections = await ingest.accept_each(mapped.events, who, "fhir")
        except RowError as e:
            return _error(422, "not an accepted Bundle", [{"field": e.field, "reason": e.reason}])
        except LogUnavailable as e:
            return unavailable(e)
        everything = mapped.rejections + rejections
        for r in results:
            metrics.events.labels("fhir", r.event.event_type, r.outcome.value).inc()
        return JSONResponse(
            {
                "accepted": sum(r.outcome is Outcome.ACCEPTED for r in results),
                "duplicates": sum(r.outcome is Outcome.DUPLICATE for r in results),
                "rejected": len(everything),
                "results": [{"entry": r.where, **r.as_dict()} for r in results],
                "rejections": [
                    {"entry": r.row, "field": r.field, "reason": r.reason} for r in everything
                ],
                "notes": [{"entry": n.row, "note": n.note} for n in mapped.notes],
            }
        )

    @app.get("/healthz", summary="Liveness")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", summary="Readiness: database and Kafka reachable")
    async def readyz() -> JSONResponse:
        db, kafka = await store.ping(), await event_log.ready()
        ok = db and kafka
        return JSONResponse(
            {"ready": ok, "database": db, "kafka": kafka}, status_code=200 if ok else 503
        )

    @app.get("/metrics", summary="Prometheus metrics")
    async def prometheus() -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    default_openapi = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = default_openapi()
            schema.setdefault("components", {}).setdefault("schemas", {}).update(components)
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    app.state.submit = submit
    (events,) = [r for r in app.routes if isinstance(r, APIRoute) and r.path == "/v1/events"]
    app.add_middleware(_Lane, path="/v1/events", route=events, endpoint=post_events)

    def count(route: str, status: int, seconds: float) -> None:
        metrics.requests.labels(route, str(status)).inc()
        metrics.latency.labels(route).observe(seconds)

    guard(app, count, log)  # after the lane: its requests are counted (and a 500 shaped) too
    return app


class _Lane:
    """`POST {path}` handed straight to its endpoint from inside the measured middleware, past
    FastAPI's routing, dependency solving and exception middleware (a third of a one-event
    request's CPU went there). The endpoint answers every case itself; every other request
    goes on as usual."""

    def __init__(
        self,
        app: ASGIApp,
        path: str,
        route: APIRoute,
        endpoint: Callable[[Request], Awaitable[Response]],
    ) -> None:
        self.app, self.path, self.route, self.endpoint = app, path, route, endpoint

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] == self.path and scope["method"] == "POST":
            scope["route"] = self.route  # the route's name in the request metrics
            response = await self.endpoint(Request(scope, receive))
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)


_KEY_DOC = "API key of a site or an admin"
_IDEMPOTENCY_DOC = "the same key with the same body answers the first answer again"
_IDEMPOTENCY_KEY_MAX = 200


def _unauthorized() -> JSONResponse:
    return _error(
        401,
        "a valid API key is required (X-API-Key or Authorization: Bearer)",
        [{"field": "X-API-Key", "reason": "missing, unknown or revoked"}],
        **{"WWW-Authenticate": "Bearer"},
    )


class _UnauthorizedError(Exception):
    pass


def _json_events(data: Any, max_batch: int) -> list[Any]:
    bodies = data if isinstance(data, list) else [data]
    if not bodies:
        raise BadBody("an empty batch")
    if len(bodies) > max_batch:
        raise BadBody(f"{len(bodies)} events in one request; at most {max_batch}")
    return bodies


def _summary(results: list[Result]) -> dict[str, Any]:
    accepted = sum(r.outcome is Outcome.ACCEPTED for r in results)
    return {
        "accepted": accepted,
        "duplicates": len(results) - accepted,
        "results": [r.as_dict() for r in results],
    }
