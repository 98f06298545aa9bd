"""Ed25519 signatures and public-key fingerprints."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from privet.errors import IntegrityError, UsageError

SIGNATURE_SIZE = 64


def fingerprint(public_raw: bytes) -> str:
    """A short, stable name for a public key: ``ed25519:`` and 32 hex digits of its SHA-256."""
    return "ed25519:" + hashlib.sha256(public_raw).hexdigest()[:32]


@dataclass(frozen=True)
class VerifyKey:
    """A public key trusted under a name and version (from the keyring or a PEM file)."""

    name: str
    version: int
    public: Ed25519PublicKey

    @property
    def raw(self) -> bytes:
        return self.public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)

    @property
    def fingerprint(self) -> str:
        return fingerprint(self.raw)

    def verify(self, signature: bytes, message: bytes) -> None:
        try:
            self.public.verify(signature, message)
        except InvalidSignature:
            raise IntegrityError(f"the signature does not verify under {self.name} v{self.version}") from None

    def pem(self) -> str:
        return self.public.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        ).decode()

    @classmethod
    def from_pem(cls, data: bytes, name: str = "external") -> VerifyKey:
        try:
            public = serialization.load_pem_public_key(data)
        except ValueError:
            raise UsageError("the trusted key file is not a PEM public key") from None
        if not isinstance(public, Ed25519PublicKey):
            raise UsageError("the trusted key file is not an Ed25519 public key")
        return cls(name, 0, public)


@dataclass(frozen=True, repr=False)
class SigningKey:
    """An Ed25519 private key from the keyring, with the name and version it is known by."""

    name: str
    version: int
    private: Ed25519PrivateKey

    def __repr__(self) -> str:
        return f"SigningKey(name={self.name!r}, version={self.version}, private=<secret>)"

    @property
    def verify_key(self) -> VerifyKey:
        return VerifyKey(self.name, self.version, self.private.public_key())

    def sign(self, message: bytes) -> bytes:
        return self.private.sign(message)
