"""UCI Adult (Census Income) from its official files, and the tabular encoding it needs.

``adult.data`` (32,561 records) is the training split and ``adult.test`` (16,281) the test split. Each line has
15 comma-plus-space separated fields, the last being the income label; ``adult.test`` starts with the line
``|1x3 Cross validator`` and its labels end with a dot (``<=50K.``). ``?`` marks a missing value; it is kept as
a category of its own (its absence is information, and dropping those rows would change the population).

:func:`load_adult` encodes with :data:`PUBLIC_ADULT_ENCODER`, built from public knowledge only: the category
lists published in ``adult.names`` and fixed ranges for the numbers (age 17-90, years of education 1-16, hours
1-99, capital gains and losses on a log scale up to the census top code 99,999). Nothing about the encoding is
learnt from the records, so a DP model trained on them carries its guarantee end to end; a category outside the
published lists encodes as all zeros.

:meth:`TabularEncoder.fit` (used for a user's own table) takes the statistics from the training split instead;
those are not privatised, which the training face says where it uses them.
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

__all__ = [
    "ADULT_COLUMNS",
    "CATEGORICAL",
    "NUMERIC",
    "PUBLIC_ADULT_ENCODER",
    "TabularEncoder",
    "load_adult",
    "read_adult_file",
]

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


# Public knowledge about Adult: ranges of the census coding and the categories listed in adult.names ("?" marks
# a missing value and is a category of its own). fnlwgt (the survey's sampling weight) is dropped by default.
_ADULT_RANGES: dict[str, tuple[float, float]] = {
    "age": (17, 90),
    "fnlwgt": (10_000, 1_500_000),
    "education-num": (1, 16),
    "capital-gain": (0, 99_999),
    "capital-loss": (0, 99_999),
    "hours-per-week": (1, 99),
}
_ADULT_CATEGORIES: dict[str, tuple[str, ...]] = {
    "workclass": (
        "Private", "Self-emp-not-inc", "Self-emp-inc", "Federal-gov", "Local-gov", "State-gov", "Without-pay",
        "Never-worked", "?",
    ),
    "education": (
        "Bachelors", "Some-college", "11th", "HS-grad", "Prof-school", "Assoc-acdm", "Assoc-voc", "9th", "7th-8th",
        "12th", "Masters", "1st-4th", "10th", "Doctorate", "5th-6th", "Preschool",
    ),
    "marital-status": (
        "Married-civ-spouse", "Divorced", "Never-married", "Separated", "Widowed", "Married-spouse-absent",
        "Married-AF-spouse",
    ),
    "occupation": (
        "Tech-support", "Craft-repair", "Other-service", "Sales", "Exec-managerial", "Prof-specialty",
        "Handlers-cleaners", "Machine-op-inspct", "Adm-clerical", "Farming-fishing", "Transport-moving",
        "Priv-house-serv", "Protective-serv", "Armed-Forces", "?",
    ),
    "relationship": ("Wife", "Own-child", "Husband", "Not-in-family", "Other-relative", "Unmarried"),
    "race": ("White", "Asian-Pac-Islander", "Amer-Indian-Eskimo", "Other", "Black"),
    "sex": ("Female", "Male"),
    "native-country": (
        "United-States", "Cambodia", "England", "Puerto-Rico", "Canada", "Germany", "Outlying-US(Guam-USVI-etc)",
        "India", "Japan", "Greece", "South", "China", "Cuba", "Iran", "Honduras", "Philippines", "Italy", "Poland",
        "Jamaica", "Vietnam", "Mexico", "Portugal", "Ireland", "France", "Dominican-Republic", "Laos", "Ecuador",
        "Taiwan", "Haiti", "Columbia", "Hungary", "Guatemala", "Nicaragua", "Scotland", "Thailand", "Yugoslavia",
        "El-Salvador", "Trinadad&Tobago", "Peru", "Hong", "Holand-Netherlands", "?",
    ),
}  # fmt: skip


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
    """Centre and scale numeric columns and one-hot encode categorical ones.

    ``log_columns`` are passed through ``log1p`` before scaling (heavy-tailed amounts).
    """

    numeric: tuple[str, ...]
    means: tuple[float, ...]
    stds: tuple[float, ...]
    categorical: tuple[str, ...]
    categories: tuple[tuple[str, ...], ...]
    log_columns: tuple[str, ...] = ()

    @classmethod
    def from_ranges(
        cls,
        ranges: dict[str, tuple[float, float]],
        categories: dict[str, Sequence[str]],
        log_columns: Sequence[str] = (),
    ) -> TabularEncoder:
        """An encoder from public knowledge: each numeric range maps to [-1, 1] (after ``log1p`` for
        ``log_columns``), each categorical column to its listed categories."""
        scaled = {c: (np.log1p(lo), np.log1p(hi)) if c in log_columns else (lo, hi) for c, (lo, hi) in ranges.items()}
        return cls(
            tuple(ranges),
            tuple((lo + hi) / 2 for lo, hi in scaled.values()),
            tuple((hi - lo) / 2 for lo, hi in scaled.values()),
            tuple(categories),
            tuple(tuple(v) for v in categories.values()),
            tuple(log_columns),
        )

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
            for index, column in enumerate(self.numeric):
                if column in self.log_columns:
                    values[:, index] = np.log1p(np.maximum(values[:, index], 0.0))
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


PUBLIC_ADULT_ENCODER = TabularEncoder.from_ranges(
    {c: r for c, r in _ADULT_RANGES.items() if c != "fnlwgt"},
    {c: v for c, v in _ADULT_CATEGORIES.items()},
    ("capital-gain", "capital-loss"),
)


def load_adult(directory: Path, *, drop: Sequence[str] = ("fnlwgt",)) -> Split:
    """The official Adult train/test split, encoded from public knowledge (:data:`PUBLIC_ADULT_ENCODER`).

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
    public = PUBLIC_ADULT_ENCODER
    encoder = TabularEncoder.from_ranges(
        {c: r for c, r in _ADULT_RANGES.items() if c not in drop},
        {c: v for c, v in _ADULT_CATEGORIES.items() if c not in drop},
        public.log_columns,
    )
    return Split(
        "uci-adult",
        encoder.transform(train),
        torch.tensor(train["income"].to_numpy(), dtype=torch.long),
        encoder.transform(test),
        torch.tensor(test["income"].to_numpy(), dtype=torch.long),
        encoder.feature_names,
    )
