"""`type = "predictions"`: labels produced elsewhere (e.g. GPT-4's codings), read from a file and parsed
like any model answer; documents without one count as INVALID."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from annotune.backends.base import Prediction, RunStats
from annotune.config import resolve_path
from annotune.errors import DataError
from annotune.systems.base import System, SystemConfig, file_identity, register_system


class PredictionsConfig(SystemConfig):
    type: Literal["predictions"] = "predictions"
    path: str = Field(min_length=1, description="JSONL/CSV/… file with one answer per document id.")
    id_field: str | None = Field(None, min_length=1, description="Column of document ids (default: the "
                                                                 "codebook's id_field).")
    label_field: str | None = Field(None, min_length=1, description="Column of answers (default: the codebook's "
                                                                    "label_field).")
    cost_per_1k_docs: float | None = Field(None, ge=0, description="USD per 1,000 documents, for the table.")

    def resolve_paths(self, base: Path) -> None:
        self.path = str(resolve_path(self.path, base))


@register_system
class PredictionsSystem(System):
    type = "predictions"
    open_answers = True
    config_class = PredictionsConfig

    @classmethod
    def describe(cls, record: dict) -> str:
        cost = record.get("stats", {}).get("cost_usd")
        return f"labels produced by {record['name']} (read from a file{f', costing ${cost:.2f}' if cost else ''})"

    def preflight(self, index: int) -> str:
        path = Path(self.config.path)
        if not path.is_file():
            raise self.fail(f"predictions file not found: {path}", "path", index)
        self.read_answers()
        return file_identity(path)

    def read_answers(self) -> dict[str, Any]:
        """{document id: raw answer} from the predictions file."""
        from annotune.data.readers import id_value, read_records

        cb = self.context.codebook
        path = Path(self.config.path)
        id_field = self.config.id_field or cb.id_field or "id"
        label_field = self.config.label_field or cb.label_field
        records, columns = read_records(path)
        for key, option in ((id_field, "id_field"), (label_field, "label_field")):
            if key not in columns:
                raise DataError(f"column {key!r} not found; available columns: "
                                f"{', '.join(repr(str(c)) for c in columns)} (set {option} = ... in the system)",
                                file=path, field=key)
        answers: dict[str, Any] = {}
        first: dict[str, int] = {}
        for row, rec in records:
            doc_id = id_value(rec.get(id_field))
            if not doc_id:
                raise DataError("empty id", file=path, row=row, field=id_field)
            if doc_id in first:
                raise DataError(f"duplicate id {doc_id!r} (first seen at row {first[doc_id]})", file=path, row=row,
                                field=id_field)
            first[doc_id] = row
            answers[doc_id] = rec.get(label_field)
        return answers

    def run(self, train, test):
        from annotune.tasks.parsing import parse_answer

        cb = self.context.codebook
        answers = self.read_answers()
        matched = sum(doc.id in answers for doc in test.docs)
        if answers and not matched:  # surely an id mismatch, not a model that skipped every document
            example = next(iter(answers))
            self.context.log(f"warning: {self.name}: none of the {len(answers)} ids in {self.config.path} is a test "
                             f"document id (file: {example!r}, data: {test.docs[0].id!r}); every document counts "
                             "as INVALID")
        preds = []
        for doc in test.docs:
            if doc.id not in answers:
                preds.append(Prediction(doc.id, "", None, error="no prediction for this document"))
                continue
            raw = answers[doc.id]
            text = raw if isinstance(raw, str) else json.dumps(raw, ensure_ascii=False)
            parsed = parse_answer(text, cb)
            preds.append(Prediction(doc.id, text, parsed.label, error=parsed.error))
        stats = RunStats(docs=len(test))
        if self.config.cost_per_1k_docs is not None:
            stats.extra["cost_usd"] = float(self.config.cost_per_1k_docs) * len(test) / 1000
        return preds, stats
