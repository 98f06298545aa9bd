"""Aggregation rules: how a round's client updates become one update.

Every rule takes the updates as one matrix ``[clients, parameters]`` (each row a client's flattened model
delta, ``client model - global model``) and the clients' weights (their example counts), and returns one row.
They are pure functions of their inputs; a strategy (:mod:`privet.federated.strategies`) decides what to do
with the result.

- :func:`weighted_mean`: FedAvg's average, weighted by example counts.
- :func:`coordinate_median`: the median of each coordinate (Yin et al. 2018), unweighted.
- :func:`trimmed_mean`: per coordinate, drop the ``trim`` fraction of largest and of smallest values, average the
  rest (Yin et al. 2018), unweighted.
- :func:`krum` / :func:`multi_krum`: score each update by the summed squared distances to its ``n - f - 2``
  nearest others, keep the best one (Krum) or the ``m`` best averaged with their weights (Multi-Krum)
  (Blanchard et al. 2017).
- :func:`clip_norms`: scale every update down to an L2 norm of at most ``bound`` (norm bounding, Sun et al.
  2019); used before another rule.

Robust rules are unweighted on purpose: a client can lie about its example count, and weighting by it would
hand a poisoner the very leverage the rule takes away.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from privet.errors import UsageError

__all__ = ["clip_norms", "coordinate_median", "krum", "krum_scores", "multi_krum", "trimmed_mean", "weighted_mean"]


def _check(updates: Tensor, weights: Tensor | None = None) -> None:
    if updates.dim() != 2 or updates.shape[0] == 0:
        raise UsageError(f"updates must be a [clients, parameters] matrix with a row per client, got {updates.shape}")
    if not torch.isfinite(updates).all():
        raise UsageError("an update holds NaN or infinite values", "Drop that client's update (or bound the norms).")
    if weights is not None:
        if weights.shape != (updates.shape[0],):
            raise UsageError(f"{updates.shape[0]} updates need {updates.shape[0]} weights, got {tuple(weights.shape)}")
        if not torch.isfinite(weights).all() or (weights < 0).any() or float(weights.sum()) <= 0:
            raise UsageError("client weights must be finite, non-negative and not all zero")


def weighted_mean(updates: Tensor, weights: Tensor) -> Tensor:
    """``sum_k w_k u_k / sum_k w_k``."""
    _check(updates, weights)
    w = weights.to(updates.dtype)
    return (w @ updates) / w.sum()


def coordinate_median(updates: Tensor) -> Tensor:
    """The median of each coordinate over clients (the mean of the two middle values for an even count)."""
    _check(updates)
    return torch.quantile(updates, 0.5, dim=0) if updates.shape[0] % 2 == 0 else updates.median(dim=0).values


def trimmed_mean(updates: Tensor, trim: float) -> Tensor:
    """Per coordinate, the mean after dropping ``floor(trim * n)`` smallest and as many largest values."""
    _check(updates)
    if not 0 <= trim < 0.5:
        raise UsageError(f"trim must be in [0, 0.5), got {trim!r}", "It is the fraction cut from each end.")
    n = updates.shape[0]
    cut = math.floor(trim * n)
    if cut == 0:
        return updates.mean(dim=0)
    ordered = updates.sort(dim=0).values
    return ordered[cut : n - cut].mean(dim=0)


def krum_scores(updates: Tensor, byzantine: int) -> Tensor:
    """Krum's score per update: the sum of squared distances to its ``n - byzantine - 2`` nearest others."""
    _check(updates)
    n = updates.shape[0]
    neighbours = n - byzantine - 2
    if byzantine < 0 or neighbours < 1:
        raise UsageError(
            f"Krum needs more than byzantine + 2 updates ({n} updates, byzantine={byzantine})",
            "Lower the assumed number of byzantine clients or sample more clients per round.",
        )
    distances = torch.cdist(updates.double(), updates.double()).square()
    distances.fill_diagonal_(math.inf)
    return distances.topk(neighbours, dim=1, largest=False).values.sum(dim=1)


def krum(updates: Tensor, byzantine: int) -> Tensor:
    """The update with the lowest :func:`krum_scores` (ties: the first)."""
    return updates[int(krum_scores(updates, byzantine).argmin())].clone()


def multi_krum(updates: Tensor, weights: Tensor, byzantine: int, keep: int) -> Tensor:
    """The weighted mean of the ``keep`` updates with the lowest :func:`krum_scores`."""
    if not 1 <= keep <= updates.shape[0]:
        raise UsageError(f"Multi-Krum keeps between 1 and {updates.shape[0]} updates, got {keep}")
    chosen = krum_scores(updates, byzantine).argsort()[:keep]
    return weighted_mean(updates[chosen], weights[chosen])


def clip_norms(updates: Tensor, bound: float) -> Tensor:
    """Each row scaled by ``min(1, bound / ||row||)``."""
    _check(updates)
    if not (math.isfinite(bound) and bound > 0):
        raise UsageError(f"the norm bound must be a number > 0, got {bound!r}")
    norms = torch.linalg.vector_norm(updates, dim=1, keepdim=True)
    return updates * (bound / norms.clamp_min(1e-12)).clamp(max=1.0)
