"""The FastAPI application: routes, error bodies, metrics. Built by :func:`create_app` around a :class:`Gateway`.

Every error is a JSON body ``{"error": {"code", "message", "hint"}}`` with one line of message and no
personal data or secret, and every request (answered, refused or failed) leaves one audit record first.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import re
import secrets
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pandas as pd
import torch
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

import privet
from privet.dp.ledger import Ledger
from privet.errors import BudgetExceededError, NotFoundError, PrivetError, UsageError
from privet.serve import dashboard
from privet.serve.access import AccessDeniedError, Action
from privet.serve.gateway import Call, Gateway
from privet.serve.keys import UnauthenticatedError
from privet.serve.limits import LimitExceededError
from privet.serve.models import ModelRefusedError
from privet.serve.pii import SessionMasker, SseRestorer, default_pii_analyzer, restore_completion
from privet.serve.upstream import UpstreamError

__all__ = ["create_app"]

log = logging.getLogger(__name__)
_FIELD = re.compile(r"[a-z_]{1,32}")


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class PredictRequest(_Body):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)  # NaN and infinity refused while parsing
    inputs: list[list[float]] = Field(min_length=1, description="Rows of features, one prediction per row.")


class PredictResponse(BaseModel):
    model: str
    version: str
    predictions: list[int]
    probabilities: list[list[float]]


class DpQueryRequest(_Body):
    dataset: str = Field(
        pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$",
        description="A table this gateway was configured to serve to the caller's tenant.",
    )
    sql: str = Field(max_length=4000)
    epsilon: float = Field(ge=1e-6, le=10)
    delta: float | None = Field(None, ge=0, lt=1)
    unit: str | None = None
    bounds: dict[str, tuple[float, float]] | None = None


class DpQueryResponse(BaseModel):
    columns: list[str]
    rows: list[list[Any]]
    epsilon: float
    delta: float
    budget_spent: float
    budget_epsilon: float


class ChatRequest(BaseModel):
    """An OpenAI chat completion request; fields other than these pass through to the upstream unchanged."""

    model_config = ConfigDict(extra="allow")
    model: str = Field(min_length=1, max_length=128)
    messages: list[dict[str, Any]] = Field(min_length=1, max_length=256)
    stream: bool = False


class DesensitizeRequest(_Body):
    text: str = Field(max_length=100_000)


class DesensitizeResponse(BaseModel):
    text: str
    entities: dict[str, int]


class ErrorBody(BaseModel):
    code: str
    message: str
    hint: str | None = None


class ErrorResponse(BaseModel):
    error: ErrorBody


_ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorResponse, "description": text}
    for status, text in [
        (401, "No valid credentials"),
        (403, "Not allowed"),
        (404, "Not found"),
        (409, "Model artifact refused"),
        (422, "Invalid request"),
        (429, "Over a limit or budget"),
        (503, "Unavailable"),
    ]
}


def _status(exc: PrivetError) -> tuple[int, str, str]:
    """HTTP status, error code and audit decision of a privet error raised by a route."""
    if isinstance(exc, UnauthenticatedError):
        return 401, "unauthenticated", "denied"
    if isinstance(exc, AccessDeniedError):
        return 403, "forbidden", "denied"
    if isinstance(exc, LimitExceededError):
        return 429, exc.code, "over_budget"
    if isinstance(exc, BudgetExceededError):
        return 429, "privacy_budget_exhausted", "over_budget"
    if isinstance(exc, ModelRefusedError):
        return 409, "artifact_refused", "error"
    if isinstance(exc, NotFoundError):
        return 404, "not_found", "error"
    if isinstance(exc, UsageError):
        return 422, "invalid_request", "error"
    if isinstance(exc, UpstreamError):
        return 502, "upstream_error", "error"
    return 503, "unavailable", "error"


def _error(status: int, code: str, message: str, hint: str | None, headers: dict[str, str] | None = None) -> Response:
    body = {"error": {"code": code, "message": message, "hint": hint}}
    return JSONResponse(body, status_code=status, headers=headers)


def _check_text(value: object) -> None:
    """Refuse strings that are not valid Unicode (lone surrogates): they could not be masked or sent reliably."""
    try:
        json.dumps(value, ensure_ascii=False).encode()
    except UnicodeEncodeError:
        raise UsageError("the request holds text that is not valid Unicode (a lone surrogate)") from None


async def _restored_stream(
    lines: AsyncIterator[bytes], restorer: SseRestorer, opened: contextlib.AsyncExitStack
) -> AsyncIterator[str]:
    """The upstream's SSE lines, restored; a stream that cannot be restored ends with an error event."""
    try:
        async for line in restorer.restore_async(lines):
            yield line + "\n"
    except (PrivetError, aiohttp.ClientError, TimeoutError):
        yield 'data: {"error": {"code": "upstream_stream", "message": "the upstream stream broke off"}}\n\n'
    finally:
        await opened.aclose()


def create_app(gateway: Gateway) -> FastAPI:
    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        await gateway.start()
        try:
            yield
        finally:
            await gateway.stop()

    app = FastAPI(title="privet gateway", version=privet.__version__, lifespan=lifespan, responses=_ERRORS)
    metrics = CollectorRegistry()
    requests = Counter("privet_requests", "Requests answered", ["route", "status"], registry=metrics)
    latency = Histogram("privet_request_seconds", "Request latency", ["route"], registry=metrics,
                        buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0))  # fmt: skip

    async def finish(call: Call, status: int, decision: str) -> None:
        await gateway.record(call, status, decision)
        requests.labels(call.route, str(status)).inc()
        latency.labels(call.route).observe(max(0.0, call.elapsed))

    def pending(request: Request) -> Call:
        """The request's call, or one for a request refused before its route ran (named by its template only:
        a request path may carry personal data)."""
        call = getattr(request.state, "call", None)
        if call is None:
            route = request.scope.get("route")
            call = Call(getattr(route, "path", "unrouted"))
        return call

    def call_of(request: Request, route: str) -> Call:
        call = Call(route)
        request.state.call = call
        return call

    @app.exception_handler(PrivetError)
    async def privet_error(request: Request, exc: PrivetError) -> Response:
        call = pending(request)
        status, code, decision = _status(exc)
        headers = {"Retry-After": str(max(1, round(exc.retry_after)))} if isinstance(exc, LimitExceededError) else None
        if status == 401:
            headers = {"WWW-Authenticate": "Bearer"}
        try:
            await finish(call, status, decision)
        except PrivetError:
            return _error(503, "audit_unavailable", "the request could not be audited", "Retry later.")
        return _error(status, code, exc.message, exc.hint, headers)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> Response:
        call = pending(request)
        first = exc.errors()[0] if exc.errors() else {"loc": (), "msg": "invalid request"}
        # Extra keys and dict keys are the caller's text: only field-like names and indices are echoed.
        where = ".".join(str(p) if isinstance(p, int) or _FIELD.fullmatch(str(p)) else "*"
                         for p in first.get("loc", ()) if p != "body") or "body"  # fmt: skip
        await finish(call, 422, "error")  # the message names the field, never echoes the value
        return _error(422, "invalid_request", f"{where}: {first.get('msg', 'invalid')}", "See /docs for the schema.")

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        code = {400: "bad_request", 404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        try:
            await finish(pending(request), exc.status_code, "error")
        except PrivetError:
            return _error(503, "audit_unavailable", "the request could not be audited", "Retry later.")
        message = {400: "the body is not valid JSON"}.get(exc.status_code, str(exc.detail)[:200].splitlines()[0])
        return _error(exc.status_code, code, message, None, dict(exc.headers) if exc.headers else None)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> Response:
        # A bug, not a user error: still one audit record and a JSON body, never a traceback or its text.
        log.error("unexpected %s in %s", type(exc).__name__, pending(request).route)
        with contextlib.suppress(PrivetError):
            await finish(pending(request), 500, "error")
        return _error(500, "internal_error", "the gateway failed on this request", "Report it with the time.")

    @app.get("/healthz", tags=["service"])
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/metrics", tags=["service"], response_class=Response)
    async def prometheus() -> Response:
        return Response(generate_latest(metrics), media_type=CONTENT_TYPE_LATEST)

    @app.post("/v1/predict/{model}", tags=["models"])
    async def predict(model: str, body: PredictRequest, request: Request) -> PredictResponse:
        """Predictions of a registry model (verified when loaded) for rows of features."""
        call = call_of(request, "predict")
        _, limits = gateway.admit(request, call, Action.PREDICT)
        gateway.query(call, Action.PREDICT, limits, model)
        loaded = gateway.models.get(model)
        call.model, call.model_digest = loaded.name, loaded.digest
        if len(body.inputs) > gateway.settings.max_rows:
            raise UsageError(f"at most {gateway.settings.max_rows} rows per call")
        if any(len(row) != loaded.in_features for row in body.inputs):
            raise UsageError(f"every row must have {loaded.in_features} features")
        rows = torch.tensor(body.inputs, dtype=torch.float32)
        if not torch.isfinite(rows).all():  # finite doubles beyond float32's range become infinite here
            raise UsageError("inputs must be finite numbers within float32's range")
        probabilities = loaded.predict(rows)
        await finish(call, 200, "allowed")
        return PredictResponse(model=loaded.name, version=loaded.version,
                               predictions=probabilities.argmax(1).tolist(),
                               probabilities=probabilities.tolist())  # fmt: skip

    @app.post("/v1/chat/completions", tags=["chat"], response_model=None)
    async def chat(body: ChatRequest, request: Request) -> Response:
        """The upstream model's answer: every message masked on the way out, the reply restored on the way back.

        ``X-Privet-Session`` keeps a person's tokens stable across the requests of one conversation; only the
        tokens of this request's own messages are ever restored into its reply.
        """
        call = call_of(request, "chat")
        principal, limits = gateway.admit(request, call, Action.CHAT)
        gateway.query(call, Action.CHAT, limits, body.model)
        if principal.models is not None:  # a name an admin scoped the key to, not free text
            call.model = body.model
        if gateway.upstream is None:
            raise NotFoundError("this gateway has no chat upstream", "Set upstream in serve.yaml.")
        payload = body.model_dump()
        _check_text(payload)
        payload.pop("user", None)  # an end-user identifier the upstream does not need
        session = request.headers.get("x-privet-session") or secrets.token_hex(16)
        masked = SessionMasker(gateway.session_key(principal.tenant, session[:128]), default_pii_analyzer())
        messages, mapping, counts = masked.mask_messages(body.messages)
        call.entities = counts
        payload["messages"] = messages
        if not body.stream:
            restored = restore_completion(await gateway.upstream.complete(payload), mapping)
            await finish(call, 200, "allowed")
            return JSONResponse(restored)
        opened = contextlib.AsyncExitStack()
        try:
            lines = await opened.enter_async_context(gateway.upstream.stream(payload))
            await finish(call, 200, "allowed")  # recorded before the first byte leaves
        except BaseException:
            await opened.aclose()
            raise
        return StreamingResponse(_restored_stream(lines, SseRestorer(mapping), opened), media_type="text/event-stream")

    @app.post("/v1/desensitize", tags=["privacy"])
    async def desensitize(body: DesensitizeRequest, request: Request) -> DesensitizeResponse:
        """The text with its personal data replaced by tokens of a fresh session (not restorable later)."""
        call = call_of(request, "desensitize")
        principal, _ = gateway.admit(request, call, Action.DESENSITIZE)
        _check_text(body.text)
        masked = SessionMasker(gateway.session_key(principal.tenant, secrets.token_hex(16)), default_pii_analyzer())
        result = masked.mask(body.text)
        call.entities = dict(result.counts)
        await finish(call, 200, "allowed")
        return DesensitizeResponse(text=result.text, entities=dict(result.counts))

    @app.post("/v1/dp/query", tags=["privacy"])
    async def dp_query(body: DpQueryRequest, request: Request) -> DpQueryResponse:
        """A differentially private SQL aggregate over a configured table, charged to the tenant's ledger."""
        from privet.data.tables import load_table
        from privet.dp.query import run_query

        call = call_of(request, "dp.query")
        principal, limits = gateway.admit(request, call, Action.DP_QUERY)
        gateway.query(call, Action.DP_QUERY, limits, f"dataset:{body.dataset}")
        path = gateway.settings.datasets.get(f"{principal.tenant}/{body.dataset}")
        if path is None:
            raise NotFoundError("no such data set for this tenant", "Ask an admin which data sets are served.")
        call.model = f"dataset:{body.dataset}"
        table: pd.DataFrame = load_table(path)
        ledger = Ledger(gateway.store)
        result = run_query(table, body.sql, epsilon=body.epsilon, delta=body.delta, unit=body.unit,
                           bounds=body.bounds, charge=ledger.charger(principal.tenant, body.dataset))  # fmt: skip
        status = ledger.status(principal.tenant, body.dataset)
        await finish(call, 200, "allowed")
        rows = result.table.astype(object).where(result.table.notna(), None).values.tolist()
        return DpQueryResponse(columns=[str(c) for c in result.table.columns], rows=rows, epsilon=result.epsilon,
                               delta=result.delta, budget_spent=status.spent.epsilon if status.spent else 0.0,
                               budget_epsilon=status.budget.epsilon)  # fmt: skip

    @app.get("/v1/audit", tags=["audit"])
    async def audit(request: Request, limit: int = 50) -> dict[str, Any]:
        """The caller's tenant's most recent audit records (auditors)."""
        call = call_of(request, "audit")
        principal, _ = gateway.admit(request, call, Action.AUDIT_READ)
        entries = gateway.chain.recent(tenant=principal.tenant, limit=max(1, min(limit, 500)))
        await finish(call, 200, "allowed")
        return {"records": [{"seq": e.seq, "hash": e.hash, **dataclasses.asdict(e.event),
                             "at": e.event.at.isoformat()} for e in entries]}  # fmt: skip

    dashboard.register(app, gateway, finish, call_of)
    return app
