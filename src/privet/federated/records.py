"""A party's own records for federated training: an IDX image folder (its training split) or a numeric table.

Tables (CSV or Parquet) must hold numeric feature columns and an integer ``label`` column: every party must
encode its records the same way before training together, and that encoding is agreed outside privet (a
party's own statistics would leak into a shared encoder).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from privet.data.images import load_mnist_like
from privet.data.tables import load_table
from privet.errors import NotFoundError, UsageError

__all__ = ["load_records"]


def load_records(path: Path, *, label: str = "label", image_split: str = "train") -> tuple[Tensor, Tensor]:
    """``(x, y)`` of the records at ``path``; images keep their ``(N, 1, 28, 28)`` shape."""
    path = Path(path)
    if path.is_dir():
        split = load_mnist_like(path)
        return (split.x_train, split.y_train) if image_split == "train" else (split.x_test, split.y_test)
    if not path.is_file():
        raise NotFoundError(f"{path} does not exist", "Pass an IDX image folder or a CSV/Parquet table with --data.")
    frame = load_table(path)
    if label not in frame.columns:
        raise UsageError(f"{path.name} has no {label!r} column", "Federated tables need an integer label column.")
    features = frame.drop(columns=[label])
    text = [c for c in features.columns if features[c].dtype.kind not in "biuf"]
    if text:
        raise UsageError(
            f"{path.name} has non-numeric columns ({', '.join(map(str, text[:5]))})",
            "Encode the records the way all parties agreed before federated training.",
        )
    labels = frame[label].to_numpy()
    if labels.dtype.kind not in "iu" or (labels < 0).any():
        raise UsageError(f"the {label!r} column of {path.name} must hold class numbers 0, 1, 2, ...")
    x = torch.tensor(features.to_numpy(dtype=np.float32))
    return x, torch.tensor(labels.astype(np.int64))
