"""Distributed discrete Gaussian noise (Kairouz, Liu, Steinke 2021): client-level DP that holds against the server.

Each client of a secure round

1. clips its update to L2 norm ``clip``;
2. puts it on the integer grid of step ``gamma = clip / (2**(bits - 1) - 1)`` by *conditional* stochastic rounding:
   unbiased rounding, drawn again (rarely) until the rounded vector's L2 norm is at most :attr:`sensitivity`, so
   that bound holds for every client exactly (Kairouz et al., Theorem 1);
3. adds discrete Gaussian noise of parameter ``sigma`` to every coordinate (privet's exact sampler on the OS
   CSPRNG, :func:`privet.dp.mechanisms.discrete_gaussian`);
4. reduces the result modulo ``2**modulus_bits``; masking and the secure sum follow.

The server unmasks the sum over ``m`` surviving clients: their signal plus the sum of ``m`` discrete Gaussians, and
never any single client's noisy update, let alone a noiseless one. With ``m >= minimum`` that release is
``rho``-zCDP for the *zero-out* neighbouring relation (one client's update replaced by zeros: who took part is
known to the server anyway) with (Kairouz et al., Proposition 14)

    rho = (s + tau * sqrt(d))**2 / 2,  s = sensitivity / (sqrt(m) * sigma),
    tau = 10 * sum_{k=1}^{m-1} exp(-2 pi^2 sigma^2 k / (k + 1)),

charged as a :class:`~privet.dp.accounting.ZCDPEvent` per round. Rounds are charged *unsampled*: the server picks
the clients of a round and so knows who took part, and a guarantee meant to hold against the server cannot lean
on a sample it knows (no amplification by sampling).

The modulus holds ``m * 2**(bits - 1)`` of signal plus 14 standard deviations of the noise sum on either side
(a coordinate outside has probability below ``1e-44``), so sums do not wrap; a configuration that would need more
than 32 bits is refused. A decoded coordinate beyond that range cannot come from honest clients and raises
:class:`~privet.errors.IntegrityError`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from privet.crypto.prg import default_randomness
from privet.dp.accounting import ZCDPEvent, compose_epsilon
from privet.dp.mechanisms import discrete_gaussian
from privet.errors import IntegrityError, UsageError
from privet.federated.quantize import MAX_MODULUS_BITS

__all__ = ["DistributedNoise", "calibrate"]

_TAIL = 14.0  # standard deviations of the noise sum the modulus holds on either side
_ROUNDING_FAILURE = 2.0**-20  # beta: the chance one rounding draw exceeds the norm bound (then it is drawn again)
_MAX_DRAWS = 64


@dataclass(frozen=True)
class DistributedNoise:
    """Clients' share of the noise for secure sums of at most ``clients`` updates of ``dimension`` coordinates.

    ``sigma`` is each client's discrete Gaussian parameter in grid steps; ``minimum`` the fewest survivors whose
    sum may be released (together they carry the planned noise).
    """

    clip: float
    bits: int
    clients: int
    minimum: int
    sigma: float
    dimension: int

    def __post_init__(self) -> None:
        if not (math.isfinite(self.clip) and self.clip > 0):
            raise UsageError(f"clip {self.clip!r} is not a positive finite number")
        if not 2 <= self.bits <= 24:
            raise UsageError(f"bits must be between 2 and 24, got {self.bits!r}")
        if not 1 <= self.minimum <= self.clients:
            raise UsageError(f"minimum must be between 1 and clients ({self.clients}), got {self.minimum!r}")
        if not (math.isfinite(self.sigma) and self.sigma >= 0.5):
            raise UsageError(
                f"a client noise parameter of {self.sigma!r} grid steps is below 0.5, where the distributed discrete "
                "Gaussian's guarantee stops",
                "Ask for a smaller epsilon, or use more bits.",
            )
        if self.dimension < 1:
            raise UsageError(f"dimension must be at least 1, got {self.dimension!r}")
        if self.modulus_bits > MAX_MODULUS_BITS:
            raise UsageError(
                f"{self.bits} bits for {self.clients} clients with noise {self.sigma:.3g} need a {self.modulus_bits}"
                f"-bit modulus, more than {MAX_MODULUS_BITS}",
                "Use fewer bits, fewer clients per round, or a larger epsilon.",
            )

    @property
    def gamma(self) -> float:
        """The grid step: a coordinate of magnitude ``clip`` maps to ``2**(bits - 1) - 1`` steps."""
        return self.clip / ((1 << (self.bits - 1)) - 1)

    @property
    def sensitivity(self) -> float:
        """The L2 bound, in grid steps, of a client's rounded update (Kairouz et al., Theorem 1)."""
        c, d = self.clip / self.gamma, self.dimension
        loose = (c + math.sqrt(d)) ** 2
        conditional = c * c + d / 4 + math.sqrt(2 * math.log(1 / _ROUNDING_FAILURE)) * (c + math.sqrt(d) / 2)
        return math.sqrt(min(loose, conditional))

    def _reach(self, count: int) -> float:
        return count * float(1 << (self.bits - 1)) + _TAIL * math.sqrt(count) * self.sigma

    @property
    def modulus_bits(self) -> int:
        """Bits of the secure sum: the signal of ``clients`` updates and the noise tail, signed."""
        return math.ceil(math.log2(self._reach(self.clients) + 1)) + 1

    def rho(self, count: int) -> float:
        """The zCDP of one round's sum over ``count`` survivors (see the module docstring)."""
        if not self.minimum <= count <= self.clients:
            raise UsageError(f"a sum over {count} clients is outside {self.minimum}..{self.clients}")
        s = self.sensitivity / (math.sqrt(count) * self.sigma)
        tau = 10 * sum(math.exp(-2 * math.pi**2 * self.sigma**2 * k / (k + 1)) for k in range(1, count))
        return (s + tau * math.sqrt(self.dimension)) ** 2 / 2

    def event(self, count: int) -> ZCDPEvent:
        return ZCDPEvent(self.rho(count))

    @property
    def planned_rho(self) -> float:
        """The largest per-round zCDP over every survivor count a round may release with."""
        return max(self.rho(m) for m in range(self.minimum, self.clients + 1))

    def encode(self, update: np.ndarray) -> np.ndarray:
        """Clip, round conditionally, add this client's noise; uint32 values mod ``2**modulus_bits``."""
        values = np.asarray(update, dtype=np.float64).ravel()
        if values.size != self.dimension:
            raise UsageError(f"the update has {values.size} coordinates, not {self.dimension}")
        if not np.isfinite(values).all():
            raise UsageError("an update holds NaN or infinite values", "Drop that update before encoding it.")
        norm = float(np.linalg.norm(values))
        scaled = values * (min(1.0, self.clip / norm) if norm > 0 else 1.0) / self.gamma
        floor = np.floor(scaled)
        bound = self.sensitivity
        for _ in range(_MAX_DRAWS):
            rounded = floor + (default_randomness().uniform(values.size) < scaled - floor)
            if float(np.linalg.norm(rounded)) <= bound:
                break
        else:  # probability below beta**64: something is wrong with the randomness
            raise IntegrityError("conditional rounding failed 64 times in a row", "Check the system's randomness.")
        noisy = rounded.astype(np.int64) + discrete_gaussian(self.sigma, values.size)
        return (noisy & ((1 << self.modulus_bits) - 1)).astype(np.uint32)

    def decode_sum(self, total: np.ndarray, count: int) -> np.ndarray:
        """The float64 noisy sum of ``count`` clients' updates from the secure sum of their encodings."""
        if not 1 <= count <= self.clients:
            raise UsageError(f"a sum of {count} clients does not fit noise planned for 1 to {self.clients}")
        sums = np.asarray(total).astype(np.int64)
        half = 1 << (self.modulus_bits - 1)
        signed = np.where(sums >= half, sums - (1 << self.modulus_bits), sums)
        if signed.size and float(np.abs(signed).max()) > self._reach(count):
            raise IntegrityError(
                f"a secure sum exceeds what {count} clients with this noise can produce",
                "The masks did not cancel or the client count is wrong; discard this round.",
            )
        return signed.astype(np.float64) * self.gamma


def calibrate(
    epsilon: float, delta: float, *, rounds: int, clip: float, bits: int, clients: int, minimum: int, dimension: int
) -> DistributedNoise:
    """The least client noise that keeps ``rounds`` rounds (each at most :attr:`~DistributedNoise.planned_rho`)
    within (``epsilon``, ``delta``)-DP, composed with RDP."""

    def noise(sigma: float) -> DistributedNoise:
        return DistributedNoise(clip, bits, clients, minimum, sigma, dimension)

    def spent(sigma: float) -> float:
        return compose_epsilon([ZCDPEvent(noise(sigma).planned_rho, rounds)], delta, "rdp").epsilon

    probe = noise(1.0)
    low, high = 0.5, probe.sensitivity / math.sqrt(minimum)  # high: a noise multiplier of 1 to start
    while spent(high) > epsilon:
        low, high = high, high * 2
        if high > 2.0**40:
            raise UsageError(f"no noise makes {rounds} rounds ({epsilon}, {delta})-DP")
    if spent(low) <= epsilon:
        return noise(low)
    while high - low > 1e-6 * high:
        middle = (low + high) / 2
        low, high = (low, middle) if spent(middle) <= epsilon else (middle, high)
    return noise(high)
