"""``privet serve``, ``privet admin`` (tenants and API keys) and ``privet audit`` (the gateway's audit chain)."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from privet.cli.common import JsonOption, emit, stdout, workspace
from privet.errors import UsageError

if TYPE_CHECKING:
    from privet.serve.keys import ApiKeys
    from privet.workspace import Workspace

admin = typer.Typer(help="Gateway tenants, API keys and roles.", no_args_is_help=True)
tenants = typer.Typer(help="Tenants: organisations a gateway serves, isolated from each other.", no_args_is_help=True)
keys = typer.Typer(help="API keys: issued once, stored as keyed digests.", no_args_is_help=True)
admin.add_typer(tenants, name="tenants")
admin.add_typer(keys, name="keys")
audit = typer.Typer(help="The gateway's tamper-evident audit chain.", no_args_is_help=True)


@admin.command("roles")
def roles(as_json: JsonOption = False) -> None:
    """The roles a key can have and the actions each allows (keys take one role, and optionally model scopes)."""
    from privet.serve.access import ALLOWED

    table = {role.value: sorted(action.value for action in actions) for role, actions in ALLOWED.items()}

    def render() -> None:
        grid = Table("role", "allowed actions")
        for role, actions in table.items():
            grid.add_row(role, ", ".join(actions))
        stdout.print(grid)

    emit({"roles": table}, as_json, render)


def serve(
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8000,
    config: Annotated[Path | None, typer.Option(help="serve.yaml (defaults for everything when absent).")] = None,
    tls_cert: Annotated[Path | None, typer.Option(help="PEM certificate chain: terminate TLS here.")] = None,
    tls_key: Annotated[Path | None, typer.Option(help="PEM private key of --tls-cert.")] = None,
) -> None:
    """Serve registry models, the chat proxy, desensitization, DP queries and the audit API over HTTP."""
    import uvicorn

    from privet.serve.app import create_app
    from privet.serve.gateway import Gateway
    from privet.serve.settings import load_settings

    if (tls_cert is None) != (tls_key is None):
        raise UsageError("TLS needs both --tls-cert and --tls-key")
    settings = load_settings(config)
    with workspace() as ws:
        gateway = Gateway(ws.store, ws.keyring, ws.registry, settings)
        scheme = "https" if tls_cert else "http"
        stdout.print(f"privet gateway on {scheme}://{host}:{port} (OpenAPI at /docs)")
        uvicorn.run(create_app(gateway), host=host, port=port, log_level="warning", access_log=False,
                    ssl_certfile=str(tls_cert) if tls_cert else None, ssl_keyfile=str(tls_key) if tls_key else None,
                    loop="uvloop", http="httptools")  # fmt: skip


def _api_keys() -> tuple[Workspace, ApiKeys]:
    from privet.serve.keys import ApiKeys

    ws = workspace()
    return ws, ApiKeys(ws.store, ws.keyring)


@tenants.command("create")
def tenants_create(name: Annotated[str, typer.Argument(help="Tenant name.")], as_json: JsonOption = False) -> None:
    """Create a tenant."""
    ws, api = _api_keys()
    with ws:
        api.create_tenant(name)
    emit({"tenant": name}, as_json, lambda: stdout.print(f"tenant {name} created"))


@tenants.command("list")
def tenants_list(as_json: JsonOption = False) -> None:
    """List tenants."""
    ws, api = _api_keys()
    with ws:
        names = api.tenants()
    emit({"tenants": names}, as_json, lambda: stdout.print("\n".join(names) or "no tenants"))


@keys.command("create")
def keys_create(
    tenant: Annotated[str, typer.Option(help="Tenant the key belongs to.", show_default=False)],
    role: Annotated[str, typer.Option(help="admin, operator, analyst, consumer or auditor.", show_default=False)],
    model: Annotated[list[str] | None, typer.Option(help="A model the key may call (repeatable; default all).")] = None,
    days: Annotated[float | None, typer.Option(help="Expire after this many days.")] = None,
    label: Annotated[str, typer.Option(help="A note for admins.")] = "",
    rate: Annotated[float | None, typer.Option(help="Requests per second.")] = None,
    burst: Annotated[int | None, typer.Option(help="Requests a burst may hold.")] = None,
    budget: Annotated[int | None, typer.Option(help="Queries per model per window.")] = None,
    window: Annotated[int, typer.Option(help="Budget window in seconds.")] = 86_400,
    as_json: JsonOption = False,
) -> None:
    """Issue an API key; the key is printed once and never stored."""
    from privet.serve.limits import Limits

    ws, api = _api_keys()
    with ws:
        issued = api.issue(tenant, role, models=model, ttl=timedelta(days=days) if days else None, label=label,
                           limits=Limits(rate, burst, budget, window))  # fmt: skip
    result = {"key_id": issued.info.key_id, "tenant": tenant, "role": role, "key": issued.token}
    emit(result, as_json, lambda: stdout.print(f"key {issued.info.key_id} ({role} of {tenant}): {issued.token}\n"
                                                "Store it now: it cannot be shown again."))  # fmt: skip


@keys.command("list")
def keys_list(
    tenant: Annotated[str | None, typer.Option(help="Only this tenant's keys.")] = None, as_json: JsonOption = False
) -> None:
    """List keys (never their secrets)."""
    ws, api = _api_keys()
    with ws:
        infos = api.keys(tenant)
    rows = [{"key_id": i.key_id, "tenant": i.tenant, "role": i.role, "models": i.models, "label": i.label,
             "expires_at": i.expires_at.isoformat() if i.expires_at else None,
             "revoked": i.revoked_at is not None} for i in infos]  # fmt: skip

    def render() -> None:
        table = Table("key", "tenant", "role", "models", "expires", "revoked")
        for r in rows:
            table.add_row(r["key_id"], r["tenant"], r["role"], ",".join(r["models"] or ["*"]),
                          str(r["expires_at"] or "-"), "yes" if r["revoked"] else "")  # fmt: skip
        stdout.print(table)

    emit({"keys": rows}, as_json, render)


@keys.command("revoke")
def keys_revoke(key_id: Annotated[str, typer.Argument(help="Key id.")], as_json: JsonOption = False) -> None:
    """Revoke a key at once."""
    ws, api = _api_keys()
    with ws:
        api.revoke(key_id)
    emit({"key_id": key_id, "revoked": True}, as_json, lambda: stdout.print(f"key {key_id} revoked"))


@keys.command("rotate")
def keys_rotate(
    key_id: Annotated[str, typer.Argument(help="Key id.")],
    grace: Annotated[float, typer.Option(help="Hours the old key keeps working.")] = 1.0,
    as_json: JsonOption = False,
) -> None:
    """Issue a replacement key; the old one expires after the grace period."""
    ws, api = _api_keys()
    with ws:
        issued = api.rotate(key_id, grace=timedelta(hours=grace))
    result = {"old_key_id": key_id, "key_id": issued.info.key_id, "key": issued.token}
    emit(result, as_json, lambda: stdout.print(f"key {issued.info.key_id} replaces {key_id}: {issued.token}"))


@audit.command("verify")
def audit_verify(as_json: JsonOption = False) -> None:
    """Check the whole audit chain: every record's hash link and every signed checkpoint."""
    from privet.errors import IntegrityError
    from privet.serve.chain import verify

    with workspace() as ws:
        report = verify(ws.store, ws.keyring)
    result = {"ok": report.ok, "records": report.records, "checkpoints": report.checkpoints,
              "problem": report.problem}  # fmt: skip
    intact = f"audit chain intact: {report.records} records, {report.checkpoints} signed checkpoints"
    emit(result, as_json, lambda: stdout.print(intact) if report.ok else None)
    if not report.ok:
        raise IntegrityError(f"the audit chain is broken: {report.problem}", "Investigate before trusting it.")
