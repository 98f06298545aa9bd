"""Cryptography for privet: the only package that touches primitives (all from ``cryptography``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from privet.lazy import exports

if TYPE_CHECKING:
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

# Names are imported from their modules on first use, so that a part that needs one primitive (the PRG of a
# federated client, the PKI of a server) does not load the keyring, its database layer and every other module.
_HOME = {
    "FF1": "privet.crypto.fpe",
    "Aead": "privet.crypto.keyed",
    "DeterministicAead": "privet.crypto.keyed",
    "KeyedStream": "privet.crypto.keyed",
    "derive_key": "privet.crypto.keyed",
    "keyed_digest": "privet.crypto.keyed",
    "DEFAULT_AEAD": "privet.crypto.keyring",
    "DEFAULT_SIGNING": "privet.crypto.keyring",
    "DataKey": "privet.crypto.keyring",
    "KeyInfo": "privet.crypto.keyring",
    "Keyring": "privet.crypto.keyring",
    "KmsMasterKey": "privet.crypto.master",
    "KmsPlugin": "privet.crypto.master",
    "LocalMasterKey": "privet.crypto.master",
    "MasterKey": "privet.crypto.master",
    "from_env_value": "privet.crypto.master",
    "from_passphrase": "privet.crypto.master",
    "load_kms_plugin": "privet.crypto.master",
    "new_env_value": "privet.crypto.master",
    "new_kdf_params": "privet.crypto.master",
    "SigningKey": "privet.crypto.signing",
    "VerifyKey": "privet.crypto.signing",
    "fingerprint": "privet.crypto.signing",
    "StreamHeader": "privet.crypto.stream",
    "StreamStats": "privet.crypto.stream",
    "decrypt_file": "privet.crypto.stream",
    "decrypt_stream": "privet.crypto.stream",
    "encrypt_file": "privet.crypto.stream",
    "encrypt_stream": "privet.crypto.stream",
    "rewrap_file": "privet.crypto.stream",
}

__getattr__ = exports("privet.crypto", _HOME)
