"""Cryptography for privet: the only package that touches primitives (all from ``cryptography``)."""

from privet.crypto.fpe import FF1
from privet.crypto.keyed import Aead, DeterministicAead, KeyedStream, derive_key, keyed_digest
from privet.crypto.keyring import DEFAULT_AEAD, DEFAULT_SIGNING, DataKey, KeyInfo, Keyring
from privet.crypto.master import (
    KmsMasterKey,
    KmsPlugin,
    LocalMasterKey,
    MasterKey,
    from_env_value,
    from_passphrase,
    load_kms_plugin,
    new_env_value,
    new_kdf_params,
)
from privet.crypto.signing import SigningKey, VerifyKey, fingerprint
from privet.crypto.stream import (
    StreamHeader,
    StreamStats,
    decrypt_file,
    decrypt_stream,
    encrypt_file,
    encrypt_stream,
    rewrap_file,
)

__all__ = [
    "DEFAULT_AEAD",
    "DEFAULT_SIGNING",
    "FF1",
    "Aead",
    "DataKey",
    "DeterministicAead",
    "KeyInfo",
    "KeyedStream",
    "Keyring",
    "KmsMasterKey",
    "KmsPlugin",
    "LocalMasterKey",
    "MasterKey",
    "SigningKey",
    "StreamHeader",
    "StreamStats",
    "VerifyKey",
    "decrypt_file",
    "decrypt_stream",
    "derive_key",
    "encrypt_file",
    "encrypt_stream",
    "fingerprint",
    "from_env_value",
    "from_passphrase",
    "keyed_digest",
    "load_kms_plugin",
    "new_env_value",
    "new_kdf_params",
    "rewrap_file",
]
