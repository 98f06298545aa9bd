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


_BATCH = 4096  # records per forward pass when predicting: bounded memory on large test sets


@torch.no_grad()
def predict(model: nn.Module, features: torch.Tensor, *, device: torch.device | None = None) -> torch.Tensor:
    """Predicted classes (on the CPU), ``features`` sent to ``device`` a batch at a time; the model in eval mode."""
    model.eval()
    parts = [model(features[i : i + _BATCH].to(device)).argmax(dim=1).cpu() for i in range(0, len(features), _BATCH)]
    return torch.cat(parts) if parts else torch.empty(0, dtype=torch.long)


def accuracy(
    model: nn.Module, features: torch.Tensor, labels: torch.Tensor, *, device: torch.device | None = None
) -> float:
    """The fraction of ``labels`` the model predicts (0 for no records)."""
    if len(labels) == 0:
        return 0.0
    return float((predict(model, features, device=device) == labels).float().mean())
