"""`LabelStore`: the operations of a project's label store, each one transaction (idempotent, resumable).

Writers never update a review or a proposal in place: reviews are appended (undo marks one undone) and every
write recomputes the final ``labels`` row of the documents it touched, in the same transaction, so the store is
consistent after a crash at any point.
"""

from __future__ import annotations

import json
import time
from typing import Any

import sqlalchemy as sa

from annotune.codebook import Codebook
from annotune.errors import DataError
import annotune.labelling.schema as S
from annotune.labelling.schema import chunked
from annotune.labelling.resolve import HUMAN, Resolved, resolve_reviews
from annotune.labelling.restatements import free_external_keys, imported_changes

LEASE_SECONDS = 600  # a reviewer keeps the document shown to them this long


def dumps(value: Any) -> str | None:
    return None if value is None else json.dumps(value, ensure_ascii=False, sort_keys=False)


def dialect_insert(conn, table):
    """The INSERT of the connection's dialect (SQLite and PostgreSQL both have ON CONFLICT)."""
    if conn.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert
    return insert(table)


def insert_ignore(conn, table):
    """INSERT that skips rows whose key exists."""
    return dialect_insert(conn, table).on_conflict_do_nothing()


def upsert_labels(conn, rows: list[dict], *, only_over_model: bool = False) -> None:
    """Write final labels, replacing a document's row if another writer made one meanwhile (``only_over_model``:
    never replacing a human label)."""
    stmt = dialect_insert(conn, S.labels)
    columns = {c: stmt.excluded[c] for c in ("label", "provenance", "system", "run_id", "probability", "updated_at")}
    where = S.labels.c.provenance == "model" if only_over_model else None
    conn.execute(stmt.on_conflict_do_update(index_elements=["doc_id"], set_=columns, where=where), rows)


class LabelStore:
    """One project's store (``url``: a SQLAlchemy URL, see `schema.store_url`) for ``codebook``'s task."""

    def __init__(self, url: str, codebook: Codebook):
        self.url, self.codebook = url, codebook
        self.engine = S.open_engine(url)
        S.migrate(self.engine)

    def close(self) -> None:
        self.engine.dispose()

    @property
    def display_url(self) -> str:
        """The URL without its password (for messages and manifests)."""
        return self.engine.url.render_as_string(hide_password=True)

    # ------------------------------------------------------------------ runs
    def start_run(self, kind: str, *, system: str | None = None, fingerprint: str | None = None,
                  settings: dict | None = None, resume: bool | str = False) -> tuple[int, bool]:
        """(run id, resumed): with ``resume``, the newest run of the same kind, system and fingerprint is
        continued instead of starting a new one (``resume="unfinished"``: only if it did not finish)."""
        with self.engine.begin() as conn:
            if resume:
                query = sa.select(S.runs.c.id).where(S.runs.c.kind == kind, S.runs.c.system == system,
                                                     S.runs.c.fingerprint == fingerprint)
                if resume == "unfinished":
                    query = query.where(S.runs.c.status == "running")
                row = conn.execute(query.order_by(S.runs.c.id.desc()).limit(1)).first()
                if row:
                    conn.execute(S.runs.update().where(S.runs.c.id == row[0]).values(status="running"))
                    return row[0], True
            result = conn.execute(S.runs.insert().values(
                kind=kind, system=system, fingerprint=fingerprint, settings=dumps(settings or {}), status="running",
                docs=0, started_at=time.time()))
            return result.inserted_primary_key[0], False

    def set_run_settings(self, run_id: int, settings: dict) -> None:
        with self.engine.begin() as conn:
            conn.execute(S.runs.update().where(S.runs.c.id == run_id).values(settings=dumps(settings)))

    def proposed_by(self, system: str, fingerprint: str) -> set[str]:
        """Documents that runs of ``system`` with ``fingerprint`` have proposed labels for."""
        query = (sa.select(S.proposals.c.doc_id).join(S.runs, S.runs.c.id == S.proposals.c.run_id)
                 .where(S.runs.c.system == system, S.runs.c.fingerprint == fingerprint))
        with self.engine.connect() as conn:
            return set(conn.execute(query).scalars())

    def finish_run(self, run_id: int, docs: int | None = None) -> None:
        values: dict[str, Any] = {"status": "finished", "finished_at": time.time()}
        if docs is not None:
            values["docs"] = docs
        with self.engine.begin() as conn:
            conn.execute(S.runs.update().where(S.runs.c.id == run_id).values(**values))

    def runs_by_id(self, ids: list[int]) -> list[dict]:
        with self.engine.connect() as conn:
            return [dict(r._mapping) for r in conn.execute(sa.select(S.runs).where(S.runs.c.id.in_(ids))
                                                           .order_by(S.runs.c.id))]

    def runs(self, kind: str | None = None) -> list[dict]:
        query = sa.select(S.runs).order_by(S.runs.c.id)
        if kind:
            query = query.where(S.runs.c.kind == kind)
        with self.engine.connect() as conn:
            return [dict(r._mapping) for r in conn.execute(query)]

    # ------------------------------------------------------------------ documents
    def add_documents(self, rows: list[dict], *, source: str, run_id: int | None = None) -> int:
        """Insert documents (``id``, ``text``, optional ``meta``) not already in the store; returns how many
        were new. Ids are the identity: a document already there with the same text is skipped; one with
        another text is a `DataError` (nothing is inserted) — the labels of this file would otherwise attach
        to another file's texts."""
        added = 0
        now = time.time()
        with self.engine.begin() as conn:
            for part in chunked(rows):
                ids = [r["id"] for r in part]
                have = {i: (text, src) for i, text, src in conn.execute(
                    sa.select(S.documents.c.id, S.documents.c.text, S.documents.c.source)
                    .where(S.documents.c.id.in_(ids)))}
                clash = next((r for r in part if r["id"] in have and have[r["id"]][0] != r["text"]), None)
                if clash is not None:
                    raise DataError(
                        f"document {clash['id']!r} is already in the project with another text (from "
                        f"{have[clash['id']][1]}); nothing was imported. Ids identify documents: give each "
                        "file ids of its own (a file without an id column is numbered 1, 2, … by row)",
                        file=source, field="id")
                new = [{"id": r["id"], "text": r["text"], "meta": dumps(r.get("meta")), "source": source,
                        "run_id": run_id, "added_at": now} for r in part if r["id"] not in have]
                if new:
                    conn.execute(S.documents.insert(), new)
                    added += len(new)
        return added

    def document_ids(self) -> set[str]:
        with self.engine.connect() as conn:
            return set(conn.execute(sa.select(S.documents.c.id)).scalars())

    def documents(self, ids: list[str] | None = None) -> list[dict]:
        """Documents (id, text) in insertion order, all or those of ``ids`` (in that order)."""
        with self.engine.connect() as conn:
            if ids is None:
                rows = conn.execute(sa.select(S.documents.c.id, S.documents.c.text).order_by(S.documents.c.added_at,
                                                                                            S.documents.c.id))
                return [dict(r._mapping) for r in rows]
            found = {}
            for part in chunked(ids):
                for r in conn.execute(sa.select(S.documents.c.id, S.documents.c.text)
                                      .where(S.documents.c.id.in_(part))):
                    found[r.id] = dict(r._mapping)
            return [found[i] for i in ids if i in found]

    # ------------------------------------------------------------------ proposals
    def add_proposals(self, rows: list[dict], *, run_id: int, final: bool = False) -> int:
        """Insert proposals of one run (``doc_id``, ``system``, ``label`` JSON data or None, ``raw``,
        ``probability``, ``probs``, ``model_fingerprint``, ``prompt_hash``), skipping any the run already has;
        ``final``: they are model labels, which become the final label of documents no human decided."""
        now = time.time()
        with self.engine.begin() as conn:
            have = set()
            for part in chunked(sorted({r["doc_id"] for r in rows})):  # only this batch's documents
                have |= set(conn.execute(sa.select(S.proposals.c.doc_id, S.proposals.c.system).where(
                    S.proposals.c.run_id == run_id, S.proposals.c.doc_id.in_(part))).all())
            new = [{"doc_id": r["doc_id"], "system": r["system"], "run_id": run_id, "label": dumps(r.get("label")),
                    "raw": r.get("raw"), "probability": r.get("probability"), "probs": dumps(r.get("probs")),
                    "model_fingerprint": r.get("model_fingerprint"), "prompt_hash": r.get("prompt_hash"),
                    "created_at": now} for r in rows if (r["doc_id"], r["system"]) not in have]
            if new:
                conn.execute(S.proposals.insert(), new)
            conn.execute(S.runs.update().where(S.runs.c.id == run_id).values(docs=S.runs.c.docs + len(new)))
            if final and new:
                self._set_model_labels(conn, new, run_id)
        return len(new)

    def _set_model_labels(self, conn, rows: list[dict], run_id: int) -> None:
        """Model labels become final labels, replacing older model labels and never a human one."""
        now = time.time()
        upsert_labels(conn, [{"doc_id": r["doc_id"], "label": r["label"], "provenance": "model", "system": r["system"],
                              "run_id": run_id, "probability": r["probability"], "updated_at": now} for r in rows],
                      only_over_model=True)

    def proposal_ids_done(self, run_id: int) -> set[str]:
        with self.engine.connect() as conn:
            return set(conn.execute(sa.select(S.proposals.c.doc_id).where(S.proposals.c.run_id == run_id)).scalars())

    def proposal_index(self, run_id: int) -> dict[tuple[str, str], int]:
        """{(document, system): proposal id} of one run."""
        with self.engine.connect() as conn:
            return {(r.doc_id, r.system): r.id for r in conn.execute(
                sa.select(S.proposals.c.id, S.proposals.c.doc_id, S.proposals.c.system)
                .where(S.proposals.c.run_id == run_id))}

    def run_proposals(self, run_ids: list[int]) -> list[dict]:
        """Proposals of some runs (doc_id, system, run_id, label JSON text, probability), oldest first."""
        cols = (S.proposals.c.doc_id, S.proposals.c.system, S.proposals.c.run_id, S.proposals.c.label,
                S.proposals.c.probability)
        with self.engine.connect() as conn:
            return [dict(r._mapping) for r in conn.execute(
                sa.select(*cols).where(S.proposals.c.run_id.in_(run_ids)).order_by(S.proposals.c.id))]

    def proposals_of(self, doc_id: str) -> list[dict]:
        with self.engine.connect() as conn:
            return [dict(r._mapping) for r in conn.execute(
                sa.select(S.proposals).where(S.proposals.c.doc_id == doc_id).order_by(S.proposals.c.id))]

    # ------------------------------------------------------------------ reviews
    def add_reviews(self, rows: list[dict], *, source: str) -> int:
        """Append reviews (``doc_id``, ``decision``, ``reviewer``, optional ``proposal_id``, ``item``, ``label``
        JSON data, ``note``, ``external_key``, ``created_at``). Imported reviews (with an ``external_key``) are
        added only where they change what their reviewer last decided about the same thing
        (`restatements.imported_changes`): re-importing a file adds nothing; an edited version adds its changed
        rows, which replace the earlier decisions (a Y turned N takes the acceptance back, going back to the
        first version restores it). Returns how many were added."""
        added, touched = 0, set()
        now = time.time()
        with self.engine.begin() as conn:
            rows = [{"doc_id": r["doc_id"], "proposal_id": r.get("proposal_id"), "item": r.get("item"),
                     "decision": r["decision"], "label": dumps(r.get("label")), "reviewer": str(r["reviewer"]),
                     "note": r.get("note"), "source": r.get("source", source), "external_key": r.get("external_key"),
                     "created_at": r.get("created_at", now), "undone_at": None}
                    for r in imported_changes(conn, self.codebook.task, rows, source)]
            free_external_keys(conn, rows)  # once for the whole import: one key query per file version
            for new in chunked(rows, 2000):
                conn.execute(S.reviews.insert(), new)
                added += len(new)
                touched |= {r["doc_id"] for r in new}
                for reviewer, docs in group_by_reviewer(new).items():  # a decided document's lease ends
                    for ids in chunked(docs):
                        conn.execute(S.queue.update().where(S.queue.c.doc_id.in_(ids), S.queue.c.leased_by == reviewer)
                                     .values(leased_by=None, leased_until=None))
            self._resolve(conn, sorted(touched))  # once per document, after all its new reviews
        return added

    def undo_last(self, reviewer: str) -> str | None:
        """Mark ``reviewer``'s latest active review undone; returns its document (None: nothing to undo). The
        document goes back to the front of the review queue."""
        with self.engine.begin() as conn:
            row = conn.execute(sa.select(S.reviews.c.id, S.reviews.c.doc_id).where(
                S.reviews.c.reviewer == reviewer, S.reviews.c.undone_at.is_(None), S.reviews.c.source == "web",
            ).order_by(S.reviews.c.id.desc()).limit(1)).first()
            if row is None:
                return None
            conn.execute(S.reviews.update().where(S.reviews.c.id == row.id).values(undone_at=time.time()))
            self._resolve(conn, [row.doc_id])  # may queue it already (a conflict again): the undoer's all the same
            lease = (reviewer, time.time() + LEASE_SECONDS)
            if not self._enqueue(conn, [(row.doc_id, "undone", -1.0)], None, lease=lease):
                conn.execute(S.queue.update().where(S.queue.c.doc_id == row.doc_id).values(
                    reason="undone", priority=-1.0, leased_by=lease[0], leased_until=lease[1]))
        return row.doc_id

    def reviews(self, doc_id: str | None = None, *, active: bool = True) -> list[dict]:
        query = sa.select(S.reviews).order_by(S.reviews.c.id)
        if doc_id is not None:
            query = query.where(S.reviews.c.doc_id == doc_id)
        if active:
            query = query.where(S.reviews.c.undone_at.is_(None))
        with self.engine.connect() as conn:
            return [dict(r._mapping) for r in conn.execute(query)]

    def _resolve(self, conn, doc_ids: list[str]) -> None:
        """Recompute the final label of ``doc_ids`` from their reviews (else their newest model label)."""
        for part in chunked(doc_ids):
            revs: dict[str, list[dict]] = {}
            for r in conn.execute(sa.select(S.reviews).where(S.reviews.c.doc_id.in_(part)).order_by(S.reviews.c.id)):
                revs.setdefault(r.doc_id, []).append(dict(r._mapping))
            props = {r.id: dict(r._mapping) for r in conn.execute(
                sa.select(S.proposals.c.id, S.proposals.c.system, S.proposals.c.label)
                .where(S.proposals.c.doc_id.in_(part)))}
            model = self._latest_model_labels(conn, part)
            conn.execute(S.labels.delete().where(S.labels.c.doc_id.in_(part)))
            now, rows = time.time(), []
            for doc_id in part:
                outcome = resolve_reviews(self.codebook, revs.get(doc_id, []), props) or model.get(doc_id)
                if outcome is not None:
                    rows.append({"doc_id": doc_id, "label": dumps(outcome.label), "provenance": outcome.provenance,
                                 "system": outcome.system, "run_id": outcome.run_id,
                                 "probability": outcome.probability, "updated_at": now})
                    if outcome.provenance in HUMAN or outcome.provenance == "human-rejected":
                        conn.execute(S.queue.delete().where(S.queue.c.doc_id == doc_id))
            if rows:
                upsert_labels(conn, rows)
            conflicts = [(r["doc_id"], "reviewers disagree", 0.0) for r in rows if r["provenance"] == "conflict"]
            if conflicts:  # reviewers disagree: back on the queue, for a reviewer who has not decided it yet
                self._enqueue(conn, conflicts, None)

    def _latest_model_labels(self, conn, doc_ids: list[str]) -> dict[str, Resolved]:
        query = (sa.select(S.proposals).join(S.runs, S.runs.c.id == S.proposals.c.run_id)
                 .where(S.runs.c.kind == "label", S.proposals.c.doc_id.in_(doc_ids)).order_by(S.proposals.c.id))
        out = {}
        for r in conn.execute(query):
            out[r.doc_id] = Resolved(json.loads(r.label) if r.label else None, "model", r.system, r.run_id,
                                     r.probability)
        return out

    # ------------------------------------------------------------------ final labels and the queue
    def final_labels(self) -> dict[str, dict]:
        with self.engine.connect() as conn:
            return {r.doc_id: dict(r._mapping) for r in conn.execute(sa.select(S.labels))}

    def human_labelled(self) -> list[dict]:
        """Documents with a human label (verified, corrected or imported), with their text and JSON label."""
        query = (sa.select(S.documents.c.id, S.documents.c.text, S.labels.c.label, S.labels.c.provenance)
                 .join(S.labels, S.labels.c.doc_id == S.documents.c.id)
                 .where(S.labels.c.provenance.in_(HUMAN), S.labels.c.label.is_not(None))
                 .order_by(S.documents.c.id))
        with self.engine.connect() as conn:
            return [{"id": r.id, "text": r.text, "label": json.loads(r.label), "provenance": r.provenance}
                    for r in conn.execute(query)]

    def enqueue(self, entries: list[tuple[str, str, float]], run_id: int | None = None) -> int:
        """Put documents (``(doc_id, reason, priority)``) on the review queue unless they are there or a human
        has decided them; returns how many were added."""
        with self.engine.begin() as conn:
            return self._enqueue(conn, entries, run_id)

    def _enqueue(self, conn, entries, run_id, lease: tuple[str, float] | None = None) -> int:
        ids = [e[0] for e in entries]
        decided, queued = set(), set()
        for part in chunked(ids):
            decided |= set(conn.execute(sa.select(S.labels.c.doc_id).where(
                S.labels.c.doc_id.in_(part), S.labels.c.provenance.in_((*HUMAN, "human-rejected")))).scalars())
            queued |= set(conn.execute(sa.select(S.queue.c.doc_id).where(S.queue.c.doc_id.in_(part))).scalars())
        now = time.time()
        new: dict[str, dict] = {}
        for d, reason, prio in entries:
            if d not in decided and d not in queued and d not in new:
                new[d] = {"doc_id": d, "reason": reason, "priority": prio, "run_id": run_id, "added_at": now,
                          "leased_by": lease[0] if lease else None, "leased_until": lease[1] if lease else None}
        if new:  # another writer may have queued some meanwhile: theirs stay
            conn.execute(insert_ignore(conn, S.queue), list(new.values()))
        return len(new)

    def queue_size(self) -> int:
        with self.engine.connect() as conn:
            return conn.execute(sa.select(sa.func.count()).select_from(S.queue)).scalar_one()

    def next_for(self, reviewer: str, *, lease_seconds: float = LEASE_SECONDS) -> dict | None:
        """The next queued document for ``reviewer``: the one leased to them, else the first one nobody holds
        (leased to them now, so another reviewer gets a different one)."""
        now = time.time()
        # a document this reviewer has decided (a conflict waiting for someone else) is not theirs to decide again
        undecided = ~sa.exists().where(S.reviews.c.doc_id == S.queue.c.doc_id, S.reviews.c.reviewer == reviewer,
                                       S.reviews.c.undone_at.is_(None))
        with self.engine.begin() as conn:
            mine = conn.execute(sa.select(S.queue).where(S.queue.c.leased_by == reviewer,
                                                         S.queue.c.leased_until > now, undecided)
                                .order_by(S.queue.c.priority, S.queue.c.added_at, S.queue.c.doc_id).limit(1)).first()
            row = mine or conn.execute(sa.select(S.queue).where(
                sa.or_(S.queue.c.leased_until.is_(None), S.queue.c.leased_until <= now, S.queue.c.leased_by == reviewer),
                undecided)
                .order_by(S.queue.c.priority, S.queue.c.added_at, S.queue.c.doc_id).limit(1).with_for_update()).first()
            if row is None:
                return None
            taken = conn.execute(S.queue.update().where(
                S.queue.c.doc_id == row.doc_id,
                sa.or_(S.queue.c.leased_until.is_(None), S.queue.c.leased_until <= now, S.queue.c.leased_by == reviewer),
            ).values(leased_by=reviewer, leased_until=now + lease_seconds)).rowcount
        if not taken:  # another reviewer took it between our read and our write
            return self.next_for(reviewer, lease_seconds=lease_seconds)
        return dict(row._mapping)

    def queued(self) -> list[dict]:
        with self.engine.connect() as conn:
            return [dict(r._mapping) for r in conn.execute(
                sa.select(S.queue).order_by(S.queue.c.priority, S.queue.c.added_at, S.queue.c.doc_id))]


def group_by_reviewer(reviews: list[dict]) -> dict[str, list[str]]:
    """{reviewer: the documents of their ``reviews``}."""
    out: dict[str, list[str]] = {}
    for r in reviews:
        out.setdefault(r["reviewer"], []).append(r["doc_id"])
    return out


__all__ = ["LabelStore", "LEASE_SECONDS"]
