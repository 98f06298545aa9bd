"""Client-level DP: clipping, noise of the stated size, adaptive clipping, accounting, exact resume."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import pytest
import torch

from privet.crypto.prg import TEST_SEEDS_ENV, Randomness
from privet.dp.accounting import GaussianEvent, compose_epsilon
from privet.errors import UsageError
from privet.federated.privacy import AdaptiveClipping, ClientDP, plan_rounds
from privet.federated.strategies import FedAdam, FedAvgM, Median, Strategy


@pytest.fixture(autouse=True)
def test_seeds(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(TEST_SEEDS_ENV, "1")


def _seeded(seed: int) -> Callable[[int, str], Randomness]:
    return lambda round_, purpose: Randomness.for_tests(seed * 1_000_003 + round_ * 2 + (purpose == "noise"))


def _dp(**settings: object) -> ClientDP:
    defaults: dict[str, object] = {"noise_multiplier": 1.0, "clip": 1.0, "clients": 100, "sample_rate": 0.1}
    defaults["randomness"] = _seeded(0)
    return ClientDP(**{**defaults, **settings})  # type: ignore[arg-type]


def test_plan_rounds_meets_the_target() -> None:
    noise, guarantee = plan_rounds(2.0, 1e-5, sample_rate=0.1, rounds=50)
    assert guarantee.epsilon <= 2.0 and guarantee.accountant == "pld"
    slightly_less = compose_epsilon([GaussianEvent(noise * 0.98, 0.1, 50)], 1e-5, "pld")
    assert slightly_less.epsilon > 2.0  # calibrated, not padded


def test_updates_are_clipped_summed_and_divided_by_the_expected_count() -> None:
    strategy = _dp(noise_multiplier=1e-9)
    updates = torch.tensor([[3.0, 4.0], [0.3, 0.4]], dtype=torch.float64)
    out = strategy.aggregate(torch.zeros(2, dtype=torch.float64), updates, torch.tensor([1000.0, 1.0]))
    # clipped to [0.6, 0.8] and [0.3, 0.4]; weights ignored; divided by q N = 10
    assert torch.allclose(out, torch.tensor([0.09, 0.12], dtype=torch.float64), atol=1e-9)


def test_server_noise_has_the_stated_size() -> None:
    strategy = _dp(noise_multiplier=1.5, clip=2.0)
    out = strategy.aggregate(torch.zeros(20000), torch.zeros(3, 20000), torch.ones(3))
    expected_std = 1.5 * 2.0 / 10  # z C / (q N)
    assert abs(float(out.std()) / expected_std - 1) < 0.03 and abs(float(out.mean())) < 0.01


def test_adaptive_clipping_tracks_the_target_quantile() -> None:
    norms = torch.linspace(1, 10, 100, dtype=torch.float64)
    updates = torch.zeros(100, 2, dtype=torch.float64)
    updates[:, 0] = norms
    adaptive = AdaptiveClipping(target_quantile=0.3, learning_rate=0.2, count_noise=1.0)
    strategy = _dp(clients=100, sample_rate=1.0, clip=0.5, adaptive=adaptive)
    for _ in range(120):
        strategy.aggregate(torch.zeros(2, dtype=torch.float64), updates, torch.ones(100))
    assert abs(strategy.clip - float(torch.quantile(norms, 0.3))) < 0.5
    z = strategy.noise_multiplier
    assert strategy.update_noise == pytest.approx((z**-2 - (2 * 1.0) ** -2) ** -0.5) and strategy.update_noise > z


def test_client_sampling_is_poisson_at_the_stated_rate() -> None:
    strategy = _dp(clients=1000, sample_rate=0.1)
    sizes = [len(strategy.sample(r)) for r in range(200)]
    assert abs(np.mean(sizes) - 100) < 3 and 6 < np.std(sizes) < 13  # binomial(1000, 0.1): std 9.5
    assert np.array_equal(strategy.sample(5), strategy.sample(5))  # seeded per round: replayable


@pytest.mark.parametrize(
    "base", [lambda: None, lambda: FedAvgM(momentum=0.5), lambda: FedAdam(server_lr=0.05)], ids=["fedavg", "m", "adam"]
)
def test_resume_from_state_replays_the_run(base: Callable[[], Strategy | None]) -> None:
    def make() -> ClientDP:
        return _dp(base=base(), adaptive=AdaptiveClipping(count_noise=5.0), sample_rate=0.5, clients=8)

    rng = torch.Generator().manual_seed(3)
    rounds = [torch.randn(4, 7, generator=rng, dtype=torch.float64) for _ in range(5)]
    straight, model = make(), torch.zeros(7, dtype=torch.float64)
    for updates in rounds:
        model = straight.aggregate(model, updates, torch.ones(4))
    first, resumed = make(), torch.zeros(7, dtype=torch.float64)
    for updates in rounds[:3]:
        resumed = first.aggregate(resumed, updates, torch.ones(4))
    second = make()
    second.load_state_dict(first.state_dict())
    for updates in rounds[3:]:
        resumed = second.aggregate(resumed, updates, torch.ones(4))
    assert torch.equal(resumed, model) and second.clip == straight.clip


def test_event_and_description() -> None:
    strategy = _dp()
    assert strategy.event() == GaussianEvent(1.0, 0.1, 1)
    described = strategy.describe()
    assert described["base"]["name"] == "fedavg"


@pytest.mark.parametrize(
    ("settings", "match"),
    [
        ({"base": Median()}, "replaces the average"),
        ({"base": FedAvgM(norm_bound=1.0)}, "clips the updates itself"),
        ({"adaptive": AdaptiveClipping(count_noise=0.4)}, "count_noise must exceed"),
        ({"clip": 0.0}, "clip"),
        ({"noise_multiplier": math.inf}, "noise_multiplier"),
        ({"sample_rate": 1.5}, "sample_rate"),
    ],
)
def test_bad_settings_are_refused(settings: dict, match: str) -> None:
    with pytest.raises(UsageError, match=match):
        _dp(**settings)
    with pytest.raises(UsageError):
        AdaptiveClipping(target_quantile=1.0)
