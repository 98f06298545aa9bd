"""Keyed symmetric primitives for the layers above ``crypto``, each behind one small, safe call.

- :func:`derive_key`: HKDF-SHA256 (RFC 5869); with no salt, HKDF uses a zero-filled one. One key, many
  independent sub-keys, told apart by ``info``.
- :func:`keyed_digest`: HMAC-SHA256 (RFC 2104), the 32-byte tag of a message under a key: keyed hashes,
  lookup hashes, keyed offsets.
- :class:`KeyedStream`: an unbounded deterministic byte stream, ``HMAC(seed, counter)`` for counters 0, 1, ...
  (64-bit big-endian) with ``seed = HMAC(key, message)``: the same key and message give the same bytes, and
  without the key they are indistinguishable from random.
- :class:`DeterministicAead`: AES-SIV (RFC 5297), deterministic authenticated encryption: the same plaintext and
  associated data give the same ciphertext, which is what consistent tokens need.
- :class:`Aead`: AES-256-GCM with a fresh random 96-bit nonce per message, returned as ``nonce || ciphertext ||
  tag``.

Every primitive comes from ``cryptography``. A failed authentication raises
:class:`~privet.errors.IntegrityError` (never ``cryptography``'s own exceptions); messages carry no key or data.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, hmac
from cryptography.hazmat.primitives.ciphers.aead import AESGCM, AESSIV
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from privet.errors import IntegrityError, UsageError

__all__ = ["DIGEST_SIZE", "NONCE_SIZE", "Aead", "DeterministicAead", "KeyedStream", "derive_key", "keyed_digest"]

DIGEST_SIZE = 32  # HMAC-SHA256 output
NONCE_SIZE = 12  # AES-GCM nonce
_SIV_KEY_SIZES = (32, 48, 64)  # AES-SIV: two AES-128, -192 or -256 keys


def derive_key(material: bytes, info: bytes, length: int = 32, *, salt: bytes | None = None) -> bytes:
    """``length`` bytes of HKDF-SHA256 from ``material``, bound to ``info`` (and ``salt``, when given)."""
    return HKDF(algorithm=hashes.SHA256(), length=length, salt=salt, info=info).derive(material)


def keyed_digest(key: bytes, message: bytes) -> bytes:
    """HMAC-SHA256 of ``message`` under ``key`` (32 bytes)."""
    mac = hmac.HMAC(key, hashes.SHA256())
    mac.update(message)
    return mac.finalize()


class KeyedStream:
    """Deterministic pseudo-random bytes bound to ``key`` and ``message``: HMAC-SHA256 in counter mode."""

    __slots__ = ("_counter", "_pool", "_seed")

    def __init__(self, key: bytes, message: bytes) -> None:
        self._seed = keyed_digest(key, message)
        self._counter = 0
        self._pool = b""

    def __repr__(self) -> str:
        return "KeyedStream(<secret>)"

    def read(self, n: int) -> bytes:
        """The next ``n`` bytes of the stream."""
        while len(self._pool) < n:
            self._pool += keyed_digest(self._seed, self._counter.to_bytes(8, "big"))
            self._counter += 1
        out, self._pool = self._pool[:n], self._pool[n:]
        return out


class DeterministicAead:
    """AES-SIV with a 32-, 48- or 64-byte key: deterministic, authenticated, misuse-resistant."""

    __slots__ = ("_siv",)

    def __init__(self, key: bytes) -> None:
        if not isinstance(key, bytes | bytearray) or len(key) not in _SIV_KEY_SIZES:
            raise UsageError("an AES-SIV key must be 32, 48 or 64 bytes")
        self._siv = AESSIV(bytes(key))

    def __repr__(self) -> str:
        return "DeterministicAead(key=<secret>)"

    def encrypt(self, plaintext: bytes, associated_data: Sequence[bytes] = ()) -> bytes:
        """The synthetic IV (16 bytes) followed by the ciphertext; each associated-data item is authenticated."""
        return self._siv.encrypt(plaintext, list(associated_data) or None)

    def decrypt(self, ciphertext: bytes, associated_data: Sequence[bytes] = ()) -> bytes:
        """Invert :meth:`encrypt`; raises :class:`IntegrityError` if anything was altered or the key differs."""
        try:
            return self._siv.decrypt(ciphertext, list(associated_data) or None)
        except (InvalidTag, ValueError):
            raise IntegrityError("a deterministically encrypted value failed verification") from None


class Aead:
    """AES-256-GCM with a random 96-bit nonce per message, carried in front of the ciphertext.

    Random nonces are safe for up to about 2**32 messages under one key; derive per-purpose keys with
    :func:`derive_key` rather than sharing one key widely.
    """

    __slots__ = ("_gcm",)

    def __init__(self, key: bytes) -> None:
        if not isinstance(key, bytes | bytearray) or len(key) != 32:
            raise UsageError("an AES-256-GCM key must be 32 bytes")
        self._gcm = AESGCM(bytes(key))

    def __repr__(self) -> str:
        return "Aead(key=<secret>)"

    def seal(self, plaintext: bytes, associated_data: bytes | None = None) -> bytes:
        """``nonce || ciphertext || tag`` of ``plaintext``, bound to ``associated_data``."""
        nonce = os.urandom(NONCE_SIZE)
        return nonce + self._gcm.encrypt(nonce, plaintext, associated_data)

    def open(self, sealed: bytes, associated_data: bytes | None = None) -> bytes:
        """Invert :meth:`seal`; raises :class:`IntegrityError` if anything was altered or the key differs."""
        try:
            return self._gcm.decrypt(sealed[:NONCE_SIZE], sealed[NONCE_SIZE:], associated_data)
        except (InvalidTag, ValueError):
            raise IntegrityError("an encrypted value failed verification") from None
