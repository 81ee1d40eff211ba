"""Annotated corpora in one shape, whatever file they come in.

- `annotune.data.readers`: `read_records` for CSV/TSV/JSONL/JSON/Parquet/Excel, cell values (`id_value`);
- `annotune.data.labels`: `parse_label`, raw label cells to canonical labels for a codebook;
- `annotune.data.dataset`: `Doc`, `Dataset` (load, split, by_split, subsample, truncate, to_frame);
- `annotune.data.builtins`: the built-in corpora (`load_bbc_news`, `load_flourishing`, `BUILTINS`);
- `annotune.data.loader`: `load_data`, the ``[data]`` table of a run config.

Imports go one way: readers ← labels ← dataset ← builtins ← loader.
"""

from annotune.data.builtins import BUILTINS, load_bbc_news, load_flourishing
from annotune.data.dataset import Dataset, Doc
from annotune.data.labels import parse_label
from annotune.data.loader import load_data
from annotune.data.readers import id_value, read_records

__all__ = [
    "BUILTINS",
    "Dataset",
    "Doc",
    "id_value",
    "load_bbc_news",
    "load_data",
    "load_flourishing",
    "parse_label",
    "read_records",
]
