"""Simulation: the production client code on many simulated clients; robust rules against poisoned updates."""

from __future__ import annotations

import pytest
import torch

from privet.data.bundled import Split, breast_cancer, digits
from privet.errors import UsageError
from privet.federated.local import LocalSettings
from privet.federated.simulation import Attack, SimulationResult, simulate
from privet.federated.strategies import make_strategy
from privet.models.reference import ModelSpec

SPEC = ModelSpec("mlp", 64, 10, 32)
SETTINGS = LocalSettings(1, 16, 0.1)


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def data() -> Split:
    return digits()


def _run(
    data: Split, name: str, attack: Attack | None = None, rounds: int = 30, **settings: object
) -> SimulationResult:
    return simulate(
        SPEC, data.x_train, data.y_train, make_strategy(name, **settings), clients=10, per_round=10, rounds=rounds,
        settings=SETTINGS, test=(data.x_test, data.y_test), attack=attack,
    )  # fmt: skip


@pytest.fixture(scope="module")
def clean(data: Split) -> float:
    accuracy = _run(data, "fedavg").accuracy
    assert accuracy is not None and accuracy > 0.93
    return accuracy


@pytest.mark.parametrize(
    "attack", [Attack("sign_flip", frozenset({0, 1}), 10.0), Attack("scale", frozenset({0, 1}), 100.0)], ids=str
)
def test_robust_rules_hold_where_fedavg_collapses(data: Split, clean: float, attack: Attack) -> None:
    """20 % of clients poison every round: FedAvg collapses, median / trimmed mean / Multi-Krum stay within 2
    points of the clean run. Krum keeps one client's update per round, so it learns from a tenth of the data per
    round; it does not collapse, but it stays several points below the clean run on this small task."""
    assert (_run(data, "fedavg", attack).accuracy or 0) < 0.5
    for name, settings in [("median", {}), ("trimmed_mean", {"trim": 0.2}), ("multi_krum", {"byzantine": 2})]:
        accuracy = _run(data, name, attack, **settings).accuracy
        assert accuracy is not None and accuracy >= clean - 0.02, (name, accuracy, clean)
    krum = _run(data, "krum", attack, byzantine=2).accuracy
    assert krum is not None and krum > 0.8


@pytest.mark.parametrize(
    "attack", [Attack("sign_flip", frozenset({0, 1}), 10.0), Attack("scale", frozenset({0, 1}), 100.0)], ids=str
)
def test_krum_holds_where_one_client_s_update_suffices(attack: Attack) -> None:
    """On a task where one client's data trains a good model (logistic regression on the breast-cancer set, 10
    clients of 42 rows), Krum too stays within 2 points of the clean run under the same 20 % poisoning. (On the
    digits above it picks the same single client every round and plateaus about 7 points lower.)"""
    data = breast_cancer()
    spec = ModelSpec("logreg", 30, 2)

    def accuracy(name: str, poison: Attack | None, **settings: object) -> float:
        result = simulate(
            spec, data.x_train, data.y_train, make_strategy(name, **settings), clients=10, per_round=10, rounds=30,
            settings=SETTINGS, test=(data.x_test, data.y_test), attack=poison,
        )  # fmt: skip
        assert result.accuracy is not None
        return result.accuracy

    clean = accuracy("fedavg", None)
    assert clean > 0.93
    if attack.kind == "sign_flip":  # a convex model survives scaled updates under FedAvg; flipped ones it does not
        assert accuracy("fedavg", attack) < 0.5
    for name, settings in [("krum", {"byzantine": 2}), ("median", {}), ("trimmed_mean", {"trim": 0.2})]:
        assert accuracy(name, attack, **settings) >= clean - 0.02, name


def test_rounds_are_reproducible_and_sample_per_round(data: Split) -> None:
    first = simulate(SPEC, data.x_train, data.y_train, make_strategy("fedavg"), clients=40, per_round=5, rounds=3,
                     scheme="dirichlet:0.5", settings=SETTINGS, seed=4)  # fmt: skip
    second = simulate(SPEC, data.x_train, data.y_train, make_strategy("fedavg"), clients=40, per_round=5, rounds=3,
                      scheme="dirichlet:0.5", settings=SETTINGS, seed=4)  # fmt: skip
    assert torch.equal(first.model, second.model)
    assert all(len(r.clients) == 5 for r in first.rounds) and first.rounds[0].clients != first.rounds[1].clients
    with pytest.raises(UsageError, match="per_round"):
        simulate(SPEC, data.x_train, data.y_train, make_strategy("fedavg"), clients=4, per_round=5, rounds=1)
    with pytest.raises(UsageError, match="executor"):
        simulate(SPEC, data.x_train, data.y_train, make_strategy("fedavg"), clients=4, per_round=2, rounds=1,
                 executor="threads")  # fmt: skip


def test_ray_executor_runs_the_same_rounds(data: Split) -> None:
    ray = pytest.importorskip("ray")
    kwargs = {"clients": 20, "per_round": 4, "rounds": 2, "settings": SETTINGS, "seed": 1}
    serial = simulate(SPEC, data.x_train, data.y_train, make_strategy("fedavg"), **kwargs)  # type: ignore[arg-type]
    try:
        on_ray = simulate(SPEC, data.x_train, data.y_train, make_strategy("fedavg"), executor="ray", **kwargs)  # type: ignore[arg-type]
    finally:
        ray.shutdown()
    assert [r.clients for r in on_ray.rounds] == [r.clients for r in serial.rounds]
    assert torch.allclose(on_ray.model, serial.model, atol=1e-5)
