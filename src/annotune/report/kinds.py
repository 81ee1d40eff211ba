"""What the report says differently per task kind — the only place in `annotune.report` that knows the kinds.

When task kinds become classes (`annotune.tasks`), these attributes belong on them; the rest of the report
reads them through `kind_text` and `primary_key` only.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class KindText:
    words: str  # "single-label": in the subtitle and the methods paragraph
    unit: str  # what the codebook's entries are called: "labels" / "dimensions"
    item: str  # one per-label score's subject: "class" / "dimension"
    scores_key: str  # the metrics' per-label table: "per_class" / "per_dimension"
    score_key: str  # the score in it that the per-label figure shows
    score_name: str  # its readable name
    primary: str  # the headline metric (for results whose metrics do not name it)
    constrained: str = ""  # how constrained answering asks, appended to the methods sentence


KINDS = {
    "single": KindText("single-label", "labels", "class", "per_class", "f1", "F1", "macro_f1"),
    "multi": KindText("multi-label", "labels", "class", "per_class", "f1", "F1", "micro_f1",
                      ", with a yes/no question per label"),
    "dimensions": KindText("multi-dimension (with an intensity scale)", "dimensions", "dimension", "per_dimension",
                           "presence_f1", "presence F1", "intensity_micro_f1", ", with a question per dimension"),
}


def kind_text(results: dict) -> KindText:
    return KINDS[results["task"]["task"]["kind"]]


def primary_key(results: dict) -> str:
    """The metrics key of the task's headline metric, as `evaluate` and `curve` stored it."""
    for s in results.get("systems", []):
        if s.get("metrics", {}).get("primary"):
            return s["metrics"]["primary"]
    if results.get("curve", {}).get("primary"):
        return results["curve"]["primary"]
    return kind_text(results).primary


def per_label_scores(system: dict, kt: KindText) -> dict[str, float]:
    """{label or dimension: its F1} of one system (empty when its metrics have none)."""
    return {lab: v[kt.score_key] for lab, v in system.get("metrics", {}).get(kt.scores_key, {}).items()}


__all__ = ["KindText", "KINDS", "kind_text", "primary_key", "per_label_scores"]
