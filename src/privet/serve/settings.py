"""``serve.yaml``: how the gateway runs, validated before it starts (unknown keys refused).

Example::

    upstream: http://127.0.0.1:8001/v1    # OpenAI-compatible chat upstream (optional)
    upstream_key_env: UPSTREAM_API_KEY    # the environment variable holding its API key (never in the file)
    redis_url: redis://127.0.0.1:6379/0   # shared limits for several workers (default: in process)
    key_cache_seconds: 2                  # how long a checked API key is trusted before the store is asked again
    models: [breast-cancer-mlp]           # registry models loaded (and verified) at start-up; others on first use
    datasets:                             # tables /v1/dp/query may read, per tenant: TENANT/NAME -> CSV or Parquet
      hospital-a/visits: data/visits.csv
    jwt:                                  # optional: also accept OIDC/JWT bearer tokens
      jwks_file: jwks.json
      issuer: https://login.example.org/
      audience: privet
      tenant_claim: privet_tenant
      role_claim: privet_role
      models_claim: privet_models

Relative paths are taken from the file's folder. Everything has a default: ``privet serve`` runs with none.
"""

from __future__ import annotations

from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from privet.errors import ConfigError, NotFoundError

__all__ = ["GatewaySettings", "JwtSettings", "load_settings"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class JwtSettings(_Strict):
    jwks_file: Path
    issuer: str
    audience: str
    tenant_claim: str = "privet_tenant"
    role_claim: str = "privet_role"
    models_claim: str = "privet_models"


class GatewaySettings(_Strict):
    upstream: str | None = None
    upstream_key_env: str | None = None
    upstream_timeout: float = Field(60.0, gt=0)
    redis_url: str | None = None
    key_cache_seconds: float = Field(2.0, ge=0)
    models: list[str] = Field(default_factory=list)
    datasets: dict[str, Path] = Field(default_factory=dict)
    jwt: JwtSettings | None = None
    max_rows: int = Field(1024, ge=1)  # rows one predict call may send
    audit_checkpoint_every: int = Field(1000, ge=1)


def load_settings(path: Path | None) -> GatewaySettings:
    if path is None:
        return GatewaySettings()
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise NotFoundError(f"{path} does not exist", "Pass the gateway's serve.yaml with --config.") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path.name} is not valid YAML ({type(exc).__name__})") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path.name} must be a mapping of settings")
    for name, value in (raw.get("datasets") or {}).items():
        raw["datasets"][name] = str((path.parent / str(value)).resolve())
    if isinstance(raw.get("jwt"), dict) and "jwks_file" in raw["jwt"]:
        raw["jwt"]["jwks_file"] = str((path.parent / str(raw["jwt"]["jwks_file"])).resolve())
    try:
        return GatewaySettings.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "file"
        raise ConfigError(f"{path.name}: {where}: {first['msg']}", "Fix that setting (see docs/serve.md).") from None
