"""The label store's tables (SQLAlchemy Core), its versioned migrations and how a store URL is opened.

One project keeps everything it learns in one database: SQLite by default (one file in the project folder,
WAL mode, so a review page and a labelling job can write at the same time), or PostgreSQL for a team
(``postgresql://user@host/db``). Labels are JSON text, the same on both.

Tables: ``documents``; ``runs`` (every import, propose, train and label step); ``proposals`` (a system's
label for a document, with its model fingerprint, prompt hash and probability); ``reviews`` (accept, reject,
correct: append-only, undo marks a review undone); ``queue`` (documents waiting for review, with a lease so two
reviewers get different documents); ``labels`` (each document's current final label with its provenance).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from annotune.errors import ConfigError

metadata = sa.MetaData()

meta = sa.Table("meta", metadata, sa.Column("key", sa.String(64), primary_key=True),
                sa.Column("value", sa.Text, nullable=False))

documents = sa.Table(
    "documents", metadata,
    sa.Column("id", sa.String(255), primary_key=True),
    sa.Column("text", sa.Text, nullable=False),
    sa.Column("meta", sa.Text),  # JSON: the other columns of the imported row
    sa.Column("source", sa.Text),  # the file it was imported from
    sa.Column("run_id", sa.Integer),
    sa.Column("added_at", sa.Float, nullable=False),
)

runs = sa.Table(
    "runs", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("kind", sa.String(32), nullable=False),  # import | propose | train | label | route | review
    sa.Column("system", sa.String(255)),
    sa.Column("fingerprint", sa.String(64)),  # what determines the run's output (resume key)
    sa.Column("settings", sa.Text),  # JSON
    sa.Column("status", sa.String(16), nullable=False),  # running | finished
    sa.Column("docs", sa.Integer, nullable=False, server_default="0"),
    sa.Column("started_at", sa.Float, nullable=False),
    sa.Column("finished_at", sa.Float),
)

proposals = sa.Table(
    "proposals", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("doc_id", sa.String(255), sa.ForeignKey("documents.id"), nullable=False),
    sa.Column("system", sa.String(255), nullable=False),
    sa.Column("run_id", sa.Integer, sa.ForeignKey("runs.id"), nullable=False),
    sa.Column("model_fingerprint", sa.String(64)),
    sa.Column("prompt_hash", sa.String(64)),
    sa.Column("label", sa.Text),  # JSON; NULL: the answer was INVALID
    sa.Column("raw", sa.Text),
    sa.Column("probability", sa.Float),
    sa.Column("probs", sa.Text),  # JSON
    sa.Column("created_at", sa.Float, nullable=False),
    sa.UniqueConstraint("doc_id", "run_id", "system", name="one_proposal_per_run"),
)

reviews = sa.Table(
    "reviews", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("doc_id", sa.String(255), sa.ForeignKey("documents.id"), nullable=False),
    sa.Column("proposal_id", sa.Integer, sa.ForeignKey("proposals.id")),  # NULL: about the document
    sa.Column("item", sa.String(255)),  # NULL: the whole proposal; else one item (a label, a dimension)
    sa.Column("decision", sa.String(16), nullable=False),  # accept | reject | correct
    sa.Column("label", sa.Text),  # JSON: the reviewer's label (correct)
    sa.Column("reviewer", sa.String(255), nullable=False),
    sa.Column("note", sa.Text),
    sa.Column("source", sa.String(255), nullable=False),  # web | api | import:<file> | labels:<file>
    sa.Column("external_key", sa.String(255), unique=True),  # idempotent imports: <file sha>:<row>
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("undone_at", sa.Float),
)

queue = sa.Table(
    "queue", metadata,
    sa.Column("doc_id", sa.String(255), sa.ForeignKey("documents.id"), primary_key=True),
    sa.Column("reason", sa.Text, nullable=False),
    sa.Column("priority", sa.Float, nullable=False, server_default="0"),  # lower first
    sa.Column("run_id", sa.Integer),
    sa.Column("added_at", sa.Float, nullable=False),
    sa.Column("leased_by", sa.String(255)),
    sa.Column("leased_until", sa.Float),
)

labels = sa.Table(
    "labels", metadata,
    sa.Column("doc_id", sa.String(255), sa.ForeignKey("documents.id"), primary_key=True),
    sa.Column("label", sa.Text),  # JSON; NULL when the document has no label yet (e.g. rejected, conflict)
    sa.Column("provenance", sa.String(32), nullable=False),
    sa.Column("system", sa.String(255)),  # the model (provenance "model") or the last reviewer
    sa.Column("run_id", sa.Integer),
    sa.Column("probability", sa.Float),
    sa.Column("updated_at", sa.Float, nullable=False),
)

INDEXES = [
    sa.Index("proposals_by_run", proposals.c.run_id, proposals.c.doc_id),
    sa.Index("proposals_by_doc", proposals.c.doc_id),
    sa.Index("reviews_by_doc", reviews.c.doc_id),
    sa.Index("labels_by_provenance", labels.c.provenance),
]


def _v1(conn: Connection) -> None:
    metadata.create_all(conn)


# One function per schema version, applied in order inside one transaction; never edit a released one,
# append a new one (e.g. ``conn.execute(sa.text("ALTER TABLE ... ADD COLUMN ..."))``).
MIGRATIONS: list[Callable[[Connection], None]] = [_v1]
SCHEMA_VERSION = len(MIGRATIONS)


def schema_version(conn: Connection) -> int:
    if not sa.inspect(conn).has_table("meta"):
        return 0
    row = conn.execute(sa.select(meta.c.value).where(meta.c.key == "schema_version")).first()
    return int(row[0]) if row else 0


def migrate(engine: Engine) -> int:
    """Bring the store's schema to `SCHEMA_VERSION`; returns the version found before."""
    with engine.begin() as conn:
        if engine.dialect.name == "postgresql":  # two processes opening a new store must not both migrate
            conn.execute(sa.text("SELECT pg_advisory_xact_lock(74226)"))
        found = schema_version(conn)
        if found > SCHEMA_VERSION:
            raise ConfigError(f"the label store has schema version {found}, newer than this annotune's "
                              f"{SCHEMA_VERSION}: upgrade annotune", file=str(engine.url.render_as_string()))
        for step in MIGRATIONS[found:]:
            step(conn)
        if found < SCHEMA_VERSION:
            values = {"key": "schema_version", "value": str(SCHEMA_VERSION)}
            if found == 0:
                conn.execute(meta.insert().values(**values))
            else:
                conn.execute(meta.update().where(meta.c.key == "schema_version").values(value=values["value"]))
    return found


def store_url(store: str, base: Path) -> str:
    """A SQLAlchemy URL: ``postgresql://…`` and ``sqlite:///…`` as given, else a SQLite file path."""
    if "://" in store:
        if store.startswith(("postgresql://", "postgres://")):
            return "postgresql+psycopg://" + store.split("://", 1)[1]
        return store
    path = Path(store).expanduser()
    return f"sqlite:///{path if path.is_absolute() else base / path}"


def open_engine(url: str) -> Engine:
    """An engine for ``url``; SQLite files get WAL mode, a busy timeout and foreign keys."""
    if url.startswith("sqlite"):
        engine = sa.create_engine(url, connect_args={"timeout": 30})

        @sa.event.listens_for(engine, "connect")
        def _pragmas(dbapi_conn, _record) -> None:
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.close()

        return engine
    try:
        return sa.create_engine(url, pool_pre_ping=True)
    except (sa.exc.ArgumentError, sa.exc.NoSuchModuleError, ImportError) as exc:
        raise ConfigError(f"cannot open the label store {sa.engine.make_url(url).render_as_string()}: {exc}",
                          field="store") from None


def chunked(items: list, size: int = 500) -> Iterable[list]:
    """``items`` in lists of at most ``size`` (SQL ``IN`` clauses stay short)."""
    for i in range(0, len(items), size):
        yield items[i:i + size]


__all__ = ["metadata", "documents", "runs", "proposals", "reviews", "queue", "labels", "migrate", "open_engine",
           "chunked", "store_url", "SCHEMA_VERSION"]
