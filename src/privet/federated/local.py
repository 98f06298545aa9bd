"""What a client does with a task: train the global model on its own records and return the difference.

The same function serves real clients (:mod:`privet.federated.client`) and simulated ones, so a simulation
measures the code that runs in production. Local training is plain minibatch SGD over ``epochs`` passes of the
client's records, shuffled by a generator seeded from ``(seed, round, client)`` so that a round can be replayed
exactly; FedProx adds ``mu / 2 ||w - w_global||^2`` to the loss. (DP clipping and noise happen at the server, or with
secure aggregation in :mod:`privet.federated.secagg.runtime`, on the update this returns.)
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from privet.errors import UsageError
from privet.models.reference import ModelSpec

__all__ = ["LocalResult", "LocalSettings", "flat_parameters", "initial_parameters", "load_flat", "train_locally"]


@dataclass(frozen=True)
class LocalSettings:
    """How clients train in a round (sent with every task)."""

    epochs: int = 1
    batch_size: int = 32
    lr: float = 0.05
    momentum: float = 0.0

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.batch_size < 1 or not self.lr > 0 or not 0 <= self.momentum < 1:
            raise UsageError("local training needs epochs >= 1, batch_size >= 1, lr > 0 and 0 <= momentum < 1")


@dataclass(frozen=True)
class LocalResult:
    update: Tensor  # flat, client model minus global model (clipped and noised when asked)
    examples: int
    loss: float


def flat_parameters(model: nn.Module) -> Tensor:
    """All parameters in ``model.parameters()`` order, as one float32 vector (a copy)."""
    return torch.cat([p.detach().reshape(-1).float() for p in model.parameters()])


def initial_parameters(spec: ModelSpec) -> Tensor:
    """A freshly initialised model of ``spec`` as one flat float32 vector, equal to
    ``flat_parameters(spec.build())`` from the same torch seed, without ever holding two copies of the weights.

    The model is built on the meta device (no memory), every parameter becomes a view of one vector, and each
    module's ``reset_parameters`` initialises its views in place, in construction order as ``build`` would: a
    server starting a 3 GB model needs 3 GB, not 6.
    """
    with torch.device("meta"):
        model = spec.build()
    modules = [m for m in model.modules() if any(True for _ in m.parameters(recurse=False))]
    if not all(hasattr(m, "reset_parameters") for m in modules):
        return flat_parameters(spec.build())  # a layer that cannot initialise in place: the plain way
    flat = torch.empty(sum(p.numel() for p in model.parameters()))
    offset = 0
    for module in modules:
        for name, parameter in list(module.named_parameters(recurse=False)):
            view = flat[offset : offset + parameter.numel()].view(parameter.shape)
            setattr(module, name, nn.Parameter(view, requires_grad=False))
            offset += parameter.numel()
    with torch.no_grad():
        for module in modules:
            module.reset_parameters()
    return flat


def load_flat(model: nn.Module, flat: Tensor) -> None:
    """Copy a vector made by :func:`flat_parameters` into ``model``'s parameters (which never alias ``flat``)."""
    total = sum(p.numel() for p in model.parameters())
    if flat.numel() != total:
        raise UsageError(f"the model has {total} parameters but {flat.numel()} values were sent")
    offset = 0
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(flat[offset : offset + p.numel()].view_as(p))
            offset += p.numel()


def _seed(seed: int, round_: int, client: str) -> int:
    digest = hashlib.sha256(f"{seed}/{round_}/{client}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


def train_locally(
    spec: ModelSpec,
    global_flat: Tensor,
    x: Tensor,
    y: Tensor,
    settings: LocalSettings,
    config: dict[str, Any],
    *,
    seed: int,
    round_: int,
    client: str,
) -> LocalResult:
    """Train ``spec``'s model from ``global_flat`` on ``(x, y)``; return the update."""
    if len(x) == 0:
        raise UsageError(f"client {client!r} has no records to train on")
    model = spec.build()
    load_flat(model, global_flat)
    start = [p.detach().clone() for p in model.parameters()]
    optimizer = torch.optim.SGD(model.parameters(), lr=settings.lr, momentum=settings.momentum)
    loss_fn = nn.CrossEntropyLoss()
    mu = float(config.get("proximal_mu", 0.0))
    generator = torch.Generator().manual_seed(_seed(seed, round_, client))
    model.train()
    total, batches = 0.0, 0
    for _ in range(settings.epochs):
        order = torch.randperm(len(x), generator=generator)
        for begin in range(0, len(x), settings.batch_size):
            index = order[begin : begin + settings.batch_size]
            optimizer.zero_grad(set_to_none=True)
            loss = loss_fn(model(x[index]), y[index])
            if mu > 0:
                loss = loss + mu / 2 * sum(((p - s) ** 2).sum() for p, s in zip(model.parameters(), start, strict=True))
            loss.backward()
            optimizer.step()
            total += float(loss.detach())
            batches += 1
    update = flat_parameters(model) - global_flat.float()
    return LocalResult(update, len(x), total / max(batches, 1))
