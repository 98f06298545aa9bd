"""Poisson and shuffled samplers: batch-size statistics, the accountant event, fail-closed refusals."""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np
import pytest
import torch
from scipy import stats
from torch.utils.data import DataLoader, TensorDataset

from privet.crypto.prg import TEST_SEEDS_ENV, Randomness
from privet.dp.accounting import GaussianEvent
from privet.dp.sgd.plan import plan_privacy
from privet.dp.sgd.sampler import PoissonSampler, ShuffledSampler
from privet.errors import UsageError


@pytest.fixture
def seeded(monkeypatch: pytest.MonkeyPatch) -> Iterator[Randomness]:
    monkeypatch.setenv(TEST_SEEDS_ENV, "1")
    yield Randomness.for_tests(20240611)


def test_batch_sizes_are_binomial(seeded: Randomness) -> None:
    n, q, steps = 2000, 0.03, 3000
    sampler = PoissonSampler(n, q, steps=steps, randomness=seeded)
    batches = list(sampler)
    sizes = np.array([len(b) for b in batches])
    assert len(batches) == steps == sampler.steps_drawn
    mean, var = n * q, n * q * (1 - q)
    # Mean: z-test at 1e-4. Variance: the sample variance of Binomial draws, chi-square at 1e-4.
    z = (sizes.mean() - mean) / math.sqrt(var / steps)
    assert abs(z) < stats.norm.isf(5e-5)
    chi2 = (steps - 1) * sizes.var(ddof=1) / var
    assert stats.chi2.ppf(5e-5, steps - 1) < chi2 < stats.chi2.isf(5e-5, steps - 1)
    # Each record's inclusion count is Binomial(steps, q): a chi-square goodness-of-fit on the counts' total.
    counts = np.bincount(np.concatenate([np.asarray(b, dtype=np.int64) for b in batches]), minlength=n)
    assert abs(counts.mean() - steps * q) < 5 * math.sqrt(steps * q * (1 - q) / n)
    assert all(len(set(b)) == len(b) and all(0 <= i < n for i in b) for b in batches[:50])


def test_empty_batches_happen_and_are_yielded(seeded: Randomness) -> None:
    sizes = [len(b) for b in PoissonSampler(10, 0.02, steps=400, randomness=seeded)]
    assert sizes.count(0) > 250  # P(empty) = 0.98**10 ~ 0.82


def test_event_matches_the_sampler() -> None:
    sampler = PoissonSampler.from_batch_size(60000, 256, epochs=3)
    assert sampler.sample_rate == pytest.approx(256 / 60000, rel=1e-15)
    assert sampler.sample_rate >= 256 / 60000 and (sampler.sample_rate * 2**53).is_integer()
    assert sampler.steps == round(3 / sampler.sample_rate) == len(sampler)
    assert sampler.expected_batch_size == pytest.approx(256)
    assert sampler.event(1.1) == GaussianEvent(1.1, sampler.sample_rate, sampler.steps)
    assert PoissonSampler(100, 0.5, steps=7).event(2.0).steps == 7


def test_a_second_pass_is_refused() -> None:
    sampler = PoissonSampler(50, 0.1, steps=3)
    assert len(list(sampler)) == 3
    with pytest.raises(UsageError, match="already run"):
        iter(sampler)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"num_samples": 0, "sample_rate": 0.1, "steps": 1},
        {"num_samples": 10, "sample_rate": 0.0, "steps": 1},
        {"num_samples": 10, "sample_rate": 1.5, "steps": 1},
        {"num_samples": 10, "sample_rate": float("nan"), "steps": 1},
        {"num_samples": 10, "sample_rate": 0.1},
        {"num_samples": 10, "sample_rate": 0.1, "steps": 2, "epochs": 1},
        {"num_samples": 10, "sample_rate": 0.1, "steps": 0},
        {"num_samples": 10, "sample_rate": 0.1, "epochs": -1},
    ],
)
def test_invalid_parameters(kwargs: dict) -> None:
    with pytest.raises(UsageError):
        PoissonSampler(**kwargs)


def test_production_randomness_is_the_os_csprng(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(TEST_SEEDS_ENV, raising=False)
    first, second = PoissonSampler(5000, 0.5, steps=2), PoissonSampler(5000, 0.5, steps=2)
    assert not first.randomness.seeded and not second.randomness.seeded
    assert list(first) != list(second)
    with pytest.raises(UsageError):
        Randomness.for_tests(1)  # no seeded stream outside test mode
    with pytest.raises(UsageError):
        PoissonSampler(10, 0.1, steps=1, randomness=np.random.default_rng(0))  # type: ignore[arg-type]


def test_fixed_size_sampler_refuses_to_give_an_event() -> None:
    sampler = ShuffledSampler(100, 32, epochs=2)
    with pytest.raises(UsageError, match="no differential-privacy accounting"):
        sampler.event(1.0)
    with pytest.raises(UsageError, match="no differential-privacy accounting"):
        plan_privacy(sampler, target_epsilon=1.0, target_delta=1e-5, max_grad_norm=1.0)  # type: ignore[arg-type]


def test_shuffled_sampler_covers_every_record_once_per_epoch(seeded: Randomness) -> None:
    sampler = ShuffledSampler(100, 32, epochs=3, randomness=seeded)
    batches = list(sampler)
    assert len(batches) == len(sampler) == 12 and [len(b) for b in batches[:4]] == [32, 32, 32, 4]
    for epoch in range(3):
        assert sorted(i for b in batches[4 * epoch : 4 * epoch + 4] for i in b) == list(range(100))
    assert batches[0] != batches[4]
    assert len(ShuffledSampler(100, 32, drop_last=True)) == 3


def test_usable_as_a_dataloader_batch_sampler(seeded: Randomness) -> None:
    data = TensorDataset(torch.arange(40.0).unsqueeze(1), torch.arange(40))
    loader = DataLoader(data, batch_sampler=PoissonSampler(40, 0.5, steps=5, randomness=seeded))
    batches = list(loader)
    assert len(batches) == 5
    for x, y in batches:
        assert torch.equal(x.squeeze(1).long(), y)
