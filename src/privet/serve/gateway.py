"""The gateway's state and the steps every route shares: authenticate, authorize, limit, audit.

Authentication: ``Authorization: Bearer <token>``. A token ``pvt_...`` is an API key (:mod:`.keys`); any other
is validated as a JWT against the configured JWKS file (signature, issuer, audience, expiry), its claims naming
tenant, role and models; without ``jwt`` settings it is refused. A tenant named by a JWT must exist here too.

Every request, allowed or not, ends in exactly one audit record (:mod:`.chain`), written before the response is
sent: a route that cannot record its request fails with 503 instead of answering unaudited.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import time
from dataclasses import dataclass, field
from typing import Any

from fastapi import Request

from privet.crypto import Keyring
from privet.crypto.keyed import derive_key
from privet.errors import KeyNotFoundError
from privet.models.registry import Registry
from privet.serve.access import Action, Principal, authorize
from privet.serve.chain import AsyncAuditWriter, AuditChain, AuditEvent
from privet.serve.keys import ApiKeys, UnauthenticatedError
from privet.serve.limits import Limiter, Limits, make_limiter
from privet.serve.models import Models
from privet.serve.pii import default_pii_analyzer
from privet.serve.settings import GatewaySettings
from privet.serve.upstream import Upstream
from privet.store import Store

__all__ = ["Call", "Gateway"]

_SESSION_KEY = "gateway-sessions"
_SUBJECT = re.compile(r"[A-Za-z0-9_.:/@+|=-]{1,64}")  # what an audit record may name


@dataclass
class Call:
    """What one request has established so far, for its audit record."""

    route: str
    started: float = field(default_factory=time.perf_counter)
    principal: Principal | None = None
    model: str | None = None
    model_digest: str | None = None
    entities: dict[str, int] = field(default_factory=dict)

    @property
    def elapsed(self) -> float:
        return time.perf_counter() - self.started


class Gateway:
    """Everything the routes need, built once per process."""

    def __init__(self, store: Store, keyring: Keyring, registry: Registry, settings: GatewaySettings) -> None:
        self.store, self.keyring, self.settings = store, keyring, settings
        self.keys = ApiKeys(store, keyring, cache_seconds=settings.key_cache_seconds)
        self.limiter: Limiter = make_limiter(settings.redis_url)
        self.models = Models(registry, keyring)
        self.chain = AuditChain(store, keyring, checkpoint_every=settings.audit_checkpoint_every)
        self.audit = AsyncAuditWriter(self.chain)
        self.upstream: Upstream | None = None
        self._jwks: Any = None
        self._session_root: bytes | None = None
        self._tenants: set[str] = set()

    async def start(self) -> None:
        await self.audit.start()
        await asyncio.to_thread(default_pii_analyzer)  # built now (seconds), not by the first chat request
        if self.settings.upstream:
            key = os.environ.get(self.settings.upstream_key_env or "") or None
            self.upstream = Upstream(self.settings.upstream, key, self.settings.upstream_timeout)
            await self.upstream.start()
        for model in self.settings.models:
            self.models.get(model)  # verified now: a bad artifact stops the gateway from starting

    async def stop(self) -> None:
        if self.upstream is not None:
            await self.upstream.close()
        await self.audit.stop()

    # -- identity -----------------------------------------------------------------------------------------------

    def authenticate(self, request: Request) -> tuple[Principal, Limits]:
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise UnauthenticatedError("no credentials", "Send Authorization: Bearer <API key or token>.")
        token = token.strip()
        if token.startswith("pvt_"):
            return self.keys.authenticate(token)
        return self._jwt(token), Limits()

    def _jwt(self, token: str) -> Principal:
        settings = self.settings.jwt
        if settings is None:
            raise UnauthenticatedError("the API key is malformed", "Send Authorization: Bearer pvt_<id>_<secret>.")
        import jwt

        if self._jwks is None:
            self._jwks = jwt.PyJWKSet.from_json(settings.jwks_file.read_text())
        try:
            header = jwt.get_unverified_header(token)
            key = next(k for k in self._jwks.keys if k.key_id == header.get("kid"))
            claims = jwt.decode(token, key.key, algorithms=[key.algorithm_name], audience=settings.audience,
                                issuer=settings.issuer, options={"require": ["exp", "iss", "aud", "sub"]})  # fmt: skip
        except (jwt.PyJWTError, StopIteration, ValueError):
            hint = "Get a fresh token from your identity provider."
            raise UnauthenticatedError("the bearer token is not valid", hint) from None
        tenant, role = claims.get(settings.tenant_claim), claims.get(settings.role_claim)
        models = claims.get(settings.models_claim)
        if not isinstance(tenant, str) or not isinstance(role, str) or not self._tenant_exists(tenant):
            raise UnauthenticatedError("the bearer token names no tenant and role of this gateway")
        if not _SUBJECT.fullmatch(str(claims["sub"])):
            raise UnauthenticatedError("the bearer token's subject is not 1-64 of A-Z a-z 0-9 _ . : / @ + | = -")
        if models is not None and not (isinstance(models, list) and all(isinstance(m, str) for m in models)):
            raise UnauthenticatedError("the bearer token's models claim is not a list of names")
        return Principal.of(tenant, role, f"jwt:{claims['sub']}", models)

    def _tenant_exists(self, tenant: str) -> bool:
        if tenant not in self._tenants and tenant in self.keys.tenants():
            self._tenants.add(tenant)
        return tenant in self._tenants

    def admit(self, request: Request, call: Call, action: Action) -> tuple[Principal, Limits]:
        """Authenticate, authorize ``action`` and spend one request of the caller's rate."""
        principal, limits = self.authenticate(request)
        call.principal = principal
        authorize(principal, action)
        self.limiter.take(principal.subject, limits, None)
        return principal, limits

    def query(self, call: Call, action: Action, limits: Limits, model: str) -> None:
        """Check that the caller may use ``model`` and spend one query of its budget for it.

        The audit record names the model only once the route has resolved it (``call.model``): a name the
        caller typed may be anything, personal data included.
        """
        assert call.principal is not None
        authorize(call.principal, action, model=model)
        self.limiter.take(call.principal.subject, Limits(budget_queries=limits.budget_queries,
                                                         budget_window=limits.budget_window), model)  # fmt: skip

    def session_key(self, tenant: str, session: str) -> bytes:
        """The pseudonym key of ``tenant``'s ``session``: tokens are stable within it and unrelated across."""
        if self._session_root is None:
            try:
                root = self.keyring.data_key(_SESSION_KEY)
            except KeyNotFoundError:
                self.keyring.create(_SESSION_KEY, "aead")
                root = self.keyring.data_key(_SESSION_KEY)
            self._session_root = root.material
        label = json.dumps([tenant, session]).encode()
        return derive_key(self._session_root, b"privet gateway session\0" + label)

    async def record(self, call: Call, status: int, decision: str) -> None:
        """Write the request's audit record (raises if it cannot be written: the caller must not answer)."""
        principal = call.principal
        event = AuditEvent(
            tenant=principal.tenant if principal else None,
            principal=principal.subject if principal else None,
            route=call.route,
            model=call.model,
            model_digest=call.model_digest,
            decision=decision,
            entities=dict(call.entities),
            latency_ms=call.elapsed * 1000,
            status=status,
        )
        await self.audit.append(event)
