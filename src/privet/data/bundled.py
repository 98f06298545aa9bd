"""Data sets that ship inside dependencies (no download), ready for the reference models."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from sklearn.datasets import load_breast_cancer
from sklearn.model_selection import train_test_split


@dataclass(frozen=True)
class Split:
    """Standardised features (train statistics only) and integer labels, train and test."""

    name: str
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    feature_names: tuple[str, ...]

    @property
    def classes(self) -> int:
        return int(self.y_train.max()) + 1


def breast_cancer(*, test_fraction: float = 0.25, seed: int = 0) -> Split:
    """scikit-learn's Wisconsin diagnostic breast-cancer set: 569 rows, 30 features, 2 classes."""
    bunch = load_breast_cancer()
    x_train, x_test, y_train, y_test = train_test_split(
        bunch.data, bunch.target, test_size=test_fraction, random_state=seed, stratify=bunch.target
    )
    mean, std = x_train.mean(axis=0), x_train.std(axis=0) + 1e-12
    return Split(
        "sklearn-breast-cancer",
        torch.tensor((x_train - mean) / std, dtype=torch.float32),
        torch.tensor(y_train, dtype=torch.long),
        torch.tensor((x_test - mean) / std, dtype=torch.float32),
        torch.tensor(y_test, dtype=torch.long),
        tuple(bunch.feature_names),
    )
