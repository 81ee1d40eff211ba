"""The hybrid workflow's commands over one project folder: `annotune init`, `import`, `propose`, `train`,
`label`, `route`, `export`, `status` (`annotune review` serves the review page: `annotune.cli.review`)."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.markup import escape
from rich.table import Table

from annotune.cli.app import app, console, log, quiet_option, user_errors
from annotune.environment import quiet_libraries


def project_argument():
    return typer.Argument(..., help="The project folder (made by `annotune init`).")


def store_option():
    return typer.Option(None, "--store", help="Label store URL overriding the project's (sqlite:///file.db or "
                        "postgresql://user@host/db; a password belongs in PGPASSWORD).")


def open_project(folder: Path, store: str | None = None, quiet: bool = True):
    from annotune.labelling import Project

    return Project.open(folder, store=store, progress=not quiet, log=log)


def say(text: str) -> None:
    console.print(text, markup=False, highlight=False)


@app.command()
@user_errors
def init(
    folder: Path = typer.Argument(..., help="Project folder to create."),
    codebook: Path = typer.Option(..., "--codebook", "-c", help="Codebook file (TOML/YAML, or a config with a "
                                  "\\[codebook] table); copied into the project."),
    store: str = typer.Option(None, "--store", help="Label store: a SQLite file in the project (default labels.db) "
                              "or postgresql://user@host/db."),
    name: str = typer.Option(None, "--name", help="Project name (default: the folder name)."),
):
    """Create a labelling project: a folder with annotune-project.toml (codebook, store, systems) and an empty
    label store."""
    from annotune.labelling import Project

    project = Project.init(folder, codebook, store=store, name=name)
    say(f"project {project.cfg.name!r} in {folder} (store: {project.store.display_url}); edit "
        f"{project.cfg.source} to choose the systems, then `annotune import {folder} FILE`")


@app.command("import")
@user_errors
def import_(
    folder: Path = project_argument(),
    file: Path = typer.Argument(..., help="Documents (CSV, TSV, JSONL, JSON, Parquet, Excel), a proposals+reviews "
                                "table, or a Label Studio / Argilla export."),
    kind: str = typer.Option("documents", "--kind", "-k", help="documents | reviews (proposals with accept/reject, "
                             "one row per item) | label-studio | argilla."),
    labels: bool = typer.Option(None, "--labels/--no-labels", help="Documents: import the label column as human "
                                "labels (default: when the column exists)."),
    text_field: str = typer.Option(None, "--text-field", help="Documents: column of texts."),
    id_field: str = typer.Option(None, "--id-field", help="Documents: column of ids."),
    label_field: str = typer.Option(None, "--label-field", help="Documents: column of labels."),
    limit: int = typer.Option(None, "--limit", min=1, help="Documents: only the first N."),
    field: list[str] = typer.Option(None, "--field", help="Reviews: FIELD=COLUMN for id, proposer, item, value, "
                                    "reviewer, decision (found among common names otherwise)."),
    store: str = store_option(),
):
    """Import documents, or proposals with their human reviews, into a project (re-importing adds nothing;
    an edited file adds the reviews it changes, which replace the earlier ones)."""
    from annotune.errors import ConfigError

    project = open_project(folder, store)
    if kind == "documents":
        options = {"labels": labels, "text_field": text_field, "id_field": id_field, "label_field": label_field,
                   "limit": limit}
    elif kind == "reviews":
        fields = {}
        for item in field or []:
            key, sep, column = item.partition("=")
            if not sep or not column:
                raise ConfigError(f"--field takes FIELD=COLUMN, not {item!r}", field="--field")
            fields[key.strip()] = column.strip()
        options = {"fields": fields}
    else:
        options = {}
    summary = project.import_file(file, kind=kind, **options)
    say(f"{file}: {summary['documents']:,} new documents, {summary['proposals']:,} new proposals, "
        f"{summary['reviews']:,} new reviews" + (f", {summary['skipped']:,} rows already in the project"
                                                 if summary["skipped"] else ""))
    for note in summary["notes"]:
        say(f"note: {note}")


@app.command()
@user_errors
def propose(
    folder: Path = project_argument(),
    system: list[str] = typer.Option(None, "--system", "-s", help="\\[\\[systems]] name(s) that propose (default: "
                                     "\\[propose] systems, else all but the labeller)."),
    sample: int = typer.Option(None, "--sample", "-n", min=1, help="Documents to draw (seeded) from those no "
                               "human has decided (default: \\[propose] sample)."),
    config: Path = typer.Option(None, "--config", help="Take the systems from this comparison config (same "
                                "codebook) instead of the project file."),
    store: str = store_option(),
    quiet: bool = quiet_option(),
):
    """The AI crowd: systems propose labels for a seeded sample of documents no human has decided (and they have
    not proposed for); the sample joins the review queue. An interrupted run resumes its sample."""
    quiet_libraries()
    out = open_project(folder, store, quiet).propose(system or None, sample=sample, config=config)
    for name, r in out.items():
        say(f"{name}: {r['proposed']:,} proposals (run {r['run']}{', resumed' if r['resumed'] else ''})")


@app.command()
@user_errors
def train(
    folder: Path = project_argument(),
    system: str = typer.Option(None, "--system", "-s", help="The system to fine-tune (default: \\[label] system)."),
    store: str = store_option(),
    quiet: bool = quiet_option(),
):
    """Fine-tune a system on the human-verified labels only (a held-out share kept for routing)."""
    quiet_libraries()
    out = open_project(folder, store, quiet).train(system)
    if out["run"] is None:
        say(f"{out['system']}: {out['note']}")
    else:
        say(f"{out['system']}: trained on {out['train_docs']:,} human labels ({out['holdout_docs']:,} held out) "
            f"→ {out['run']}")


@app.command()
@user_errors
def label(
    folder: Path = project_argument(),
    system: str = typer.Option(None, "--system", "-s", help="The labelling system (default: \\[label] system)."),
    engine: str = typer.Option("local", "--engine", help="local (this process) or ray (Ray Data; pip install "
                               "'annotune\\[ray]')."),
    ray_address: str = typer.Option(None, "--ray-address", help="A Ray cluster to use (default: a local Ray)."),
    workers: int = typer.Option(1, "--workers", min=1, help="Ray: model replicas (actors)."),
    limit: int = typer.Option(None, "--limit", min=1, help="Label at most N more documents."),
    batch_size: int = typer.Option(None, "--batch-size", min=1, help="Documents per committed batch."),
    store: str = store_option(),
    quiet: bool = quiet_option(),
):
    """Label the whole corpus with a system trained on the human-verified labels; batched, resumable (run it
    again after an interruption), probabilities stored. Human labels are never overwritten."""
    quiet_libraries()
    out = open_project(folder, store, quiet).label(system, engine=engine, limit=limit, batch_size=batch_size,
                                                   ray_address=ray_address, workers=workers)
    say(f"{out['system']}: labelled {out['labelled']:,} documents (run {out['run']}; {out['already']:,} done "
        f"before; trained on {out['train_docs']:,} human labels)")


@app.command()
@user_errors
def route(
    folder: Path = project_argument(),
    threshold: float = typer.Option(None, "--threshold", help="Queue model labels with a probability below this."),
    precision: float = typer.Option(None, "--precision", help="Choose the threshold for this precision, measured "
                                    "on the held-out human labels."),
    disagreement: bool = typer.Option(True, "--disagreement/--no-disagreement", help="Queue documents whose "
                                      "proposers disagree."),
    store: str = store_option(),
):
    """Put what a human should still check on the review queue: low-probability or INVALID model labels and
    documents where proposers disagree."""
    out = open_project(folder, store).route(threshold=threshold, precision=precision, disagreement=disagreement)
    if "precision_measured" in out:
        say(f"threshold {out['threshold']:.3f}: precision {out['precision_measured']:.3f} on "
            f"{out['holdout_docs']} held-out human labels (target {out['precision_target']:g}), "
            f"{100 * out['holdout_coverage']:.0f}% of them above it")
    parts = []
    if "low_confidence" in out:
        parts.append(f"{out['low_confidence']:,} below the threshold")
    if "disagreements" in out:
        parts.append(f"{out['disagreements']:,} with disagreeing proposers")
    say(f"{', '.join(parts) or 'nothing to check'}; {out['queued']:,} newly queued, {out['queue_size']:,} in the "
        "review queue")


@app.command()
@user_errors
def export(
    folder: Path = project_argument(),
    file: Path = typer.Argument(..., help="Output file: .csv, .jsonl or .parquet (or --format)."),
    fmt: str = typer.Option(None, "--format", "-f", help="csv, jsonl, parquet, label-studio or argilla."),
    store: str = store_option(),
):
    """Write every document's final label with its provenance (who or what labelled it, probability, run)."""
    out = open_project(folder, store).export(file, fmt=fmt)
    say(f"{out['rows']:,} documents → {out['file']} ({', '.join(f'{k} {v:,}' for k, v in out['provenance'].items())})")


@app.command()
@user_errors
def status(
    folder: Path = project_argument(),
    as_json: bool = typer.Option(False, "--json", help="Print the status as JSON."),
    store: str = store_option(),
):
    """Documents per state, the review queue and the work left, acceptance per proposer, agreement."""
    import json

    out = open_project(folder, store).status()
    if as_json:
        print(json.dumps(out, indent=1))
        return
    print_status(out)


def print_status(out: dict) -> None:
    say(f"{out['documents']:,} documents in {out['store']}")
    say("  " + ", ".join(f"{k} {v:,}" for k, v in out["states"].items() if v))
    left = out["remaining_review_seconds"]
    say(f"review queue: {out['queue']:,} documents" + (f", about {left / 3600:.1f} h of review at the measured "
                                                      f"{out['seconds_per_review']:.0f} s per document" if left
                                                      else ""))
    if out["proposers"]:
        table = Table(title="Proposers")
        for h in ("Proposer", "Reviews", "Accepted", "Rate"):
            table.add_column(h, justify="left" if h == "Proposer" else "right")
        for name, p in sorted(out["proposers"].items()):
            table.add_row(escape(name), f"{p['reviews']:,}", f"{p['accepted']:,}",
                          "–" if p["acceptance"] is None else f"{100 * p['acceptance']:.1f}%")
        console.print(table)
    if out["agreement"]:
        table = Table(title="Agreement (cells: document × label/dimension)")
        for h in ("A", "B", "Docs", "Agree", "Cohen κ", "Krippendorff α"):
            table.add_column(h, justify="left" if h in "AB" else "right")
        for p in out["agreement"]:
            fmt = lambda v: "–" if v is None else f"{v:.3f}"  # noqa: E731
            table.add_row(escape(p["a"]), escape(p["b"]), f"{p['docs']:,}", fmt(p["agreement"]), fmt(p["kappa"]),
                          fmt(p["alpha"]))
        console.print(table)
