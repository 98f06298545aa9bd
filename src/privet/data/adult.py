"""UCI Adult (Census Income) from its official files, and the tabular encoding it needs.

``adult.data`` (32,561 records) is the training split and ``adult.test`` (16,281) the test split. Each line has
15 comma-plus-space separated fields, the last being the income label; ``adult.test`` starts with the line
``|1x3 Cross validator`` and its labels end with a dot (``<=50K.``). ``?`` marks a missing value; it is kept as
a category of its own (its absence is information, and dropping those rows would change the population).

:class:`TabularEncoder` is fitted on the training split only and applied to both: numeric columns are
standardised (training mean and standard deviation), categorical columns one-hot encoded over the categories
seen in training (a category seen only in the test split encodes as all zeros).

Privacy note: the encoder's statistics (means, standard deviations, the category lists) are computed from the
training data without noise. They are not released with a DP model's weights as numbers, but they shape the
inputs; a strict end-to-end guarantee needs them from public knowledge (e.g. ``adult.names``) instead.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from privet.data.bundled import Split
from privet.errors import NotFoundError, UsageError

__all__ = ["ADULT_COLUMNS", "CATEGORICAL", "NUMERIC", "TabularEncoder", "load_adult", "read_adult_file"]

ADULT_COLUMNS: tuple[str, ...] = (
    "age",
    "workclass",
    "fnlwgt",
    "education",
    "education-num",
    "marital-status",
    "occupation",
    "relationship",
    "race",
    "sex",
    "capital-gain",
    "capital-loss",
    "hours-per-week",
    "native-country",
    "income",
)
NUMERIC: tuple[str, ...] = ("age", "fnlwgt", "education-num", "capital-gain", "capital-loss", "hours-per-week")
CATEGORICAL: tuple[str, ...] = (
    "workclass",
    "education",
    "marital-status",
    "occupation",
    "relationship",
    "race",
    "sex",
    "native-country",
)
_LABELS = {"<=50K": 0, ">50K": 1}
_HINT = "Use the official UCI files adult.data and adult.test (15 comma-separated fields per line)."


def read_adult_file(path: Path) -> pd.DataFrame:
    """One official Adult file as a DataFrame of strings (numeric columns as int64) with an int ``income`` 0/1."""
    path = Path(path)
    if not path.is_file():
        raise NotFoundError(f"Adult file {path} does not exist", "Check the path (adult.data, adult.test).")
    rows: list[list[str]] = []
    try:
        with path.open(newline="", encoding="ascii") as handle:
            for number, fields in enumerate(csv.reader(handle, skipinitialspace=True), start=1):
                if not fields or (len(fields) == 1 and not fields[0].strip()):
                    continue  # the empty last line
                if number == 1 and len(fields) == 1 and fields[0].startswith("|"):
                    continue  # adult.test's "|1x3 Cross validator"
                if len(fields) != len(ADULT_COLUMNS):
                    raise UsageError(
                        f"{path} line {number} has {len(fields)} fields, expected {len(ADULT_COLUMNS)}", _HINT
                    )
                rows.append([field.strip() for field in fields])
    except UnicodeDecodeError:
        raise UsageError(f"{path} is not ASCII text", _HINT) from None
    except PermissionError:
        raise UsageError(f"Adult file {path} cannot be read (permission denied)", "Check its permissions.") from None
    if not rows:
        raise UsageError(f"{path} holds no records", _HINT)
    frame = pd.DataFrame(rows, columns=list(ADULT_COLUMNS))
    for column in NUMERIC:
        values = pd.to_numeric(frame[column], errors="coerce")
        bad = values.isna()
        if bad.any():
            line = int(np.flatnonzero(bad.to_numpy())[0]) + 1
            raise UsageError(f"{path}: column {column!r} is not numeric in record {line}", _HINT)
        frame[column] = values.astype(np.int64)
    labels = frame["income"].str.rstrip(".").map(_LABELS)
    if labels.isna().any():
        line = int(np.flatnonzero(labels.isna().to_numpy())[0]) + 1
        raise UsageError(f"{path}: record {line} has an income label other than <=50K or >50K", _HINT)
    frame["income"] = labels.astype(np.int64)
    return frame


@dataclass(frozen=True)
class TabularEncoder:
    """Standardise numeric columns and one-hot encode categorical ones, with statistics from one (training) frame."""

    numeric: tuple[str, ...]
    means: tuple[float, ...]
    stds: tuple[float, ...]
    categorical: tuple[str, ...]
    categories: tuple[tuple[str, ...], ...]

    @classmethod
    def fit(cls, frame: pd.DataFrame, numeric: Sequence[str], categorical: Sequence[str]) -> TabularEncoder:
        missing = [c for c in (*numeric, *categorical) if c not in frame.columns]
        if missing:
            raise UsageError(f"the table has no column {missing[0]!r}", "Check the column names.")
        means, stds = [], []
        for column in numeric:
            values = frame[column].to_numpy(dtype=np.float64)
            if not np.isfinite(values).all():
                raise UsageError(f"numeric column {column!r} has missing or infinite values", "Clean the table first.")
            std = float(values.std())
            means.append(float(values.mean()))
            stds.append(std if std > 0 else 1.0)
        categories = tuple(tuple(sorted(frame[c].astype(str).unique())) for c in categorical)
        return cls(tuple(numeric), tuple(means), tuple(stds), tuple(categorical), categories)

    @property
    def feature_names(self) -> tuple[str, ...]:
        one_hot = [f"{c}={v}" for c, values in zip(self.categorical, self.categories, strict=True) for v in values]
        return (*self.numeric, *one_hot)

    def transform(self, frame: pd.DataFrame) -> torch.Tensor:
        """The encoded features, float32, shape ``(rows, len(feature_names))``."""
        parts = []
        if self.numeric:
            values = frame[list(self.numeric)].to_numpy(dtype=np.float64)
            parts.append((values - np.asarray(self.means)) / np.asarray(self.stds))
        for column, values in zip(self.categorical, self.categories, strict=True):
            index = {value: code for code, value in enumerate(values)}
            codes = frame[column].astype(str).map(index).fillna(-1).to_numpy(dtype=np.int64)  # unseen -> -1
            block = np.zeros((len(frame), len(values)))
            seen = codes >= 0
            block[np.flatnonzero(seen), codes[seen]] = 1.0
            parts.append(block)
        encoded = np.concatenate(parts, axis=1) if parts else np.zeros((len(frame), 0))
        return torch.tensor(encoded, dtype=torch.float32)


def load_adult(directory: Path, *, drop: Sequence[str] = ("fnlwgt",)) -> Split:
    """The official Adult train/test split, encoded by a :class:`TabularEncoder` fitted on ``adult.data``.

    ``drop`` names attributes left out; by default ``fnlwgt``, the census sampling weight (a property of the
    survey, not of the person). Labels: 1 for ``>50K``, 0 for ``<=50K``.
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise NotFoundError(f"data directory {directory} does not exist", "Pass the directory holding adult.data.")
    unknown = sorted(set(drop) - set(ADULT_COLUMNS[:-1]))
    if unknown:
        raise UsageError(f"Adult has no attribute {unknown[0]!r}", f"Attributes: {', '.join(ADULT_COLUMNS[:-1])}.")
    train, test = read_adult_file(directory / "adult.data"), read_adult_file(directory / "adult.test")
    encoder = TabularEncoder.fit(
        train, [c for c in NUMERIC if c not in drop], [c for c in CATEGORICAL if c not in drop]
    )
    return Split(
        "uci-adult",
        encoder.transform(train),
        torch.tensor(train["income"].to_numpy(), dtype=torch.long),
        encoder.transform(test),
        torch.tensor(test["income"].to_numpy(), dtype=torch.long),
        encoder.feature_names,
    )
