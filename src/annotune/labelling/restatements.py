"""Imported reviews that restate or change earlier decisions (see `annotune.labelling.resolve.statement`): an
import adds only the rows that change what their reviewer last decided, and a restated row keeps a unique key."""

from __future__ import annotations

import json

import sqlalchemy as sa

import annotune.labelling.schema as S
from annotune.labelling.schema import chunked
from annotune.labelling.resolve import batch_of, decision_of, statement


def imported_changes(conn, task, rows: list[dict]) -> list[dict]:
    """``rows`` without the imported ones (with an ``external_key``) that change nothing: for each statement
    (`resolve.statement`), the set of decisions the rows make is already the reviewer's latest batch."""
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
    latest: dict[tuple, tuple[str, set]] = {}  # statement: (its latest batch, that batch's decisions)
    for r in stored:
        key, batch = (r["doc_id"], *statement(task, r, proposals)), batch_of(r)
        said = decision_of(r["decision"], json.loads(r["label"]) if r["label"] is not None else None)
        if key not in latest or latest[key][0] != batch:
            latest[key] = (batch, set())
        latest[key][1].add(said)
    keys = [(r["doc_id"], *statement(task, r, proposals)) if r.get("external_key") else None for r in rows]
    incoming: dict[tuple, set] = {}
    for r, key in zip(rows, keys):
        if key is not None:
            incoming.setdefault(key, set()).add(decision_of(r["decision"], r.get("label")))
    same = {key for key, said in incoming.items() if key in latest and latest[key][1] == said}
    return [r for r, key in zip(rows, keys) if key not in same]


def free_external_keys(conn, rows: list[dict]) -> None:
    """A restated row (a file imported again after another version changed its decision) keeps its key with
    a suffix: ``<file sha>:<row>~2``, ``~3``, … (the key column is unique)."""
    keys = [r["external_key"] for r in rows if r["external_key"]]
    taken = set()
    for part in chunked(keys):
        taken |= set(conn.execute(sa.select(S.reviews.c.external_key)
                                  .where(S.reviews.c.external_key.in_(part))).scalars())
    for r in rows:
        if r["external_key"] in taken:
            base = r["external_key"]
            taken |= set(conn.execute(sa.select(S.reviews.c.external_key)
                                      .where(S.reviews.c.external_key.like(f"{base}~%"))).scalars())
            r["external_key"] = next(f"{base}~{n}" for n in range(2, 1 << 30) if f"{base}~{n}" not in taken)
            taken.add(r["external_key"])


__all__ = ["imported_changes", "free_external_keys"]
