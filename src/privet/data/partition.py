"""Splitting one data set into federated clients' shares, as federated benchmarks do.

- ``iid``: a random permutation cut into equal parts;
- ``dirichlet:ALPHA``: for each class, the class's records are split among clients by proportions drawn from
  ``Dirichlet(ALPHA)`` (Hsu et al. 2019); small ALPHA gives each client few classes. Drawn again (up to a
  bound) until every client holds at least ``min_size`` records, as the usual implementations do;
- ``shards:K``: records sorted by label, cut into ``clients * K`` shards, each client given K shards at random
  (McMahan et al. 2017's pathological non-IID split).

:func:`partition` returns one index array per client; the partition is a function of the labels, the scheme
and the seed only, so a simulation can rebuild any client's share without keeping the others.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from privet.errors import UsageError

__all__ = ["Scheme", "parse_scheme", "partition"]

_DIRICHLET_TRIES = 100


@dataclass(frozen=True)
class Scheme:
    """A partition scheme: ``kind`` (iid, dirichlet, shards) and its parameter (alpha, or shards per client)."""

    kind: str
    value: float = 0.0

    def __str__(self) -> str:
        if self.kind == "iid":
            return "iid"
        return f"{self.kind}:{self.value:g}"


def parse_scheme(text: str) -> Scheme:
    """``iid``, ``dirichlet:ALPHA`` (ALPHA > 0) or ``shards:K`` (K >= 1 whole)."""
    kind, _, value = text.strip().lower().partition(":")
    hint = "Use iid, dirichlet:ALPHA (e.g. dirichlet:0.5) or shards:K (e.g. shards:2)."
    if kind == "iid" and not value:
        return Scheme("iid")
    try:
        number = float(value)
    except ValueError:
        raise UsageError(f"partition {text!r} is not understood", hint) from None
    if kind == "dirichlet" and math.isfinite(number) and number > 0:
        return Scheme("dirichlet", number)
    if kind == "shards" and number >= 1 and number == int(number):
        return Scheme("shards", number)
    raise UsageError(f"partition {text!r} is not understood", hint)


def partition(
    labels: np.ndarray, clients: int, scheme: Scheme | str, *, seed: int = 0, min_size: int = 1
) -> list[np.ndarray]:
    """Indices of ``labels`` for each of ``clients`` clients (disjoint, together all records, each sorted)."""
    if isinstance(scheme, str):
        scheme = parse_scheme(scheme)
    labels = np.asarray(labels)
    n = len(labels)
    if clients < 1 or clients * max(1, min_size) > n:
        raise UsageError(f"cannot give {clients} clients at least {max(1, min_size)} of {n} records each")
    rng = np.random.default_rng(seed)
    if scheme.kind == "iid":
        parts = np.array_split(rng.permutation(n), clients)
    elif scheme.kind == "dirichlet":
        parts = _dirichlet(labels, clients, scheme.value, rng, min_size)
    elif scheme.kind == "shards":
        parts = _shards(labels, clients, int(scheme.value), rng)
    else:
        raise UsageError(f"unknown partition kind {scheme.kind!r}", "Use iid, dirichlet or shards.")
    return [np.sort(p).astype(np.int64) for p in parts]


def _dirichlet(labels: np.ndarray, clients: int, alpha: float, rng: np.random.Generator, min_size: int) -> list:
    classes = np.unique(labels)
    for _ in range(_DIRICHLET_TRIES):
        parts: list[list[np.ndarray]] = [[] for _ in range(clients)]
        for c in classes:
            members = rng.permutation(np.flatnonzero(labels == c))
            shares = rng.dirichlet(np.full(clients, alpha))
            cuts = (np.cumsum(shares)[:-1] * len(members)).astype(int)
            for k, piece in enumerate(np.split(members, cuts)):
                parts[k].append(piece)
        joined = [np.concatenate(p) for p in parts]
        if min(len(p) for p in joined) >= min_size:
            return joined
    raise UsageError(
        f"Dirichlet({alpha:g}) left some of {clients} clients with fewer than {min_size} records in "
        f"{_DIRICHLET_TRIES} draws",
        "Use a larger alpha, fewer clients or a smaller minimum size.",
    )


def _shards(labels: np.ndarray, clients: int, per_client: int, rng: np.random.Generator) -> list:
    total = clients * per_client
    if total > len(labels):
        raise UsageError(f"{total} shards of at least one record need {total} records, not {len(labels)}")
    order = np.argsort(labels, kind="stable")
    shards = np.array_split(order, total)
    assignment = rng.permutation(total).reshape(clients, per_client)
    return [np.concatenate([shards[s] for s in row]) for row in assignment]
