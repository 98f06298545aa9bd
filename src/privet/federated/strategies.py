"""Federated strategies: how the server turns a round's client updates into the next global model.

A strategy is two small steps over flat parameter vectors:

1. :meth:`Strategy.combine`: the round's updates (rows of client model minus global model, optionally each
   norm-bounded first) become one update; plain strategies average them weighted by example counts, robust
   ones use a rule from :mod:`privet.federated.aggregate`;
2. :meth:`Strategy.apply`: the server's optimiser moves the global model along that update (plain addition for
   FedAvg; momentum for FedAvgM; adaptive moments for FedAdagrad, FedAdam and FedYogi, Reddi et al. 2021).

A new strategy overrides one of the two (a page of code at most). Any server state (momentum, moments) lives in
tensors that :meth:`Strategy.state_dict` returns and :meth:`Strategy.load_state_dict` restores, so a checkpoint
taken after a round resumes bit-for-bit. :meth:`Strategy.client_config` is what clients are told to do
differently (FedProx's proximal term).
"""

from __future__ import annotations

import abc
import math
from typing import Any, ClassVar

import torch
from torch import Tensor

from privet.errors import UsageError
from privet.federated import aggregate

__all__ = [
    "STRATEGIES",
    "FedAdagrad",
    "FedAdam",
    "FedAvg",
    "FedAvgM",
    "FedProx",
    "FedYogi",
    "Krum",
    "Median",
    "MultiKrum",
    "Strategy",
    "TrimmedMean",
    "make_strategy",
]


def _positive(name: str, value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not (math.isfinite(value) and value > 0):
        raise UsageError(f"{name} must be a number > 0, got {value!r}")
    return float(value)


def _fraction(name: str, value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value < 1:
        raise UsageError(f"{name} must be in [0, 1), got {value!r}")
    return float(value)


class Strategy:
    """FedAvg's two steps; subclasses override :meth:`combine` or :meth:`apply`.

    ``server_lr`` scales the combined update; ``norm_bound`` (optional) clips each client's update to that L2
    norm before combining (norm bounding against scaled, poisoned updates).
    """

    name: ClassVar[str] = "fedavg"
    # Combine and apply treat each coordinate on its own (norm bounds aside, which need only each update's norm),
    # so a server may aggregate a model too large to hold every update in memory, block by block.
    coordinatewise: ClassVar[bool] = True

    def __init__(self, *, server_lr: float = 1.0, norm_bound: float | None = None) -> None:
        self.server_lr = _positive("server_lr", server_lr)
        self.norm_bound = None if norm_bound is None else _positive("norm_bound", norm_bound)

    def combine(self, updates: Tensor, weights: Tensor) -> Tensor:
        """One update from the rows of ``updates`` (``[clients, parameters]``) and the clients' weights."""
        return aggregate.weighted_mean(updates, weights)

    def apply(self, model: Tensor, update: Tensor) -> Tensor:
        """The next global model from the current one and the combined update."""
        return model + self.server_lr * update

    def aggregate(self, model: Tensor, updates: Tensor, weights: Tensor) -> Tensor:
        """One round: bound the norms (if asked), combine, apply. ``model`` is not modified."""
        if updates.dim() != 2 or model.shape != updates.shape[1:]:
            raise UsageError(
                f"updates of shape {tuple(updates.shape)} do not fit a model of {model.numel()} parameters",
                "Every client must train the model the server sent.",
            )
        if self.norm_bound is not None:
            updates = aggregate.clip_norms(updates, self.norm_bound)
        return self.apply(model, self.combine(updates, weights.to(updates.dtype)))

    def client_config(self) -> dict[str, float]:
        """Settings the clients apply during local training (none for FedAvg)."""
        return {}

    def state_dict(self) -> dict[str, Any]:
        """The server state to checkpoint after a round (tensors are copies)."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned."""
        if state:
            raise UsageError(f"{self.name} keeps no state, but the checkpoint holds {sorted(state)}")

    def describe(self) -> dict[str, Any]:
        """The strategy's name and settings, as recorded with a run."""
        settings = {k: v for k, v in vars(self).items() if not k.startswith("_") and not isinstance(v, Tensor)}
        return {"name": self.name, **settings}


class FedAvg(Strategy):
    """McMahan et al. 2017: the example-weighted mean of the client models."""


class FedProx(FedAvg):
    """Li et al. 2020: FedAvg on the server; clients add ``mu / 2 * ||w - w_global||^2`` to their loss."""

    name = "fedprox"

    def __init__(self, *, mu: float = 0.01, server_lr: float = 1.0, norm_bound: float | None = None) -> None:
        super().__init__(server_lr=server_lr, norm_bound=norm_bound)
        self.mu = _positive("mu", mu)

    def client_config(self) -> dict[str, float]:
        return {"proximal_mu": self.mu}


class _Stateful(Strategy):
    """A strategy whose server optimiser keeps tensors between rounds."""

    _state_names: ClassVar[tuple[str, ...]] = ()
    coordinatewise = False  # state tensors as large as the model

    def state_dict(self) -> dict[str, Any]:
        return {k: None if getattr(self, k) is None else getattr(self, k).clone() for k in self._state_names}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if set(state) != set(self._state_names):
            raise UsageError(f"the checkpoint's {self.name} state has keys {sorted(state)}, not {self._state_names}")
        for k in self._state_names:
            value = state[k]
            setattr(self, k, None if value is None else torch.as_tensor(value).clone())


class FedAvgM(_Stateful):
    """Hsu et al. 2019: server momentum, ``v = momentum * v + update``, ``model += server_lr * v``."""

    name = "fedavgm"
    _state_names = ("velocity",)

    def __init__(self, *, momentum: float = 0.9, server_lr: float = 1.0, norm_bound: float | None = None) -> None:
        super().__init__(server_lr=server_lr, norm_bound=norm_bound)
        self.momentum = _fraction("momentum", momentum)
        self.velocity: Tensor | None = None

    def apply(self, model: Tensor, update: Tensor) -> Tensor:
        self.velocity = update.clone() if self.velocity is None else self.momentum * self.velocity + update
        return model + self.server_lr * self.velocity


class _Adaptive(_Stateful, abc.ABC):
    """Reddi et al. 2021 ("Adaptive federated optimization"): the combined update is a pseudo-gradient for an
    adaptive server optimiser, ``m = b1 m + (1 - b1) d``, ``v`` per subclass, ``model += lr m / (sqrt(v) + tau)``.
    """

    _state_names = ("first", "second")

    def __init__(
        self,
        *,
        server_lr: float = 0.01,
        beta1: float = 0.9,
        beta2: float = 0.99,
        tau: float = 1e-3,
        norm_bound: float | None = None,
    ) -> None:
        super().__init__(server_lr=server_lr, norm_bound=norm_bound)
        self.beta1 = _fraction("beta1", beta1)
        self.beta2 = _fraction("beta2", beta2)
        self.tau = _positive("tau", tau)
        self.first: Tensor | None = None
        self.second: Tensor | None = None

    @abc.abstractmethod
    def _second_moment(self, second: Tensor, squared: Tensor) -> Tensor:
        """The next second moment ``v`` from the current one and the squared update."""

    def apply(self, model: Tensor, update: Tensor) -> Tensor:
        first = torch.zeros_like(update) if self.first is None else self.first
        # The paper starts v at tau^2, so the first step is not divided by ~0.
        second = torch.full_like(update, self.tau**2) if self.second is None else self.second
        self.first = self.beta1 * first + (1 - self.beta1) * update
        self.second = self._second_moment(second, update.square())
        return model + self.server_lr * self.first / (self.second.sqrt() + self.tau)


class FedAdagrad(_Adaptive):
    """``v = v + d^2``."""

    name = "fedadagrad"

    def _second_moment(self, second: Tensor, squared: Tensor) -> Tensor:
        return second + squared


class FedAdam(_Adaptive):
    """``v = b2 v + (1 - b2) d^2``."""

    name = "fedadam"

    def _second_moment(self, second: Tensor, squared: Tensor) -> Tensor:
        return self.beta2 * second + (1 - self.beta2) * squared


class FedYogi(_Adaptive):
    """``v = v - (1 - b2) d^2 sign(v - d^2)``: the second moment moves additively, never explodes."""

    name = "fedyogi"

    def _second_moment(self, second: Tensor, squared: Tensor) -> Tensor:
        return second - (1 - self.beta2) * squared * torch.sign(second - squared)


class Median(Strategy):
    """Coordinate-wise median of the updates (unweighted)."""

    name = "median"

    def combine(self, updates: Tensor, weights: Tensor) -> Tensor:
        return aggregate.coordinate_median(updates)


class TrimmedMean(Strategy):
    """Coordinate-wise mean after cutting the ``trim`` fraction from each end (unweighted)."""

    name = "trimmed_mean"

    def __init__(self, *, trim: float = 0.2, server_lr: float = 1.0, norm_bound: float | None = None) -> None:
        super().__init__(server_lr=server_lr, norm_bound=norm_bound)
        self.trim = _fraction("trim", trim)
        if self.trim >= 0.5:
            raise UsageError(f"trim must be below 0.5, got {trim!r}")

    def combine(self, updates: Tensor, weights: Tensor) -> Tensor:
        return aggregate.trimmed_mean(updates, self.trim)


class Krum(Strategy):
    """The one update closest to its ``n - byzantine - 2`` nearest neighbours."""

    name = "krum"
    coordinatewise = False  # distances between whole updates

    def __init__(self, *, byzantine: int = 1, server_lr: float = 1.0, norm_bound: float | None = None) -> None:
        super().__init__(server_lr=server_lr, norm_bound=norm_bound)
        if isinstance(byzantine, bool) or not isinstance(byzantine, int) or byzantine < 0:
            raise UsageError(f"byzantine must be a whole number >= 0, got {byzantine!r}")
        self.byzantine = byzantine

    def combine(self, updates: Tensor, weights: Tensor) -> Tensor:
        return aggregate.krum(updates, self.byzantine)


class MultiKrum(Krum):
    """The weighted mean of the ``keep`` best updates by Krum's score (``keep=None``: ``n - byzantine``)."""

    name = "multi_krum"

    def __init__(
        self, *, byzantine: int = 1, keep: int | None = None, server_lr: float = 1.0, norm_bound: float | None = None
    ) -> None:
        super().__init__(byzantine=byzantine, server_lr=server_lr, norm_bound=norm_bound)
        self.keep = keep

    def combine(self, updates: Tensor, weights: Tensor) -> Tensor:
        keep = updates.shape[0] - self.byzantine if self.keep is None else self.keep
        return aggregate.multi_krum(updates, weights, self.byzantine, keep)


STRATEGIES: dict[str, type[Strategy]] = {
    cls.name: cls
    for cls in (FedAvg, FedProx, FedAvgM, FedAdagrad, FedAdam, FedYogi, Median, TrimmedMean, Krum, MultiKrum)
}


def make_strategy(name: str, **settings: Any) -> Strategy:
    """The strategy called ``name`` (see :data:`STRATEGIES`) with ``settings``; unknown names and settings are
    one-line errors."""
    cls = STRATEGIES.get(name)
    if cls is None:
        raise UsageError(f"unknown strategy {name!r}", f"Known strategies: {', '.join(STRATEGIES)}.")
    try:
        return cls(**settings)
    except TypeError as exc:
        raise UsageError(f"strategy {name!r} does not take these settings ({exc})") from None
