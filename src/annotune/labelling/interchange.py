"""`annotune export` and the interchange formats: the final labels with provenance as CSV, JSONL or Parquet,
and Label Studio tasks / Argilla records (export and `import_tasks`; shapes in `interchange_tools`).

Columns: ``id``, ``text``, ``label`` (the label as the task writes it: a name, a list, or a JSON object of
dimensions; empty when there is none), ``provenance`` (human-verified, human-corrected, human-labelled,
human-rejected, conflict, model, or unlabelled), ``source`` (the reviewer, or the system that labelled it),
``probability`` (model labels), ``run`` (the labelling run), ``proposals`` (how many proposals the document has).

The tools' files hold the newest proposal of each system as predictions / suggestions (Argilla: one per
question, so one proposal per record) and the final human label as an annotation / response, with the project
definition beside them (``<name>.label_config.xml``: Label Studio's labeling config; ``<name>.settings.json``:
Argilla's dataset settings, ``rg.Settings.from_json``); importing one
adds its documents (a document already in the store keeps its text), its proposals (one import run per file)
and its human labels as reviews, and adds nothing when the file is imported again.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

from annotune.errors import ConfigError, DataError
from annotune.labelling.importing import ImportSummary, file_sha
from annotune.labelling.resolve import HUMAN
from annotune.labelling.store import LabelStore

TABLE_FORMATS = {".csv": "csv", ".jsonl": "jsonl", ".parquet": "parquet"}
FORMATS: tuple[str, ...] = ("label-studio", "argilla")  # other annotation tools' JSON (import and export)


def export_rows(store: LabelStore) -> list[dict]:
    finals = store.final_labels()
    counts = Counter(p["doc_id"] for p in store.run_proposals([r["id"] for r in store.runs()]))
    rows = []
    for doc in store.documents():
        final = finals.get(doc["id"])
        label = json.loads(final["label"]) if final and final["label"] is not None else None
        rows.append({"id": doc["id"], "text": doc["text"], "label": label,
                     "provenance": final["provenance"] if final else "unlabelled",
                     "source": final["system"] if final else None,
                     "probability": final["probability"] if final else None,
                     "run": final["run_id"] if final else None, "proposals": counts.get(doc["id"], 0)})
    return rows


def export(store: LabelStore, path: Path, fmt: str | None = None) -> dict:
    """Write the final labels to ``path`` (format from ``fmt`` or the file's extension)."""
    fmt = fmt or TABLE_FORMATS.get(path.suffix.lower())
    if fmt not in (*TABLE_FORMATS.values(), *FORMATS):
        raise ConfigError(f"cannot tell the export format of {path.name!r}: use a .csv, .jsonl or .parquet name "
                          f"or --format ({', '.join((*TABLE_FORMATS.values(), *FORMATS))})", file=path)
    rows = export_rows(store)
    path.parent.mkdir(parents=True, exist_ok=True)
    summary = {"file": str(path), "format": fmt, "rows": len(rows),
               "provenance": dict(Counter(r["provenance"] for r in rows))}
    if fmt in FORMATS:
        return {**summary, **export_tool(store, path, fmt, rows)}
    tmp = path.with_name(path.name + ".tmp")
    if fmt == "jsonl":
        with tmp.open("w", encoding="utf-8") as f:
            for r in rows:
                f.write(json.dumps(r, ensure_ascii=False) + "\n")
    else:
        import pandas as pd

        frame = pd.DataFrame(rows)
        frame["label"] = [cell(v) for v in frame["label"]]
        frame["run"] = frame["run"].astype("Int64")  # run ids stay integers next to empty cells
        if fmt == "csv":
            frame.to_csv(tmp, index=False)
        else:
            frame.to_parquet(tmp, index=False)
    tmp.replace(path)
    return summary


def export_tool(store: LabelStore, path: Path, fmt: str, rows: list[dict]) -> dict:
    """Label Studio tasks and ``<name>.label_config.xml``, or Argilla records and ``<name>.settings.json``."""
    from annotune.labelling import interchange_tools as T

    proposals: dict[str, dict[str, tuple]] = {}  # doc -> {system: (label, probability)}, newest last
    for p in store.run_proposals([r["id"] for r in store.runs()]):
        if p["label"] is not None:
            mine = proposals.setdefault(p["doc_id"], {})
            mine.pop(p["system"], None)
            mine[p["system"]] = (json.loads(p["label"]), p["probability"])
    book = store.codebook
    if fmt == "label-studio":
        T.write_json(path, T.label_studio_tasks(book, rows, proposals))
        extra = path.with_name(path.stem + ".label_config.xml")
        extra.write_text(T.label_studio_config(book), encoding="utf-8")
        return {"config": str(extra)}
    T.write_json(path, T.argilla_records(book, rows, proposals))
    extra = path.with_name(path.stem + ".settings.json")
    T.write_json(extra, T.argilla_settings(book))
    return {"settings": str(extra)}


def import_tasks(store: LabelStore, path: Path, kind: str, *, reviewer: str | None = None) -> ImportSummary:
    """Import a Label Studio task list or Argilla record list (``kind``); ``reviewer`` names the annotator of
    human labels whose file does not say who made them (default: the tool's name)."""
    from annotune.labelling import interchange_tools as T

    name = str(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DataError(f"not a JSON file ({e})", file=name) from None

    def fail_at(row: int):
        return lambda message, where: DataError(message, file=name, row=row, field=where or None)

    reader = T.read_label_studio if kind == "label-studio" else T.read_argilla
    return store_entries(store, path, kind, reader(store.codebook, data, fail_at, reviewer or kind))


def store_entries(store: LabelStore, path: Path, kind: str, entries: list) -> ImportSummary:
    """Write what a tool's file holds: documents, proposals (one import run per file), human labels as reviews."""
    from annotune.labelling.interchange_tools import MODEL, PROBABILITY, PROVENANCE, REVIEWER

    name, sha, task = str(path), file_sha(path), store.codebook.task
    summary = ImportSummary(name)
    known, texts = store.document_ids(), {}
    for e in entries:
        if e.doc_id not in known and e.doc_id not in texts:
            if e.text is None:
                raise DataError(f"document {e.doc_id!r} is not in the project and has no text", file=name, row=e.row,
                                field="data.text" if kind == "label-studio" else "fields.text")
            texts[e.doc_id] = e.text
    run_id, _ = store.start_run("import", fingerprint=sha, settings={"file": name, "kind": kind}, resume=True)
    summary.documents = store.add_documents([{"id": i, "text": t} for i, t in texts.items()], source=name,
                                            run_id=run_id)
    empty = task.merge_items({})
    empty = None if empty is None else task.label_to_json(empty)
    rows: dict[tuple[str, str], tuple[dict, bool]] = {}
    for e in entries:
        model = e.meta.get(MODEL) if e.meta.get(PROVENANCE) == "model" else None
        if model and empty is not None and all(s != model for s, _, _ in e.proposals):
            e.proposals.append((model, empty, e.meta.get(PROBABILITY)))  # an empty label the tool has no answer for
        for system, label, prob in e.proposals:
            rows[(e.doc_id, system)] = ({"doc_id": e.doc_id, "system": system, "label": label, "probability": prob},
                                        system == model)
    summary.proposals = (store.add_proposals([r for r, final in rows.values() if not final], run_id=run_id)
                         + store.add_proposals([r for r, final in rows.values() if final], run_id=run_id, final=True))
    ids = store.proposal_index(run_id)
    reviews, unlabelled, conflicts = [], 0, 0
    for e in entries:
        prov, who = e.meta.get(PROVENANCE), e.meta.get(REVIEWER)
        conflicts += prov == "conflict"
        humans = list(e.humans)
        if prov in (*HUMAN, "human-rejected") and who and not any(h[1] == who and h[3] for h in humans):
            humans.append((empty, who, "annotune", prov))  # an empty label the tool has no answer for
        for label, reviewer, index, provenance in humans:
            review = {"doc_id": e.doc_id, "reviewer": reviewer, "external_key": f"{sha[:16]}:{e.row}:{index}"}
            same = [ids[(e.doc_id, s)] for s, lab, _ in e.proposals if lab == label and (e.doc_id, s) in ids]
            if label is None and provenance != "human-rejected":
                unlabelled += 1
                continue
            if label is None or (provenance == "human-verified" and not same and label == empty):
                review["decision"] = "reject"  # every proposal rejected
            elif provenance == "human-verified" and same:
                review.update(decision="accept", proposal_id=same[-1])
            else:
                prefix = "import:" if provenance in ("human-corrected", "human-verified") else "labels:"
                review.update(decision="correct", label=label, source=prefix + path.name)
            reviews.append(review)
    summary.reviews = store.add_reviews(reviews, source=f"import:{path.name}")
    summary.skipped = len(reviews) - summary.reviews
    finals = {d for (d, _), (_, final) in rows.items() if final}
    humans_of = {e.doc_id for e in entries if e.humans}
    todo = dict.fromkeys(d for (d, _) in rows if d not in finals and d not in humans_of)
    store.enqueue([(d, f"imported from {kind}, not reviewed", 0.0) for d in todo], run_id)
    if unlabelled:
        summary.notes.append(f"{unlabelled} annotations without a label were skipped")
    if conflicts:
        summary.notes.append(f"{conflicts} documents were in conflict (reviewers accepted different labels): the "
                             "file does not carry those reviews")
    store.finish_run(run_id, len(entries))
    return summary


def cell(label) -> str | None:
    """A label in one table cell: the name (single), ``a; b`` (multi), a JSON object (dimensions)."""
    if label is None:
        return None
    if isinstance(label, list):
        return "; ".join(label)
    if isinstance(label, dict):
        return json.dumps(label, ensure_ascii=False)
    return str(label)


__all__ = ["export", "export_rows", "import_tasks", "FORMATS"]
