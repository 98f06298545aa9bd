"""load_table: CSV and Parquet by suffix or explicit format, and one-line errors that never quote the data."""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import pandas as pd
import pytest

from privet.data.tables import load_table, table_format
from privet.errors import NotFoundError, PrivetError, UsageError

ADULT = Path(__file__).resolve().parents[3] / "shared" / "data" / "adult" / "adult.data"  # ../shared beside the project
ADULT_COLUMNS = [
    "age",
    "workclass",
    "fnlwgt",
    "education",
    "education_num",
    "marital_status",
    "occupation",
    "relationship",
    "race",
    "sex",
    "capital_gain",
    "capital_loss",
    "hours_per_week",
    "native_country",
    "income",
]
SECRET = "Zelda-Secretvalue-4471"


def one_line(exc: PrivetError) -> str:
    line = exc.one_line()
    assert "\n" not in line
    return line


def test_csv_with_header_by_suffix(tmp_path: Path) -> None:
    path = tmp_path / "people.csv"
    path.write_text("name,age,score\nann,31,1.5\nbob,45,\n")
    frame = load_table(path)
    assert list(frame.columns) == ["name", "age", "score"]
    assert frame["age"].tolist() == [31, 45]
    assert pd.api.types.is_integer_dtype(frame["age"])
    assert frame["score"].isna().tolist() == [False, True]


def test_headerless_csv_with_columns_and_na_markers(tmp_path: Path) -> None:
    path = tmp_path / "adult-like.data"
    path.write_text("39, State-gov, 13\n50, ?, 40\n\n")
    frame = load_table(path, format="csv", columns=["age", "workclass", "hours"], na_values=["?"])
    assert frame.shape == (2, 3)
    assert frame["workclass"].tolist()[0] == "State-gov"  # the space after the comma is skipped
    assert frame["workclass"].isna().tolist() == [False, True]
    assert frame["hours"].tolist() == [13, 40]


def test_tsv_and_gzip_csv(tmp_path: Path) -> None:
    tsv = tmp_path / "t.tsv"
    tsv.write_text("a\tb\n1\t2\n")
    assert load_table(tsv).to_dict("list") == {"a": [1], "b": [2]}
    gz = tmp_path / "t.csv.gz"
    gz.write_bytes(gzip.compress(b"a,b\n3,4\n"))
    assert table_format(gz) == "csv"
    assert load_table(gz).to_dict("list") == {"a": [3], "b": [4]}


def test_parquet_round_trip_and_column_selection(tmp_path: Path) -> None:
    original = pd.DataFrame({"id": [1, 2, 3], "city": ["x", "y", "z"], "income": [1.0, 2.5, None]})
    path = tmp_path / "t.parquet"
    original.to_parquet(path)
    frame = load_table(path)
    pd.testing.assert_frame_equal(frame, original, check_dtype=False)
    assert list(load_table(path, columns=["income", "id"]).columns) == ["income", "id"]
    # An explicit format wins over the name.
    other = tmp_path / "t.bin"
    other.write_bytes(path.read_bytes())
    assert load_table(other, format="parquet").shape == (3, 3)


def test_real_adult_file_loads() -> None:
    if not ADULT.exists():
        pytest.skip(f"UCI Adult is not at {ADULT}")
    frame = load_table(ADULT, format="csv", columns=ADULT_COLUMNS, na_values=["?"])
    assert frame.shape == (32561, 15)
    assert pd.api.types.is_integer_dtype(frame["age"])
    assert frame["age"].between(17, 90).all()
    # 2,399 records carry a '?' (README); they are missing values now, not the string '?'.
    assert int(frame.isna().any(axis=1).sum()) == 2399


def test_missing_file_is_not_found(tmp_path: Path) -> None:
    with pytest.raises(NotFoundError) as info:
        load_table(tmp_path / "nope.csv")
    assert "does not exist" in one_line(info.value)
    assert info.value.exit_code == 2


def test_directory_and_unknown_format(tmp_path: Path) -> None:
    folder = tmp_path / "dir.csv"
    folder.mkdir()
    with pytest.raises(UsageError, match="not a file"):
        load_table(folder)
    unknown = tmp_path / "table.xlsx"
    unknown.write_text("x")
    with pytest.raises(UsageError) as info:
        load_table(unknown)
    assert "format=" in one_line(info.value)
    with pytest.raises(UsageError, match="not supported"):
        load_table(unknown, format="excel")


def test_malformed_csv_error_does_not_quote_content(tmp_path: Path) -> None:
    path = tmp_path / "bad.csv"
    path.write_text(f"name,age\n{SECRET},31\n{SECRET},32,extra,{SECRET}\n")
    with pytest.raises(UsageError) as info:
        load_table(path)
    line = one_line(info.value)
    assert "not readable as CSV" in line
    assert SECRET not in line and "extra" not in line
    assert info.value.__cause__ is None and info.value.__suppress_context__  # the parser's message is dropped


def test_bad_encoding_and_empty_file(tmp_path: Path) -> None:
    latin = tmp_path / "latin.csv"
    latin.write_bytes(b"name\n" + "Zoë".encode("utf-16") + b"\xff\xfe\xfa\n")
    with pytest.raises(UsageError, match="not readable as CSV"):
        load_table(latin)
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    with pytest.raises(UsageError, match="is empty"):
        load_table(empty)


def test_corrupt_parquet_error_does_not_quote_content(tmp_path: Path) -> None:
    path = tmp_path / "bad.parquet"
    path.write_text(f"{SECRET}\n" * 10)
    with pytest.raises(UsageError) as info:
        load_table(path)
    line = one_line(info.value)
    assert "not readable as Parquet" in line and SECRET not in line
    truncated = tmp_path / "cut.parquet"
    pd.DataFrame({"v": [SECRET] * 100}).to_parquet(truncated)
    truncated.write_bytes(truncated.read_bytes()[:-40])
    with pytest.raises(UsageError, match="not readable as Parquet"):
        load_table(truncated)


def test_parquet_missing_selected_column(tmp_path: Path) -> None:
    path = tmp_path / "t.parquet"
    pd.DataFrame({"a": [1]}).to_parquet(path)
    with pytest.raises(UsageError, match="no column"):
        load_table(path, columns=["b"])


def test_duplicate_column_names_refused(tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    path.write_text("1,2\n")
    with pytest.raises(UsageError, match="each column once"):
        load_table(path, columns=["a", "a"])


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files regardless of their mode")
def test_unreadable_file(tmp_path: Path) -> None:
    path = tmp_path / "locked.csv"
    path.write_text("a\n1\n")
    path.chmod(0)
    try:
        with pytest.raises(UsageError, match="permission denied"):
            load_table(path)
    finally:
        path.chmod(0o600)
