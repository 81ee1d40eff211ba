"""What a comparison leaves behind: the table of metrics and the per-document predictions file."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

from annotune.codebook import Codebook
from annotune.data.dataset import Doc
from annotune.evaluation.formatting import fmt
from annotune.tasks import get_task
from annotune.tasks.labels import label_from_json


def load_finished(store: Path, fp: str) -> dict | None:
    """A finished result saved at ``store`` if its fingerprint is ``fp`` (a damaged file is not trusted)."""
    if not store.exists():
        return None
    try:
        saved = json.loads(store.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None
    return saved if isinstance(saved, dict) and saved.get("fingerprint") == fp else None


def write_atomic(path: Path, data: Any) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, ensure_ascii=False, default=str), encoding="utf-8")
    tmp.replace(path)


def write_predictions_csv(path: Path, systems: list[dict], docs: list[Doc], codebook: Codebook) -> None:
    """One row per (system, document): id, gold, raw answer, parsed label (INVALID), probability."""
    from annotune.tasks.parsing import answer_text

    gold = {d.id: answer_text(d.label, codebook) for d in docs}
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["system", "id", "gold", "raw_answer", "parsed_label", "probability", "error"])
        for s in systems:
            for p in s["predictions"]:
                label = label_from_json(p["label"], codebook)
                parsed = "INVALID" if label is None else answer_text(label, codebook)
                prob = "" if p["confidence"] is None else f"{p['confidence']:.4f}"
                writer.writerow([s["name"], p["id"], gold[p["id"]], p["raw"], parsed, prob, p["error"] or ""])


def cost_per_1k_docs(stats: dict) -> float | None:
    """USD per 1,000 documents of a system (API and predictions systems with a price), else None."""
    if stats.get("cost_per_1k_docs") is not None:
        return float(stats["cost_per_1k_docs"])
    if stats.get("cost_usd") is not None and stats.get("docs"):
        return float(stats["cost_usd"]) * 1000 / stats["docs"]
    return None


def table_rows(results: dict) -> tuple[list[str], list[list[str]]]:
    """Header and rows of the comparison table; the metric columns come from the task kind in ``results``
    (``TaskKind.table_header``/``table_cells``)."""
    task = get_task(results["task"]["task"]["kind"])
    header = ["System", "Train docs", "Valid %", *task.table_header(), "docs/s", "seconds"]
    costs = any(cost_per_1k_docs(s["stats"]) is not None for s in results["systems"])
    if costs:  # API systems: money next to the local systems' compute time
        header = [*header, "$/1k docs"]
    rows = []
    for s in results["systems"]:
        m, st = s["metrics"], s["stats"]
        speed = [f"{st['docs_per_s']:.1f}" if st.get("docs_per_s") else "–",
                 f"{st['seconds']:.1f}" if st.get("seconds") else "–"]
        if costs:
            usd = cost_per_1k_docs(st)
            speed.append("–" if usd is None else f"{usd:.4f}" if usd < 0.1 else f"{usd:.2f}")
        trained = "–" if s.get("train_docs") is None else str(s["train_docs"])
        rows.append([s["name"], trained, fmt(m["valid_rate"], True), *task.table_cells(m), *speed])
    return header, rows


def markdown_table(results: dict) -> str:
    header, rows = table_rows(results)
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)
