"""Master keys: what wraps the keyring's data keys. Never stored; derived or fetched each time.

Three sources:
- ``passphrase``: scrypt over a passphrase (``PRIVET_PASSPHRASE`` or a prompt), salt and cost in the store;
- ``env``: 32 random bytes, base64, in ``PRIVET_MASTER_KEY`` (what a secret manager injects);
- ``kms``: a plug-in object with ``wrap(plaintext, context) -> bytes`` and ``unwrap(blob, context) -> bytes``
  (a cloud KMS or an HSM), named ``module:attribute`` in the ``kms_plugin`` setting.
"""

from __future__ import annotations

import base64
import binascii
import importlib
import os
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from privet.crypto.keyed import Aead
from privet.errors import ConfigError, IntegrityError, MasterKeyError

SCRYPT_DEFAULT = {"n": 2**17, "r": 8, "p": 1}  # 128 MiB, about 0.3 s: OWASP's scrypt recommendation
SCRYPT_MIN_N, SCRYPT_MAX_N = 2**14, 2**22


@runtime_checkable
class KmsPlugin(Protocol):
    """What a KMS plug-in provides. ``context`` must be bound to the ciphertext (AAD) by the KMS."""

    def wrap(self, plaintext: bytes, context: bytes) -> bytes: ...

    def unwrap(self, blob: bytes, context: bytes) -> bytes: ...


class MasterKey(Protocol):
    """Wraps and unwraps small secrets (data keys) with authenticated context."""

    source: str

    def wrap(self, plaintext: bytes, context: bytes) -> bytes: ...

    def unwrap(self, blob: bytes, context: bytes) -> bytes: ...


@dataclass(frozen=True, repr=False)
class LocalMasterKey:
    """A 256-bit key held in memory; wraps with AES-256-GCM and a random nonce."""

    key: bytes
    source: str

    def __post_init__(self) -> None:
        if len(self.key) != 32:
            raise MasterKeyError(
                "the master key must be 32 bytes", "Generate one with 'privet keys init --print-master-key'."
            )

    def __repr__(self) -> str:
        return f"LocalMasterKey(source={self.source!r}, key=<secret>)"

    def wrap(self, plaintext: bytes, context: bytes) -> bytes:
        return Aead(self.key).seal(plaintext, context)

    def unwrap(self, blob: bytes, context: bytes) -> bytes:
        try:
            return Aead(self.key).open(blob, context)
        except IntegrityError:
            raise MasterKeyError("the master key does not open this keyring") from None


@dataclass(frozen=True)
class KmsMasterKey:
    """Delegates wrapping to a KMS plug-in; the key never leaves the KMS."""

    plugin: KmsPlugin
    source: str = "kms"

    def wrap(self, plaintext: bytes, context: bytes) -> bytes:
        try:
            return self.plugin.wrap(plaintext, context)
        except MasterKeyError:
            raise
        except Exception as exc:  # a plug-in's own errors must not leak key material or tracebacks
            raise MasterKeyError(f"the KMS plug-in refused to wrap ({type(exc).__name__})") from None

    def unwrap(self, blob: bytes, context: bytes) -> bytes:
        try:
            return self.plugin.unwrap(blob, context)
        except MasterKeyError:
            raise
        except Exception as exc:  # a plug-in's own errors must not leak key material or tracebacks
            raise MasterKeyError(f"the KMS plug-in refused to unwrap ({type(exc).__name__})") from None


def from_passphrase(passphrase: str, kdf: dict) -> LocalMasterKey:
    """Derive the master key from a passphrase with the stored scrypt salt and cost."""
    if not passphrase:
        raise MasterKeyError("the passphrase is empty")
    damaged = MasterKeyError("the keyring's scrypt parameters are damaged", "Restore the database from a backup.")
    try:
        salt = base64.b64decode(kdf["salt"], validate=True)
        n, r, p = int(kdf["n"]), int(kdf["r"]), int(kdf["p"])
    except (KeyError, ValueError, TypeError, binascii.Error):
        raise damaged from None
    # Bounds keep a damaged or hostile row from demanding unbounded memory or time.
    if (
        len(salt) < 16
        or not (SCRYPT_MIN_N <= n <= SCRYPT_MAX_N and n & (n - 1) == 0)
        or not (1 <= r <= 32 and 1 <= p <= 16)
    ):
        raise damaged
    try:
        key = Scrypt(salt=salt, length=32, n=n, r=r, p=p).derive(passphrase.encode("utf-8"))
    except (ValueError, MemoryError):
        raise damaged from None
    return LocalMasterKey(key, "passphrase")


def new_kdf_params(n: int | None = None) -> dict:
    """Fresh scrypt parameters with a random salt."""
    params = dict(SCRYPT_DEFAULT)
    if n is not None:
        params["n"] = n
    return {"alg": "scrypt", "salt": base64.b64encode(os.urandom(16)).decode(), **params}


def from_env_value(value: str) -> LocalMasterKey:
    """Parse ``PRIVET_MASTER_KEY``: base64 (standard or URL-safe) of exactly 32 bytes."""
    try:
        key = base64.b64decode(value.strip().replace("-", "+").replace("_", "/"), validate=True)
    except (binascii.Error, ValueError):
        raise MasterKeyError(
            "PRIVET_MASTER_KEY is not valid base64",
            "Set it to the base64 of 32 random bytes ('openssl rand -base64 32').",
        ) from None
    if len(key) != 32:
        raise MasterKeyError(
            f"PRIVET_MASTER_KEY decodes to {len(key)} bytes, not 32",
            "Set it to the base64 of 32 random bytes ('openssl rand -base64 32').",
        )
    return LocalMasterKey(key, "env")


def new_env_value() -> str:
    """A fresh random master key in the form PRIVET_MASTER_KEY expects."""
    return base64.b64encode(os.urandom(32)).decode()


def load_kms_plugin(spec: str) -> KmsMasterKey:
    """Import ``module:attribute``; a class is instantiated with no arguments."""
    module_name, _, attribute = spec.partition(":")
    if not module_name or not attribute:
        raise ConfigError(f"kms_plugin {spec!r} is not of the form 'module:attribute'")
    try:
        target = getattr(importlib.import_module(module_name), attribute)
        plugin = target() if isinstance(target, type) else target
    except (ImportError, AttributeError):
        raise ConfigError(f"kms_plugin {spec!r} cannot be imported", "Install the plug-in's package.") from None
    except Exception as exc:  # a plug-in that fails to start must not surface as a traceback
        raise ConfigError(f"kms_plugin {spec!r} failed to start ({type(exc).__name__})") from None
    if not isinstance(plugin, KmsPlugin):
        raise ConfigError(f"kms_plugin {spec!r} has no wrap() and unwrap() methods")
    return KmsMasterKey(plugin)
