"""Federated partitions: disjoint, complete, reproducible, and as skewed as their scheme says."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from privet.data.partition import Scheme, parse_scheme, partition
from privet.errors import UsageError

LABELS = np.random.default_rng(0).integers(0, 10, 5000)


def _check_exact_cover(parts: list[np.ndarray], n: int) -> None:
    joined = np.concatenate(parts)
    assert len(joined) == n and np.array_equal(np.sort(joined), np.arange(n))


@given(st.sampled_from(["iid", "dirichlet:0.5", "dirichlet:100", "shards:2"]), st.integers(1, 40), st.integers(0, 99))
@settings(max_examples=40, deadline=None)
def test_every_record_goes_to_exactly_one_client(scheme: str, clients: int, seed: int) -> None:
    parts = partition(LABELS, clients, scheme, seed=seed)
    assert len(parts) == clients and all(len(p) >= 1 for p in parts)
    _check_exact_cover(parts, len(LABELS))
    again = partition(LABELS, clients, scheme, seed=seed)
    assert all(np.array_equal(a, b) for a, b in zip(parts, again, strict=True))


def _classes_per_client(parts: list[np.ndarray], share: float = 0.05) -> float:
    counts = [np.bincount(LABELS[p], minlength=10) / len(p) for p in parts]
    return float(np.mean([(c >= share).sum() for c in counts]))


def test_skew_follows_the_scheme() -> None:
    iid = partition(LABELS, 10, "iid")
    assert max(len(p) for p in iid) - min(len(p) for p in iid) <= 1
    assert _classes_per_client(iid) == 10
    skewed = _classes_per_client(partition(LABELS, 10, "dirichlet:0.1", seed=1))
    mild = _classes_per_client(partition(LABELS, 10, "dirichlet:0.5", seed=1))
    near_iid = _classes_per_client(partition(LABELS, 10, "dirichlet:1000", seed=1))
    assert skewed < mild < near_iid == 10
    shards = partition(LABELS, 10, "shards:2")
    assert all(len(np.unique(LABELS[p])) <= 4 for p in shards)  # two label-sorted shards: at most 2 x 2 labels


def test_min_size_is_honoured_or_refused() -> None:
    parts = partition(LABELS, 50, "dirichlet:0.3", seed=2, min_size=20)
    assert min(len(p) for p in parts) >= 20
    with pytest.raises(UsageError, match="fewer than"):
        partition(LABELS, 200, "dirichlet:0.01", min_size=24)
    with pytest.raises(UsageError, match="cannot give"):
        partition(LABELS[:5], 6, "iid")


@pytest.mark.parametrize(
    ("text", "expected"),
    [("iid", Scheme("iid")), ("Dirichlet:0.5", Scheme("dirichlet", 0.5)), ("shards:2", Scheme("shards", 2))],
)
def test_parse(text: str, expected: Scheme) -> None:
    assert parse_scheme(text) == expected and parse_scheme(str(expected)) == expected


@pytest.mark.parametrize("text", ["", "iid:2", "dirichlet", "dirichlet:0", "dirichlet:-1", "dirichlet:nan",
                                  "shards:1.5", "shards:0", "label", "dirichlet:x"])  # fmt: skip
def test_bad_schemes_are_usage_errors(text: str) -> None:
    with pytest.raises(UsageError, match="not understood"):
        parse_scheme(text)
