"""The operators' and auditors' dashboard: a static page at ``/dashboard`` and its data at ``/v1/dashboard``.

The page (HTML, script and style served from :mod:`privet.serve`'s ``static`` folder, under a
``Content-Security-Policy`` of ``default-src 'self'``) holds no data: it asks for an API key, keeps it in the
browser's ``sessionStorage`` only, and fetches ``/v1/dashboard`` with it. Those static files are not audited
(like ``/healthz``); ``/v1/dashboard`` is (one record per request, as every data route).

``/v1/dashboard`` needs :attr:`Action.DASHBOARD` (operator, auditor, admin) and shows the caller's tenant only:
the registry's models (shared by every tenant) and whether this gateway has loaded or refused them, the tenant's
API keys (never a secret or a digest), its privacy budgets, its newest audit records, and the audit chain's
verification. The chain is one for all tenants, so its counts are the whole chain's. Verifying it reads every
record (about 6 s per 100,000 on SQLite), so the route keeps the newest report: older than ``chain_ttl`` seconds,
it is verified again in a worker thread (one verification at a time), and a request waits at most ``chain_wait``
seconds for that, answering the previous report (or, before the first, none) when it takes longer.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from importlib import resources
from typing import Literal

from fastapi import FastAPI, Request
from fastapi.responses import Response
from pydantic import BaseModel

from privet.dp.ledger import Ledger
from privet.errors import PrivetError
from privet.models.registry import Entry, Registry
from privet.serve.access import Action, Principal
from privet.serve.chain import ChainReport, verify
from privet.serve.gateway import Call, Gateway
from privet.serve.keys import KeyInfo

__all__ = ["DashboardData", "gather", "register", "verify_chain"]

AUDIT_RECORDS = 20
DIGEST_PREFIX = 12
# default-src 'self' is the requirement; the rest forbids framing (clickjacking), <base> and form posts elsewhere.
CSP = "default-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
_STATIC = {  # URL path -> (file in privet/serve/static, media type)
    "/dashboard": ("dashboard.html", "text/html; charset=utf-8"),
    "/dashboard/dashboard.js": ("dashboard.js", "text/javascript; charset=utf-8"),
    "/dashboard/dashboard.css": ("dashboard.css", "text/css; charset=utf-8"),
    "/dashboard/favicon.svg": ("favicon.svg", "image/svg+xml"),  # else a browser's /favicon.ico is an audited 404
}


class ModelRow(BaseModel):
    name: str
    version: str
    digest: str  # the artifact's SHA-256, first DIGEST_PREFIX hex digits
    signer: str  # the signing key's fingerprint
    status: Literal["loaded", "refused", "available"]  # available: verified when first asked for
    problem: str | None = None  # why it was refused
    callable: bool  # whether the caller's key may call it


class LimitsRow(BaseModel):
    rate: float | None
    burst: int | None
    budget_queries: int | None
    budget_window: int


class KeyRow(BaseModel):
    key_id: str
    role: str
    models: list[str] | None  # None: every model
    label: str
    created_at: datetime
    expires_at: datetime | None
    expired: bool
    revoked_at: datetime | None
    revoked: bool
    limits: LimitsRow


class BudgetRow(BaseModel):
    dataset: str
    epsilon: float
    delta: float
    spent_epsilon: float
    remaining_epsilon: float
    charges: int
    accountant: str


class AuditRow(BaseModel):
    seq: int
    at: datetime
    principal: str | None
    route: str
    model: str | None
    decision: str
    status: int
    latency_ms: float
    entities: dict[str, int]


class ChainRow(BaseModel):
    ok: bool
    records: int
    checkpoints: int
    head_seq: int
    checkpoint_seq: int
    unsigned: int
    summary: str
    problem: str | None
    checked_at: datetime


class DashboardData(BaseModel):
    """Everything the dashboard shows, for one principal's tenant."""

    tenant: str
    subject: str
    role: str
    models: list[ModelRow]
    keys: list[KeyRow]
    budgets: list[BudgetRow]
    audit: list[AuditRow]
    audit_problem: str | None = None  # set when the newest records could not be read (the chain says why)
    chain: ChainRow | None  # None: the first verification is still running


def _registry(gateway: Gateway) -> Registry:
    return gateway.models._registry  # the gateway keeps its registry only inside Models


def _model_rows(gateway: Gateway, principal: Principal) -> list[ModelRow]:
    entries = _registry(gateway).entries()
    newest = {entry.name: entry for entry in entries}  # entries come oldest first within a name
    # What this process has loaded or refused so far (Models has no public view of it).
    loaded = list(getattr(gateway.models, "_loaded", {}).values())
    refused: dict[str, tuple[float, PrivetError]] = dict(getattr(gateway.models, "_refused", {}))

    def refusal(entry: Entry) -> str | None:
        for reference, (_, exc) in refused.items():
            name, _, version = reference.partition(":")
            if name == entry.name and (version == entry.version or (not version and newest[name] is entry)):
                return exc.message
        return None

    rows = []
    for entry in entries:
        problem = refusal(entry)
        is_loaded = any((m.name, m.version, m.digest) == (entry.name, entry.version, entry.sha256) for m in loaded)
        status: Literal["loaded", "refused", "available"] = (
            "loaded" if is_loaded else "refused" if problem is not None else "available"
        )
        # As authorize() decides: a scope names "name" (its newest version) or "name:version".
        references = {f"{entry.name}:{entry.version}"} | ({entry.name} if newest[entry.name] is entry else set())
        allowed = principal.models is None or bool(references & principal.models)
        rows.append(ModelRow(name=entry.name, version=entry.version, digest=entry.sha256[:DIGEST_PREFIX],
                             signer=entry.signer, status=status, problem=problem if status == "refused" else None,
                             callable=allowed))  # fmt: skip
    return rows


def _key_row(info: KeyInfo, now: datetime) -> KeyRow:
    limits = info.limits
    expired = info.expires_at is not None and info.expires_at <= now  # the store's times are aware (UTC)
    return KeyRow(key_id=info.key_id, role=info.role, models=info.models, label=info.label,
                  created_at=info.created_at, expires_at=info.expires_at, expired=expired,
                  revoked_at=info.revoked_at, revoked=info.revoked_at is not None,
                  limits=LimitsRow(rate=limits.rate, burst=limits.burst, budget_queries=limits.budget_queries,
                                   budget_window=limits.budget_window))  # fmt: skip


def _budget_rows(gateway: Gateway, tenant: str) -> list[BudgetRow]:
    ledger = Ledger(gateway.store)
    rows = []
    for budget in ledger.budgets():
        if budget.tenant != tenant:
            continue
        status = ledger.status(tenant, budget.dataset)
        spent = status.spent.epsilon if status.spent else 0.0
        rows.append(BudgetRow(dataset=budget.dataset, epsilon=budget.epsilon, delta=budget.delta, spent_epsilon=spent,
                              remaining_epsilon=status.remaining_epsilon, charges=status.charges,
                              accountant=budget.accountant))  # fmt: skip
    return rows


def _chain_row(report: ChainReport, checked_at: datetime) -> ChainRow:
    return ChainRow(ok=report.ok, records=report.records, checkpoints=report.checkpoints, head_seq=report.head_seq,
                    checkpoint_seq=report.checkpoint_seq, unsigned=report.unsigned, summary=report.summary(),
                    problem=report.problem, checked_at=checked_at)  # fmt: skip


def verify_chain(gateway: Gateway) -> ChainRow:
    """The audit chain's verification now (blocking: reads every record)."""
    return _chain_row(verify(gateway.store, gateway.keyring), datetime.now(UTC))


def gather(
    gateway: Gateway, principal: Principal, chain: ChainRow | None = None, *, fresh: bool = True
) -> DashboardData:
    """The dashboard of ``principal``'s tenant (blocking: reads the store). Without ``chain``, the chain is verified
    now when ``fresh``, else reported as not yet verified."""
    tenant = principal.tenant
    if chain is None and fresh:
        chain = verify_chain(gateway)
    audit_problem = None
    try:
        entries = gateway.chain.recent(tenant=tenant, limit=AUDIT_RECORDS)
    except PrivetError as exc:  # an altered record cannot be read back; the page still shows the chain's report
        entries, audit_problem = [], exc.message
    audit = [AuditRow(seq=e.seq, at=e.event.at, principal=e.event.principal, route=e.event.route,
                      model=e.event.model, decision=e.event.decision, status=e.event.status,
                      latency_ms=round(e.event.latency_ms, 3), entities=dict(e.event.entities))
             for e in entries]  # fmt: skip
    now = datetime.now(UTC)
    return DashboardData(tenant=tenant, subject=principal.subject, role=principal.role.value,
                         models=_model_rows(gateway, principal),
                         keys=[_key_row(info, now) for info in gateway.keys.keys(tenant)],
                         budgets=_budget_rows(gateway, tenant), audit=audit, audit_problem=audit_problem,
                         chain=chain)  # fmt: skip


class _ChainCache:
    """The newest chain report; one older than ``ttl`` seconds is verified again in a worker thread."""

    def __init__(self, gateway: Gateway, ttl: float, wait: float) -> None:
        self._gateway, self._ttl, self._wait = gateway, ttl, wait
        self._row: ChainRow | None = None
        self._at = 0.0
        self._task: asyncio.Task[None] | None = None

    async def get(self) -> ChainRow | None:
        """The newest report, after waiting at most ``wait`` seconds for a verification under way."""
        stale = self._row is None or time.monotonic() - self._at >= self._ttl
        if stale and self._task is None:
            self._task = asyncio.create_task(self._refresh())
            self._task.add_done_callback(lambda task: task.cancelled() or task.exception())  # a waiter raises it
        if self._task is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(self._task), self._wait)
        return self._row

    async def _refresh(self) -> None:
        try:
            started = time.monotonic()
            row = await asyncio.to_thread(verify_chain, self._gateway)
            self._row, self._at = row, started
        finally:
            self._task = None


def _static(name: str, media_type: str, headers: dict[str, str]) -> Callable[[], Awaitable[Response]]:
    """A route answering the static file ``name`` (read now: a missing file fails at start-up, not on a visit)."""
    body = (resources.files("privet.serve") / "static" / name).read_bytes()

    async def static() -> Response:
        return Response(body, media_type=media_type, headers=headers)

    return static


def register(
    app: FastAPI,
    gateway: Gateway,
    finish: Callable[[Call, int, str], Awaitable[None]],
    call_of: Callable[[Request, str], Call],
    *,
    chain_ttl: float = 15.0,
    chain_wait: float = 5.0,
) -> None:
    """Add the dashboard's page, its script and style, and ``GET /v1/dashboard`` to ``app``."""
    headers = {"Content-Security-Policy": CSP, "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer",
               "Cache-Control": "no-cache"}  # fmt: skip
    for path, (name, media_type) in _STATIC.items():
        app.add_api_route(path, _static(name, media_type, headers), methods=["GET"], include_in_schema=False,
                          response_class=Response)  # fmt: skip

    cache = _ChainCache(gateway, chain_ttl, chain_wait)

    @app.get("/v1/dashboard", tags=["audit"])
    async def dashboard(request: Request, response: Response) -> DashboardData:
        """The caller's tenant at a glance: models, keys, budgets, newest audit records, the chain (operators,
        auditors)."""
        call = call_of(request, "dashboard")
        principal, _ = gateway.admit(request, call, Action.DASHBOARD)
        chain = await cache.get()
        data = await asyncio.to_thread(gather, gateway, principal, chain, fresh=False)
        await finish(call, 200, "allowed")
        response.headers["Cache-Control"] = "no-store"
        return data
