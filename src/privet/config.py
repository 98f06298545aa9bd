"""Settings from defaults, ``privet.toml`` and ``PRIVET_*`` environment variables (later wins).

The TOML file is looked up at ``$PRIVET_CONFIG``, then ``./privet.toml``, then ``$PRIVET_HOME/privet.toml``.
Secrets (passphrase, master key) are never read from the TOML file: only from the environment or a prompt.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal

from privet.errors import ConfigError

MasterSource = Literal["passphrase", "env", "kms"]
_MASTER_SOURCES: tuple[str, ...] = ("passphrase", "env", "kms")
_LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")


@dataclass(frozen=True)
class Settings:
    """Where privet keeps its state and how it unlocks its keyring."""

    home: Path = field(default_factory=lambda: Path(".privet"))
    database_url: str | None = None
    master_source: MasterSource = "passphrase"
    kms_plugin: str | None = None
    log_level: str = "WARNING"

    @property
    def resolved_database_url(self) -> str:
        """The database URL: the configured one, or a SQLite file under ``home``."""
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.home / 'privet.db').resolve()}"

    @property
    def registry_dir(self) -> Path:
        return self.home / "registry"


def _from_mapping(base: Settings, values: dict[str, object], origin: str) -> Settings:
    known = {"home", "database_url", "master_source", "kms_plugin", "log_level"}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ConfigError(f"unknown setting {unknown[0]!r} in {origin}", f"Known settings: {', '.join(sorted(known))}.")
    changes: dict[str, object] = {}
    for name, value in values.items():
        if not isinstance(value, str) or not value:
            raise ConfigError(f"setting {name!r} in {origin} must be a non-empty string")
        changes[name] = Path(value).expanduser() if name == "home" else value
    settings = replace(base, **changes)  # type: ignore[arg-type]
    if settings.master_source not in _MASTER_SOURCES:
        raise ConfigError(
            f"master_source {settings.master_source!r} in {origin} is not one of {', '.join(_MASTER_SOURCES)}"
        )
    if settings.log_level.upper() not in _LOG_LEVELS:
        raise ConfigError(f"log_level {settings.log_level!r} in {origin} is not one of {', '.join(_LOG_LEVELS)}")
    if settings.master_source == "kms" and not settings.kms_plugin:
        raise ConfigError(
            f"master_source is 'kms' in {origin} but no kms_plugin is set",
            "Set kms_plugin to 'module:Class' of an installed KMS plug-in.",
        )
    return replace(settings, log_level=settings.log_level.upper())


def _toml_path(env: dict[str, str]) -> Path | None:
    if "PRIVET_CONFIG" in env:
        path = Path(env["PRIVET_CONFIG"]).expanduser()
        if not path.is_file():
            raise ConfigError(f"PRIVET_CONFIG points to {path}, which is not a file")
        return path
    candidates = [Path("privet.toml"), Path(env.get("PRIVET_HOME", ".privet")).expanduser() / "privet.toml"]
    return next((p for p in candidates if p.is_file()), None)


def load_settings(env: dict[str, str] | None = None) -> Settings:
    """Build the settings from defaults, the TOML file and the environment."""
    env = dict(os.environ if env is None else env)
    settings = Settings()
    path = _toml_path(env)
    if path is not None:
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{path} is not valid TOML ({type(exc).__name__})") from None
        section = data.get("privet", data)
        if not isinstance(section, dict):
            raise ConfigError(f"{path}: [privet] must be a table")
        settings = _from_mapping(settings, section, str(path))
    from_env = {
        name: env[f"PRIVET_{name.upper()}"]
        for name in ("home", "database_url", "master_source", "kms_plugin", "log_level")
        if env.get(f"PRIVET_{name.upper()}")
    }
    return _from_mapping(settings, from_env, "the environment")
