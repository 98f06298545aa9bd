"""Load a table (CSV or Parquet) into a pandas DataFrame, with one-line privet errors and no data in them.

The format comes from the file name (``.csv``, ``.csv.gz``, ``.tsv``, ``.parquet``, ``.pq``) or from
``format=``; files with other names (UCI Adult's ``adult.data``) need ``format="csv"``. Errors name the
path and the kind of problem, never a cell value: parser messages can quote the offending line, so they
are not passed through.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path

import pandas as pd
import pyarrow as pa

from privet.errors import NotFoundError, UsageError

FORMATS: tuple[str, ...] = ("csv", "tsv", "parquet")
_SUFFIXES: dict[str, str] = {
    ".csv": "csv",
    ".csv.gz": "csv",
    ".csv.bz2": "csv",
    ".csv.zst": "csv",
    ".tsv": "tsv",
    ".tsv.gz": "tsv",
    ".parquet": "parquet",
    ".pq": "parquet",
}


def table_format(path: Path, format: str | None = None) -> str:
    """The format ``load_table`` would use for ``path``: ``format`` when given, else from the suffix."""
    if format is not None:
        chosen = format.lower().lstrip(".")
        if chosen not in FORMATS:
            raise UsageError(f"table format {format!r} is not supported", f"Use one of: {', '.join(FORMATS)}.")
        return chosen
    name = path.name.lower()
    for suffix, found in sorted(_SUFFIXES.items(), key=lambda item: -len(item[0])):
        if name.endswith(suffix):
            return found
    raise UsageError(
        f"cannot tell the format of {path} from its name",
        f"Pass format= one of {', '.join(FORMATS)} (for example format='csv' for UCI Adult's .data files).",
    )


def load_table(
    path: Path,
    *,
    format: str | None = None,
    columns: Sequence[str] | None = None,
    separator: str | None = None,
    na_values: Sequence[str] = (),
) -> pd.DataFrame:
    """Read a CSV/TSV or Parquet file into a DataFrame.

    CSV: the first line is the header unless ``columns`` names the columns (then the file has no header;
    a line with more fields than that is refused, a shorter one is padded with missing values). Spaces
    after a separator are skipped (UCI Adult writes ``39, State-gov``). ``na_values`` are extra markers
    of missing values (Adult uses ``?``).
    Parquet: ``columns`` selects and orders columns, which must exist.
    """
    path = Path(path)
    kind = table_format(path, format)
    if not path.exists():
        raise NotFoundError(f"table file {path} does not exist", "Check the path.")
    if not path.is_file():
        raise UsageError(f"{path} is not a file", "Pass the path of a CSV or Parquet file.")
    try:
        if kind == "parquet":
            return _read_parquet(path, columns)
        return _read_csv(path, columns, separator or ("\t" if kind == "tsv" else ","), na_values)
    except PermissionError:
        raise UsageError(f"table file {path} cannot be read (permission denied)", "Check its permissions.") from None


def _read_csv(path: Path, columns: Sequence[str] | None, separator: str, na_values: Sequence[str]) -> pd.DataFrame:
    names = list(columns) if columns is not None else None
    if names is not None and (not names or len(set(names)) != len(names)):
        raise UsageError("columns= must name each column once", "Pass distinct, non-empty column names.")
    try:
        frame = pd.read_csv(
            path,
            sep=separator,
            header=None if names is not None else "infer",
            names=names,
            skipinitialspace=True,
            na_values=list(na_values) or None,
            skip_blank_lines=True,
            quoting=csv.QUOTE_MINIMAL,
            # A row with more fields than names would otherwise shift into the index silently.
            index_col=False,
            on_bad_lines="error",
        )
    except pd.errors.EmptyDataError:
        raise UsageError(f"table file {path} is empty", "Pass a CSV file with a header or columns=.") from None
    except (pd.errors.ParserError, UnicodeDecodeError, ValueError, csv.Error) as exc:
        # The parser's own message may quote file content: report only its kind.
        raise UsageError(
            f"table file {path} is not readable as CSV ({type(exc).__name__})",
            "Check the separator, the quoting, that every row has the same number of fields, and the encoding (UTF-8).",
        ) from None
    return frame


def _read_parquet(path: Path, columns: Sequence[str] | None) -> pd.DataFrame:
    try:
        frame = pd.read_parquet(path, engine="pyarrow")
    except (pa.ArrowException, OSError, ValueError) as exc:
        if isinstance(exc, PermissionError):
            raise
        raise UsageError(
            f"table file {path} is not readable as Parquet ({type(exc).__name__})",
            "Check that it is a complete Parquet file, or pass format='csv' for a text table.",
        ) from None
    if columns is None:
        return frame
    missing = [name for name in columns if name not in frame.columns]
    if missing:
        raise UsageError(
            f"table file {path} has no column(s) {', '.join(map(repr, missing))}",
            f"Its columns are: {', '.join(map(str, frame.columns))}.",
        )
    return frame[list(columns)]
