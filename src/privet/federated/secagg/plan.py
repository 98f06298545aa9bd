"""How large each client's neighbourhood and the reconstruction threshold must be, for a round of ``n`` clients.

Each client shares its two secrets (its masking key and its self-mask seed) among its ``k`` neighbours with
threshold ``t``. Two things must hold for every client, with the stated probabilities (union bound over the
``n`` clients), when each neighbour independently drops with probability ``dropout`` and is corrupt (colluding
with the server) with probability ``corrupt``:

- *security*: the corrupt neighbours alone hold fewer than ``t`` shares (``P[Binomial(k, corrupt) >= t]`` at most
  ``2^-security / n``; or, for small federations, ``colluding``: any that many clients together hold fewer than
  ``t``, i.e. ``t > colluding``); always ``t >= 2``; against a server that may lie about who dropped
  (``malicious``), also ``t > k / 2``, so that it can never collect shares of both secrets of the same client;
- *correctness*: at least ``t`` neighbours survive the round (``P[Binomial(k, 1 - dropout) < t]`` at most
  ``2^-correctness / n``); a round that fails this is not a leak, only a round to run again, so when no
  neighbourhood meets it (small federations) the plan takes every other client and says so in ``survivable``.

The graph is a Harary graph ``H(k, n)`` (client ``i`` joined to the ``k / 2`` clients on either side) on a
permutation drawn fresh each round: it is ``k``-connected, so the honest survivors stay connected unless at
least ``k`` clients are removed. ``full=True`` is Bonawitz et al.'s SecAgg: every client a neighbour of every
other. Security holds against a semi-honest server colluding with the corrupt clients; see docs/secagg.md.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
from scipy.stats import binom

from privet.errors import UsageError

__all__ = ["SecAggPlan", "neighbours", "plan"]


@dataclass(frozen=True)
class SecAggPlan:
    clients: int
    degree: int  # k: neighbours per client
    threshold: int  # t: shares that reconstruct a secret
    dropout: float
    corrupt: float
    security: int
    correctness: int
    malicious: bool = False
    colluding: int | None = None

    @property
    def survivable(self) -> bool:
        """Whether rounds survive the planned dropout with the planned probability."""
        return _survives(self.degree, self.threshold, self.clients, self)

    @property
    def full(self) -> bool:
        return self.degree == self.clients - 1


def _threshold(k: int, n: int, p: SecAggPlan) -> int | None:
    """The smallest threshold that keeps ``k`` neighbours secure (see the module docstring), or None."""
    t = max(2, k // 2 + 1 if p.malicious else 2, (p.colluding or 0) + 1)
    limit = 2.0**-p.security / n
    while p.colluding is None and t <= k and binom.sf(t - 1, k, p.corrupt) > limit:
        t += 1
    return t if t <= k else None


def _survives(k: int, t: int, n: int, p: SecAggPlan) -> bool:
    return bool(binom.cdf(t - 1, k, 1 - p.dropout) <= 2.0**-p.correctness / n)


def plan(
    clients: int,
    *,
    dropout: float = 0.1,
    corrupt: float = 0.05,
    security: int = 40,
    correctness: int = 20,
    full: bool = False,
    malicious: bool = False,
    colluding: int | None = None,
) -> SecAggPlan:
    """The smallest even degree (or every other client, with ``full``) and its threshold; see the module doc."""
    if clients < 3:
        raise UsageError(f"secure aggregation needs at least 3 clients, got {clients}")
    if not 0 <= dropout < 0.5 or not 0 <= corrupt < 0.5:
        raise UsageError(f"need 0 <= dropout < 0.5 and 0 <= corrupt < 0.5, got {dropout} and {corrupt}")
    if colluding is not None and not 0 <= colluding < clients - 1:
        raise UsageError(f"colluding must be between 0 and {clients - 2}, got {colluding}")
    wanted = SecAggPlan(clients, 0, 0, dropout, corrupt, security, correctness, malicious, colluding)
    candidates = [clients - 1] if full else [*range(2, clients - 1, 2), clients - 1]
    secure = [(k, t) for k in candidates if (t := _threshold(k, clients, wanted)) is not None]
    if not secure:
        raise UsageError(
            f"{clients} clients are too few to keep each one's input from "
            + (f"{colluding} colluding clients" if colluding is not None else f"a corrupt fraction of {corrupt}"),
            "Run rounds with more clients, or assume fewer colluders.",
        )
    for k, t in secure:
        if _survives(k, t, clients, wanted):
            return dataclasses.replace(wanted, degree=k, threshold=t)
    # No neighbourhood meets the correctness target: the whole federation is the best there is; a round that loses
    # more clients than it tolerates is void and runs again (with fresh keys), which costs time, never privacy.
    k, t = secure[-1]
    return dataclasses.replace(wanted, degree=k, threshold=t)


def neighbours(plan: SecAggPlan, seed: bytes) -> list[list[int]]:
    """Each client's neighbours (sorted): ``H(k, n)`` on a permutation drawn from ``seed`` (fresh per round)."""
    n, k = plan.clients, plan.degree
    if plan.full:
        return [[j for j in range(n) if j != i] for i in range(n)]
    order = np.random.default_rng(np.frombuffer(seed, dtype=np.uint32)).permutation(n)
    position = np.empty(n, dtype=np.int64)
    position[order] = np.arange(n)
    half = k // 2
    result = []
    for i in range(n):
        p = position[i]
        result.append(sorted(int(order[(p + d) % n]) for d in range(-half, half + 1) if d != 0))
    return result
