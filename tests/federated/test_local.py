"""Local training: replayable, and FedProx's pull towards the global model."""

from __future__ import annotations

import functools

import pytest
import torch

from privet.data.bundled import Split, breast_cancer
from privet.errors import UsageError
from privet.federated.local import LocalSettings, flat_parameters, load_flat, train_locally
from privet.models.reference import ModelSpec

SPEC = ModelSpec("mlp", 30, 2, 8)


@functools.cache
def _data() -> Split:
    return breast_cancer(seed=0)


def _train(config: dict, **kw: object) -> torch.Tensor:
    data = _data()
    torch.manual_seed(0)
    start = flat_parameters(SPEC.build())
    before = start.clone()
    settings: dict = {"seed": 1, "round_": 2, "client": "north", **kw}
    result = train_locally(SPEC, start, data.x_train, data.y_train, LocalSettings(2, 16, 0.1), config, **settings)
    assert torch.equal(start, before) and result.examples == len(data.x_train)  # the global model is not touched
    return result.update


def test_load_flat_copies_and_round_trips() -> None:
    model = SPEC.build()
    flat = torch.arange(sum(p.numel() for p in model.parameters()), dtype=torch.float32)
    load_flat(model, flat)
    assert torch.equal(flat_parameters(model), flat)
    with torch.no_grad():
        next(model.parameters()).add_(1)
    assert float(flat[0]) == 0.0  # no aliasing
    with pytest.raises(UsageError, match="parameters"):
        load_flat(model, flat[:-1])


def test_local_training_replays_and_depends_on_round_and_client() -> None:
    assert torch.equal(_train({}), _train({}))
    assert not torch.equal(_train({}), _train({}, round_=3)) and not torch.equal(_train({}), _train({}, client="x"))


def test_fedprox_keeps_the_update_closer_to_the_global_model() -> None:
    assert float(_train({"proximal_mu": 5.0}).norm()) < 0.8 * float(_train({}).norm())
