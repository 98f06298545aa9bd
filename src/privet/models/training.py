"""Plain (non-private) training of a classifier: the baseline that private training is compared with."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class FitResult:
    epochs: int
    final_loss: float
    train_accuracy: float


def fit(
    model: nn.Module,
    features: torch.Tensor,
    labels: torch.Tensor,
    *,
    epochs: int = 30,
    batch_size: int = 64,
    lr: float = 1e-2,
    seed: int = 0,
    on_epoch: Callable[[int, float], None] | None = None,
) -> FitResult:
    """Train with Adam and cross-entropy on shuffled mini-batches; deterministic for a given ``seed``."""
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    loss_fn = nn.CrossEntropyLoss()
    model.train()
    loss = torch.tensor(0.0)
    for epoch in range(epochs):
        order = torch.randperm(len(features), generator=generator)
        for start in range(0, len(order), batch_size):
            batch = order[start : start + batch_size]
            optimizer.zero_grad()
            loss = loss_fn(model(features[batch]), labels[batch])
            loss.backward()
            optimizer.step()
        if on_epoch:
            on_epoch(epoch, loss.item())
    model.eval()
    return FitResult(epochs, loss.item(), accuracy(model, features, labels))


@torch.no_grad()
def predict(model: nn.Module, features: torch.Tensor) -> torch.Tensor:
    return model(features).argmax(dim=1)


def accuracy(model: nn.Module, features: torch.Tensor, labels: torch.Tensor) -> float:
    return float((predict(model, features) == labels).float().mean())
