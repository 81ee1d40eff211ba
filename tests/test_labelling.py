"""The hybrid workflow's store and verbs on real SQLite (and a real PostgreSQL server when one is given):
import, review rules, propose, label (resumable, never over human labels), route, export, status, the CLI."""

from __future__ import annotations

import json
import os

import pandas as pd
import pytest
from typer.testing import CliRunner

from annotune.cli import app
from annotune.errors import ConfigError, DataError
from annotune.labelling import Project
from annotune.labelling.routing import choose_threshold
from conftest import TOPIC_WORDS, TOPICS_CODEBOOK, make_codebook

PG_URL = os.environ.get("ANNOTUNE_TEST_POSTGRES")


def topic_rows(n: int, labelled: bool = True, start: int = 0) -> list[dict]:
    topics = ("business", "sport", "tech")
    rows = []
    for i in range(start, start + n):
        topic = topics[i % 3]
        row = {"id": f"d{i}", "text": f"{TOPIC_WORDS[topic]} story {i} " + TOPIC_WORDS[topic].split()[i % 5]}
        if labelled:
            row["label"] = topic
        rows.append(row)
    return rows


def write_jsonl(path, rows) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return str(path)


def topics_codebook():
    import tomllib

    from annotune.codebook import Codebook

    return Codebook.from_dict(tomllib.loads(TOPICS_CODEBOOK))


def single_project(tmp_path, store: str | None = None, systems: str = "") -> Project:
    project = Project.init(tmp_path / "p", topics_codebook(), store=store)
    if systems:
        cfg = project.cfg.source
        cfg.write_text(cfg.read_text().split("[[systems]]")[0] + systems + "\n", encoding="utf-8")
        project.close()
        project = Project.open(tmp_path / "p", store=store)
    return project


TFIDF = '''
[[systems]]
name = "tfidf"
type = "tfidf"

[label]
system = "tfidf"
holdout = 0.2
'''


# ---------------------------------------------------------------------- the seed paper's data, end to end
def test_flourishing_crowd_import_train_label_route_export(tmp_path):
    from conftest import FLOURISHING, REPO

    if not FLOURISHING.exists():
        pytest.skip("needs ../shared/data/flourishing")
    project = Project.init(tmp_path / "f", REPO / "examples" / "flourishing.toml")
    cfg = project.cfg.source
    cfg.write_text(cfg.read_text().split("[[systems]]")[0] + '[[systems]]\nname = "tfidf"\ntype = "tfidf"\nC = 1.0\n'
                   '\n[label]\nsystem = "tfidf"\n', encoding="utf-8")
    project = Project.open(tmp_path / "f")
    project.import_file(FLOURISHING / "tweets.jsonl", labels=False)  # the texts only: labels come from reviews
    pool = project.import_file(FLOURISHING / "unlabelled_pool.jsonl")
    assert pool["documents"] == 7591  # 30 of them have proposals and reviews in the crowd file
    crowd = project.import_file(FLOURISHING / "ai_crowd_codings.csv", kind="reviews")
    assert crowd["reviews"] == 26635
    again = project.import_file(FLOURISHING / "ai_crowd_codings.csv", kind="reviews")
    assert again["reviews"] == 0 and again["proposals"] == 0 and again["skipped"] == 26635

    status = project.status()
    assert status["proposers"]["GPT4"] == {"reviews": 5171, "accepted": 3947, "acceptance": 3947 / 5171}
    assert status["proposers"]["LLAMA2"] == {"reviews": 21464, "accepted": 6755, "acceptance": 6755 / 21464}
    assert status["states"]["human-verified"] == 2434
    pairs = {(p["a"], p["b"]): p for p in status["agreement"]}
    assert pairs[("GPT4", "human labels")]["kappa"] > pairs[("LLAMA2", "human labels")]["kappa"] > 0

    # accepted proposals, the highest intensity kept, reproduce the paper's human-verified labels
    gold = {r["id"]: r["labels"] for r in map(json.loads, (FLOURISHING / "tweets.jsonl").open())}
    finals = project.store.final_labels()
    same = sum(json.loads(finals[i]["label"]) == labels for i, labels in gold.items() if i in finals)
    assert same >= 2380

    assert project.train()["run"] is None  # tfidf fits inside `label`
    out = project.label(limit=400)
    train_docs, holdout = project.human_dataset()
    assert out["labelled"] == 400 and out["train_docs"] == len(train_docs) == 2434 - len(holdout)
    pool_ids = {r["id"] for r in map(json.loads, (FLOURISHING / "unlabelled_pool.jsonl").open())} - set(finals)
    routed = project.route(threshold=0.5)
    assert routed["low_confidence"] == routed["queued"] > 0

    path = tmp_path / "labels.csv"
    assert project.export(path)["rows"] == 2404 + 7591
    frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    run = {p["doc_id"]: p for p in project.store.run_proposals([out["run"]])}
    queued = {q["doc_id"] for q in project.store.queued()}
    counts = frame.provenance.value_counts().to_dict()
    assert counts == {"unlabelled": len(pool_ids) - (400 - len(holdout)), "human-verified": 2434,
                      "model": 400 - len(holdout)}
    for row in frame.itertuples():  # provenance correct on every row
        if row.id in finals:
            assert row.provenance == "human-verified" and json.loads(row.label) == json.loads(finals[row.id]["label"])
            assert row.id not in queued
        elif row.id in run:
            assert row.provenance == "model" and row.source == "tfidf" and row.run == str(out["run"])
            assert json.loads(row.label) == json.loads(run[row.id]["label"])
            assert float(row.probability) == pytest.approx(run[row.id]["probability"])
            assert (row.id in queued) == (run[row.id]["probability"] < 0.5)
        else:
            assert row.provenance == "unlabelled" and row.label == "" and row.id in pool_ids


# ---------------------------------------------------------------------- import and review rules
def test_import_documents_with_labels_is_idempotent_and_names_bad_rows(tmp_path):
    project = single_project(tmp_path)
    path = write_jsonl(tmp_path / "docs.jsonl", topic_rows(6))
    assert project.import_file(path)["documents"] == 6
    again = project.import_file(path)
    assert again["documents"] == 0 and again["reviews"] == 0
    finals = project.store.final_labels()
    assert {r["provenance"] for r in finals.values()} == {"human-labelled"}
    bad = tmp_path / "bad.jsonl"
    write_jsonl(bad, [{"id": "x1", "text": "a", "label": "sport"}, {"id": "x2", "text": "b", "label": "weather"}])
    with pytest.raises(DataError) as err:
        project.import_file(bad)
    assert "bad.jsonl" in str(err.value) and "row 2" in err.value.format() and "label" in err.value.format()


def test_a_second_file_whose_ids_name_other_texts_is_refused_and_changes_nothing(tmp_path):
    """Two files without an id column are both numbered 1, 2, … by row: the second one's labels must not land
    on the first one's texts."""
    project = single_project(tmp_path)
    first, second = tmp_path / "batch1.csv", tmp_path / "batch2.csv"
    pd.DataFrame([{k: v for k, v in r.items() if k != "id"} for r in topic_rows(6)]).to_csv(first, index=False)
    pd.DataFrame([{k: v for k, v in r.items() if k != "id"} for r in topic_rows(6, start=1)]).to_csv(second,
                                                                                                 index=False)
    assert project.import_file(first)["documents"] == 6
    before = project.store.final_labels()
    with pytest.raises(DataError) as err:
        project.import_file(second)
    message = err.value.format()
    assert "batch2.csv" in message and "field 'id'" in message and "'1'" in message and "batch1.csv" in message
    assert project.store.final_labels() == before and len(project.store.document_ids()) == 6
    assert project.import_file(first)["documents"] == 0  # the same file again is still no change


def test_import_reviews_long_table(tmp_path):
    project = single_project(tmp_path)
    project.import_file(write_jsonl(tmp_path / "d.jsonl", topic_rows(3, labelled=False)))
    table = tmp_path / "reviews.csv"
    table.write_text("id,system,label,reviewer,decision\nd0,gpt,sport,ann,Y\nd0,llama,business,ann,N\n"
                     "d1,gpt,tech,bob,\nd2,gpt,sport,ann,yes\nd2,llama,tech,bob,accepted\n", encoding="utf-8")
    out = project.import_file(table, kind="reviews")
    assert out["proposals"] == 5 and out["reviews"] == 4
    finals = project.store.final_labels()
    assert json.loads(finals["d0"]["label"]) == "sport" and finals["d0"]["provenance"] == "human-verified"
    assert finals["d2"]["provenance"] == "conflict" and finals["d2"]["label"] is None  # two different accepts
    assert "d1" not in finals and [(q["doc_id"], q["reason"]) for q in project.store.queued()] == [
        ("d2", "reviewers disagree"), ("d1", "imported proposal, not reviewed")]
    bad = tmp_path / "bad.csv"
    bad.write_text("id,system,label,decision\nd0,gpt,sport,maybe\n", encoding="utf-8")
    with pytest.raises(DataError, match="neither accept"):
        project.import_file(bad, kind="reviews")
    unknown = tmp_path / "unknown.csv"
    unknown.write_text("id,system,label\nzz,gpt,sport\n", encoding="utf-8")
    with pytest.raises(DataError, match="not in the project") as err:
        project.import_file(unknown, kind="reviews")
    assert "row 1" in err.value.format()


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_an_edited_review_table_replaces_what_it_changes(tmp_path, backend):
    """Re-importing a table adds nothing; an edited version (same path) adds only its changed rows, which replace
    the earlier decisions (Y turned N takes the acceptance back; back to the first version restores it); a new
    batch written to the same path leaves the earlier batch's reviews alone. Item reviews as well."""
    project = single_project(tmp_path, store=store_for(backend))
    store = project.store
    project.import_file(write_jsonl(tmp_path / "d.jsonl", topic_rows(3, labelled=False)))
    table = tmp_path / "reviews.csv"
    first = "id,system,label,reviewer,decision\nd0,gpt,sport,ann,Y\nd1,gpt,tech,ann,Y\n"
    edited = "id,system,label,reviewer,decision\nd0,gpt,sport,ann,N\nd1,gpt,tech,ann,Y\n"

    def finals():
        return {d: (r["label"] and json.loads(r["label"]), r["provenance"]) for d, r in store.final_labels().items()}

    table.write_text(first, encoding="utf-8")
    assert project.import_file(table, kind="reviews")["reviews"] == 2
    assert finals() == {"d0": ("sport", "human-verified"), "d1": ("tech", "human-verified")}
    assert project.import_file(table, kind="reviews")["reviews"] == 0  # the same file again: nothing new
    table.write_text(edited, encoding="utf-8")
    out = project.import_file(table, kind="reviews")
    assert (out["reviews"], out["skipped"]) == (1, 1)
    assert finals() == {"d0": (None, "human-rejected"), "d1": ("tech", "human-verified")}
    table.write_text(first, encoding="utf-8")  # back to the first version
    assert project.import_file(table, kind="reviews")["reviews"] == 1
    assert finals()["d0"] == ("sport", "human-verified")
    assert project.import_file(table, kind="reviews")["reviews"] == 0
    table.write_text("id,system,label,reviewer,decision\nd2,gpt,business,ann,Y\n", encoding="utf-8")
    assert project.import_file(table, kind="reviews")["reviews"] == 1  # a new batch at the same path
    assert finals() == {"d0": ("sport", "human-verified"), "d1": ("tech", "human-verified"),
                        "d2": ("business", "human-verified")}
    keys = [r["external_key"] for r in store.reviews(active=False)]
    assert len(keys) == len(set(keys)) == 5 and sum("~" in k for k in keys) == 1  # d0's Y restated
    table.write_text("id,system,label,reviewer,decision\nd1,gpt,sport,ann,N\n", encoding="utf-8")
    project.import_file(table, kind="reviews")  # the value edited too: gpt's proposal for d1 is now rejected
    assert finals()["d1"] == (None, "human-rejected")

    # two files that disagree, imported in turn: the later one stands and importing both again changes nothing
    first_file, second_file = tmp_path / "ann.csv", tmp_path / "ann-again.csv"
    first_file.write_text("id,system,label,reviewer,decision\nd2,gpt,business,ann,N\n", encoding="utf-8")
    second_file.write_text("id,system,label,reviewer,decision\nd2,gpt,business,ann,Y\n", encoding="utf-8")
    assert project.import_file(first_file, kind="reviews")["reviews"] == 1
    assert finals()["d2"] == (None, "human-rejected")
    assert project.import_file(second_file, kind="reviews")["reviews"] == 1
    count = len(store.reviews(active=False))
    for _ in range(2):
        project.import_file(first_file, kind="reviews")
        project.import_file(second_file, kind="reviews")
    assert len(store.reviews(active=False)) == count and finals()["d2"] == ("business", "human-verified")

    dims = Project.init(tmp_path / "dims", make_codebook("dimensions"))
    dims.import_file(write_jsonl(tmp_path / "t.jsonl", [{"id": "t0", "text": "thanks, so happy"}]), labels=False)
    rows = "id,llm,dimension,value,coder,accepted\nt0,gpt4,happiness,high,ann,{}\nt0,gpt4,expressing gratitude,low,ann,Y\n"
    items = tmp_path / "items.csv"
    for answer, expected in (("Y", {"happiness": "high", "expressing gratitude": "low"}),
                             ("N", {"expressing gratitude": "low"}),
                             ("Y", {"happiness": "high", "expressing gratitude": "low"})):
        items.write_text(rows.format(answer), encoding="utf-8")
        dims.import_file(items, kind="reviews")
        assert json.loads(dims.store.final_labels()["t0"]["label"]) == expected


@pytest.mark.parametrize("kind,proposal,reject_all", [
    ("single", "sport", (None, "human-rejected")),
    ("multi", ["sport", "tech"], ([], "human-verified")),
    ("dimensions", {"happiness": "high"}, ({}, "human-verified")),
])
def test_review_rules_accept_correct_reject_undo(tmp_path, kind, proposal, reject_all):
    project = Project.init(tmp_path / kind, make_codebook(kind))
    store = project.store
    store.add_documents([{"id": "a", "text": "t"}], source="test")
    run_id, _ = store.start_run("propose", system="s", fingerprint="f")
    store.add_proposals([{"doc_id": "a", "system": "s", "label": proposal, "probability": 0.8}], run_id=run_id)
    pid = store.proposal_index(run_id)[("a", "s")]

    def final():
        row = store.final_labels()["a"]
        return (None if row["label"] is None else json.loads(row["label"])), row["provenance"]

    store.add_reviews([{"doc_id": "a", "proposal_id": pid, "decision": "accept", "reviewer": "ann"}], source="web")
    assert final() == (proposal, "human-verified")
    correction = {"single": "tech", "multi": ["business"], "dimensions": {"happiness": "low"}}[kind]
    store.add_reviews([{"doc_id": "a", "decision": "correct", "label": correction, "reviewer": "ann"}], source="web")
    assert final() == (correction, "human-corrected")
    store.add_reviews([{"doc_id": "a", "decision": "reject", "reviewer": "ann"}], source="web")
    assert final() == reject_all
    assert store.undo_last("ann") == "a"
    assert final() == (correction, "human-corrected")
    assert store.undo_last("ann") == "a" and store.undo_last("ann") == "a"
    assert store.undo_last("ann") is None and "a" not in store.final_labels()
    assert [q["doc_id"] for q in store.queued()] == ["a"]  # back on the queue after undo
    assert len(store.reviews(active=False)) == 3  # undo keeps the history


def test_two_reviewers_get_different_documents(tmp_path):
    project = single_project(tmp_path)
    store = project.store
    store.add_documents(topic_rows(3, labelled=False), source="t")
    store.enqueue([("d0", "x", 0.0), ("d1", "x", 0.0), ("d2", "x", 0.0)])
    first, second = store.next_for("ann"), store.next_for("bob")
    assert first["doc_id"] != second["doc_id"]
    assert store.next_for("ann")["doc_id"] == first["doc_id"]  # the lease holds across page loads


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_conflicts_go_to_another_reviewer_who_settles_them(tmp_path, backend):
    """Two reviewers who disagree leave a conflict on the queue — whether it came from an imported table or
    from the review page — which neither of them is shown again; a third reviewer's decision settles it (more
    than half of the reviewers), and it leaves the queue."""
    project = single_project(tmp_path, store=store_for(backend))
    store = project.store
    project.import_file(write_jsonl(tmp_path / "d.jsonl", topic_rows(3, labelled=False)))
    table = tmp_path / "reviews.csv"
    table.write_text("id,system,label,reviewer,decision\nd2,gpt,sport,ann,Y\nd2,llama,tech,bob,Y\n"
                     "d1,gpt,tech,ann,\nd1,llama,sport,bob,\n", encoding="utf-8")
    project.import_file(table, kind="reviews")
    assert store.final_labels()["d2"]["provenance"] == "conflict"
    assert store.next_for("ann")["doc_id"] == "d1"
    assert store.next_for("bob") is None  # d1 is leased to ann, d2 is his own conflict
    proposals = {(p["doc_id"], p["system"]): p["id"] for d in ("d1", "d2") for p in store.proposals_of(d)}
    assert store.next_for("carol")["doc_id"] == "d2"
    store.add_reviews([{"doc_id": "d2", "proposal_id": proposals[("d2", "gpt")], "decision": "accept",
                        "reviewer": "carol"}], source="web")
    final = store.final_labels()["d2"]
    assert (json.loads(final["label"]), final["provenance"]) == ("sport", "human-verified")
    assert "d2" not in [q["doc_id"] for q in store.queued()]

    # on the page: ann accepts tech for d1, bob then corrects it to sport
    assert store.next_for("ann")["doc_id"] == "d1"
    store.add_reviews([{"doc_id": "d1", "proposal_id": proposals[("d1", "gpt")], "decision": "accept",
                        "reviewer": "ann"}], source="web")
    assert "d1" not in [q["doc_id"] for q in store.queued()]
    store.add_reviews([{"doc_id": "d1", "decision": "correct", "label": "sport", "reviewer": "bob"}], source="web")
    assert store.final_labels()["d1"]["provenance"] == "conflict"
    assert "d1" in [q["doc_id"] for q in store.queued()]
    assert store.next_for("ann") is None and store.next_for("bob") is None
    assert store.next_for("dan")["doc_id"] == "d1"
    store.add_reviews([{"doc_id": "d1", "decision": "correct", "label": "business", "reviewer": "dan"}],
                      source="web")
    assert store.final_labels()["d1"]["provenance"] == "conflict"  # three different labels: no majority
    assert store.next_for("erin")["doc_id"] == "d1"


# ---------------------------------------------------------------------- propose, label, route
def test_propose_label_route_resume_and_human_labels_win(tmp_path):
    project = single_project(tmp_path, systems=TFIDF)
    project.import_file(write_jsonl(tmp_path / "train.jsonl", topic_rows(100)))
    project.import_file(write_jsonl(tmp_path / "pool.jsonl", topic_rows(40, labelled=False, start=100)))
    with pytest.raises(ConfigError, match="no system named"):
        project.propose(["nope"])
    proposed = project.propose(["tfidf"], sample=10)
    assert proposed["tfidf"]["proposed"] == 10 and project.store.queue_size() == 10
    more = project.propose(["tfidf"], sample=35)  # a new sample, without the documents proposed for already
    assert more["tfidf"]["proposed"] == 30 and more["tfidf"]["run"] != proposed["tfidf"]["run"]
    assert project.store.queue_size() == 40
    run_id, _ = project.store.start_run("propose", system="tfidf", fingerprint="interrupted")
    project.store.set_run_settings(run_id, {"sample": ["d100", "d101"]})

    first = project.label(limit=15)
    assert first["labelled"] == 15
    rest = project.label()
    assert rest["resumed"] and rest["run"] == first["run"] and rest["labelled"] == 140 - 15
    proposals = project.store.run_proposals([first["run"]])
    assert len(proposals) == len({p["doc_id"] for p in proposals}) == 140
    finals = project.store.final_labels()
    assert sum(r["provenance"] == "human-labelled" for r in finals.values()) == 100
    assert sum(r["provenance"] == "model" for r in finals.values()) == 40
    model_doc = next(d for d, r in finals.items() if r["provenance"] == "model")
    project.store.add_reviews([{"doc_id": model_doc, "decision": "correct", "label": "business", "reviewer": "ann"}],
                              source="web")
    again = project.label()  # more human labels: a new model, a new run over every document
    assert not again["resumed"] and again["run"] != first["run"] and again["labelled"] == 140
    assert project.store.final_labels()[model_doc]["provenance"] == "human-corrected"
    assert project.label()["labelled"] == 0

    held = project.route(precision=0.5)
    assert held["precision_measured"] >= 0.5 and held["holdout_docs"] == round(101 * 0.2)
    with pytest.raises(ConfigError, match="not both"):
        project.route(threshold=0.5, precision=0.5)
    everything = project.route(threshold=1.0)
    assert everything["queue_size"] == 39  # every model label; the corrected document never returns


def test_train_fine_tunes_on_human_labels_and_label_reuses_the_run(tmp_path, tiny_model_dir):
    head = (f'\n[[systems]]\nname = "head"\ntype = "head"\nmodel = "{tiny_model_dir}"\nepochs = 1\nbatch_size = 4\n'
            'max_text_tokens = 32\ndtype = "fp32"\nr = 4\n\n[label]\nsystem = "head"\nholdout = 0.2\n')
    project = single_project(tmp_path, systems=head)
    project.import_file(write_jsonl(tmp_path / "train.jsonl", topic_rows(30)))
    project.import_file(write_jsonl(tmp_path / "pool.jsonl", topic_rows(6, labelled=False, start=30)))
    trained = project.train()
    assert trained["train_docs"] == 24 and trained["holdout_docs"] == 6
    run = tmp_path / "p" / "runs" / "head"
    assert trained["run"].startswith(str(run)) and (tmp_path / trained["run"]).exists()
    assert [r["kind"] for r in project.store.runs()][-1] == "train"
    before = sorted(p.name for p in run.iterdir())
    out = project.label()
    assert out["labelled"] == 36 and sorted(p.name for p in run.iterdir()) == before  # no second training
    probs = [p["probability"] for p in project.store.run_proposals([out["run"]])]
    assert all(0 < p <= 1 for p in probs)


def test_choose_threshold():
    pairs = [(0.9, True), (0.8, True), (0.7, False), (0.6, True), (0.5, False), (0.5, True)]
    assert choose_threshold(pairs, 1.0) == (0.8, 1.0, 2 / 6)
    assert choose_threshold(pairs, 0.75) == (0.6, 0.75, 4 / 6)
    assert choose_threshold(pairs, 0.6) == (0.5, 4 / 6, 1.0)
    assert choose_threshold([(0.9, False)], 0.5) is None


def test_trainable_system_needs_human_labels(tmp_path):
    project = single_project(tmp_path, systems=TFIDF)
    project.import_file(write_jsonl(tmp_path / "pool.jsonl", topic_rows(5, labelled=False)))
    with pytest.raises(ConfigError, match="no human-verified labels|none yet"):
        project.label()


# ---------------------------------------------------------------------- export, status, stores, CLI
def test_export_formats_and_status(tmp_path):
    project = single_project(tmp_path, systems=TFIDF)
    project.import_file(write_jsonl(tmp_path / "train.jsonl", topic_rows(12)))
    project.import_file(write_jsonl(tmp_path / "pool.jsonl", topic_rows(6, labelled=False, start=12)))
    project.label()
    for suffix in ("csv", "jsonl", "parquet"):
        out = project.export(tmp_path / f"labels.{suffix}")
        assert out["rows"] == 18 and out["provenance"] == {"human-labelled": 12, "model": 6}
    rows = [json.loads(line) for line in (tmp_path / "labels.jsonl").open()]
    assert set(rows[0]) == {"id", "text", "label", "provenance", "source", "probability", "run", "proposals"}
    assert pd.read_parquet(tmp_path / "labels.parquet").provenance.tolist() == [r["provenance"] for r in rows]
    with pytest.raises(ConfigError, match="export format"):
        project.export(tmp_path / "labels.txt")
    status = project.status()
    assert status["documents"] == 18 and status["states"]["model"] == 6 and status["queue"] == 0
    (pair,) = status["agreement"]  # the labeller against the humans: on its held-out documents only
    assert (pair["a"], pair["b"], pair["docs"]) == ("human labels", "tfidf", 2)


def test_undo_after_a_majority_gives_the_document_back_to_the_undoer(tmp_path):
    project = single_project(tmp_path)
    store = project.store
    project.import_file(write_jsonl(tmp_path / "d.jsonl", topic_rows(2, labelled=False)))
    store.enqueue([("d0", "x", 0.0), ("d1", "x", 0.0)])
    for reviewer, label in (("ann", "sport"), ("bob", "tech"), ("carol", "sport")):
        store.add_reviews([{"doc_id": "d0", "decision": "correct", "label": label, "reviewer": reviewer}],
                          source="web")
    assert store.final_labels()["d0"]["provenance"] == "human-corrected"
    assert store.undo_last("carol") == "d0"  # a conflict again, and carol's to decide first
    assert store.final_labels()["d0"]["provenance"] == "conflict"
    assert store.next_for("carol")["doc_id"] == "d0" and store.next_for("dan")["doc_id"] == "d1"


def store_for(backend: str) -> str | None:
    """The store URL of ``backend``: None (SQLite in the project) or the test PostgreSQL server, emptied."""
    if backend == "sqlite":
        return None
    if not PG_URL:
        if os.environ.get("CI"):
            pytest.fail("ANNOTUNE_TEST_POSTGRES is not set: .ci/run starts a PostgreSQL server")
        pytest.skip("needs a PostgreSQL server: ANNOTUNE_TEST_POSTGRES=$(.ci/postgres.sh start DIR)")
    import sqlalchemy as sa

    engine = sa.create_engine(PG_URL.replace("postgresql://", "postgresql+psycopg://"))
    with engine.begin() as conn:  # a clean schema for this test
        conn.execute(sa.text("DROP SCHEMA public CASCADE; CREATE SCHEMA public"))
    engine.dispose()
    return PG_URL


def test_propose_run_stopped_before_its_sample_was_saved_draws_one(tmp_path):
    project = single_project(tmp_path, systems=TFIDF)
    project.import_file(write_jsonl(tmp_path / "train.jsonl", topic_rows(30)))
    project.import_file(write_jsonl(tmp_path / "pool.jsonl", topic_rows(10, labelled=False, start=30)))
    assert project.propose(["tfidf"], sample=4)["tfidf"]["proposed"] == 4
    key = project.store.runs("propose")[-1]["fingerprint"]
    stopped, _ = project.store.start_run("propose", system="tfidf", fingerprint=key)  # killed right here
    out = project.propose(["tfidf"], sample=4)["tfidf"]
    assert out["run"] == stopped and out["resumed"] and out["proposed"] == 4


def test_status_agreement_counts_invalid_answers(tmp_path):
    """A proposer that answered INVALID on half the documents agrees with the humans on half of them — not on
    all of the valid half only."""
    project = single_project(tmp_path)
    rows = topic_rows(6)
    project.import_file(write_jsonl(tmp_path / "d.jsonl", rows))
    store = project.store
    run_id, _ = store.start_run("propose", system="flaky", fingerprint="f")
    store.add_proposals([{"doc_id": r["id"], "system": "flaky", "label": r["label"] if i % 2 else None,
                          "probability": None} for i, r in enumerate(rows)], run_id=run_id)
    pair = next(p for p in project.status()["agreement"] if "flaky" in (p["a"], p["b"]))
    assert pair["docs"] == 6 and pair["agreement"] == pytest.approx(0.5)


def test_labelling_again_with_an_earlier_system_makes_its_labels_final_again(tmp_path):
    two = TFIDF + '\n[[systems]]\nname = "tfidf b"\ntype = "tfidf"\n'
    project = single_project(tmp_path, systems=two)
    project.import_file(write_jsonl(tmp_path / "train.jsonl", topic_rows(30)))
    project.import_file(write_jsonl(tmp_path / "pool.jsonl", topic_rows(6, labelled=False, start=30)))

    def final_systems():
        return {r["system"] for r in project.store.final_labels().values() if r["provenance"] == "model"}

    assert project.label("tfidf")["labelled"] == 36 and final_systems() == {"tfidf"}
    assert project.label("tfidf b")["labelled"] == 36 and final_systems() == {"tfidf b"}
    again = project.label("tfidf")
    assert again["labelled"] == 36 and not again["resumed"] and final_systems() == {"tfidf"}
    last = project.label("tfidf")  # the newest run is this system's: nothing left to do
    assert last["labelled"] == 0 and last["resumed"] and last["run"] == again["run"]


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_store_backends_run_the_same_workflow(tmp_path, backend):
    store = store_for(backend)
    project = single_project(tmp_path, store=store, systems=TFIDF)
    assert project.store.display_url.startswith("postgresql" if store else "sqlite")
    project.import_file(write_jsonl(tmp_path / "train.jsonl", topic_rows(15)))
    project.import_file(write_jsonl(tmp_path / "pool.jsonl", topic_rows(5, labelled=False, start=15)))
    assert project.label()["labelled"] == 20
    second = Project.open(tmp_path / "p", store=store)  # a second process on the same store
    assert second.label()["labelled"] == 0
    second.store.add_reviews([{"doc_id": "d15", "decision": "correct", "label": "tech", "reviewer": "bob"}],
                             source="web")
    assert project.store.final_labels()["d15"]["provenance"] == "human-corrected"
    assert project.status()["states"]["model"] == 4
    # two reviewers writing about the same documents at the same moment: nothing lost, no error
    from concurrent.futures import ThreadPoolExecutor

    def review(args):
        store, reviewer = args
        for doc in ("d16", "d17", "d18"):
            store.add_reviews([{"doc_id": doc, "decision": "correct", "label": "sport", "reviewer": reviewer}],
                              source="web")

    with ThreadPoolExecutor(2) as pool:
        list(pool.map(review, [(project.store, "ann"), (second.store, "bob")]))
    finals = project.store.final_labels()
    assert all(finals[d]["provenance"] == "human-corrected" for d in ("d16", "d17", "d18"))
    assert sum(r["doc_id"] in ("d16", "d17", "d18") for r in project.store.reviews()) == 6
    second.close()
    project.close()


def test_store_refuses_a_newer_schema(tmp_path):
    import sqlalchemy as sa

    project = single_project(tmp_path)
    with project.store.engine.begin() as conn:
        conn.execute(sa.text("UPDATE meta SET value = '99' WHERE key = 'schema_version'"))
    project.close()
    with pytest.raises(ConfigError, match="newer"):
        Project.open(tmp_path / "p")


def test_cli_workflow(tmp_path):
    runner = CliRunner()
    folder = tmp_path / "proj"
    codebook = tmp_path / "codebook.toml"
    codebook.write_text(TOPICS_CODEBOOK, encoding="utf-8")
    assert runner.invoke(app, ["init", str(folder), "--codebook", str(codebook)]).exit_code == 0
    again = runner.invoke(app, ["init", str(folder), "--codebook", str(codebook)])
    assert again.exit_code == 2 and "already holds" in again.output
    with_password = runner.invoke(app, ["init", str(tmp_path / "pg"), "--codebook", str(codebook), "--store",
                                        "postgresql://ann:s3cr3t-pw@127.0.0.1:1/labels"])
    assert with_password.exit_code == 2 and "PGPASSWORD" in with_password.output
    assert "s3cr3t" not in with_password.output and not (tmp_path / "pg" / "annotune-project.toml").exists()
    in_query = runner.invoke(app, ["init", str(tmp_path / "pg"), "--codebook", str(codebook), "--store",
                                   "postgresql://ann@127.0.0.1:1/labels?password=s3cr3t-pw"])
    assert in_query.exit_code == 2 and "PGPASSWORD" in in_query.output and "s3cr3t" not in in_query.output
    cfg = folder / "annotune-project.toml"
    cfg.write_text(cfg.read_text().split("[[systems]]")[0] + TFIDF, encoding="utf-8")
    docs = write_jsonl(tmp_path / "d.jsonl", topic_rows(12))
    pool = write_jsonl(tmp_path / "pool.jsonl", topic_rows(6, labelled=False, start=12))
    for path in (docs, pool):
        result = runner.invoke(app, ["import", str(folder), path])
        assert result.exit_code == 0, result.output
    result = runner.invoke(app, ["label", str(folder), "-q"])
    assert result.exit_code == 0 and "labelled 18 documents" in result.output, result.output
    result = runner.invoke(app, ["route", str(folder), "--threshold", "0.99"])
    assert result.exit_code == 0 and "in the review queue" in result.output
    result = runner.invoke(app, ["export", str(folder), str(tmp_path / "out.csv")])
    assert result.exit_code == 0 and "18 documents" in result.output
    result = runner.invoke(app, ["status", str(folder), "--json"])
    assert result.exit_code == 0 and json.loads(result.output)["documents"] == 18
    missing = runner.invoke(app, ["status", str(tmp_path / "nowhere")])
    assert missing.exit_code == 2 and "not an annotune project" in missing.output
    bad = runner.invoke(app, ["import", str(folder), path, "--kind", "reviews", "--field", "id"])
    assert bad.exit_code == 2 and "FIELD=COLUMN" in bad.output

