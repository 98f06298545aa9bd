"""Homomorphic aggregation of updates with CKKS (TenSEAL): an alternative to the masking of :mod:`.protocol`.

Pure functions on bytes; the transport carries them. A round:

1. every client encrypts its float update (:func:`encrypt`) and sends the ciphertext to the server;
2. the server adds the ciphertexts of whoever answered (:func:`add`), with the public context only;
3. one surviving client decrypts the sum (:func:`decrypt`) and returns it to the server.

Key model. Every client of the federation holds the same secret key, made once at provisioning
(:meth:`HEKeys.generate`, shipped to clients as :meth:`HEKeys.secret_bytes`) and never given to the server, which
holds only the public context (:meth:`HEKeys.public_bytes`: the parameters, no key at all, since encryption is
symmetric). Consequences:

- a client colluding with the server can decrypt every individual update, so this is weaker than SecAgg+, which
  holds against a bounded number of colluding clients; one leaked client key exposes the whole federation;
- the server is trusted to be semi-honest: a client cannot tell a sum from a single client's ciphertext, so a
  server that asks for a single ciphertext to be decrypted learns that update;
- dropouts cost nothing: the sum is over whoever answered, with no extra round;
- communication expands a lot: each 4,096 coordinates (at degree 8192) travel as one ciphertext of two
  polynomials of 8,192 coefficients modulo a 60-bit prime, 131,217 bytes serialized, 8.0 times the 16,384 bytes
  of 4,096 float32 values (SecAgg+: about 1.6 times 16-bit inputs).

CKKS is approximate and has no integrity: a modified ciphertext still decrypts, to wrong numbers. Each decrypted
coordinate carries Gaussian error: the flooding noise (standard deviation ``2**-20``, about 9.5e-7, see below)
plus CKKS's own (measured standard deviation 6e-9 for a sum of 1,000 updates), so errors stay below 1e-5, ten
standard deviations, with overwhelming probability; the bound of 1e-4 for sums of 1,000 updates in [-1, 1] holds
with a wide margin.

Noise flooding. A CKKS decryption result, given exactly to whoever holds the ciphertext, reveals the secret key
(Li and Micciancio, Eurocrypt 2021: from the exact result ``m`` of ``c0 + c1 * s``, ``s = (m - c0) / c1``), and
here the server holds the summed ciphertext and receives its decryption. :func:`decrypt` therefore adds fresh
Gaussian noise from privet's CSPRNG to every coordinate before returning it: the server's equation becomes an RLWE
sample ``c1 * s + f`` with error ``f`` of standard deviation about ``2**13.5`` per coefficient, against CKKS's own
noise of at most about ``2**8`` for 4,096 summed updates. Decrypt each round's sum once: averaging many decryptions
of the same ciphertext would average the flood away.

Parameters (:meth:`HEKeys.generate`): ring degree ``N = 8192`` (``N / 2 = 4096`` slots per ciphertext; 4096,
16384 and 32768 are accepted too); coefficient modulus of a 60-bit prime, which ciphertexts carry, and a 40-bit
special prime used only in key switching, which additions never need (TenSEAL insists on it); scale ``2**40``.

- Security: ``log2 Q = 100`` bits, under the Homomorphic Encryption Standard's (Albrecht et al. 2018, ternary
  secret, error 3.2) limit of 218 bits for 128-bit security at ``N = 8192`` (109 at ``N = 4096``); at ``N = 8192``
  it is even under the 256-bit limit of 118.
- Headroom: a decrypted coefficient must stay below ``2**59``, so a sum must stay below ``2**19`` in magnitude;
  :func:`encrypt` refuses coordinates beyond ``MAX_ABS = 64`` and :func:`add` sums of more than
  ``MAX_TERMS = 4096`` updates, which bounds every sum by ``2**18``.
- Precision: at scale ``2**40`` CKKS's own error is ``~2**13 / 2**40`` per coordinate for 1,000 summed updates,
  small enough that the flood dominates it; a smaller prime would shrink ciphertexts (a 45-bit prime at scale
  ``2**32``: 6.7 times instead of 8.0) at the cost of that margin.

Wire format (big-endian): ``"PHK1" | key id (16 bytes) | TenSEAL context`` for keys;
``"PHC1" | key id (16) | terms u32 | length u32 | count u32`` then ``count`` times ``size u32 | TenSEAL CKKS
vector`` for ciphertexts, ``count = ceil(length / slots)``. The key id is random and public: it lets :func:`add`
and :func:`decrypt` refuse a ciphertext made under another federation's key instead of decoding garbage.
"""

from __future__ import annotations

import math
import os
import struct
from collections.abc import Sequence

import numpy as np
import tenseal as ts

from privet.dp.mechanisms import gaussian
from privet.errors import FormatError, IntegrityError, UsageError

__all__ = ["DEGREES", "FLOOD", "MAX_ABS", "MAX_TERMS", "HEKeys", "add", "decrypt", "encrypt"]

DEGREES = (4096, 8192, 16384, 32768)
MAX_ABS = 64.0  # largest |coordinate| encrypt accepts: MAX_ABS * MAX_TERMS = 2**18 < 2**19, the headroom
MAX_TERMS = 4096  # most updates one sum may hold
FLOOD = 2.0**-20  # standard deviation of the noise decrypt adds to each coordinate (see the module docstring)

_SCALE = 2.0**40
_PRIMES = [60, 40]  # data prime (carried by ciphertexts), special prime (key switching only)
_KEYS = struct.Struct(">4s16s")  # magic, key id
_KEYS_MAGIC = b"PHK1"
_HEADER = struct.Struct(">4s16sIII")  # magic, key id, terms, length, count
_MAGIC = b"PHC1"
_SIZE = struct.Struct(">I")
_CLIENT_ONLY = "Decrypt and encrypt on a client, with HEKeys.from_secret_bytes; the server only adds."


class HEKeys:
    """A federation's CKKS context: parameters, a random public key id and, on clients, the secret key.

    Build with :meth:`generate` (at provisioning) or load with :meth:`from_secret_bytes` (clients) or
    :meth:`from_public_bytes` (the server).
    """

    __slots__ = ("_context", "key_id")

    def __init__(self, context: ts.Context, key_id: bytes) -> None:
        """Private: use :meth:`generate` or the loaders, which check the parameters."""
        self._context = context
        self.key_id = key_id

    @classmethod
    def generate(cls, poly_modulus_degree: int = 8192) -> HEKeys:
        """A fresh secret key and context (see the module docstring for the parameters and why)."""
        if isinstance(poly_modulus_degree, bool) or poly_modulus_degree not in DEGREES:
            raise UsageError(
                f"poly_modulus_degree {poly_modulus_degree!r} is not one of {', '.join(map(str, DEGREES))}",
                "Use 8192 unless you have measured another.",
            )
        # Symmetric: every party that encrypts holds the secret key anyway, and the server then gets no key at all.
        context = ts.context(
            ts.SCHEME_TYPE.CKKS,
            int(poly_modulus_degree),
            coeff_mod_bit_sizes=_PRIMES,
            encryption_type=ts.ENCRYPTION_TYPE.SYMMETRIC,
        )
        context.global_scale = _SCALE
        return cls(context, os.urandom(16))

    @classmethod
    def from_secret_bytes(cls, data: bytes) -> HEKeys:
        """Load :meth:`secret_bytes`; :class:`UsageError` if the bytes hold no secret key (the public context)."""
        keys = cls._load(data)
        if not keys.has_secret_key:
            raise UsageError(
                "these HE keys hold no secret key", "Give clients HEKeys.secret_bytes(), not the public context."
            )
        return keys

    @classmethod
    def from_public_bytes(cls, data: bytes) -> HEKeys:
        """Load :meth:`public_bytes`; :class:`UsageError` if the bytes hold the secret key (never on a server)."""
        keys = cls._load(data)
        if keys.has_secret_key:
            raise UsageError(
                "these HE keys hold the secret key, which the server must never have",
                "Give the server HEKeys.public_bytes() and keep the secret bytes on clients.",
            )
        return keys

    @classmethod
    def _load(cls, data: bytes) -> HEKeys:
        if not isinstance(data, bytes | bytearray | memoryview) or len(data) <= _KEYS.size:
            raise FormatError("HE keys are shorter than their header")
        magic, key_id = _KEYS.unpack_from(data)
        if magic != _KEYS_MAGIC:
            raise FormatError("bytes are not privet HE keys")
        try:
            context = ts.context_from(bytes(data[_KEYS.size :]))
            seal = context.seal_context().data
            scheme = seal.first_context_data().parms().scheme()
            degree = seal.first_context_data().parms().poly_modulus_degree()
            data_bits = seal.first_context_data().total_coeff_modulus_bit_count()
            key_bits = seal.key_context_data().total_coeff_modulus_bit_count()
            scale = context.global_scale
        except (ValueError, RuntimeError, TypeError) as exc:  # TenSEAL's parse errors; its text names no secret
            raise FormatError(f"HE keys do not parse as a TenSEAL context ({exc})") from None
        expected = (ts.SCHEME_TYPE.CKKS.value, _PRIMES[0], sum(_PRIMES), _SCALE)
        if (scheme, data_bits, key_bits, scale) != expected or degree not in DEGREES:
            raise FormatError(
                "HE keys are not privet's CKKS parameters",
                "Make keys with HEKeys.generate; other parameters are refused.",
            )
        return cls(context, bytes(key_id))

    @property
    def has_secret_key(self) -> bool:
        return bool(self._context.has_secret_key())

    @property
    def degree(self) -> int:
        return int(self._context.seal_context().data.first_context_data().parms().poly_modulus_degree())

    @property
    def slots(self) -> int:
        """Coordinates per ciphertext: half the ring degree."""
        return self.degree // 2

    def secret_bytes(self) -> bytes:
        """The context with the secret key, for clients only (no relinearisation or Galois keys: unused)."""
        if not self.has_secret_key:
            raise UsageError("these HE keys hold no secret key", "Export secret bytes where the keys were generated.")
        context = self._context.serialize(
            save_public_key=False, save_secret_key=True, save_galois_keys=False, save_relin_keys=False
        )
        return _KEYS.pack(_KEYS_MAGIC, self.key_id) + context

    def public_bytes(self) -> bytes:
        """The context without any key (the parameters only), for the server; checked to hold no secret key."""
        context = self._context.serialize(
            save_public_key=False, save_secret_key=False, save_galois_keys=False, save_relin_keys=False
        )
        if ts.context_from(context).has_secret_key():  # never ship a secret by mistake: check what TenSEAL wrote
            raise IntegrityError(
                "the public HE context came out holding the secret key", "Do not send it; report a bug."
            )
        return _KEYS.pack(_KEYS_MAGIC, self.key_id) + context

    def __repr__(self) -> str:
        kind = "secret" if self.has_secret_key else "public"
        return f"HEKeys(key_id={self.key_id.hex()[:8]}..., degree={self.degree}, {kind})"


def encrypt(vector: np.ndarray, keys: HEKeys) -> bytes:
    """``vector`` (1-D, finite, ``|x| <= MAX_ABS``) as ``ceil(len / slots)`` CKKS ciphertexts in one byte string."""
    if not keys.has_secret_key:
        raise UsageError("encrypting needs the secret key (encryption is symmetric)", _CLIENT_ONLY)
    values = np.asarray(vector)
    if values.ndim != 1 or values.size == 0 or values.dtype.kind not in "iuf":
        raise UsageError(
            f"an update must be a non-empty 1-D real array, got {values.dtype} {values.shape}",
            "Flatten the update (e.g. np.concatenate of the raveled tensors) first.",
        )
    values = values.astype(np.float64, copy=False)
    if not np.isfinite(values).all():
        raise UsageError("an update holds NaN or infinite values", "Drop that update before encrypting it.")
    if float(np.abs(values).max()) > MAX_ABS:
        raise UsageError(
            f"an update has coordinates beyond +-{MAX_ABS:g}, which could overflow the encrypted sum",
            "Clip the update (privet clips to the configured norm) before encrypting it.",
        )
    if values.size >= 1 << 32:
        raise UsageError(f"an update of {values.size} coordinates is too long for one ciphertext frame")
    slots = keys.slots
    count = math.ceil(values.size / slots)
    parts = [_HEADER.pack(_MAGIC, keys.key_id, 1, values.size, count)]
    for start in range(0, values.size, slots):
        blob = ts.ckks_vector(keys._context, values[start : start + slots]).serialize()
        parts += [_SIZE.pack(len(blob)), blob]
    return b"".join(parts)


def add(ciphertexts: Sequence[bytes], public_keys: HEKeys) -> bytes:
    """The homomorphic sum of :func:`encrypt` outputs (or earlier sums); needs only the public context."""
    if not ciphertexts:
        raise UsageError("there are no ciphertexts to add", "Add at least one client's ciphertext.")
    frames = [_parse(c, public_keys) for c in ciphertexts]
    terms, length, _ = frames[0][0]
    for (other_terms, other_length, _), _ in frames[1:]:
        if other_length != length:
            raise FormatError(f"ciphertexts of {length} and {other_length} coordinates cannot be added")
        terms += other_terms
    if terms > MAX_TERMS:
        raise UsageError(
            f"a sum of {terms} updates exceeds the {MAX_TERMS} whose sum is sure not to overflow",
            "Split the round's ciphertexts into groups and decrypt their sums separately.",
        )
    total = [_vector(blob, public_keys, _chunk(length, j, public_keys.slots)) for j, blob in enumerate(frames[0][1])]
    for _, blobs in frames[1:]:
        for j, blob in enumerate(blobs):
            try:
                total[j].add_(_vector(blob, public_keys, _chunk(length, j, public_keys.slots)))
            except (ValueError, RuntimeError) as exc:
                raise FormatError(f"ciphertext chunk {j} cannot be added ({exc})") from None
    parts = [_HEADER.pack(_MAGIC, public_keys.key_id, terms, length, len(total))]
    for vector in total:
        blob = vector.serialize()
        parts += [_SIZE.pack(len(blob)), blob]
    return b"".join(parts)


def decrypt(total: bytes, keys: HEKeys, *, flood: float = FLOOD) -> np.ndarray:
    """The float64 sum (length ``d``) in ``total``, each coordinate with Gaussian noise of deviation ``flood``.

    ``flood`` protects the secret key when the result leaves this client (see the module docstring); pass 0 only
    for a result that stays here. :class:`IntegrityError` if the sum is under another key or decodes to values no
    sum of its updates can reach (wrong key, tampering).
    """
    if not keys.has_secret_key:
        raise UsageError("decrypting needs the secret key", _CLIENT_ONLY)
    if isinstance(flood, bool) or not isinstance(flood, int | float) or not 0 <= flood <= 1e-3:
        raise UsageError(f"flood {flood!r} is not a standard deviation between 0 and 1e-3", "Keep the default.")
    (terms, length, _), blobs = _parse(total, keys)
    values = np.empty(length, dtype=np.float64)
    for j, blob in enumerate(blobs):
        start = j * keys.slots
        end = start + _chunk(length, j, keys.slots)
        values[start:end] = _vector(blob, keys, end - start).decrypt()
    if not np.isfinite(values).all() or float(np.abs(values).max()) > terms * MAX_ABS + 1.0:
        raise IntegrityError(
            f"a ciphertext does not decrypt to a sum of {terms} updates",
            "It was made under another key or modified; discard this round.",
        )
    if flood:
        values += gaussian(float(flood), length)
    return values


def _chunk(length: int, index: int, slots: int) -> int:
    """Coordinates in ciphertext ``index`` of a ``length``-long vector: ``slots``, except for the last."""
    return min(slots, length - index * slots)


def _parse(data: bytes, keys: HEKeys) -> tuple[tuple[int, int, int], list[memoryview]]:
    """((terms, length, count), views of the ciphertext chunks) of a frame, checked against ``keys``."""
    if not isinstance(data, bytes | bytearray | memoryview) or len(data) < _HEADER.size:
        raise FormatError("a CKKS ciphertext is shorter than its header")
    view = memoryview(data)
    magic, key_id, terms, length, count = _HEADER.unpack_from(view)
    if magic != _MAGIC:
        raise FormatError("bytes are not a privet CKKS ciphertext")
    if key_id != keys.key_id:
        raise IntegrityError(
            "a CKKS ciphertext was made under another federation's key",
            "Check that every client and the server were provisioned from the same HEKeys.",
        )
    if not 1 <= terms <= MAX_TERMS or length == 0 or count != math.ceil(length / keys.slots):
        raise FormatError(f"a CKKS ciphertext header is inconsistent ({terms} terms, {length} values, {count} chunks)")
    blobs: list[memoryview] = []
    offset = _HEADER.size
    for _ in range(count):
        if offset + _SIZE.size > len(view):
            raise FormatError("a CKKS ciphertext is truncated")
        (size,) = _SIZE.unpack_from(view, offset)
        offset += _SIZE.size
        if offset + size > len(view):
            raise FormatError("a CKKS ciphertext is truncated")
        blobs.append(view[offset : offset + size])  # copied only when loaded, one chunk at a time
        offset += size
    if offset != len(view):
        raise FormatError(f"a CKKS ciphertext has {len(view) - offset} bytes after its last chunk")
    return (terms, length, count), blobs


def _vector(blob: memoryview, keys: HEKeys, size: int) -> ts.CKKSVector:
    try:
        vector = ts.ckks_vector_from(keys._context, bytes(blob))
    except (ValueError, RuntimeError, TypeError) as exc:
        raise FormatError(f"a CKKS ciphertext chunk does not parse ({exc})") from None
    if vector.size() != size:
        raise FormatError(f"a CKKS ciphertext chunk holds {vector.size()} values, not {size}")
    return vector
