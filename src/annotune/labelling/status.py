"""`annotune status`: where a project stands — documents per state, the review queue and how long it will
take, each proposer's acceptance rate, and agreement (Cohen's κ from scikit-learn, Krippendorff's α from
`krippendorff`, nominal) between proposers and between each proposer and the human labels.

A labeller trained on the human labels (a `label` run) is compared with them on its held-out documents only.
Agreement is computed on cells: one per document for single-label tasks, one per (document, label) or
(document, dimension) otherwise, "absent" included — so two proposers that both leave most dimensions out
agree on those cells, as the seed paper's accD does; κ corrects for that chance agreement. An INVALID
answer counts, as its own category (never left out, which would flatter a system that often fails).
"""

from __future__ import annotations

import json
from collections import Counter
from itertools import combinations
from statistics import median

import numpy as np

from annotune.evaluation.metrics import INVALID
from annotune.labelling.resolve import HUMAN, PROVENANCES
from annotune.labelling.store import LabelStore

HUMANS = "human labels"
MAX_GAP = 600.0  # seconds between two reviews above which the reviewer is taken to have paused


def cells(store: LabelStore, label_json: str | None) -> list[str]:
    """The label's agreement cells; an INVALID answer (None) is INVALID in every cell, its own category."""
    task, cb = store.codebook.task, store.codebook
    keys = [""] if cb.kind == "single" else cb.label_names
    if label_json is None:
        return [INVALID] * len(keys)
    items = task.label_items(task.label_from_json(json.loads(label_json)))
    return [items.get(k, "absent") for k in keys]


def agreement(a: list[str], b: list[str]) -> dict:
    import krippendorff
    from sklearn.metrics import cohen_kappa_score

    codes = {v: i for i, v in enumerate(sorted(set(a) | set(b)))}
    same = float(np.mean([x == y for x, y in zip(a, b)]))
    if len(codes) < 2:
        return {"cells": len(a), "agreement": same, "kappa": None, "alpha": None}
    data = np.array([[codes[x] for x in a], [codes[y] for y in b]], dtype=float)
    return {"cells": len(a), "agreement": same, "kappa": float(cohen_kappa_score(a, b)),
            "alpha": float(krippendorff.alpha(reliability_data=data, level_of_measurement="nominal"))}


def status(store: LabelStore) -> dict:
    finals = store.final_labels()
    docs = len(store.document_ids())
    states = Counter(r["provenance"] for r in finals.values())
    counts = {p: states.get(p, 0) for p in PROVENANCES}
    counts["unlabelled"] = docs - sum(1 for r in finals.values() if r["label"] is not None)
    runs = store.runs()
    proposal_runs = [r["id"] for r in runs if r["kind"] in ("propose", "import", "label")]
    proposals = store.run_proposals(proposal_runs) if proposal_runs else []
    by_source: dict[str, dict[str, str]] = {}
    for p in proposals:  # the newest proposal of each system for each document, INVALID (None) included
        by_source.setdefault(p["system"], {})[p["doc_id"]] = p["label"]
    # a labeller trained on the human labels is compared with them on its held-out documents only
    held_out = {r["system"]: set(json.loads(r["settings"] or "{}").get("holdout", []))
                for r in runs if r["kind"] == "label"}
    by_source[HUMANS] = {d: r["label"] for d, r in finals.items() if r["provenance"] in HUMAN and r["label"]}
    accept = _acceptance(store)
    pairs = []
    for a, b in combinations(sorted(by_source), 2):
        common = set(by_source[a]) & set(by_source[b])
        if HUMANS in (a, b) and (a if b == HUMANS else b) in held_out:
            common &= held_out[a if b == HUMANS else b]
        common = sorted(common)
        if not common:
            continue
        ca = [c for d in common for c in cells(store, by_source[a][d])]
        cb = [c for d in common for c in cells(store, by_source[b][d])]
        pairs.append({"a": a, "b": b, "docs": len(common), **agreement(ca, cb)})
    queue = store.queue_size()
    per_review = _seconds_per_review(store)
    return {
        "store": store.display_url, "documents": docs, "states": counts, "queue": queue,
        "reviews": len(store.reviews()), "seconds_per_review": per_review,
        "remaining_review_seconds": queue * per_review if per_review else None,
        "proposers": accept, "agreement": pairs,
        "runs": [{k: r[k] for k in ("id", "kind", "system", "status", "docs")} for r in runs],
    }


def _acceptance(store: LabelStore) -> dict[str, dict]:
    """Per proposer: reviews of its proposals, how many accepted, the rate (every review event counts, as in
    the seed paper's accept/reject file — also one that a later version of an imported file replaced)."""
    import sqlalchemy as sa

    from annotune.labelling import schema as S

    query = (sa.select(S.proposals.c.system, S.reviews.c.decision, sa.func.count())
             .join(S.proposals, S.proposals.c.id == S.reviews.c.proposal_id)
             .where(S.reviews.c.undone_at.is_(None)).group_by(S.proposals.c.system, S.reviews.c.decision))
    out: dict[str, dict] = {}
    with store.engine.connect() as conn:
        for system, decision, n in conn.execute(query):
            entry = out.setdefault(system, {"reviews": 0, "accepted": 0})
            entry["reviews"] += n
            entry["accepted"] += n if decision == "accept" else 0
    for entry in out.values():
        entry["acceptance"] = entry["accepted"] / entry["reviews"] if entry["reviews"] else None
    return out


def _seconds_per_review(store: LabelStore) -> float | None:
    """The median pause between two consecutive web reviews of the same reviewer (pauses over 10 min left out)."""
    times: dict[str, list[float]] = {}
    for r in store.reviews():
        if r["source"] == "web":
            times.setdefault(r["reviewer"], []).append(r["created_at"])
    gaps = [b - a for ts in times.values() for a, b in zip(ts, ts[1:]) if 0 < b - a <= MAX_GAP]
    return float(median(gaps)) if gaps else None


__all__ = ["status", "agreement"]
