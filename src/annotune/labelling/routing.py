"""`annotune route`: which documents a human should still look at.

Three reasons put a document on the review queue (documents a human has decided never go back):
the newest labelling run's probability is below a threshold (or its answer was INVALID); the threshold can be
chosen for a target precision, measured on the human-labelled holdout that the labeller did not train on;
and proposers disagree (two systems proposed different labels).
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from annotune.errors import ConfigError
from annotune.labelling.resolve import HUMAN

if TYPE_CHECKING:
    from annotune.labelling.workflow import Project

MIN_HOLDOUT = 20  # held-out human labels needed to choose a threshold for a precision


def choose_threshold(pairs: list[tuple[float, bool]], precision: float) -> tuple[float, float, float] | None:
    """(threshold, precision reached, coverage): the lowest probability threshold whose accepted documents
    (probability >= threshold) reach ``precision``, from (probability, correct) pairs; None when none does."""
    ranked = sorted(pairs, key=lambda p: -p[0])
    best, correct = None, 0
    for k, (prob, ok) in enumerate(ranked, start=1):
        correct += ok
        last_of_tie = k == len(ranked) or ranked[k][0] != prob
        if last_of_tie and correct / k >= precision:
            best = (prob, correct / k, k / len(ranked))
    return best


def route(project: "Project", *, threshold: float | None = None, precision: float | None = None,
          disagreement: bool = True) -> dict:
    store = project.store
    if threshold is not None and precision is not None:
        raise ConfigError("give --threshold or --precision, not both")
    for name, value in (("threshold", threshold), ("precision", precision)):
        if value is not None and not 0 < value <= 1:
            raise ConfigError(f"--{name} must be in (0, 1], not {value}")
    finals = store.final_labels()
    decided = {d for d, r in finals.items() if r["provenance"] in (*HUMAN, "human-rejected")}
    label_runs = store.runs("label")
    latest = label_runs[-1] if label_runs else None
    out: dict = {"label_run": latest["id"] if latest else None}
    entries: list[tuple[str, str, float]] = []
    if threshold is not None or precision is not None:
        if latest is None:
            raise ConfigError("nothing labelled yet: run `annotune label` before routing by probability")
        preds = {p["doc_id"]: p for p in store.run_proposals([latest["id"]])}
        if precision is not None:
            holdout = json.loads(latest["settings"]).get("holdout", [])
            pairs = [(preds[d]["probability"] or 0.0,
                      preds[d]["label"] is not None and json.loads(preds[d]["label"]) == json.loads(finals[d]["label"]))
                     for d in holdout if d in preds and d in finals and finals[d]["provenance"] in HUMAN]
            if len(pairs) < MIN_HOLDOUT:
                raise ConfigError(f"only {len(pairs)} held-out human labels to measure precision on (at least "
                                  f"{MIN_HOLDOUT} needed): review more documents, or give --threshold")
            chosen = choose_threshold(pairs, precision)
            if chosen is None:
                raise ConfigError(f"no threshold reaches a precision of {precision:g} on the {len(pairs)} held-out "
                                  "human labels: route everything with --threshold 1, or train on more labels")
            threshold = chosen[0]
            out.update({"precision_target": precision, "precision_measured": chosen[1],
                        "holdout_coverage": chosen[2], "holdout_docs": len(pairs)})
        out["threshold"] = threshold
        for doc, p in preds.items():
            if doc in decided:
                continue
            if p["label"] is None:
                entries.append((doc, "model answer INVALID", 0.0))
            elif p["probability"] is None or p["probability"] < threshold:
                prob = p["probability"] or 0.0
                entries.append((doc, f"model probability {prob:.2f} < {threshold:.2f}", prob))
        out["low_confidence"] = len(entries)
    if disagreement:
        runs = [r["id"] for r in store.runs() if r["kind"] in ("propose", "import")]
        seen: dict[str, dict[str, str]] = {}
        for p in store.run_proposals(runs) if runs else []:
            if p["label"] is not None:
                seen.setdefault(p["doc_id"], {})[p["system"]] = p["label"]
        split = [(d, by) for d, by in seen.items() if d not in decided and len({json.dumps(json.loads(v), sort_keys=True)
                                                                                 for v in by.values()}) > 1]
        entries += [(d, f"proposers disagree ({', '.join(sorted(by))})", 0.5) for d, by in split]
        out["disagreements"] = len(split)
    out["queued"] = store.enqueue(entries, latest["id"] if latest else None)
    out["queue_size"] = store.queue_size()
    return out


__all__ = ["route", "choose_threshold"]
