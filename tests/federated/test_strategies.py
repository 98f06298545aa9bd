"""Aggregation rules and strategies: exact formulas, robustness to outliers, state that checkpoints exactly."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from privet.errors import UsageError
from privet.federated import aggregate
from privet.federated.strategies import (
    STRATEGIES,
    FedAdagrad,
    FedAdam,
    FedAvg,
    FedAvgM,
    FedProx,
    FedYogi,
    Krum,
    Median,
    MultiKrum,
    TrimmedMean,
    make_strategy,
)


def _honest(n: int, d: int, seed: int = 0) -> torch.Tensor:
    return 0.1 * torch.randn(n, d, generator=torch.Generator().manual_seed(seed), dtype=torch.float64) + 1.0


@given(
    st.integers(1, 7),
    st.integers(1, 5),
    st.lists(st.floats(0.5, 100), min_size=7, max_size=7),
    st.integers(0, 2**31),
)
@settings(max_examples=40, deadline=None)
def test_weighted_mean_is_the_weighted_average(n: int, d: int, weights: list[float], seed: int) -> None:
    updates = torch.randn(n, d, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    w = torch.tensor(weights[:n], dtype=torch.float64)
    expected = sum(w[k] * updates[k] for k in range(n)) / w.sum()
    assert torch.allclose(aggregate.weighted_mean(updates, w), expected)


def test_median_and_trimmed_mean_per_coordinate() -> None:
    updates = torch.tensor([[1.0, 10.0], [2.0, 20.0], [3.0, 30.0], [100.0, -50.0]])
    assert torch.equal(aggregate.coordinate_median(updates), torch.tensor([2.5, 15.0]))
    assert torch.equal(aggregate.coordinate_median(updates[:3]), torch.tensor([2.0, 20.0]))
    assert torch.equal(aggregate.trimmed_mean(updates, 0.25), torch.tensor([2.5, 15.0]))  # one cut from each end
    assert torch.equal(aggregate.trimmed_mean(updates, 0.2), updates.mean(0))  # floor(0.8) = 0: nothing cut


@pytest.mark.parametrize("rule", ["median", "trimmed", "krum", "multi_krum"])
@pytest.mark.parametrize("attack", ["scaled", "sign_flip"])
def test_robust_rules_stay_near_the_honest_updates(rule: str, attack: str) -> None:
    honest = _honest(8, 50)
    bad = honest[:2] * 100 if attack == "scaled" else -5 * honest[:2]
    updates = torch.cat([honest, bad])
    weights = torch.ones(10, dtype=torch.float64)
    weights[8:] = 1000  # poisoners also claim huge data sets
    combined = {
        "median": lambda: aggregate.coordinate_median(updates),
        "trimmed": lambda: aggregate.trimmed_mean(updates, 0.2),
        "krum": lambda: aggregate.krum(updates, 2),
        "multi_krum": lambda: aggregate.multi_krum(updates, weights, 2, 6),
    }[rule]()
    target = honest.mean(0)
    assert float((combined - target).norm() / target.norm()) < 0.1
    poisoned = aggregate.weighted_mean(updates, weights)
    assert float((poisoned - target).norm() / target.norm()) > 1.0  # the plain mean is captured


def test_krum_scores_by_hand() -> None:
    updates = torch.tensor([[0.0], [1.0], [3.0], [10.0]])
    # n=4, byzantine=1: each update's 1 nearest neighbour, squared distance
    assert aggregate.krum_scores(updates, 1).tolist() == [1.0, 1.0, 4.0, 49.0]
    assert aggregate.krum(updates, 1).tolist() == [0.0]
    with pytest.raises(UsageError, match="more than byzantine"):
        aggregate.krum_scores(updates, 2)


def test_clip_norms_bounds_each_row_and_keeps_small_ones() -> None:
    updates = torch.tensor([[3.0, 4.0], [0.3, 0.4], [0.0, 0.0]])
    clipped = aggregate.clip_norms(updates, 1.0)
    assert torch.allclose(clipped, torch.tensor([[0.6, 0.8], [0.3, 0.4], [0.0, 0.0]]))


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: aggregate.weighted_mean(torch.ones(2, 3), torch.ones(3)), "weights"),
        (lambda: aggregate.weighted_mean(torch.ones(2, 3), torch.zeros(2)), "not all zero"),
        (lambda: aggregate.weighted_mean(torch.ones(2, 3), torch.tensor([1.0, -1.0])), "non-negative"),
        (lambda: aggregate.coordinate_median(torch.tensor([[1.0, float("nan")]])), "NaN"),
        (lambda: aggregate.trimmed_mean(torch.ones(4, 2), 0.5), "trim"),
        (lambda: aggregate.clip_norms(torch.ones(2, 2), 0.0), "bound"),
        (lambda: aggregate.coordinate_median(torch.ones(0, 2)), "matrix"),
        (lambda: aggregate.multi_krum(torch.ones(5, 2), torch.ones(5), 1, 0), "keeps"),
    ],
)
def test_bad_inputs_are_usage_errors(call: object, match: str) -> None:
    with pytest.raises(UsageError, match=match):
        call()  # type: ignore[operator]


def test_fedavg_moves_the_model_to_the_weighted_mean_of_client_models() -> None:
    model = torch.tensor([1.0, 1.0], dtype=torch.float64)
    clients = torch.tensor([[2.0, 0.0], [4.0, 2.0]], dtype=torch.float64)
    weights = torch.tensor([1.0, 3.0])
    new = FedAvg().aggregate(model, clients - model, weights)
    assert torch.allclose(new, (1 * clients[0] + 3 * clients[1]) / 4)
    assert torch.equal(model, torch.tensor([1.0, 1.0], dtype=torch.float64))  # not modified
    assert torch.allclose(FedAvg(server_lr=0.5).aggregate(model, clients - model, weights), model + 0.5 * (new - model))
    bounded = FedAvg(norm_bound=0.1).aggregate(model, clients - model, weights)
    assert float((bounded - model).norm()) <= 0.1 + 1e-12


def test_fedprox_tells_clients_its_proximal_term() -> None:
    assert FedProx(mu=0.1).client_config() == {"proximal_mu": 0.1} and FedAvg().client_config() == {}


def test_fedadam_by_hand() -> None:
    s = FedAdam(server_lr=0.1, beta1=0.9, beta2=0.99, tau=1e-3)
    model = torch.zeros(2, dtype=torch.float64)
    d = torch.tensor([[1.0, -2.0]], dtype=torch.float64)
    out = s.aggregate(model, d, torch.ones(1))
    m = 0.1 * d[0]
    v = 0.99 * 1e-6 + 0.01 * d[0].square()
    assert torch.allclose(out, 0.1 * m / (v.sqrt() + 1e-3))


@pytest.mark.parametrize("cls", [FedAvgM, FedAdagrad, FedAdam, FedYogi])
def test_server_state_checkpoints_exactly(cls: type) -> None:
    rounds = [_honest(4, 6, seed=s) - 1 for s in range(4)]
    weights = torch.tensor([1.0, 2.0, 3.0, 4.0])
    straight = cls()
    model = torch.zeros(6, dtype=torch.float64)
    for updates in rounds:
        model = straight.aggregate(model, updates, weights)
    first = cls()
    resumed = torch.zeros(6, dtype=torch.float64)
    for updates in rounds[:2]:
        resumed = first.aggregate(resumed, updates, weights)
    state = first.state_dict()
    first.aggregate(resumed, rounds[2], weights)  # the copy in `state` must not move with it
    second = cls()
    second.load_state_dict(state)
    for updates in rounds[2:]:
        resumed = second.aggregate(resumed, updates, weights)
    assert torch.equal(resumed, model)


def test_yogi_second_moment_moves_additively() -> None:
    s = FedYogi(server_lr=0.01, beta2=0.9, tau=1e-3)
    s.aggregate(torch.zeros(1), torch.tensor([[10.0]]), torch.ones(1))
    assert s.second is not None and torch.allclose(s.second, torch.tensor([1e-6 + 0.1 * 100.0]))


def test_robust_strategies_through_make_strategy() -> None:
    honest = _honest(8, 10)
    updates = torch.cat([honest, honest[:2] * -20])
    model = torch.zeros(10, dtype=torch.float64)
    for name, settings_ in [("median", {}), ("trimmed_mean", {"trim": 0.2}), ("krum", {"byzantine": 2}),
                            ("multi_krum", {"byzantine": 2})]:  # fmt: skip
        out = make_strategy(name, **settings_).aggregate(model, updates, torch.ones(10))
        assert float((out - honest.mean(0)).norm() / honest.mean(0).norm()) < 0.1, name
    assert isinstance(make_strategy("multi_krum", byzantine=1), MultiKrum) and isinstance(make_strategy("krum"), Krum)
    assert isinstance(make_strategy("median"), Median) and isinstance(make_strategy("trimmed_mean"), TrimmedMean)
    assert set(STRATEGIES) >= {"fedavg", "fedprox", "fedavgm", "fedadagrad", "fedadam", "fedyogi"}
    assert make_strategy("fedadam", server_lr=0.05).describe()["server_lr"] == 0.05


@pytest.mark.parametrize(
    ("name", "settings_", "match"),
    [
        ("fedsgd", {}, "unknown strategy"),
        ("fedavg", {"momentum": 0.9}, "does not take"),
        ("fedavgm", {"momentum": 1.0}, "momentum"),
        ("fedadam", {"server_lr": 0}, "server_lr"),
        ("krum", {"byzantine": -1}, "byzantine"),
        ("trimmed_mean", {"trim": 0.6}, "trim"),
    ],
)
def test_bad_strategy_settings(name: str, settings_: dict, match: str) -> None:
    with pytest.raises(UsageError, match=match):
        make_strategy(name, **settings_)


def test_updates_that_do_not_fit_the_model_are_refused() -> None:
    with pytest.raises(UsageError, match="do not fit"):
        FedAvg().aggregate(torch.zeros(3), torch.zeros(2, 4), torch.ones(2))
    with pytest.raises(UsageError, match="keeps no state"):
        FedAvg().load_state_dict({"velocity": torch.zeros(1)})
