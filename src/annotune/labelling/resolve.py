"""A document's final label from its reviews, and the provenance words the store and exports use.

The rules, in order (undone reviews do not count, nor do a reviewer's decisions about one thing that a later batch
of theirs replaces — see `statement` and `batch_of`: an imported table edited from Y to N takes the acceptance back;
within one file every row counts, as the seed paper's review rounds do):

1. Decisions about the whole document — accepting a proposal (its label, ``human-verified``), correcting (the
   reviewer's label, ``human-corrected``; ``human-labelled`` when it came from an imported labelled file), or
   rejecting every proposal (``human-verified`` empty label for kinds where "nothing" is a label — multi-label,
   dimensions — else no label: ``human-rejected``): each reviewer's latest one counts; a label more than half
   of these reviewers reached wins (a third reviewer settles two who disagree), otherwise the document is a
   ``conflict`` (nobody's review overwrites another's) and goes back on the review queue for another reviewer.
2. Otherwise, item reviews (the seed paper's workflow: each proposed dimension accepted or rejected) — an
   item accepted by any reviewer counts as accepted; the accepted items make the label through the task
   kind (`TaskKind.merge_items`: dimensions keep the highest accepted intensity). Reviewers who accepted
   different single labels leave a ``conflict``.
3. No review: the newest model label (``model``, with its probability), if the corpus was labelled.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from typing import Any

from annotune.codebook import Codebook

HUMAN = ("human-verified", "human-corrected", "human-labelled")
PROVENANCES = (*HUMAN, "human-rejected", "conflict", "model")


@dataclass(frozen=True)
class Resolved:
    label: Any  # JSON label data, None when there is no label
    provenance: str
    system: str | None = None  # the reviewer, or the model that labelled it
    run_id: int | None = None
    probability: float | None = None


def resolve_reviews(codebook: Codebook, reviews: list[dict], proposals: dict[int, dict]) -> Resolved | None:
    """The human outcome of a document's reviews (rows of the reviews table, oldest first; ``proposals``:
    the proposals they refer to, by id), or None when no active review exists."""
    task = codebook.task
    active = latest_statements([r for r in reviews if r["undone_at"] is None], proposals)
    if not active:
        return None
    whole = [r for r in active if r["item"] is None and (r["decision"] == "correct" or r["proposal_id"] is None
                                                         or r["decision"] == "accept")]
    if whole:
        latest = {}  # each reviewer's latest decision about the whole document
        for r in whole:
            latest[r["reviewer"]] = r
        outcomes = [_whole(task, r, proposals) for r in latest.values()]
        votes = Counter(json.dumps(o.label, sort_keys=True) for o in outcomes)
        label, count = votes.most_common(1)[0]
        if 2 * count <= len(outcomes):
            return Resolved(None, "conflict", whole[-1]["reviewer"])
        winners = [o for o in outcomes if json.dumps(o.label, sort_keys=True) == label]
        return max(winners, key=lambda o: o.provenance == "human-corrected")  # corrected wins the provenance
    accepted: dict[str, list[str]] = {}
    for r in active:
        if r["decision"] != "accept" or r["proposal_id"] not in proposals:
            continue
        label = proposals[r["proposal_id"]]["label"]
        items = task.label_items(task.label_from_json(json.loads(label))) if label is not None else {}
        for key, value in items.items():
            if r["item"] is None or key == r["item"]:
                accepted.setdefault(key, []).append(value)
    merged = task.merge_items(accepted)
    reviewer = active[-1]["reviewer"]
    if merged is None:
        return Resolved(None, "conflict" if accepted else "human-rejected", reviewer)
    return Resolved(task.label_to_json(merged), "human-verified", reviewer)


def statement(review: dict, proposals: dict[int, dict]) -> tuple:
    """What one review decides about, for "a reviewer's latest decision counts": the whole document (a
    correction, or rejecting every proposal), or one proposer's proposal (its whole label, or one item of it:
    a label of a multi-label task, a dimension) — whatever value the proposer proposed, so that an edited file
    whose value or decision changed replaces the earlier decision."""
    pid = review.get("proposal_id")
    if review["decision"] == "correct" or pid is None:
        return (str(review["reviewer"]), "document")
    proposal = proposals.get(pid)
    return (str(review["reviewer"]), "proposal", proposal.get("system") if proposal else pid, review.get("item"))


def batch_of(review: dict) -> str:
    """The decisions a review was made with: the file version it was imported from (``<file sha>:<row>``
    keys; one file may state one thing more than once, as review rounds do), else the review alone."""
    key = review.get("external_key")
    return key.split(":", 1)[0] if key else f"review:{review.get('id')}"


def latest_statements(reviews: list[dict], proposals: dict[int, dict]) -> list[dict]:
    """``reviews`` (oldest first) without those that a later batch of the same reviewer's decisions about the
    same statement replaces (a newer version of an imported file, a later review on the page)."""
    keys = [statement(r, proposals) for r in reviews]
    latest = {key: batch_of(r) for r, key in zip(reviews, keys)}
    return [r for r, key in zip(reviews, keys) if batch_of(r) == latest[key]]


def _whole(task, review: dict, proposals: dict[int, dict]) -> Resolved:
    """The outcome of one decision about a whole document."""
    if review["decision"] == "correct":
        provenance = "human-labelled" if review["source"].startswith("labels:") else "human-corrected"
        return Resolved(json.loads(review["label"]), provenance, review["reviewer"])
    if review["decision"] == "accept":
        return Resolved(json.loads(proposals[review["proposal_id"]]["label"]), "human-verified", review["reviewer"])
    empty = task.merge_items({})  # rejected every proposal
    if empty is None:
        return Resolved(None, "human-rejected", review["reviewer"])
    return Resolved(task.label_to_json(empty), "human-verified", review["reviewer"])


__all__ = ["Resolved", "resolve_reviews", "statement", "batch_of", "latest_statements", "HUMAN", "PROVENANCES"]
