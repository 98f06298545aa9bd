"""UCI Adult: the official files' quirks, and preprocessing fitted on the training split only."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from privet.data.adult import PUBLIC_ADULT_ENCODER, TabularEncoder, load_adult, read_adult_file
from privet.errors import NotFoundError, UsageError

SHARED = Path(__file__).resolve().parents[3] / "shared" / "data" / "adult"
TRAIN = [
    "39, State-gov, 77516, Bachelors, 13, Never-married, Adm-clerical, Not-in-family, White, Male, 2174, 0, 40, "
    "United-States, <=50K",
    "50, ?, 83311, Bachelors, 13, Married-civ-spouse, Exec-managerial, Husband, White, Male, 0, 0, 13, "
    "United-States, >50K",
    "38, Private, 215646, HS-grad, 9, Divorced, Handlers-cleaners, Not-in-family, White, Female, 0, 0, 40, Cuba, <=50K",
]
TEST = [
    "25, Private, 226802, 11th, 7, Never-married, Machine-op-inspct, Own-child, Black, Male, 0, 0, 40, "
    "United-States, <=50K.",
    "44, Private, 160323, Some-college, 10, Married-civ-spouse, Machine-op-inspct, Husband, Black, Male, 7688, 0, "
    "40, Peru, >50K.",
]


def write_adult(directory: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "adult.data").write_text("\n".join(TRAIN) + "\n\n")
    (directory / "adult.test").write_text("|1x3 Cross validator\n" + "\n".join(TEST) + "\n\n")
    return directory


def test_quirks_of_the_official_layout(tmp_path: Path) -> None:
    directory = write_adult(tmp_path / "adult")
    test = read_adult_file(directory / "adult.test")
    assert len(test) == 2 and test["income"].tolist() == [0, 1]  # header line skipped, trailing dots removed
    train = read_adult_file(directory / "adult.data")
    assert train["workclass"].tolist() == ["State-gov", "?", "Private"]
    assert train["age"].dtype == "int64"


def test_encoding_comes_from_public_knowledge_not_the_records(tmp_path: Path) -> None:
    split = load_adult(write_adult(tmp_path / "adult"))
    names = split.feature_names
    assert names == PUBLIC_ADULT_ENCODER.feature_names  # the same whatever the records hold
    assert "fnlwgt" not in names and "workclass=?" in names  # '?' is a category of its own
    assert "native-country=Peru" in names  # listed in adult.names, whether or not training saw it
    assert split.x_train.shape[1] == split.x_test.shape[1] == len(names)
    age = names.index("age")
    ages = torch.tensor([float(a) for a in read_ages(tmp_path / "adult" / "adult.data")])
    assert torch.allclose(split.x_train[:, age], (ages - 53.5) / 36.5)  # 17..90 onto -1..1
    gain = names.index("capital-gain")
    assert float(split.x_train[:, gain].min()) >= -1.0 and float(split.x_train[:, gain].max()) <= 1.0
    assert split.y_train.dtype == torch.int64 and split.y_train.tolist() == [0, 1, 0]


def read_ages(path: Path) -> list[str]:
    return [line.split(",")[0] for line in path.read_text().splitlines() if line.strip()]


def test_encoder_transform_matches_fit() -> None:
    import pandas as pd

    frame = pd.DataFrame({"x": [1.0, 3.0], "c": ["a", "b"]})
    encoder = TabularEncoder.fit(frame, ["x"], ["c"])
    assert encoder.feature_names == ("x", "c=a", "c=b")
    assert encoder.transform(frame).tolist() == [[-1.0, 1.0, 0.0], [1.0, 0.0, 1.0]]


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("39, State-gov, 77516", "has 3 fields, expected 15"),
        (TRAIN[0].replace("<=50K", "maybe"), "income label"),
        (TRAIN[0].replace("39,", "old,", 1), "not numeric"),
    ],
)
def test_bad_records_are_one_line_errors_without_values(tmp_path: Path, line: str, expected: str) -> None:
    path = tmp_path / "adult.data"
    path.write_text(TRAIN[0] + "\n" + line + "\n")
    with pytest.raises(UsageError) as refused:
        read_adult_file(path)
    message = refused.value.one_line()
    assert expected in message and "State-gov" not in message and "\n" not in message


def test_missing_files(tmp_path: Path) -> None:
    with pytest.raises(NotFoundError):
        load_adult(tmp_path / "nope")
    (tmp_path / "only").mkdir()
    (tmp_path / "only" / "adult.data").write_text(TRAIN[0] + "\n")
    with pytest.raises(NotFoundError) as refused:
        load_adult(tmp_path / "only")
    assert "adult.test" in refused.value.one_line()


def test_official_files() -> None:
    if not (SHARED / "adult.data").is_file():
        pytest.skip(f"{SHARED} is not present (the product ships no data; this checks the official files)")
    split = load_adult(SHARED)
    assert split.x_train.shape[0] == 32561 and split.x_test.shape[0] == 16281
    assert int(split.y_train.sum()) == 7841 and int(split.y_test.sum()) == 3846
    assert (
        split.x_train.shape[1] == split.x_test.shape[1] == 5 + 102
    )  # numeric without fnlwgt; one-hot categories, '?' included
    assert torch.isfinite(split.x_test).all()
