"""Masks for secure aggregation: seed derivation, mask expansion, and dense bit packing of masked values.

- :func:`pair_seed` / :func:`self_seed`: HKDF-SHA256 (RFC 5869) seeds with explicit ``info`` labels that bind the
  round and the client indices, so that no seed is ever used in two rounds or for two pairs. ``pair_seed`` is
  symmetric in its two clients: both ends of a pair derive the same seed; by convention the lower index adds the
  pair mask and the higher one subtracts it, so the pair's masks cancel in the sum.
- :func:`expand`: ``count`` values uniform in ``[0, 2**bits)`` from a 32-byte seed: the AES-256-CTR keystream
  of the seed (zero initial counter block), read as little-endian uint32 words and masked to ``bits`` bits.
  The zero counter block is safe because a seed keys exactly one stream: callers pass derived seeds only.
- :func:`pack` / :func:`unpack`: ``b``-bit values as a dense little-endian bit stream (value ``i``'s bit ``j`` is
  stream bit ``i * b + j``; stream bit ``k`` is bit ``k % 8`` of byte ``k // 8``), zero padding in the last
  byte; ``unpack`` refuses any other length or a non-zero padding with :class:`~privet.errors.FormatError`.

Every primitive comes from ``cryptography``; the derivations reuse :func:`privet.crypto.keyed.derive_key`.
"""

from __future__ import annotations

import struct

import numpy as np
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from privet.crypto.keyed import derive_key
from privet.errors import FormatError, UsageError

__all__ = ["SEED_SIZE", "expand", "pack", "packed_size", "pair_seed", "self_seed", "unpack"]

SEED_SIZE = 32  # AES-256 key
_SECRET_SIZE = 32  # X25519 shared secrets and SecAgg self-mask seeds are 32 bytes
_ZERO_COUNTER = bytes(16)
_PAIR_LABEL = b"privet.crypto.masks pair v1"
_SELF_LABEL = b"privet.crypto.masks self v1"
_INDEX = struct.Struct(">Q")


def expand(seed: bytes, count: int, bits: int) -> np.ndarray:
    """``count`` uint32 values uniform in ``[0, 2**bits)`` (``1 <= bits <= 32``): AES-256-CTR keystream of ``seed``."""
    if not isinstance(seed, bytes | bytearray) or len(seed) != SEED_SIZE:
        raise UsageError(f"a mask seed must be {SEED_SIZE} bytes", "Derive it with pair_seed or self_seed.")
    count = _count(count)
    bits = _bits(bits)
    encryptor = Cipher(algorithms.AES256(bytes(seed)), modes.CTR(_ZERO_COUNTER)).encryptor()
    # CTR encryption of zeros is the keystream itself.
    words = np.frombuffer(encryptor.update(bytes(4 * count)), dtype="<u4")
    return (words & np.uint32((1 << bits) - 1)).astype(np.uint32, copy=False)


def pair_seed(shared_secret: bytes, round_id: bytes, a: int, b: int) -> bytes:
    """The mask seed of clients ``a`` and ``b`` (``a != b``, either order) in round ``round_id``.

    ``shared_secret`` is their 32-byte key agreement output (X25519); ``round_id`` is the round's unique,
    non-empty identifier.
    """
    secret = _secret(shared_secret, "shared secret")
    lo, hi = sorted((_index(a), _index(b)))
    if lo == hi:
        raise UsageError("a pair mask needs two different clients", "Pass the two clients' indices.")
    return derive_key(secret, _PAIR_LABEL + _round(round_id) + _INDEX.pack(lo) + _INDEX.pack(hi), SEED_SIZE)


def self_seed(secret: bytes, round_id: bytes, client: int) -> bytes:
    """The self-mask seed of ``client`` in round ``round_id``, from its 32-byte secret (the value it shares)."""
    return derive_key(_secret(secret, "self-mask secret"), _SELF_LABEL + _round(round_id) + _INDEX.pack(_index(client)))


def packed_size(count: int, bits: int) -> int:
    """Bytes that :func:`pack` makes of ``count`` values of ``bits`` bits."""
    return (_count(count) * _bits(bits) + 7) // 8


def pack(values: np.ndarray, bits: int) -> bytes:
    """A 1-D array of integers in ``[0, 2**bits)`` as ``ceil(len * bits / 8)`` bytes; see the module doc."""
    bits = _bits(bits)
    array = np.asarray(values)
    if array.ndim != 1 or array.dtype.kind not in "iu":
        raise UsageError(f"pack needs a 1-D integer array, got {array.dtype} {array.shape}")
    if array.size and (int(array.min()) < 0 or int(array.max()) >= 1 << bits):
        raise UsageError(f"a value does not fit {bits} bits", "Reduce the values modulo 2**bits before packing.")
    words = array.astype("<u4", copy=False)
    if bits == 32:
        return words.tobytes()
    # Each value's bits, least significant first, keep the low `bits` columns, then pack the stream.
    columns = np.unpackbits(words.view(np.uint8).reshape(-1, 4), axis=1, bitorder="little")[:, :bits]
    return np.packbits(columns.reshape(-1), bitorder="little").tobytes()


def unpack(data: bytes, bits: int, count: int) -> np.ndarray:
    """Invert :func:`pack`: ``count`` uint32 values; raises :class:`FormatError` on a wrong length or padding."""
    bits = _bits(bits)
    count = _count(count)
    if not isinstance(data, bytes | bytearray | memoryview):
        raise UsageError("unpack needs bytes")
    expected = (count * bits + 7) // 8
    if len(data) != expected:
        raise FormatError(f"{count} packed values of {bits} bits take {expected} bytes, got {len(data)}")
    raw = np.frombuffer(data, dtype=np.uint8)
    if bits == 32:
        return raw.view("<u4").astype(np.uint32)
    stream = np.unpackbits(raw, bitorder="little")
    if stream[count * bits :].any():
        raise FormatError("packed values have non-zero padding bits")
    columns = np.zeros((count, 32), dtype=np.uint8)
    columns[:, :bits] = stream[: count * bits].reshape(count, bits)
    return np.packbits(columns, axis=1, bitorder="little").view("<u4").reshape(count).astype(np.uint32)


def _bits(bits: int) -> int:
    if isinstance(bits, bool) or not isinstance(bits, int | np.integer) or not 1 <= bits <= 32:
        raise UsageError(f"bits {bits!r} is not between 1 and 32", "Use the modulus bits of the quantizer.")
    return int(bits)


def _count(count: int) -> int:
    if isinstance(count, bool) or not isinstance(count, int | np.integer) or count < 0:
        raise UsageError(f"count {count!r} is not a non-negative integer", "Pass the number of values.")
    return int(count)


def _index(client: int) -> int:
    if isinstance(client, bool) or not isinstance(client, int | np.integer) or not 0 <= client < 1 << 64:
        raise UsageError(f"client index {client!r} is not a non-negative 64-bit integer")
    return int(client)


def _round(round_id: bytes) -> bytes:
    if not isinstance(round_id, bytes | bytearray) or not 1 <= len(round_id) <= 255:
        raise UsageError("a round id must be 1 to 255 bytes", "Pass the round's unique identifier as bytes.")
    # Length-prefixed so that the round id and the indices after it cannot be confused.
    return bytes([len(round_id)]) + bytes(round_id)


def _secret(secret: bytes, what: str) -> bytes:
    if not isinstance(secret, bytes | bytearray) or len(secret) != _SECRET_SIZE:
        raise UsageError(f"a {what} must be {_SECRET_SIZE} bytes")
    return bytes(secret)
