"""A privet home opened for work: its settings, store, keyring and registry, opened on first use.

The master key is obtained the way the keyring was created (recorded in the store), not the way the
settings say, so a keyring made from a passphrase is never silently opened some other way.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from types import TracebackType

from privet.config import MasterSource, Settings
from privet.crypto.keyring import Keyring
from privet.crypto.master import (
    MasterKey,
    from_env_value,
    from_passphrase,
    load_kms_plugin,
    new_kdf_params,
)
from privet.errors import ConfigError, KeyringError, MasterKeyError
from privet.log import register_secret
from privet.models.registry import Registry
from privet.store import Store

PassphrasePrompt = Callable[[bool], str]  # argument: whether to ask twice (a new passphrase)


class Workspace:
    """Open with ``with Workspace(settings) as ws:``; everything is opened lazily and closed at the end."""

    def __init__(
        self,
        settings: Settings,
        *,
        prompt: PassphrasePrompt | None = None,
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.settings = settings
        self._prompt = prompt
        self._env = os.environ if env is None else env
        self._store: Store | None = None
        self._keyring: Keyring | None = None

    def __enter__(self) -> Workspace:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, value: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.close()

    @property
    def store(self) -> Store:
        if self._store is None:
            self.settings.home.mkdir(parents=True, exist_ok=True, mode=0o700)
            self._store = Store.open(self.settings.resolved_database_url)
        return self._store

    @property
    def keyring(self) -> Keyring:
        """The unlocked keyring; raises if none exists or the master key is wrong."""
        if self._keyring is None:
            meta = Keyring.meta(self.store)
            if meta is None:
                raise KeyringError("no keyring exists yet", "Run 'privet keys init' first.")
            self._keyring = Keyring.unlock(self.store, self._master(meta.master_source, meta.kdf, new=False))
        return self._keyring

    @property
    def registry(self) -> Registry:
        return Registry(self.store, self.settings.registry_dir)

    def initialize_keyring(self, source: MasterSource | None = None, *, scrypt_n: int | None = None) -> Keyring:
        """Create the keyring, its master key from ``source`` (default: the settings)."""
        source = source or self.settings.master_source
        kdf = new_kdf_params(scrypt_n) if source == "passphrase" else None
        self._keyring = Keyring.initialize(self.store, self._master(source, kdf, new=True), kdf)
        return self._keyring

    def close(self) -> None:
        if self._store is not None:
            self._store.close()
            self._store = None
        self._keyring = None

    def _master(self, source: str, kdf: dict | None, *, new: bool) -> MasterKey:
        if source == "passphrase":
            passphrase = self._env.get("PRIVET_PASSPHRASE") or (self._prompt(new) if self._prompt else "")
            if not passphrase:
                raise MasterKeyError("the keyring needs a passphrase and none was given", "Set PRIVET_PASSPHRASE.")
            register_secret(passphrase)
            return from_passphrase(passphrase, kdf or {})
        if source == "env":
            value = self._env.get("PRIVET_MASTER_KEY", "")
            if not value:
                raise MasterKeyError(
                    "the keyring's master key comes from PRIVET_MASTER_KEY, which is not set",
                    "Set it to the base64 of 32 random bytes ('openssl rand -base64 32').",
                )
            register_secret(value)
            return from_env_value(value)
        if source == "kms":
            if not self.settings.kms_plugin:
                raise ConfigError("the keyring's master key is held by a KMS but no kms_plugin is set")
            return load_kms_plugin(self.settings.kms_plugin)
        raise ConfigError(f"master key source {source!r} is not known")
