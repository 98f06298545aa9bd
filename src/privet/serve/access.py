"""Who may do what: roles, the actions of the routes, and the one check every route makes.

A caller is a :class:`Principal`: a tenant, a role, and optionally the models it may call (``None``: all).
Access is denied unless this table allows it, and never across tenants:

==========  ========================================================================
role        actions
==========  ========================================================================
admin       every action in its own tenant (keys and roles are managed by the CLI)
operator    predict, chat, desensitize, dashboard
analyst     predict, dp.query
consumer    predict, chat, desensitize
auditor     audit.read, dashboard
==========  ========================================================================

Models are the platform's (the registry is shared); a principal's ``models`` limits which it may call. Everything
else a route touches (audit records, budgets, pseudonym sessions, keys) belongs to a tenant, and a principal only
ever reaches its own tenant's.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum

from privet.errors import PrivetError

__all__ = ["ALLOWED", "AccessDeniedError", "Action", "Principal", "Role", "authorize"]


class Role(StrEnum):
    ADMIN = "admin"
    OPERATOR = "operator"
    ANALYST = "analyst"
    CONSUMER = "consumer"
    AUDITOR = "auditor"


class Action(StrEnum):
    PREDICT = "predict"
    CHAT = "chat"
    DESENSITIZE = "desensitize"
    DP_QUERY = "dp.query"
    AUDIT_READ = "audit.read"
    DASHBOARD = "dashboard"


ALLOWED: dict[Role, frozenset[Action]] = {
    Role.ADMIN: frozenset(Action),
    Role.OPERATOR: frozenset({Action.PREDICT, Action.CHAT, Action.DESENSITIZE, Action.DASHBOARD}),
    Role.ANALYST: frozenset({Action.PREDICT, Action.DP_QUERY}),
    Role.CONSUMER: frozenset({Action.PREDICT, Action.CHAT, Action.DESENSITIZE}),
    Role.AUDITOR: frozenset({Action.AUDIT_READ, Action.DASHBOARD}),
}


class AccessDeniedError(PrivetError):
    """The caller is known but may not do this (HTTP 403)."""


@dataclass(frozen=True)
class Principal:
    """An authenticated caller: ``subject`` names it in audit records (a key id or a token's subject)."""

    tenant: str
    role: Role
    subject: str
    models: frozenset[str] | None = None  # None: every model

    @classmethod
    def of(cls, tenant: str, role: str, subject: str, models: Iterable[str] | None = None) -> Principal:
        try:
            parsed = Role(role)
        except ValueError:
            roles = ", ".join(r.value for r in Role)
            raise AccessDeniedError(f"unknown role {role[:32]!r}", f"Roles: {roles}.") from None
        return cls(tenant, parsed, subject, None if models is None else frozenset(models))


def authorize(principal: Principal, action: Action, *, tenant: str | None = None, model: str | None = None) -> None:
    """Raise :class:`AccessDeniedError` unless ``principal`` may do ``action`` (on ``tenant``'s data, on ``model``)."""
    if action not in ALLOWED[principal.role]:
        hint = "Use a key with a role that may."
        raise AccessDeniedError(f"role {principal.role.value} may not {action.value}", hint)
    if tenant is not None and tenant != principal.tenant:
        raise AccessDeniedError("that belongs to another tenant")
    if model is not None and principal.models is not None and model not in principal.models:
        raise AccessDeniedError(f"this key may not call model {model[:64]!r}", "Ask an admin for a key scoped to it.")
