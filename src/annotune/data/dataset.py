"""Documents in one shape: `Doc` and `Dataset` (load, split, sample, truncate, to a DataFrame).

Everything downstream (prompting, fine-tuning, evaluation) wants the same thing: a list of
documents with a unique string id, a text and a label that is already canonical for the codebook
(see `annotune.data.labels`). `Dataset.load` does that conversion once for any file that
`annotune.data.readers.read_records` can read, checks it strictly and, when the input is wrong,
says where (file, row, field) in one line instead of a pandas traceback.

Row numbers in error messages are 1-based data record numbers (see `annotune.data.readers`).
"""

from __future__ import annotations

import dataclasses
import math
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from annotune.codebook import Codebook
from annotune.data.labels import Label, alias_map, parse_label
from annotune.data.readers import (
    find_column,
    id_value,
    match_column,
    read_records,
    text_value,
)
from annotune.errors import DataError

__all__ = ["Dataset", "Doc", "Label"]


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

        text_col = find_column(columns, text_field or codebook.text_field, fname, "text_field")
        label_col = None
        if labelled:
            label_col = find_column(
                columns,
                label_field or codebook.label_field,
                fname,
                "label_field",
                hint="an unlabelled pool is read with labelled = false in [data], labelled=False in Python",
            )
        if id_field is not None:
            id_col: str | None = find_column(columns, id_field, fname, "id_field")
        elif codebook.id_field:
            id_col = match_column(columns, codebook.id_field)
        else:
            id_col = None
        split_col = find_column(columns, split_field, fname, "split_field") if split_field else None

        label_aliases = alias_map(aliases, codebook, fname)
        docs: list[Doc] = []
        first_row: dict[str, int] = {}
        dropped = 0
        for row, rec in records:
            text = text_value(rec.get(text_col), fname, row, text_col)
            if not text:
                if empty == "error":
                    raise DataError("empty text (empty = 'drop' in [data], empty='drop' in Python, skips such rows)",
                                    file=fname, row=row, field=text_col)
                dropped += 1
                continue
            if id_col is not None:
                doc_id = id_value(rec.get(id_col))
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
                label = parse_label(rec.get(label_col), codebook, label_aliases, file=fname, row=row, field=label_col)
            split = (id_value(rec.get(split_col)) or None) if split_col else None
            docs.append(Doc(doc_id, text, label, split))
            if limit is not None and len(docs) >= limit:
                break
        if not docs:
            detail = f" ({dropped} rows had an empty text in column {text_col!r})" if dropped else ""
            raise DataError(f"no documents to load{detail}", file=fname, field=text_col if dropped else None)
        return cls(docs=docs, codebook=codebook, source=fname, dropped_empty=dropped)

    # ------------------------------------------------------------------ splitting and sampling
    def _strata(self) -> list[str]:
        task = self.codebook.task
        return ["" if d.label is None else task.split_stratum(d.label) for d in self.docs]

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
