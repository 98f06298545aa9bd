"""Cryptographically secure randomness for privacy noise: an AES-256-CTR keystream.

:class:`Randomness` turns a 256-bit key and a 128-bit initial counter block into a keystream by encrypting zero
bytes with AES-256 in CTR mode (``cryptography``/OpenSSL, AES-NI where the CPU has it). The keystream of a
random key is computationally indistinguishable from uniform bytes, and it is fast (about 1.5 ns per 64-bit
word), which is why privacy noise is drawn from it and never from numpy's Mersenne Twister or PCG64: those are
statistical generators whose state can be recovered from their output, so their "noise" could be predicted and
subtracted.

- :meth:`Randomness.system` takes its key and counter from ``os.urandom`` (the operating system's CSPRNG). A
  forked child process notices the fork and takes a fresh key before its next draw, so parent and child never
  share a stream.
- :meth:`Randomness.for_tests` derives the key from an integer seed with HKDF-SHA256, so a test can replay a
  stream. It is refused with :class:`~privet.errors.UsageError` unless the environment variable
  ``PRIVET_TEST_SEEDS`` is ``"1"``: seeded noise protects nothing, and production code never seeds.
- :func:`default_randomness` is the process-wide generator (created lazily from the OS, thread-safe) that
  privet's mechanisms use when they are not given one.

All methods are thread-safe: one lock guards the keystream, so concurrent callers get disjoint parts of it.
"""

from __future__ import annotations

import os
import sys
import threading

import numpy as np
from cryptography.hazmat.primitives.ciphers import Cipher, CipherContext, algorithms, modes

from privet.crypto.keyed import derive_key
from privet.errors import UsageError

__all__ = ["TEST_SEEDS_ENV", "Randomness", "default_randomness"]

TEST_SEEDS_ENV = "PRIVET_TEST_SEEDS"
_KEY_BYTES = 32
_COUNTER_BYTES = 16
_HKDF_SALT = b"privet.crypto.prg.for_tests v1"
_BLOCK_BYTES = 1 << 20  # keystream is produced in pieces of at most this size, from one shared zero buffer
_ZEROS = memoryview(bytes(_BLOCK_BYTES))  # sliced without copying
_TWO_POW_MINUS_53 = 2.0**-53
_CONSTRUCT = object()  # only this module's factories hold it

# Bumped in a forked child (os.register_at_fork); an instance whose generation is stale re-initialises itself
# before its next draw: a fresh key for system() streams, and in every case a fresh lock (a lock held by another
# thread at fork time would stay locked forever in the child).
_fork_generation = 0
_reinit_lock = threading.Lock()


class Randomness:
    """A CSPRNG: AES-256-CTR keystream. Build with :meth:`system` (production) or :meth:`for_tests`."""

    __slots__ = ("_cipher", "_generation", "_lock", "_seeded")

    def __init__(self, key: bytes, counter: bytes, *, seeded: bool, _token: object = None) -> None:
        """Private: use :meth:`system` or :meth:`for_tests` (a caller-chosen key would bypass the test-mode gate)."""
        if _token is not _CONSTRUCT or len(key) != _KEY_BYTES or len(counter) != _COUNTER_BYTES:
            raise UsageError(
                "Randomness cannot be built from a caller-supplied key",
                "Use Randomness.system(), or Randomness.for_tests(seed) in tests.",
            )
        self._seeded = seeded
        self._lock = threading.Lock()
        self._generation = _fork_generation
        self._cipher = _keystream(key, counter)

    @classmethod
    def system(cls) -> Randomness:
        """A generator keyed from ``os.urandom``; what production uses."""
        return cls(os.urandom(_KEY_BYTES), os.urandom(_COUNTER_BYTES), seeded=False, _token=_CONSTRUCT)

    @classmethod
    def for_tests(cls, seed: int) -> Randomness:
        """A reproducible generator for tests: the key is HKDF-SHA256 of ``seed``.

        Refused unless ``PRIVET_TEST_SEEDS=1`` is set in the environment (test mode), so that no production path
        can end up with predictable noise.
        """
        if os.environ.get(TEST_SEEDS_ENV) != "1":
            raise UsageError(
                "seeded randomness is only available in test mode",
                f"Set {TEST_SEEDS_ENV}=1 in tests; production code must use Randomness.system() "
                "or default_randomness().",
            )
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise UsageError(f"the test seed must be an int, not {type(seed).__name__}", "Pass e.g. seed=1234.")
        seed_bytes = seed.to_bytes(seed.bit_length() // 8 + 1, "big", signed=True)
        material = derive_key(seed_bytes, b"keystream", _KEY_BYTES + _COUNTER_BYTES, salt=_HKDF_SALT)
        return cls(material[:_KEY_BYTES], material[_KEY_BYTES:], seeded=True, _token=_CONSTRUCT)

    @property
    def seeded(self) -> bool:
        """True for a :meth:`for_tests` generator (reproducible, not secret)."""
        return self._seeded

    def __repr__(self) -> str:
        return f"Randomness({'for_tests' if self._seeded else 'system'})"

    def __reduce__(self) -> str | tuple[object, ...]:
        # Pickling would copy the key and make two processes draw the same noise: refuse.
        raise TypeError("Randomness cannot be pickled; create one per process with Randomness.system()")

    # -- raw keystream ----------------------------------------------------------------------------------------

    def _check_fork(self) -> None:
        if self._generation == _fork_generation:
            return
        with _reinit_lock:
            if self._generation == _fork_generation:
                return
            self._lock = threading.Lock()
            if not self._seeded:
                self._cipher = _keystream(os.urandom(_KEY_BYTES), os.urandom(_COUNTER_BYTES))
            self._generation = _fork_generation

    def _fill(self, out: memoryview) -> None:
        """Overwrite ``out`` (a writable byte view) with the next ``len(out)`` keystream bytes."""
        self._check_fork()
        with self._lock:
            for start in range(0, len(out), _BLOCK_BYTES):
                piece = out[start : start + _BLOCK_BYTES]
                # CTR encryption of zeros is the keystream; update_into writes it without an extra copy.
                self._cipher.update_into(_ZEROS[: len(piece)], piece)

    def bytes(self, n: int) -> bytes:
        """``n`` uniformly random bytes."""
        n = _count(n)
        buffer = bytearray(n)
        self._fill(memoryview(buffer))
        return bytes(buffer)

    def uint64(self, n: int) -> np.ndarray:
        """``n`` independent uniform 64-bit unsigned integers (a new, writable array)."""
        n = _count(n)
        out = np.empty(n, dtype=np.uint64)
        if n:
            self._fill(memoryview(out).cast("B"))
        if sys.byteorder == "big":  # keystream bytes are read little-endian on every platform
            out.byteswap(inplace=True)
        return out

    def uniform(self, n: int) -> np.ndarray:
        """``n`` floats uniform on the grid ``{k * 2**-53 : 0 <= k < 2**53}``, so in [0, 1), from 53 random bits each.

        Every value is exact (no rounding), and each grid point has probability exactly ``2**-53``.
        """
        words = self.uint64(n) >> np.uint64(11)
        return words.view(np.int64).astype(np.float64) * _TWO_POW_MINUS_53

    def integers_below(self, bound: int, n: int) -> np.ndarray:
        """``n`` independent integers uniform on ``{0, ..., bound - 1}`` as int64, exactly (no modulo bias).

        Rejection sampling: draw ``ceil(log2 bound)`` random bits and keep values below ``bound``; at least half
        are kept. ``bound`` must be in ``[1, 2**63]``.
        """
        if isinstance(bound, bool) or not isinstance(bound, int | np.integer):
            raise UsageError(f"bound must be an int, not {type(bound).__name__}", "Pass a positive integer bound.")
        bound = int(bound)
        if not 1 <= bound <= 1 << 63:
            raise UsageError(f"bound {bound} is out of range", "integers_below needs 1 <= bound <= 2**63.")
        n = _count(n)
        if bound == 1:
            return np.zeros(n, dtype=np.int64)
        mask = np.uint64((1 << (bound - 1).bit_length()) - 1)
        limit = np.uint64(bound)
        out = np.empty(n, dtype=np.int64)
        filled = 0
        while filled < n:
            need = n - filled
            # Draw enough that one round usually suffices (acceptance is bound / (mask + 1) >= 1/2).
            acceptance = bound / (int(mask) + 1)
            draws = self.uint64(int(need / acceptance * 1.05) + 16) & mask
            kept = draws[draws < limit][:need]
            out[filled : filled + kept.size] = kept.view(np.int64)
            filled += kept.size
        return out


def _keystream(key: bytes, counter: bytes) -> CipherContext:
    # The counter block is random (or HKDF-derived) and increments as one 128-bit integer: no two blocks repeat
    # before 2**128 blocks.
    return Cipher(algorithms.AES(key), modes.CTR(counter)).encryptor()


def _count(n: int) -> int:
    if isinstance(n, bool) or not isinstance(n, int | np.integer) or n < 0:
        raise UsageError(f"count {n!r} is not a non-negative integer", "Pass the number of values to draw.")
    return int(n)


_default: Randomness | None = None
_default_lock = threading.Lock()


def default_randomness() -> Randomness:
    """The process-wide :class:`Randomness` (``Randomness.system()``, created on first use, thread-safe)."""
    global _default
    current = _default
    if current is None:
        with _default_lock:
            if _default is None:
                _default = Randomness.system()
            current = _default
    return current


def _after_fork_in_child() -> None:
    # Runs in the child, single-threaded, right after fork: locks may have been copied in a held state.
    global _fork_generation, _reinit_lock, _default_lock
    _fork_generation += 1
    _reinit_lock = threading.Lock()
    _default_lock = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
