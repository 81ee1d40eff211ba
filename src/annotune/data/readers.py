"""Reading data files into (row number, record) pairs, and the cell values they hold.

Researchers keep their codings in CSV, TSV, Excel, JSONL, JSON or Parquet files. `read_records`
turns any of them into a list of (row, {column: value}) pairs plus the column list; the helpers
below turn single cells into ids and texts and find columns case-insensitively. Errors say where
(file, row, field) in one line instead of a pandas traceback.

Row numbers are 1-based data record numbers: for CSV, TSV and Excel the header line is not counted
(data row 1 is the line/Excel row after the header); for JSONL the row is the line number in the
file; for JSON and Parquet it is the position of the record.
"""

from __future__ import annotations

import io
import json
import math
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from annotune.errors import DataError

FORMATS: dict[str, str] = {
    ".csv": "csv",
    ".tsv": "tsv",
    ".tab": "tsv",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "json",
    ".parquet": "parquet",
    ".pq": "parquet",
    ".xlsx": "excel",
    ".xls": "excel",
}


# ---------------------------------------------------------------------- cell values
def is_missing(value: Any) -> bool:
    """True for None, NaN and blank strings (an empty cell in any format)."""
    if value is None:
        return True
    if isinstance(value, float) and math.isnan(value):
        return True
    if isinstance(value, str) and not value.strip():
        return True
    return False


def scalar_str(value: Any) -> str:
    """A cell value as a stripped string; integral floats lose their ``.0``."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value).strip()


def id_value(value: Any) -> str:
    """A document id as a string (``""`` when the cell is empty); ``42.0`` becomes ``"42"``."""
    if is_missing(value):
        return ""
    return scalar_str(value)


def text_value(value: Any, file: str, row: int, field: str) -> str:
    """A document text, stripped (``""`` when empty); a list or object is a `DataError`."""
    if is_missing(value):
        return ""
    if isinstance(value, (dict, list, tuple)):
        raise DataError(f"expected a text, got {describe(value)}", file=file, row=row, field=field)
    if isinstance(value, str):
        return value.strip()
    return scalar_str(value)


def describe(value: Any) -> str:
    """A short description of a value for error messages."""
    if isinstance(value, dict):
        return "a JSON object"
    if isinstance(value, (list, tuple)):
        return "a list"
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "…'"


# ---------------------------------------------------------------------- columns
def match_column(columns: list[str], name: str) -> str | None:
    """``name`` itself, else the one column equal to it ignoring case and spaces, else None."""
    if name in columns:
        return name
    folded = [c for c in columns if str(c).strip().casefold() == str(name).strip().casefold()]
    return folded[0] if len(folded) == 1 else None


def find_column(columns: list[str], name: str, file: str, param: str, hint: str | None = None) -> str:
    """Like `match_column`, but a missing column is a `DataError` listing the columns there are."""
    col = match_column(columns, name)
    if col is None:
        available = ", ".join(repr(c) for c in columns) or "none"
        extra = f"; {hint}" if hint else ""
        raise DataError(
            f"column {name!r} not found; available columns: {available} (set {param}=... to pick another){extra}",
            file=file,
            field=name,
        )
    return col


# ---------------------------------------------------------------------- readers
def read_records(path: str | Path, sheet: str | int | None = None) -> tuple[list[tuple[int, dict[str, Any]]], list[str]]:
    """(row number, record) pairs and the list of columns, for any supported format."""
    path = Path(path)
    fname = str(path)
    if not path.exists():
        raise DataError("data file not found", file=fname)
    if path.is_dir():
        raise DataError("expected a data file, got a folder", file=fname)
    fmt = FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise DataError(
            f"unknown file type {path.suffix or '(no extension)'!r}; supported: {', '.join(FORMATS)}",
            file=fname,
        )
    if sheet is not None and fmt != "excel":
        raise DataError("sheet only applies to Excel files", file=fname, field="sheet")
    if fmt in ("csv", "tsv"):
        records, columns = _read_delimited(path, "\t" if fmt == "tsv" else ",")
    elif fmt == "jsonl":
        records, columns = _read_jsonl(path)
    elif fmt == "json":
        records, columns = _read_json(path)
    elif fmt == "parquet":
        records, columns = _read_parquet(path)
    else:
        records, columns = _read_excel(path, sheet)
    if not records:
        raise DataError("the file has no data rows", file=fname)
    return records, columns


def _decode(path: Path) -> str:
    data = path.read_bytes()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        start = exc.start + (3 if data.startswith(b"\xef\xbb\xbf") else 0)
        line = data[:start].count(b"\n") + 1
        raise DataError(
            f"not UTF-8 text: cannot decode byte 0x{data[start]:02x} on line {line} "
            "(re-save the file as UTF-8, e.g. 'CSV UTF-8' in Excel)",
            file=str(path),
        ) from None


def _read_delimited(path: Path, sep: str) -> tuple[list[tuple[int, dict[str, Any]]], list[str]]:
    import pandas as pd

    text = _decode(path)
    if not text.strip():
        raise DataError("the file is empty", file=str(path))

    def parse(delim: str):
        try:
            return pd.read_csv(io.StringIO(text), sep=delim, dtype=str, keep_default_na=False)
        except pd.errors.EmptyDataError:
            raise DataError("the file is empty", file=str(path)) from None
        except (pd.errors.ParserError, ValueError) as exc:
            msg = " ".join(str(exc).split())
            raise DataError(f"cannot parse as {'TSV' if delim == chr(9) else 'CSV'}: {msg}", file=str(path)) from None

    frame = parse(sep)
    if sep == "," and frame.shape[1] == 1 and ";" in str(frame.columns[0]):
        frame = parse(";")  # semicolon-separated "CSV" from European Excel locales
    columns = [str(c) for c in frame.columns]
    if not isinstance(frame.index, pd.RangeIndex):
        frame = _unshift(frame, columns, path)
    frame.columns = columns
    return [(i, rec) for i, rec in enumerate(frame.to_dict("records"), start=1)], columns


def _unshift(frame, columns: list[str], path: Path):
    """The first rows had more fields than the header: pandas took their first field(s) as the row index and
    shifted the rest left. Trailing delimiters (empty last fields) are harmless: the frame put back; anything
    else is a `DataError` naming the row."""
    extra = frame.index.nlevels
    tail = frame.iloc[:, -extra:].fillna("")
    filled = (tail != "").any(axis=1).to_numpy()
    if filled.any():
        row = int(filled.argmax()) + 1
        raise DataError(f"row {row} has more fields than the {len(columns)} column names of the header (it ends "
                        f"with {tail.iloc[row - 1].iloc[-1]!r}); quote texts that contain the delimiter",
                        file=str(path), row=row)
    return frame.reset_index().iloc[:, :-extra]


def _objects(rows: Iterator[tuple[int, Any]], path: Path,
             what: str) -> tuple[list[tuple[int, dict[str, Any]]], list[str]]:
    """(row number, record) pairs and the columns in first-seen order; a row that is not a JSON object is a
    `DataError` naming it as ``what`` ("line", "record")."""
    records = []
    columns: dict[str, None] = {}
    for i, rec in rows:
        if not isinstance(rec, dict):
            raise DataError(f"{what} {i} is not a JSON object (got {describe(rec)})", file=str(path), row=i)
        columns.update(dict.fromkeys(rec))
        records.append((i, rec))
    return records, list(columns)


def _read_jsonl(path: Path) -> tuple[list[tuple[int, dict[str, Any]]], list[str]]:
    text = _decode(path)

    def rows() -> Iterator[tuple[int, Any]]:  # lazily, so that errors come in line order
        # only \n, \r\n or \r end a record: str.splitlines() also splits at U+2028, U+2029 and U+0085, which
        # json.dumps(ensure_ascii=False) writes raw inside strings
        for lineno, line in enumerate(re.split(r"\r\n?|\n", text), start=1):
            if not line.strip():
                continue
            try:
                yield lineno, json.loads(line)
            except ValueError as exc:
                raise DataError(f"invalid JSON on line {lineno}: {exc.msg} at column {exc.colno}", file=str(path),
                                row=lineno) from None

    return _objects(rows(), path, "line")


def _read_json(path: Path) -> tuple[list[tuple[int, dict[str, Any]]], list[str]]:
    text = _decode(path)
    if not text.strip():
        raise DataError("the file is empty", file=str(path))
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise DataError(f"invalid JSON on line {exc.lineno}: {exc.msg} at column {exc.colno}", file=str(path)) from None
    if isinstance(data, dict):
        lists = [v for v in data.values() if isinstance(v, list)]
        if len(lists) != 1:
            raise DataError("expected a JSON list of records (objects)", file=str(path))
        data = lists[0]
    if not isinstance(data, list):
        raise DataError("expected a JSON list of records (objects)", file=str(path))
    return _objects(enumerate(data, start=1), path, "record")


def _read_parquet(path: Path) -> tuple[list[tuple[int, dict[str, Any]]], list[str]]:
    try:
        import pyarrow.parquet as pq

        table = pq.read_table(path)
    except Exception as exc:  # pyarrow raises several types for corrupt files
        raise DataError(f"cannot read as Parquet: {' '.join(str(exc).split())}", file=str(path)) from None
    columns = [str(c) for c in table.column_names]
    rows = table.to_pylist()
    return [(i, rec) for i, rec in enumerate(rows, start=1)], columns


def _read_excel(path: Path, sheet: str | int | None) -> tuple[list[tuple[int, dict[str, Any]]], list[str]]:
    import pandas as pd

    try:
        book = pd.ExcelFile(path)
    except ImportError as exc:
        raise DataError(f"reading this Excel file needs an extra package ({exc}); or save it as .xlsx", file=str(path)) from None
    except Exception as exc:  # zipfile.BadZipFile, ValueError, openpyxl errors…
        raise DataError(f"cannot read as Excel: {' '.join(str(exc).split())}", file=str(path)) from None
    with book:
        names = [str(s) for s in book.sheet_names]
        if sheet is None:
            chosen: str | int = 0
        elif isinstance(sheet, int) and not isinstance(sheet, bool):
            if not 0 <= sheet < len(names):
                raise DataError(
                    f"sheet index {sheet} out of range; the workbook has {len(names)} sheet(s): {', '.join(map(repr, names))}",
                    file=str(path),
                    field="sheet",
                )
            chosen = sheet
        else:
            match = [s for s in names if s == str(sheet)] or [s for s in names if s.casefold() == str(sheet).casefold()]
            if not match:
                raise DataError(f"sheet {sheet!r} not found; sheets: {', '.join(map(repr, names))}", file=str(path), field="sheet")
            chosen = match[0]
        try:
            frame = pd.read_excel(book, sheet_name=chosen, dtype=str, keep_default_na=False)
        except Exception as exc:
            raise DataError(f"cannot read sheet {chosen!r}: {' '.join(str(exc).split())}", file=str(path), field="sheet") from None
    columns = [str(c) for c in frame.columns]
    frame.columns = columns
    return [(i, rec) for i, rec in enumerate(frame.to_dict("records"), start=1)], columns
