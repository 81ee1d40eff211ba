"""Imported reviews that restate or change earlier decisions (see `annotune.labelling.resolve.statement`): an
import adds only the rows that change what their reviewer last decided, and a restated row keeps a unique key."""

from __future__ import annotations

import json
from typing import Any

import sqlalchemy as sa

import annotune.labelling.schema as S
from annotune.labelling.schema import chunked
from annotune.labelling.resolve import batch_of, statement


def imported_changes(conn, task, rows: list[dict], source: str) -> list[dict]:
    """``rows`` without the imported ones (with an ``external_key``) that change nothing. For each statement
    (`resolve.statement`) the rows of one file make a set of decisions; they are added when that set is not
    the reviewer's latest batch already, except that a file version already imported under this name does not
    take a statement back from a later file of another name (importing two files in turn settles; the versions
    of an edited file — one name — do take it back)."""
    imported = [r for r in rows if r.get("external_key")]
    if not imported:
        return rows
    docs = sorted({r["doc_id"] for r in imported})
    stored = []
    for part in chunked(docs):
        stored += [dict(r._mapping) for r in conn.execute(
            sa.select(S.reviews).where(S.reviews.c.doc_id.in_(part), S.reviews.c.undone_at.is_(None)))]
    stored.sort(key=lambda r: r["id"])
    ids = sorted({r["proposal_id"] for r in (*stored, *imported) if r.get("proposal_id") is not None})
    proposals = {}
    for part in chunked(ids):
        proposals |= {p.id: dict(p._mapping) for p in conn.execute(
            sa.select(S.proposals.c.id, S.proposals.c.system, S.proposals.c.label)
            .where(S.proposals.c.id.in_(part)))}
    latest: dict[tuple, tuple[str, str, set]] = {}  # statement: (latest batch, its source, its decisions)
    seen: dict[tuple, set] = {}  # statement: every (batch, source) stored for it
    for r in stored:
        key, batch = (r["doc_id"], *statement(r, proposals)), batch_of(r)
        said = decision_of(task, r, proposals, json.loads(r["label"]) if r["label"] is not None else None)
        if key not in latest or latest[key][0] != batch:
            latest[key] = (batch, r["source"], set())
        latest[key][2].add(said)
        seen.setdefault(key, set()).add((batch, r["source"]))
    keys = [(r["doc_id"], *statement(r, proposals)) if r.get("external_key") else None for r in rows]
    incoming: dict[tuple, tuple[dict, set]] = {}  # statement: (its first row here, the decisions here)
    for r, key in zip(rows, keys):
        if key is not None:
            incoming.setdefault(key, (r, set()))[1].add(decision_of(task, r, proposals, r.get("label")))
    skip = set()
    for key, (r, said) in incoming.items():
        if key in latest:
            batch, latest_source, decisions = latest[key]
            mine = r.get("source", source)
            if decisions == said or ((batch_of(r), mine) in seen[key] and latest_source != mine):
                skip.add(key)
    return [r for r, key in zip(rows, keys) if key not in skip]


def decision_of(task, review: dict, proposals: dict[int, dict], label: Any) -> tuple:
    """What a review says about its statement: the decision, a correction's label (JSON data) and the value it
    was about (the proposal's label, or the item's value in it); two reviews that say the same add nothing."""
    proposal = proposals.get(review.get("proposal_id"))
    value = json.loads(proposal["label"]) if proposal and proposal["label"] is not None else None
    if value is not None and review.get("item") is not None:
        value = task.label_items(task.label_from_json(value)).get(review["item"])
    return (review["decision"], json.dumps(label, sort_keys=True), json.dumps(value, sort_keys=True))


def free_external_keys(conn, rows: list[dict]) -> None:
    """A restated row (a file imported again after another version changed its decision) keeps its key with
    a suffix: ``<file sha>:<row>~2``, ``~3``, … (the key column is unique)."""
    taken: set[str] = set()
    for sha in sorted({r["external_key"].split(":", 1)[0] for r in rows if r["external_key"]}):
        taken |= set(conn.execute(sa.select(S.reviews.c.external_key)  # one query per file version
                                  .where(S.reviews.c.external_key.like(f"{sha}:%"))).scalars())
    for r in rows:
        if r["external_key"] in taken:
            base = r["external_key"]
            r["external_key"] = next(f"{base}~{n}" for n in range(2, 1 << 30) if f"{base}~{n}" not in taken)
            taken.add(r["external_key"])


__all__ = ["imported_changes", "decision_of", "free_external_keys"]
