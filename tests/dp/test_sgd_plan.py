"""The privacy plan and make_private: calibrated noise, the ledger charged before any training, fail-closed checks."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from torch import nn

from privet.crypto.prg import TEST_SEEDS_ENV, Randomness
from privet.dp.accounting import compose_epsilon
from privet.dp.ledger import Ledger
from privet.dp.sgd.plan import plan_privacy
from privet.dp.sgd.private import make_private, train_private
from privet.dp.sgd.sampler import PoissonSampler
from privet.errors import BudgetExceededError, UsageError
from privet.models.manifest import PrivacyGuarantee
from privet.store import Store

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def data() -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(400, 5, generator=generator)
    return x, (x[:, 0] + 0.5 * x[:, 1] > 0).long()


@pytest.fixture
def ledger(sqlite_store: Store) -> Ledger:
    return Ledger(sqlite_store)


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(5, 8), nn.Tanh(), nn.Linear(8, 2))


def _setup(model: nn.Module, data: tuple, **kwargs: object) -> tuple:
    options = {
        "target_epsilon": 2.0,
        "target_delta": 1e-4,
        "epochs": 1,
        "max_grad_norm": 1.0,
        "batch_size": 40,
        "accountant": "rdp",  # cheap; PLD calibration is covered above
        **kwargs,
    }
    return make_private(model, torch.optim.SGD(model.parameters(), lr=0.5), data, **options)  # type: ignore[arg-type]


@pytest.mark.parametrize("accountant", ["pld", "rdp"])
def test_calibrated_noise_is_the_smallest_that_meets_the_target(accountant: str) -> None:
    sampler = PoissonSampler(1000, 0.05, steps=40)
    plan = plan_privacy(sampler, target_epsilon=1.0, target_delta=1e-5, max_grad_norm=0.7, accountant=accountant)
    assert plan.guarantee.epsilon <= 1.0 and plan.guarantee.accountant == accountant
    assert plan.event() == sampler.event(plan.noise_multiplier)
    smaller = dataclasses.replace(plan, noise_multiplier=plan.noise_multiplier * (1 - 1e-3))
    assert compose_epsilon([smaller.event()], 1e-5, accountant).epsilon > 1.0  # type: ignore[arg-type]
    assert plan.epsilon_after(plan.steps) == pytest.approx(plan.guarantee.epsilon)
    assert 0 == plan.epsilon_after(0) < plan.epsilon_after(10) < plan.epsilon_after(40)


def test_manifest_record_carries_every_parameter() -> None:
    sampler = PoissonSampler(1000, 0.05, steps=20)
    plan = plan_privacy(sampler, target_epsilon=2.0, target_delta=1e-5, max_grad_norm=1.0, accountant="rdp")
    record = plan.as_manifest()
    assert (record["epsilon"], record["delta"], record["accountant"]) == (plan.epsilon, 1e-5, "rdp")
    details = record["details"]
    assert details["sampler"] == "poisson" and details["sample_rate"] == sampler.sample_rate  # type: ignore[index]
    assert details["steps"] == 20 and details["noise_multiplier"] == plan.noise_multiplier  # type: ignore[index]
    assert details["max_grad_norm"] == 1.0 and details["clipping"] == "flat"  # type: ignore[index]
    assert isinstance(plan.privacy(), PrivacyGuarantee)


def test_delta_must_be_below_one_over_n() -> None:
    with pytest.raises(UsageError, match="not below 1/100"):
        plan_privacy(PoissonSampler(100, 0.1, steps=5), target_epsilon=1, target_delta=0.01, max_grad_norm=1)


def test_a_refused_budget_trains_nothing(ledger: Ledger, data: tuple) -> None:
    ledger.create("clinic", "visits", 0.5, 1e-4, "rdp")
    model = _model()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(BudgetExceededError, match="over its budget"):
        _setup(model, data, ledger=ledger, tenant="clinic", dataset="visits")
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert all("forward" not in m.__dict__ for m in model.modules())  # not even wrapped
    assert ledger.history("clinic", "visits") == []


def test_the_ledger_is_charged_before_the_first_step(
    ledger: Ledger, data: tuple, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(TEST_SEEDS_ENV, "1")
    ledger.create("clinic", "visits", 3.0, 1e-4, "rdp")
    model = _model()
    before = [p.detach().clone() for p in model.parameters()]
    model, optimizer, loader, plan = _setup(
        model, data, ledger=ledger, tenant="clinic", dataset="visits", randomness=Randomness.for_tests(3)
    )
    charges = ledger.history("clinic", "visits")
    assert len(charges) == 1 and charges[0].events == (plan.event(),)  # charged, and nothing trained yet
    assert all(torch.equal(b, p) for b, p in zip(before, model.parameters(), strict=True))
    assert plan.ledger == "clinic/visits" and "charged before training" in plan.ledger_note
    result = train_private(model, optimizer, loader, plan)
    assert result.steps == plan.steps == optimizer.steps == 10
    assert result.epsilon_spent == pytest.approx(plan.guarantee.epsilon) and result.epsilon_spent <= 2.0
    assert [h.epoch for h in result.history] == [1]
    assert not all(torch.equal(b, p) for b, p in zip(before, model.parameters(), strict=True))
    with pytest.raises(UsageError, match="already run"):
        train_private(model, optimizer, loader, plan)  # the loader's one pass is spent
    with pytest.raises(UsageError, match="already made private"):
        _setup(model, data, ledger=ledger, tenant="clinic", dataset="visits")
    assert len(ledger.history("clinic", "visits")) == 1


def test_without_a_ledger_the_plan_says_so(data: tuple) -> None:
    *_, plan = _setup(_model(), data)
    assert plan.ledger is None and "no ledger" in plan.ledger_note
    with pytest.raises(UsageError, match="tenant"):
        _setup(_model(), data, ledger=object(), tenant=None, dataset="x")  # type: ignore[arg-type]


def test_batch_norm_and_foreign_optimizers_are_refused_before_any_charge(ledger: Ledger, data: tuple) -> None:
    ledger.create("clinic", "visits", 5.0, 1e-4, "rdp")
    with_bn = nn.Sequential(nn.Linear(5, 8), nn.BatchNorm1d(8), nn.Linear(8, 2))
    with pytest.raises(UsageError, match="BatchNorm"):
        _setup(with_bn, data, ledger=ledger, tenant="clinic", dataset="visits")
    model = _model()
    other = torch.optim.SGD(nn.Linear(5, 2).parameters(), lr=0.1)
    with pytest.raises(UsageError, match="exactly the model's trainable parameters"):
        make_private(
            model,
            other,
            data,
            target_epsilon=2.0,
            target_delta=1e-4,
            epochs=1,
            max_grad_norm=1.0,
            batch_size=40,
            ledger=ledger,
            tenant="clinic",
            dataset="visits",
        )
    assert ledger.history("clinic", "visits") == []


def test_physical_batches_are_virtual_steps_of_one_noisy_step(data: tuple) -> None:
    model, optimizer, loader, plan = _setup(_model(), data, batch_size=80, physical_batch_size=16)
    assert plan.physical_batch_size == 16
    result = train_private(model, optimizer, loader, plan)
    assert optimizer.steps == plan.steps == result.steps
    assert optimizer.physical_batches > 2 * optimizer.steps  # ~80 records per step in chunks of 16


def test_weight_average_is_what_the_model_keeps(data: tuple, monkeypatch: pytest.MonkeyPatch) -> None:
    """With ``average`` the model ends with the moving average of its iterates, computed step by step."""
    monkeypatch.setenv(TEST_SEEDS_ENV, "1")
    runs = {}
    for average in (None, 0.9):
        model, optimizer, loader, plan = _setup(_model(), data, randomness=Randomness.for_tests(5))
        iterates: list[list[torch.Tensor]] = []
        original_step = optimizer.step

        def step(*args: object, _step=original_step, _model=model, _iterates=iterates) -> object:
            out = _step(*args)
            _iterates.append([p.detach().clone() for p in _model.parameters()])
            return out

        optimizer.step = step  # type: ignore[method-assign]
        initial = [p.detach().clone() for p in model.parameters()]
        train_private(model, optimizer, loader, plan, average=average)
        runs[average] = ([p.detach().clone() for p in model.parameters()], initial, iterates)
    last, _, iterates = runs[None]
    assert all(torch.equal(a, b) for a, b in zip(last, iterates[-1], strict=True))
    averaged, initial, iterates = runs[0.9]
    expected = [p.clone() for p in initial]
    for t, params in enumerate(iterates, start=1):
        decay = min(0.9, (1 + t) / (10 + t))
        expected = [decay * e + (1 - decay) * p for e, p in zip(expected, params, strict=True)]
    assert all(torch.allclose(a, e, atol=1e-6) for a, e in zip(averaged, expected, strict=True))
    assert not all(torch.equal(a, b) for a, b in zip(averaged, iterates[-1], strict=True))
