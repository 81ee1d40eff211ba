"""`annotune import`: documents (with or without labels) and existing proposals with their human reviews.

Proposals with reviews come in a long table, one row per proposed item and review — the seed paper's AI-crowd
file (``dimension, value, id, coder, accepted, llm``) is the example: each row says which proposer (``llm``)
proposed which value (``value``) of which item (``dimension``; absent for single-label tasks) for which
document (``id``), and whether the reviewer (``coder``) accepted it (``Y``/``N``; blank: not reviewed yet).
Column names are found among common spellings or given explicitly. Re-importing a file adds nothing; an edited
version adds the reviews it changes, which replace the reviewer's earlier decisions (`LabelStore.add_reviews`).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from annotune.codebook import normalise
from annotune.data.dataset import Dataset
from annotune.data.labels import Cells
from annotune.data.readers import find_column, id_value, is_missing, match_column, read_records, scalar_str
from annotune.errors import DataError
from annotune.labelling.store import LabelStore
from annotune.tasks.labels import label_to_json

COLUMNS = {  # what each field of a review table may be called, first match wins
    "id": ("id", "doc_id", "document", "document_id"),
    "proposer": ("llm", "proposer", "system", "model", "source"),
    "item": ("dimension", "item", "label_name"),
    "value": ("value", "label", "intensity", "answer"),
    "reviewer": ("coder", "reviewer", "annotator", "user"),
    "decision": ("accepted", "decision", "accept", "verdict"),
}
ACCEPT = {"y", "yes", "true", "1", "accept", "accepted"}
REJECT = {"n", "no", "false", "0", "reject", "rejected"}


def file_sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@dataclass
class ImportSummary:
    file: str
    documents: int = 0  # new documents
    proposals: int = 0  # new proposals
    reviews: int = 0  # new reviews
    skipped: int = 0  # review rows that change nothing (already in the project)
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def import_documents(store: LabelStore, path: Path, *, text_field: str | None = None, id_field: str | None = None,
                     label_field: str | None = None, labels: bool | None = None, sheet: str | int | None = None,
                     reviewer: str = "imported", limit: int | None = None) -> ImportSummary:
    """Documents of a data file; with ``labels`` (default: when the label column exists) their labels become
    human labels (provenance ``human-labelled``, reviewer ``reviewer``)."""
    codebook = store.codebook
    if labels is None:
        _, columns = read_records(path, sheet)
        labels = match_column(columns, label_field or codebook.label_field) is not None
    data = Dataset.load(path, codebook, text_field=text_field, id_field=id_field, label_field=label_field,
                        sheet=sheet, labelled=labels, limit=limit)
    sha = file_sha(path)
    run_id, _ = store.start_run("import", fingerprint=sha[:16], settings={"file": str(path), "kind": "documents"},
                                resume=True)
    summary = ImportSummary(str(path))
    summary.documents = store.add_documents([{"id": d.id, "text": d.text} for d in data.docs], source=str(path),
                                            run_id=run_id)
    if labels:
        rows = [{"doc_id": d.id, "decision": "correct", "label": label_to_json(d.label, codebook),
                 "reviewer": reviewer, "external_key": f"{sha[:16]}:{i}"}
                for i, d in enumerate(data.docs, start=1) if d.label is not None]
        summary.reviews = store.add_reviews(rows, source=f"labels:{path.name}")
        summary.skipped = len(rows) - summary.reviews
    if data.dropped_empty:
        summary.notes.append(f"{data.dropped_empty} rows with an empty text were skipped")
    store.finish_run(run_id, summary.documents)
    return summary


def import_reviews(store: LabelStore, path: Path, *, fields: dict[str, str] | None = None,
                   sheet: str | int | None = None) -> ImportSummary:
    """Proposals and their reviews from a long table (see the module docstring); ``fields`` maps ``id``,
    ``proposer``, ``item``, ``value``, ``reviewer``, ``decision`` to column names."""
    codebook, task, fields = store.codebook, store.codebook.task, dict(fields or {})
    records, columns = read_records(path, sheet)
    name = str(path)
    col: dict[str, str | None] = {}
    for key, candidates in COLUMNS.items():
        if fields.get(key):
            col[key] = find_column(columns, fields[key], name, f"{key} field")
        else:
            col[key] = next((c for c in (match_column(columns, n) for n in candidates) if c), None)
    for key in ("id", "proposer", "value"):
        if col[key] is None:
            raise DataError(f"no {key} column (looked for {', '.join(COLUMNS[key])}; name it with --field "
                            f"{key}=COLUMN)", file=name)
    known = store.document_ids()
    items: dict[tuple[str, str], dict[str, list[str]]] = {}
    reviews: list[dict] = []
    sha = file_sha(path)
    for row, rec in records:
        doc_id = id_value(rec.get(col["id"]))
        if doc_id not in known:
            raise DataError(f"document {doc_id!r} is not in the project: import its text first (annotune import "
                            "PROJECT FILE)", file=name, row=row, field=col["id"])
        proposer = scalar_str(rec.get(col["proposer"])).strip()
        if not proposer:
            raise DataError("empty proposer", file=name, row=row, field=col["proposer"])
        where = "/".join(c for c in (col["item"], col["value"]) if c)
        item = rec.get(col["item"]) if col["item"] else None
        key, value = task.read_item(item, rec.get(col["value"]), Cells(codebook, {}, file=name, row=row, field=where))
        items.setdefault((doc_id, proposer), {}).setdefault(key, [])
        if value not in items[(doc_id, proposer)][key]:
            items[(doc_id, proposer)][key].append(value)
        decision = _decision(rec, col, name, row)
        if decision is not None:
            reviewer = scalar_str(rec.get(col["reviewer"])).strip() if col["reviewer"] else ""
            reviews.append({"doc_id": doc_id, "proposer": proposer, "item": key or None, "decision": decision,
                            "reviewer": reviewer or "unknown", "external_key": f"{sha[:16]}:{row}"})
    run_id, _ = store.start_run("import", fingerprint=sha[:16], settings={"file": name, "kind": "reviews"},
                                resume=True)
    proposals = []
    for (doc_id, proposer), accepted in items.items():
        label = task.merge_items(accepted)
        if label is None:
            raise DataError(f"proposer {proposer!r} proposes different labels for document {doc_id!r}", file=name,
                            field=col["value"])
        proposals.append({"doc_id": doc_id, "system": proposer, "label": task.label_to_json(label)})
    summary = ImportSummary(name)
    summary.proposals = store.add_proposals(proposals, run_id=run_id)
    ids = store.proposal_index(run_id)
    for r in reviews:
        r["proposal_id"] = ids[(r["doc_id"], r.pop("proposer"))]
    summary.reviews = store.add_reviews(reviews, source=f"import:{path.name}")
    summary.skipped = len(reviews) - summary.reviews
    unreviewed = [(d, "imported proposal, not reviewed", 0.0) for (d, _), _ in items.items()]
    store.enqueue(unreviewed, run_id)
    store.finish_run(run_id, len(items))
    return summary


def _decision(rec: dict, col: dict, file: str, row: int) -> str | None:
    if not col["decision"] or is_missing(rec.get(col["decision"])):
        return None
    raw = normalise(scalar_str(rec.get(col["decision"])))
    if raw in ACCEPT:
        return "accept"
    if raw in REJECT:
        return "reject"
    raise DataError(f"decision {raw!r} is neither accept (Y, yes, true, 1) nor reject (N, no, false, 0)", file=file,
                    row=row, field=col["decision"])


__all__ = ["import_documents", "import_reviews", "ImportSummary"]
