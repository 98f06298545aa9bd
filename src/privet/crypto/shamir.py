"""Shamir secret sharing (Shamir 1979) over the prime field ``p = 2**31 - 1``, vectorised with numpy.

A secret of ``L`` bytes is cut into ``ceil(L / 2)`` big-endian 16-bit *limbs* (an odd last byte is padded with a
zero byte); each limb is the constant term of its own random polynomial of degree ``threshold - 1`` whose other
coefficients are uniform in the field (``os.urandom`` with rejection sampling, so without modulo bias). Holder
``x`` (a distinct integer in ``1 .. p - 1``; SecAgg+ uses client index + 1) receives every polynomial's value
at ``x``. Any ``threshold`` holders recover the secret by Lagrange interpolation at 0; fewer learn nothing
about it (each limb is perfectly hidden, whatever the limb size).

- :func:`split`: shares of many secrets at once, ``int64 [holders, secrets, limbs]``.
- :func:`combine`: the secrets from the shares of one holder set, ``[t, secrets, limbs]``.
- :func:`combine_many`: one secret per item, each with its own holder set (SecAgg+'s case: each client's secrets
  are held by its own neighbours); Lagrange coefficients are computed once per distinct holder set and every
  item is reconstructed in one vectorised multiply-add.
- :func:`shares_to_bytes` / :func:`shares_from_bytes`: one holder's ``[secrets, limbs]`` block on the wire.

Every product of two field elements is below ``2**62`` and is reduced before the next addition, so int64 never
overflows. A reconstructed limb that does not fit 16 bits means wrong or too few shares and raises
:class:`~privet.errors.IntegrityError`: a share that is wrong as a whole (another holder's, another secret's,
random bytes, or a sharing with too few shares) passes this check with probability about ``2**-15`` per limb
(``2**-240`` for a 32-byte secret). This detects mistakes, not small or crafted changes: an error ``e`` in
holder ``i``'s share shifts the secret by ``lambda_i * e``, which is small for small ``e`` and consecutive
x-coordinates, so a holder can shift the secret undetected. Shares travel authenticated (AEAD between the
clients), and a protocol that can check a reconstructed secret (a private key against its public key) should.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Sequence

import numpy as np

from privet.errors import FormatError, IntegrityError, UsageError

__all__ = [
    "PRIME",
    "combine",
    "combine_many",
    "limbs_for",
    "shares_from_bytes",
    "shares_to_bytes",
    "split",
]

PRIME = 2**31 - 1  # Mersenne prime: field elements fit 31 bits, products of two fit int64
_P = np.int64(PRIME)
_LIMB_BITS = 16
_LIMB_BYTES = 2
_LIMB_BOUND = 1 << _LIMB_BITS
_MAGIC = b"PSH1"  # privet shares, format 1
_HEADER = struct.Struct(">4sII")  # magic, secrets, limbs
_WIRE = np.dtype(">u4")


def limbs_for(length: int) -> int:
    """How many 16-bit limbs a secret of ``length`` bytes takes."""
    return (length + _LIMB_BYTES - 1) // _LIMB_BYTES


def split(secrets: Sequence[bytes], threshold: int, holders: Sequence[int]) -> np.ndarray:
    """Shares of every secret for every holder: int64 ``[len(holders), len(secrets), limbs]``.

    All secrets must have the same non-zero length; ``holders`` are distinct x-coordinates in ``1 .. p - 1``;
    any ``threshold`` of them (``1 <= threshold <= len(holders)``) reconstruct each secret.
    """
    xs = _holders(holders)
    if isinstance(threshold, bool) or not isinstance(threshold, int | np.integer) or not 1 <= threshold <= xs.size:
        raise UsageError(
            f"threshold {threshold!r} is not between 1 and the {xs.size} holders",
            "Pick a threshold no larger than the number of holders.",
        )
    limbs = _limbs_of(secrets)  # [m, L]
    m, width = limbs.shape
    # Horner's rule from the highest coefficient down; the constant term (the limb) is added last.
    coefficients = _field_elements((int(threshold) - 1) * m * width).reshape(int(threshold) - 1, m, width)
    x = xs[:, None, None]
    acc = np.zeros((xs.size, m, width), dtype=np.int64)
    for k in range(int(threshold) - 2, -1, -1):
        acc = (acc + coefficients[k]) * x % _P
    return (acc + limbs) % _P


def combine(shares: np.ndarray, holders: Sequence[int], *, length: int | None = None) -> list[bytes]:
    """The secrets behind ``shares`` (``[t, secrets, limbs]``, row ``i`` held by ``holders[i]``).

    Pass exactly ``threshold`` shares per secret (more also reconstruct, only slower). ``length`` is the secret
    length in bytes, by default ``2 * limbs``; give it for secrets of odd length.
    """
    xs = _holders(holders)
    shares = _share_array(shares, 3, "[holders, secrets, limbs]")
    if shares.shape[0] != xs.size:
        raise UsageError(
            f"{shares.shape[0]} rows of shares for {xs.size} holders", "Pass one row of shares per holder."
        )
    lagrange = _lagrange_at_zero(xs[None, :])[0]
    m, width = shares.shape[1:]
    acc = np.zeros((m, width), dtype=np.int64)
    for i in range(xs.size):
        acc = (acc + lagrange[i] * shares[i]) % _P
    return _secrets_of(acc, _length(length, width))


def combine_many(items: Sequence[tuple[np.ndarray, Sequence[int]]], *, length: int | None = None) -> list[bytes]:
    """One secret per item ``(shares [k, limbs], holders)``, each from its own holder set, in item order.

    Lagrange coefficients are computed once per distinct holder set (as a set: row order is free), and all items
    with the same share count are reconstructed together. Every secret has ``length`` bytes (default
    ``2 * limbs``).
    """
    if not items:
        return []
    width: int | None = None
    rows: list[np.ndarray] = []
    keys: list[tuple[int, ...]] = []
    for shares, holders in items:
        xs = _holders(holders)
        block = _share_array(shares, 2, "[holders, limbs]")
        if block.shape[0] != xs.size:
            raise UsageError(
                f"{block.shape[0]} rows of shares for {xs.size} holders", "Pass one row of shares per holder."
            )
        if width is None:
            width = block.shape[1]
        elif block.shape[1] != width:
            raise UsageError("the items' secrets have different lengths", "Combine secrets of one length at a time.")
        # Sort rows by x so that the same holders in another order share one set of coefficients.
        order = np.argsort(xs, kind="stable")
        rows.append(block[order])
        keys.append(tuple(xs[order].tolist()))
    assert width is not None
    size = _length(length, width)

    # Distinct holder sets, grouped by size so each group's x-coordinates stack into one matrix.
    set_index: dict[tuple[int, ...], int] = {}
    for key in keys:
        set_index.setdefault(key, len(set_index))
    coefficients: dict[tuple[int, ...], np.ndarray] = {}
    by_size: dict[int, list[tuple[int, ...]]] = {}
    for key in set_index:
        by_size.setdefault(len(key), []).append(key)
    for group in by_size.values():
        lagrange = _lagrange_at_zero(np.array(group, dtype=np.int64))
        coefficients.update(zip(group, lagrange, strict=True))

    out: list[bytes] = [b""] * len(rows)
    items_by_size: dict[int, list[int]] = {}
    for n, key in enumerate(keys):
        items_by_size.setdefault(len(key), []).append(n)
    for k, members in items_by_size.items():
        stacked = np.stack([rows[n] for n in members])  # [N, k, L]
        lagrange = np.stack([coefficients[keys[n]] for n in members])  # [N, k]
        acc = np.zeros((len(members), width), dtype=np.int64)
        for i in range(k):
            acc = (acc + lagrange[:, i, None] * stacked[:, i, :]) % _P
        for n, secret in zip(members, _secrets_of(acc, size), strict=True):
            out[n] = secret
    return out


def shares_to_bytes(shares: np.ndarray) -> bytes:
    """One holder's shares ``[secrets, limbs]`` as bytes: a 12-byte header, then big-endian uint32 values."""
    block = _share_array(shares, 2, "[secrets, limbs]")
    return _HEADER.pack(_MAGIC, *block.shape) + block.astype(_WIRE).tobytes()


def shares_from_bytes(data: bytes) -> np.ndarray:
    """Invert :func:`shares_to_bytes`: int64 ``[secrets, limbs]``; raises :class:`FormatError` on malformed bytes."""
    if not isinstance(data, bytes | bytearray | memoryview) or len(data) < _HEADER.size:
        raise FormatError("a share block is shorter than its header")
    magic, m, width = _HEADER.unpack_from(data)
    if magic != _MAGIC:
        raise FormatError("bytes are not a privet share block")
    if len(data) != _HEADER.size + 4 * m * width:
        raise FormatError(f"a share block of {m} x {width} values has {len(data)} bytes")
    values = np.frombuffer(data, dtype=_WIRE, offset=_HEADER.size).astype(np.int64).reshape(m, width)
    if values.size and int(values.max()) >= PRIME:
        raise FormatError("a share block holds a value outside the field")
    return values


# -- helpers -------------------------------------------------------------------------------------------------------


def _holders(holders: Sequence[int]) -> np.ndarray:
    values = list(holders)
    if not values:
        raise UsageError("no holders given", "Pass at least one holder x-coordinate (client index + 1).")
    for x in values:
        if isinstance(x, bool) or not isinstance(x, int | np.integer) or not 1 <= x < PRIME:
            raise UsageError(
                f"holder {x!r} is not an integer in 1 .. 2**31 - 2", "Use client index + 1 as the x-coordinate."
            )
    xs = np.array(values, dtype=np.int64)
    if np.unique(xs).size != xs.size:
        raise UsageError("holders repeat an x-coordinate", "Give each holder a distinct x-coordinate.")
    return xs


def _limbs_of(secrets: Sequence[bytes]) -> np.ndarray:
    items = list(secrets)
    if not items:
        raise UsageError("no secrets given", "Pass at least one secret.")
    if not all(isinstance(s, bytes | bytearray) for s in items):
        raise UsageError("secrets must be bytes", "Pass each secret as bytes.")
    length = len(items[0])
    if length == 0 or any(len(s) != length for s in items):
        raise UsageError("secrets must be non-empty and all of one length", "Split secrets of one length at a time.")
    pad = b"\x00" * (-length % _LIMB_BYTES)
    joined = b"".join(bytes(s) + pad for s in items)
    return np.frombuffer(joined, dtype=">u2").astype(np.int64).reshape(len(items), limbs_for(length))


def _secrets_of(limbs: np.ndarray, length: int) -> list[bytes]:
    if limbs.size and int(limbs.max()) >= _LIMB_BOUND:
        raise IntegrityError(
            "a reconstructed secret does not decode: wrong shares, or fewer than the threshold",
            "Combine exactly threshold shares, each from the holder it is labelled with.",
        )
    raw = limbs.astype(">u2").tobytes()
    width = limbs.shape[-1] * _LIMB_BYTES
    secrets = [raw[i : i + width] for i in range(0, len(raw), width)]
    if length < width:
        if limbs.size and bool((limbs[..., -1] & 0xFF).any()):  # the pad byte of an odd-length secret is zero
            raise IntegrityError(
                "a reconstructed secret does not decode: wrong shares, or fewer than the threshold",
                "Combine exactly threshold shares, each from the holder it is labelled with.",
            )
        secrets = [s[:length] for s in secrets]
    return secrets


def _length(length: int | None, width: int) -> int:
    if length is None:
        return width * _LIMB_BYTES
    if isinstance(length, bool) or not isinstance(length, int) or length < 1 or limbs_for(length) != width:
        raise UsageError(
            f"a secret of {length!r} bytes does not take {width} limbs", "Pass the length the secrets were split with."
        )
    return length


def _share_array(shares: np.ndarray, ndim: int, shape: str) -> np.ndarray:
    array = np.asarray(shares)
    if array.ndim != ndim or array.dtype.kind not in "iu" or 0 in array.shape[1:]:
        raise UsageError(f"shares must be an integer array {shape}, got {array.dtype} {array.shape}")
    array = array.astype(np.int64, copy=False)
    if array.size and (int(array.min()) < 0 or int(array.max()) >= PRIME):
        raise UsageError("shares hold values outside the field 0 .. 2**31 - 2", "Pass shares as split made them.")
    return array


def _field_elements(n: int) -> np.ndarray:
    """``n`` independent uniform elements of the field, from ``os.urandom``, exactly (no modulo bias).

    Each draw keeps 31 random bits and rejects the single value ``2**31 - 1 = p``: acceptance is ``1 - 2**-31``.
    """
    out = np.empty(n, dtype=np.int64)
    filled = 0
    while filled < n:
        need = n - filled
        draws = np.frombuffer(os.urandom(4 * need), dtype="<u4") & np.uint32(PRIME)
        kept = draws[draws != PRIME][:need]
        out[filled : filled + kept.size] = kept
        filled += kept.size
    return out


def _mul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return a * b % _P


def _inverse(a: np.ndarray) -> np.ndarray:
    """Elementwise ``a**(p - 2) mod p`` (Fermat): the inverse of every non-zero element, vectorised."""
    result = np.ones_like(a)
    base = a % _P
    exponent = PRIME - 2
    while exponent:
        if exponent & 1:
            result = _mul(result, base)
        base = _mul(base, base)
        exponent >>= 1
    return result


def _lagrange_at_zero(xs: np.ndarray) -> np.ndarray:
    """Row-wise Lagrange coefficients at 0, ``prod_{j != i} x_j / (x_j - x_i)``, for distinct x's ``[G, k]``."""
    groups, k = xs.shape
    numerator = np.ones((groups, k), dtype=np.int64)
    denominator = np.ones((groups, k), dtype=np.int64)
    diagonal = np.eye(k, dtype=bool)
    for j in range(k):
        xj = xs[:, j, None]  # [G, 1]
        skip = diagonal[j][None, :]  # factor j is left out of coefficient j
        numerator = np.where(skip, numerator, _mul(numerator, xj))
        denominator = np.where(skip, denominator, _mul(denominator, (xj - xs) % _P))
    return _mul(numerator, _inverse(denominator))
