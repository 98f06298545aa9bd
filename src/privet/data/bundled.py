"""Data sets that ship inside dependencies (no download), ready for the reference models."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch


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
    from sklearn.datasets import load_breast_cancer  # on use: scikit-learn is slow to import and large

    return _split("sklearn-breast-cancer", load_breast_cancer(), test_fraction, seed)


def digits(*, test_fraction: float = 0.25, seed: int = 0) -> Split:
    """scikit-learn's handwritten digits: 1,797 images of 8x8 pixels as 64 features, 10 classes."""
    from sklearn.datasets import load_digits

    return _split("sklearn-digits", load_digits(), test_fraction, seed)


def _split(name: str, bunch: Any, test_fraction: float, seed: int) -> Split:
    from sklearn.model_selection import train_test_split

    x_train, x_test, y_train, y_test = train_test_split(
        bunch.data, bunch.target, test_size=test_fraction, random_state=seed, stratify=bunch.target
    )
    mean, std = x_train.mean(axis=0), x_train.std(axis=0) + 1e-12
    return Split(
        name,
        torch.tensor((x_train - mean) / std, dtype=torch.float32),
        torch.tensor(y_train, dtype=torch.long),
        torch.tensor((x_test - mean) / std, dtype=torch.float32),
        torch.tensor(y_test, dtype=torch.long),
        tuple(str(n) for n in bunch.feature_names),
    )
