"""DPOptimizer: noise scale, expected-batch division, virtual steps, empty batches, CSPRNG seeding."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from privet.crypto.prg import TEST_SEEDS_ENV, Randomness
from privet.dp.sgd import DPOptimizer, PerSampleClipper
from privet.errors import UsageError


@pytest.fixture
def test_mode(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(TEST_SEEDS_ENV, "1")


def _noise_only_update(noise_multiplier: float, clip: float, expected: float, size: int = 40_000) -> torch.Tensor:
    p = nn.Parameter(torch.zeros(size, dtype=torch.float64))
    opt = DPOptimizer(
        torch.optim.SGD([p], lr=1.0),
        noise_multiplier=noise_multiplier,
        max_grad_norm=clip,
        expected_batch_size=expected,
    )
    opt.step()  # no backward at all: an empty Poisson batch
    return -p.detach()


@pytest.mark.parametrize(("sigma", "clip", "expected"), [(1.0, 1.0, 1.0), (2.0, 0.5, 4.0), (0.7, 3.0, 12.5)])
def test_noise_std_is_sigma_times_clip_over_expected_batch(sigma: float, clip: float, expected: float) -> None:
    update = _noise_only_update(sigma, clip, expected)
    target = sigma * clip / expected
    n = update.numel()
    # std of the sample std is about target / sqrt(2n) = 0.35%: 5% is > 10 sigma of slack
    assert abs(float(update.std()) / target - 1) < 0.05
    assert abs(float(update.mean())) < 6 * target / math.sqrt(n)
    # Gaussian shape: fraction within one std
    within = float((update.abs() < target).double().mean())
    assert abs(within - 0.6827) < 0.02


def test_step_divides_the_clipped_sum_by_the_expected_batch_size(test_mode: None) -> None:
    torch.manual_seed(0)
    model = nn.Linear(3, 2).double()
    start = [p.detach().clone() for p in model.parameters()]
    x, y = torch.randn(5, 3, dtype=torch.float64), torch.randint(0, 2, (5,))
    PerSampleClipper(model, 0.5, loss_reduction="sum")
    opt = DPOptimizer(
        torch.optim.SGD(model.parameters(), lr=1.0),
        noise_multiplier=1.0,
        max_grad_norm=0.5,
        expected_batch_size=8,
        randomness=Randomness.for_tests(1),
    )
    nn.functional.cross_entropy(model(x), y, reduction="sum").backward()
    sums = [p.grad.clone() for p in model.parameters()]
    opt.step()
    # replay the noise: same test seed, same per-device draw order
    gen = torch.Generator().manual_seed(int.from_bytes(Randomness.for_tests(1).bytes(8), "little"))
    for p, s, p0 in zip(model.parameters(), sums, start, strict=True):
        noise = torch.empty(p.shape, dtype=p.dtype).normal_(0.0, 0.5, generator=gen)
        torch.testing.assert_close(p.detach(), p0 - (s + noise) / 8)


def test_virtual_steps_equal_one_big_step(test_mode: None) -> None:
    torch.manual_seed(1)
    x, y = torch.randn(12, 4, dtype=torch.float64), torch.randint(0, 3, (12,))

    def run(chunks: list[slice]) -> list[torch.Tensor]:
        torch.manual_seed(2)
        model = nn.Sequential(nn.Linear(4, 5), nn.Tanh(), nn.Linear(5, 3)).double()
        PerSampleClipper(model, 0.3, loss_reduction="sum")
        opt = DPOptimizer(
            torch.optim.SGD(model.parameters(), lr=0.5),
            noise_multiplier=1.3,
            max_grad_norm=0.3,
            expected_batch_size=10,
            randomness=Randomness.for_tests(7),
        )
        opt.zero_grad()
        for i, part in enumerate(chunks):
            nn.functional.cross_entropy(model(x[part]), y[part], reduction="sum").backward()
            if i < len(chunks) - 1:
                opt.virtual_step()
        opt.step()
        return [p.detach() for p in model.parameters()]

    big = run([slice(0, 12)])
    for a, b in zip(big, run([slice(0, 5), slice(5, 9), slice(9, 12)]), strict=True):
        torch.testing.assert_close(a, b)


def test_zero_grad_clears_the_accumulators() -> None:
    p = nn.Parameter(torch.zeros(3))
    opt = DPOptimizer(torch.optim.SGD([p], lr=1.0), noise_multiplier=1.0, max_grad_norm=1.0, expected_batch_size=1)
    p.grad = torch.ones(3)
    opt.virtual_step()
    assert p.grad is None and opt._accumulated
    opt.zero_grad()
    assert not opt._accumulated


def test_production_noise_is_not_seeded_from_a_fixed_value(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(TEST_SEEDS_ENV, raising=False)
    with pytest.raises(UsageError):
        Randomness.for_tests(0)
    updates = [_noise_only_update(1.0, 1.0, 1.0, size=64) for _ in range(2)]
    assert not torch.equal(updates[0], updates[1])
    p = nn.Parameter(torch.zeros(1))
    opt = DPOptimizer(torch.optim.SGD([p], lr=1.0), noise_multiplier=1.0, max_grad_norm=1.0, expected_batch_size=1)
    assert isinstance(opt.randomness, Randomness) and not opt.randomness.seeded
    # the torch generator is reseeded from the CSPRNG at every step: consecutive steps use different seeds
    seeds: list[bytes] = []

    class Spy:
        def bytes(self, n: int) -> bytes:
            seeds.append(real.bytes(n))
            return seeds[-1]

    real = opt.randomness
    opt.randomness = Spy()  # type: ignore[assignment]
    opt.step()
    opt.step()
    assert len(seeds) == 2 and len(seeds[0]) == 8 and seeds[0] != seeds[1]


def test_frozen_parameters_are_not_noised() -> None:
    frozen = nn.Parameter(torch.zeros(3), requires_grad=False)
    live = nn.Parameter(torch.zeros(3))
    opt = DPOptimizer(
        torch.optim.SGD([frozen, live], lr=1.0), noise_multiplier=1.0, max_grad_norm=1.0, expected_batch_size=1
    )
    opt.step()
    assert not frozen.any() and live.any()


def test_works_with_lr_schedulers_and_state_dicts() -> None:
    p = nn.Parameter(torch.zeros(2))
    opt = DPOptimizer(torch.optim.Adam([p], lr=0.1), noise_multiplier=1.0, max_grad_norm=1.0, expected_batch_size=4)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
    opt.step()
    sched.step()
    assert opt.param_groups[0]["lr"] == pytest.approx(0.05)
    state = opt.state_dict()
    assert state["state"]
    opt.load_state_dict(state)
    assert opt.steps == 1 and "noise_multiplier=1" in repr(opt)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"noise_multiplier": 0.0},
        {"noise_multiplier": -1.0},
        {"max_grad_norm": float("inf")},
        {"expected_batch_size": 0},
        {"expected_batch_size": True},
        {"randomness": 1234},
    ],
)
def test_invalid_arguments_are_refused(kwargs: dict) -> None:
    args = {"noise_multiplier": 1.0, "max_grad_norm": 1.0, "expected_batch_size": 4.0} | kwargs
    with pytest.raises(UsageError):
        DPOptimizer(torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=1.0), **args)


def test_refuses_a_non_optimizer() -> None:
    with pytest.raises(UsageError, match=r"torch\.optim\.Optimizer"):
        DPOptimizer("sgd", noise_multiplier=1.0, max_grad_norm=1.0, expected_batch_size=1)  # type: ignore[arg-type]
