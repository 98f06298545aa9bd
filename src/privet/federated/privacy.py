"""Client-level differential privacy for federated rounds: DP-FedAvg (McMahan et al. 2018) with fixed or
adaptive clipping (Andrew et al. 2021), accounted with the DP core.

The unit of privacy is a *client*: whether one client took part at all changes the released model only a
little. Each round:

1. clients are sampled independently with probability ``q`` (Poisson sampling, which the accountant assumes;
   :meth:`ClientDP.sample`);
2. each sampled client's update is clipped to L2 norm ``C`` (unweighted: a client's example count would
   otherwise scale its influence, i.e. the sensitivity);
3. the server adds ``N(0, (z C)^2)`` to the *sum* of the clipped updates and divides by the *expected* number of
   clients ``q N`` (a constant, so the division is post-processing), then hands the result to an ordinary
   strategy's :meth:`~privet.federated.strategies.Strategy.apply` (FedAvg, FedAvgM, FedAdam, ...:
   post-processing too).

One round is the subsampled Gaussian mechanism with noise multiplier ``z`` and rate ``q``; ``R`` rounds compose
(:class:`~privet.dp.accounting.GaussianEvent` with ``steps=R``), which is what :func:`plan_rounds` calibrates
and what each round charges the ledger with.

Adaptive clipping
    ``C`` follows a target quantile ``gamma`` of the update norms: each round the server also releases the noisy
    count of clients whose norm was at most ``C`` (noise std ``sigma_b``), and sets
    ``C <- C exp(-eta (b / (q N) - gamma))``. The two releases together are one Gaussian mechanism of multiplier
    ``z`` when the update's own noise multiplier is ``z_u = (z^-2 - (2 sigma_b)^-2)^(-1/2)`` (Andrew et al.,
    Theorem 1), so the accounting is unchanged; ``sigma_b`` must exceed ``z / 2``.

The server adds the noise, so it sees the clipped updates; with secure aggregation the clients add it instead,
as discrete Gaussian shares (:mod:`privet.federated.secagg.noise`), and this strategy is not used.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from privet.crypto.prg import Randomness, default_randomness
from privet.dp.accounting import GaussianEvent, Guarantee, calibrate_gaussian, compose_epsilon
from privet.dp.tensor_noise import NoiseSource
from privet.errors import UsageError
from privet.federated import aggregate
from privet.federated.strategies import FedAvg, Strategy

__all__ = ["AdaptiveClipping", "ClientDP", "plan_rounds"]


def plan_rounds(
    target_epsilon: float, delta: float, *, sample_rate: float, rounds: int, accountant: str = "pld"
) -> tuple[float, Guarantee]:
    """The noise multiplier that makes ``rounds`` rounds at client rate ``sample_rate`` (epsilon, delta)-DP."""
    if accountant not in ("pld", "rdp"):
        raise UsageError(f"accountant {accountant!r} is not one of pld, rdp")
    kind: Any = accountant
    noise = calibrate_gaussian(target_epsilon, delta, sample_rate=sample_rate, steps=rounds, accountant=kind)
    return noise, compose_epsilon([GaussianEvent(noise, sample_rate, rounds)], delta, kind)


@dataclass(frozen=True)
class AdaptiveClipping:
    """Track the ``target_quantile`` of update norms: ``C <- C exp(-learning_rate (b - target_quantile))``,
    with ``b`` the noisy fraction of clients under ``C``, whose count carries noise of std ``count_noise``."""

    target_quantile: float = 0.5
    learning_rate: float = 0.2
    count_noise: float = 10.0

    def __post_init__(self) -> None:
        if not 0 < self.target_quantile < 1:
            raise UsageError(f"target_quantile must be in (0, 1), got {self.target_quantile!r}")
        for name in ("learning_rate", "count_noise"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise UsageError(f"{name} must be a number > 0, got {value!r}")


class ClientDP(Strategy):
    """DP-FedAvg's combine step in front of ``base``'s apply step (FedAvg by default).

    ``noise_multiplier`` is ``z`` of the whole round (see the module docstring), ``clip`` the initial clipping
    norm, ``clients`` the population size ``N`` and ``sample_rate`` ``q``. ``randomness(round)`` gives the
    generator for a round's noise and client sample (default: the process CSPRNG); tests pass seeded ones so
    that a resumed run replays the same noise.
    """

    name = "dp_fedavg"
    coordinatewise = False  # one clipping, noise draw and clip adaptation per round

    def __init__(
        self,
        *,
        noise_multiplier: float,
        clip: float,
        clients: int,
        sample_rate: float,
        base: Strategy | None = None,
        adaptive: AdaptiveClipping | None = None,
        randomness: Callable[[int, str], Randomness] | None = None,
    ) -> None:
        super().__init__()
        if not (math.isfinite(noise_multiplier) and noise_multiplier > 0):
            raise UsageError(f"noise_multiplier must be a number > 0, got {noise_multiplier!r}")
        if not (math.isfinite(clip) and clip > 0):
            raise UsageError(f"clip must be a number > 0, got {clip!r}")
        if clients < 1 or not 0 < sample_rate <= 1:
            raise UsageError(f"need clients >= 1 and 0 < sample_rate <= 1, got {clients} and {sample_rate!r}")
        if base is not None and type(base).combine is not Strategy.combine:
            raise UsageError(
                f"{base.name} replaces the average, which client-level DP needs",
                "Combine DP with fedavg, fedavgm, fedadam, fedyogi or fedadagrad; robust rules are not DP.",
            )
        if base is not None and base.norm_bound is not None:
            raise UsageError("client-level DP clips the updates itself", "Drop norm_bound from the base strategy.")
        if adaptive is not None and adaptive.count_noise <= noise_multiplier / 2:
            raise UsageError(
                f"count_noise must exceed noise_multiplier / 2 = {noise_multiplier / 2:g} for adaptive clipping",
                "Raise count_noise (Andrew et al. use about N * q / 20).",
            )
        self.noise_multiplier = float(noise_multiplier)
        self.clip = float(clip)
        self.clients = int(clients)
        self.sample_rate = float(sample_rate)
        self.adaptive = adaptive
        self.base = base if base is not None else FedAvg()
        self.rounds = 0
        self._randomness = randomness if randomness is not None else (lambda _round, _purpose: default_randomness())

    @property
    def update_noise(self) -> float:
        """The noise multiplier of the update sum: ``z``, or ``z_u`` when part of the budget goes to the count."""
        if self.adaptive is None:
            return self.noise_multiplier
        return (self.noise_multiplier**-2 - (2 * self.adaptive.count_noise) ** -2) ** -0.5

    @property
    def expected_clients(self) -> float:
        return self.sample_rate * self.clients

    def event(self) -> GaussianEvent:
        """What one round releases, for the accountant and the ledger."""
        return GaussianEvent(self.noise_multiplier, self.sample_rate, 1)

    def sample(self, round_: int, among: int | None = None) -> np.ndarray:
        """Indices of the clients sampled for ``round_``, each independently with probability ``q``, out of the
        population or of ``among`` (the clients reachable now: one that is not is sampled with probability 0)."""
        uniform = self._randomness(round_, "sample").uniform(self.clients if among is None else among)
        return np.flatnonzero(uniform < self.sample_rate)

    def combine(self, updates: Tensor, weights: Tensor) -> Tensor:
        """Clip, sum, noise, divide by ``q N``; adapt ``C`` for the next round."""
        source = NoiseSource(self._randomness(self.rounds, "noise"))
        norms = torch.linalg.vector_norm(updates, dim=1)
        # A round nobody answered still releases (noise alone): skipping it would make the release depend on it.
        total = aggregate.clip_norms(updates, self.clip).sum(dim=0) if len(updates) else updates.sum(dim=0)
        total = total + source.gaussian(total, self.update_noise * self.clip).to(total.dtype)
        result = total / self.expected_clients
        if self.adaptive is not None:
            under = float((norms <= self.clip).sum())
            noisy = under + float(source.gaussian(torch.zeros(1, dtype=torch.float64), self.adaptive.count_noise))
            fraction = noisy / self.expected_clients
            self.clip *= math.exp(-self.adaptive.learning_rate * (fraction - self.adaptive.target_quantile))
        self.rounds += 1
        return result

    def apply(self, model: Tensor, update: Tensor) -> Tensor:
        return self.base.apply(model, update)

    def client_config(self) -> dict[str, float]:
        return {"clip": self.clip, **self.base.client_config()}

    def state_dict(self) -> dict[str, Any]:
        return {"clip": self.clip, "rounds": self.rounds, "base": self.base.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if set(state) != {"clip", "rounds", "base"}:
            raise UsageError(f"the checkpoint's {self.name} state has keys {sorted(state)}")
        self.clip, self.rounds = float(state["clip"]), int(state["rounds"])
        self.base.load_state_dict(state["base"])

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "noise_multiplier": self.noise_multiplier,
            "clip": self.clip,
            "clients": self.clients,
            "sample_rate": self.sample_rate,
            "adaptive": None if self.adaptive is None else vars(self.adaptive),
            "base": self.base.describe(),
        }
