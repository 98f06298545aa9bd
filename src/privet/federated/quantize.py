"""Fixed-point encoding of model updates for secure sums.

A :class:`Quantizer` maps each coordinate of an update, clipped to ``[-clip, clip]``, affinely onto the integer
grid ``0 .. 2**bits - 1`` with unbiased stochastic rounding, so that the expected encoding is exactly the
clipped value. Secure aggregation then adds the clients' encodings modulo ``2**modulus_bits`` with
``modulus_bits = bits + ceil(log2(clients))``, and :meth:`Quantizer.decode_sum` turns the sum back into floats.

The clipping here only bounds the fixed-point grid; clipping the update's L2 norm for differential privacy happens
before, elsewhere.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from privet.crypto.prg import default_randomness
from privet.errors import IntegrityError, UsageError

__all__ = ["MAX_MODULUS_BITS", "Quantizer"]

MAX_MODULUS_BITS = 32  # sums travel as uint32


@dataclass(frozen=True)
class Quantizer:
    """Fixed-point grid of ``2**bits`` levels on ``[-clip, clip]`` for secure sums of at most ``clients`` updates."""

    clip: float
    bits: int
    clients: int

    def __post_init__(self) -> None:
        if isinstance(self.clip, bool) or not isinstance(self.clip, int | float) or not 0 < self.clip < math.inf:
            raise UsageError(f"clip {self.clip!r} is not a positive finite number", "Pass e.g. clip=1.0.")
        for name in ("bits", "clients"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise UsageError(f"{name} {value!r} is not a positive integer")
        if self.modulus_bits > MAX_MODULUS_BITS:
            raise UsageError(
                f"{self.bits} bits for {self.clients} clients need a {self.modulus_bits}-bit modulus, "
                f"more than {MAX_MODULUS_BITS}",
                "Use fewer bits or fewer clients per round.",
            )

    @property
    def modulus_bits(self) -> int:
        """``bits + ceil(log2(clients))``: the width of the secure sum, which the sum of ``clients`` cannot wrap."""
        return self.bits + (self.clients - 1).bit_length()

    @property
    def levels(self) -> int:
        """The largest encoded value, ``2**bits - 1``."""
        return (1 << self.bits) - 1

    @property
    def step(self) -> float:
        """The grid spacing, ``2 * clip / (2**bits - 1)``: one client's rounding error is below it."""
        return 2.0 * float(self.clip) / self.levels

    def check_count(self, count: int) -> int:
        """``count`` if between 1 and ``clients``, else :class:`UsageError`: more would wrap the modulus."""
        if isinstance(count, bool) or not isinstance(count, int | np.integer) or not 1 <= count <= self.clients:
            raise UsageError(
                f"a sum of {count!r} clients does not fit a quantizer configured for 1 to {self.clients}",
                "Configure the quantizer with clients at least the number of clients per round.",
            )
        return int(count)

    def encode(self, update: np.ndarray, rng: np.random.Generator | None = None) -> np.ndarray:
        """The update's coordinates on the grid, uint32 in ``[0, 2**bits - 1]``, same shape.

        Rounding up happens with probability equal to the fractional part, so ``E[encode(x)]`` is exactly the grid
        image of ``clip(x)`` (to within ``2**-53``). The coins come from privet's CSPRNG (AES-CTR keyed from the
        OS), or from ``rng`` when a test passes one.
        """
        values = np.asarray(update, dtype=np.float64)
        if not np.isfinite(values).all():
            raise UsageError("an update holds NaN or infinite values", "Drop that update before encoding it.")
        clip = float(self.clip)
        scaled = (np.clip(values, -clip, clip) + clip) * (self.levels / (2.0 * clip))
        floor = np.floor(scaled)
        coins = rng.random(values.size) if rng is not None else default_randomness().uniform(values.size)
        rounded = floor + (coins.reshape(values.shape) < scaled - floor)
        # The affine map can overshoot the top level by a rounding error; the clamp keeps the bound exact.
        return np.minimum(rounded, self.levels).astype(np.uint32)

    def decode_sum(self, total: np.ndarray, count: int) -> np.ndarray:
        """The float64 sum of ``count`` clients' updates, from the sum of their encodings.

        No wrap-around is possible: each encoding is at most ``2**bits - 1`` and ``count <= clients <=
        2**ceil(log2(clients))``, so the true sum is below ``2**modulus_bits`` and the modular sum equals it. A
        ``total`` above ``count * (2**bits - 1)`` therefore cannot come from ``count`` honest encodings (wrong masks,
        a wrong count) and raises :class:`IntegrityError`.
        """
        count = self.check_count(count)
        sums = np.asarray(total)
        if sums.dtype.kind not in "iu":
            raise UsageError(f"a secure sum must be an integer array, got {sums.dtype}")
        if sums.size and (int(sums.min()) < 0 or int(sums.max()) > count * self.levels):
            raise IntegrityError(
                f"a secure sum exceeds what {count} clients can produce",
                "The masks did not cancel or the client count is wrong; discard this round.",
            )
        return sums.astype(np.float64) * self.step - count * float(self.clip)
