"""Label Studio tasks and Argilla v2 records: writing them, and reading them back as `Entry` objects.

Label Studio (https://labelstud.io/guide/task_format, /guide/predictions): a JSON list of tasks
``{"data": {"text", "annotune_id"}, "meta": {...}, "predictions": [{"model_version", "score", "result"}],
"annotations": [{"result", "ground_truth", "was_cancelled"}]}``; each result item is a ``choices`` region
``{"id", "from_name", "to_name": "text", "type": "choices", "value": {"choices": [...]}}`` (``from_name``
``label``, or one per dimension). Annotations carry no ``completed_by``: Label Studio takes only a member's id
or ``{"email": ...}`` there and rejects anything else, so the reviewer travels in the task's ``meta``.

Argilla v2 (``rg.Record.to_dict``, what ``dataset.records.to_json`` writes and ``records.from_json`` reads):
``{"id", "fields": {"text"}, "metadata": {...}, "suggestions": {question: {"value", "score", "agent"}},
"responses": {question: [{"value", "user_id", "status"}]}, "vectors": {}}``; one suggestion per question.
Reading also takes the ``rg.Suggestion``/``rg.Response`` list form (``[{"question_name", "value", ...}]``).

Both carry annotune's provenance in flat ``annotune_*`` keys (task ``meta`` / record ``metadata``), so that a
round trip restores it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from xml.sax.saxutils import quoteattr

from annotune.codebook import Codebook
from annotune.errors import DataError

PROVENANCE, REVIEWER, MODEL = "annotune_provenance", "annotune_reviewer", "annotune_model"
PROBABILITY = "annotune_probability"
HUMAN_LABEL = "annotune_label"  # Argilla: a human label whose reviewer is no Argilla user (JSON text)
Fail = Callable[[str, str], DataError]


@dataclass(frozen=True)
class Question:
    name: str  # the control / question name
    title: str
    options: tuple[str, ...]
    multiple: bool
    dimension: str | None = None  # the dimension it asks about (dimensions tasks)
    description: str = ""


@dataclass
class Entry:
    """One task or record read from a file: its document, model proposals and human labels."""

    row: int  # 1-based position in the file
    doc_id: str
    text: str | None
    proposals: list[tuple[str, Any, float | None]] = field(default_factory=list)  # (system, label JSON, prob)
    # (label JSON or None, reviewer, index, provenance or None): one per annotation / responding user
    humans: list[tuple[Any, str, str, str | None]] = field(default_factory=list)
    meta: dict = field(default_factory=dict)  # the annotune_* keys


# ---------------------------------------------------------------------------------------------- questions
def slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", name.casefold()).strip("_") or "dimension"


def questions(codebook: Codebook) -> list[Question]:
    """The questions a tool asks: ``label`` (single, multi), else one per dimension (slugified names)."""
    if codebook.kind in ("single", "multi"):
        return [Question("label", codebook.name, tuple(codebook.label_names), codebook.kind == "multi",
                         description=codebook.instructions)]
    if codebook.kind != "dimensions":
        raise DataError(f"task kind {codebook.kind!r} has no Label Studio / Argilla mapping")
    out, taken = [], {"text", "label"}
    for lab in codebook.labels:
        name, n = slug(lab.name), 1
        while name in taken:
            n += 1
            name = f"{slug(lab.name)}_{n}"
        taken.add(name)
        out.append(Question(name, lab.name, tuple(codebook.scale), False, lab.name, lab.definition))
    return out


def answers(codebook: Codebook, label: Any) -> dict[str, list[str]]:
    """A label (JSON data) as the values chosen per question; absent dimensions are left out."""
    if codebook.kind == "single":
        return {"label": [label]} if label is not None else {}
    if codebook.kind == "multi":
        return {"label": list(label or [])}
    by_dim = {q.dimension: q.name for q in questions(codebook)}
    return {by_dim[d]: [v] for d, v in (label or {}).items() if d in by_dim}


def read_label(codebook: Codebook, chosen: list[tuple[str, list, str]], fail: Fail) -> Any:
    """The label (JSON data) of ``(question, values, field)`` triples; None: no single label chosen."""
    if codebook.kind in ("single", "multi"):
        if any(q == "label" for q, _, _ in chosen):  # other questions of the tool's project are not the label
            chosen = [c for c in chosen if c[0] == "label"]
        names = []
        for _, values, where in chosen:
            for value in values:
                name = codebook.canonical_label(str(value))
                if name is None:
                    raise fail(f"{value!r} is not a codebook label", where)
                if name not in names:
                    names.append(name)
        if codebook.kind == "multi":
            return [n for n in codebook.label_names if n in names]
        if len(names) > 1:
            raise fail(f"several labels ({', '.join(names)}) for a single-label task", chosen[-1][2])
        return names[0] if names else None
    by_name = {q.name: q.dimension for q in questions(codebook)}
    out: dict[str, str] = {}
    for qname, values, where in chosen:
        dim = by_name.get(qname) or codebook.canonical_label(qname)
        if dim is None:
            raise fail(f"{qname!r} is not a codebook dimension ({', '.join(by_name)})", where)
        if len(values) > 1:
            raise fail(f"several values for dimension {dim!r}", where)
        for value in values:
            canonical = codebook.canonical_value(str(value))
            if canonical is None:
                raise fail(f"{value!r} is not on the scale ({', '.join(codebook.scale)})", where)
            out[dim] = canonical
    return {d: out[d] for d in codebook.label_names if d in out}


def block(row: dict) -> dict:
    """The annotune_* provenance keys of an exported row (None values left out)."""
    if row["provenance"] == "unlabelled":
        return {}
    keys = {PROVENANCE: row["provenance"], REVIEWER: row["source"] if row["provenance"].startswith("human-") else None,
            MODEL: row["source"] if row["provenance"] == "model" else None,
            PROBABILITY: row["probability"] if row["provenance"] == "model" else None}
    return {k: v for k, v in keys.items() if v is not None}


def pick(row: dict, proposals: dict[str, tuple]) -> str | None:
    """The one proposal Argilla can suggest: the model label, else one equal to the final label, else the newest."""
    if row["provenance"] == "model" and row["source"] in proposals:
        return row["source"]
    same = [s for s, (label, _) in proposals.items() if label == row["label"] and row["label"] is not None]
    return same[-1] if same else (list(proposals)[-1] if proposals else None)


# ---------------------------------------------------------------------------------------------- Label Studio
def ls_result(codebook: Codebook, label: Any, prefix: str) -> list[dict]:
    return [{"id": f"{prefix}-{i}", "from_name": q, "to_name": "text", "type": "choices", "value": {"choices": v}}
            for i, (q, v) in enumerate((q, v) for q, v in answers(codebook, label).items() if v)]


def label_studio_tasks(codebook: Codebook, rows: list[dict], proposals: dict[str, dict]) -> list[dict]:
    """One Label Studio task per document (see the module docstring)."""
    tasks = []
    for n, row in enumerate(rows, start=1):
        task: dict[str, Any] = {"data": {"text": row["text"], "annotune_id": row["id"]}}
        if block(row):
            task["meta"] = block(row)
        preds = []
        for j, (system, (label, prob)) in enumerate(proposals.get(row["id"], {}).items()):
            pred = {"model_version": system, "score": prob, "result": ls_result(codebook, label, f"p{n}-{j}")}
            preds.append({k: v for k, v in pred.items() if v is not None})
        task["predictions"] = preds
        human = row["provenance"].startswith("human-")
        task["annotations"] = [{"result": ls_result(codebook, row["label"], f"a{n}"), "ground_truth": False,
                                "was_cancelled": False}] if human else []
        tasks.append(task)
    return tasks


def label_studio_config(codebook: Codebook) -> str:
    """The labeling config (XML) for the tasks: the text and a ``<Choices>`` per question."""
    lines = ["<View>", f"  <Header value={quoteattr(codebook.name)}/>", '  <Text name="text" value="$text"/>']
    hints = {lab.name: lab.definition for lab in codebook.labels}
    for q in questions(codebook):
        if q.dimension:
            lines.append(f"  <Header value={quoteattr(q.title)} size=\"5\"/>")
        mode = "multiple" if q.multiple else "single-radio"
        lines.append(f'  <Choices name={quoteattr(q.name)} toName="text" choice="{mode}" showInline="true">')
        for option in q.options:
            hint = f" hint={quoteattr(hints[option])}" if hints.get(option) else ""
            lines.append(f"    <Choice value={quoteattr(option)}{hint}/>")
        lines.append("  </Choices>")
    return "\n".join([*lines, "</View>", ""])


def ls_reviewer(completed_by: Any) -> str | None:
    if isinstance(completed_by, dict):
        completed_by = completed_by.get("email") or completed_by.get("id")
    if completed_by is None or completed_by == "":
        return None
    return f"label-studio-user-{completed_by}" if isinstance(completed_by, int) else str(completed_by)


def ls_label(codebook: Codebook, result: Any, fail: Fail, where: str) -> Any:
    if not isinstance(result, list):
        raise fail("'result' is not a list", where)
    chosen = []
    for k, item in enumerate(result):
        if not isinstance(item, dict) or item.get("type", "choices") != "choices":
            continue  # other controls (text areas, ratings) are not labels
        values = (item.get("value") or {}).get("choices")
        if not isinstance(values, list):
            raise fail("a choices result without a list of choices", f"{where}[{k}].value.choices")
        chosen.append((str(item.get("from_name", "label")), values, f"{where}[{k}].value.choices"))
    return read_label(codebook, chosen, fail)


def read_label_studio(codebook: Codebook, data: Any, fail_at: Callable[[int], Fail], reviewer: str) -> list[Entry]:
    """Entries of a Label Studio task list (an export, or tasks written by `label_studio_tasks`)."""
    entries = []
    for row, task in enumerate(data if isinstance(data, list) else [data], start=1):
        fail = fail_at(row)
        if not isinstance(task, dict):
            raise fail("a task is not a JSON object", "")
        fields = task.get("data", task)
        if not isinstance(fields, dict):
            raise fail("'data' is not a JSON object", "data")
        doc_id = fields.get("annotune_id", fields.get("id", task.get("id")))
        if doc_id is None or doc_id == "":
            raise fail("no document id (data.annotune_id, data.id or id)", "data.annotune_id")
        text = fields.get("text", fields.get(codebook.text_field))
        meta = {k: v for k, v in (task.get("meta") or {}).items() if k.startswith("annotune_")} \
            if isinstance(task.get("meta"), dict) else {}
        entry = Entry(row, str(doc_id), None if text is None else str(text), meta=meta)
        for j, pred in enumerate(task.get("predictions") or []):
            if not isinstance(pred, dict):
                raise fail("a prediction is not a JSON object", f"predictions[{j}]")
            label = ls_label(codebook, pred.get("result", []), fail, f"predictions[{j}].result")
            if label is not None:
                entry.proposals.append((str(pred.get("model_version") or "label-studio"), label,
                                        number(pred.get("score"))))
        for j, ann in enumerate(task.get("annotations") or []):
            if not isinstance(ann, dict):
                raise fail("an annotation is not a JSON object", f"annotations[{j}]")
            if ann.get("was_cancelled"):  # skipped in Label Studio
                continue
            label = ls_label(codebook, ann.get("result", []), fail, f"annotations[{j}].result")
            who = ls_reviewer(ann.get("completed_by"))
            ours = who is None and meta.get(REVIEWER)
            entry.humans.append((label, meta[REVIEWER] if ours else who or reviewer, str(j),
                                 meta.get(PROVENANCE) if ours else None))
        entries.append(entry)
    return entries


def number(value: Any) -> float | None:
    try:
        return None if value is None else float(value)
    except (TypeError, ValueError):
        return None


# ---------------------------------------------------------------------------------------------- Argilla
def argilla_records(codebook: Codebook, rows: list[dict], proposals: dict[str, dict]) -> list[dict]:
    """One Argilla v2 record per document (see the module docstring)."""
    records = []
    for row in rows:
        props = proposals.get(row["id"], {})
        chosen = pick(row, props)
        suggestions = {}
        if chosen:
            label, prob = props[chosen]
            for q, values in answers(codebook, label).items():
                if values:
                    value = values if codebook.kind == "multi" else values[0]
                    suggestions[q] = {"value": value, "score": prob, "agent": chosen}
        responses, meta = {}, block(row)
        if row["provenance"].startswith("human-") and not is_uuid(row["source"]):
            meta[HUMAN_LABEL] = json.dumps(row["label"])  # Argilla takes responses from its own users only
        elif row["provenance"].startswith("human-"):
            for q, values in answers(codebook, row["label"]).items():
                if values:
                    value = values if codebook.kind == "multi" else values[0]
                    responses[q] = [{"value": value, "user_id": row["source"], "status": "submitted"}]
        records.append({"id": row["id"], "fields": {"text": row["text"]}, "metadata": meta,
                        "suggestions": suggestions, "responses": responses, "vectors": {}})
    return records


def argilla_settings(codebook: Codebook) -> dict:
    """The dataset settings in ``rg.Settings.serialize()`` form (``rg.Settings.from_json`` reads it), plus an
    ``annotune`` block: the task kind and which dimension each question asks about."""
    guide = [codebook.instructions, ""] + [f"- **{lab.name}**: {lab.definition}" for lab in codebook.labels]
    qs = []
    for q in questions(codebook):
        settings: dict[str, Any] = {"type": "multi_label_selection" if q.multiple else "label_selection",
                                    "options": [{"value": o, "text": o} for o in q.options]}
        if q.multiple:
            settings["options_order"] = "natural"
        qs.append({"name": q.name, "title": q.title, "description": q.description or None,
                   "required": codebook.kind == "single", "settings": settings})
    return {"guidelines": "\n".join(guide).strip(), "questions": qs,
            "fields": [{"name": "text", "title": "Text", "required": True,
                        "settings": {"type": "text", "use_markdown": False}}],
            "vectors": [], "metadata": [], "allow_extra_metadata": True,
            "annotune": {"kind": codebook.kind, "dimensions": {q.name: q.dimension for q in questions(codebook)
                                                              if q.dimension},
                         "note": "Argilla keeps responses of its own users (a UUID user_id) only: human labels of "
                                 "other reviewers travel in the metadata (annotune_label, annotune_reviewer)"}}


def by_question(items: Any, fail: Fail, where: str) -> list[tuple[str, dict, str]]:
    """``(question, item, field)`` of suggestions or responses in either form (dict by question, or a list)."""
    out = []
    if isinstance(items, dict):
        for q, value in items.items():
            for k, item in enumerate(value if isinstance(value, list) else [value]):
                out.append((str(q), item, f"{where}.{q}" + (f"[{k}]" if isinstance(value, list) else "")))
    elif isinstance(items, list):
        for k, item in enumerate(items):
            if not isinstance(item, dict) or not item.get("question_name"):
                raise fail("an item without a question_name", f"{where}[{k}]")
            out.append((str(item["question_name"]), item, f"{where}[{k}]"))
    elif items is not None:
        raise fail("neither a list nor an object", where)
    for q, item, at in out:
        if not isinstance(item, dict) or "value" not in item:
            raise fail("an item without a value", at)
    return out


def read_argilla(codebook: Codebook, data: Any, fail_at: Callable[[int], Fail], reviewer: str) -> list[Entry]:
    """Entries of a list of Argilla v2 records (``records.to_json``, or `argilla_records`)."""
    if isinstance(data, dict) and isinstance(data.get("records"), list):
        data = data["records"]
    entries = []
    for row, rec in enumerate(data if isinstance(data, list) else [data], start=1):
        fail = fail_at(row)
        if not isinstance(rec, dict):
            raise fail("a record is not a JSON object", "")
        fields, meta = rec.get("fields") or {}, rec.get("metadata") or {}
        if not isinstance(fields, dict) or not isinstance(meta, dict):
            raise fail("'fields' and 'metadata' must be JSON objects", "fields")
        doc_id = rec.get("id")
        if doc_id is None or doc_id == "":
            raise fail("no record id", "id")
        text = fields.get("text", fields.get(codebook.text_field))
        entry = Entry(row, str(doc_id), None if text is None else str(text),
                      meta={k: v for k, v in meta.items() if str(k).startswith("annotune_")})
        agents: dict[str, list] = {}
        for q, item, at in by_question(rec.get("suggestions"), fail, "suggestions"):
            agents.setdefault(str(item.get("agent") or "argilla"), []).append((q, item, at))
        for agent, items in agents.items():
            label = read_label(codebook, [(q, values(it["value"]), f"{at}.value") for q, it, at in items], fail)
            scores = [number(it.get("score")) for _, it, _ in items if number(it.get("score")) is not None]
            if label is not None:
                entry.proposals.append((agent, label, scores[0] if scores else None))
        users: dict[str, list] = {}
        for q, item, at in by_question(rec.get("responses"), fail, "responses"):
            if item.get("status") in (None, "submitted"):
                users.setdefault(str(item.get("user_id") or reviewer), []).append((q, values(item["value"]),
                                                                                   f"{at}.value"))
        for k, (user, chosen) in enumerate(users.items()):
            ours = user == meta.get(REVIEWER)
            entry.humans.append((read_label(codebook, chosen, fail), user, str(k),
                                 meta.get(PROVENANCE) if ours else None))
        if meta.get(HUMAN_LABEL) is not None and meta.get(REVIEWER) not in users:
            try:
                stored = json.loads(meta[HUMAN_LABEL])
            except (TypeError, json.JSONDecodeError):
                raise fail("not JSON text", f"metadata.{HUMAN_LABEL}") from None
            chosen = [(q, v, f"metadata.{HUMAN_LABEL}") for q, v in answers(codebook, stored).items() if v]
            label = read_label(codebook, chosen, fail) if chosen else stored
            entry.humans.append((label, str(meta.get(REVIEWER) or reviewer), "meta", meta.get(PROVENANCE)))
        entries.append(entry)
    return entries


def is_uuid(value: Any) -> bool:
    import uuid

    try:
        uuid.UUID(str(value))
        return True
    except ValueError:
        return False


def values(value: Any) -> list:
    return value if isinstance(value, list) else [value]


def write_json(path: Path, data: Any) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    tmp.replace(path)


__all__ = ["Entry", "Question", "questions", "answers", "read_label", "label_studio_tasks", "label_studio_config",
           "read_label_studio", "argilla_records", "argilla_settings", "read_argilla", "write_json", "slug"]
