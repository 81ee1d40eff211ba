"""Label Studio tasks and Argilla v2 records: export, import, round trips for every task kind, re-import adds
nothing, hand-written files in the tools' documented shapes, bad labels, the CLI."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET

import pytest
from typer.testing import CliRunner

from annotune.cli import app
from annotune.errors import DataError
from annotune.labelling import Project
from conftest import make_codebook

LABELS = {  # four labels per kind: the last is the empty label where the kind has one
    "single": ["sport", "tech", "business", "politics"],
    "multi": [["sport", "tech"], ["business"], ["politics", "tech"], []],
    "dimensions": [{"happiness": "high"}, {"happiness": "medium", "expressing gratitude": "low"},
                   {"perceiving discrimination": "medium"}, {}],
}


def build(tmp_path, kind: str) -> Project:
    """Documents with every provenance: verified, corrected, labelled, rejected, model labels, unlabelled."""
    labels = LABELS[kind]
    project = Project.init(tmp_path / "src", make_codebook(kind))
    store = project.store
    store.add_documents([{"id": f"d{i}", "text": f"text number {i}"} for i in range(8)], source="test")
    crowd, _ = store.start_run("propose", system="llm-a", fingerprint="a")
    store.add_proposals([{"doc_id": f"d{i}", "system": "llm-a", "label": labels[i % 4], "probability": 0.5 + i / 20}
                         for i in range(5)], run_id=crowd)
    other, _ = store.start_run("propose", system="llm-b", fingerprint="b")
    store.add_proposals([{"doc_id": "d0", "system": "llm-b", "label": labels[2], "probability": None}], run_id=other)
    model, _ = store.start_run("label", system="tfidf", fingerprint="t")
    store.add_proposals([{"doc_id": f"d{i}", "system": "tfidf", "label": labels[(i + 1) % 4], "probability": 0.9}
                         for i in range(7)], run_id=model, final=True)
    pid = store.proposal_index(crowd)[("d0", "llm-a")]
    store.add_reviews([{"doc_id": "d0", "proposal_id": pid, "decision": "accept", "reviewer": "ann"}], source="web")
    store.add_reviews([{"doc_id": "d1", "decision": "correct", "label": labels[2], "reviewer": "bob"}], source="web")
    store.add_reviews([{"doc_id": "d2", "decision": "correct", "label": labels[3], "reviewer": "cy"}],
                      source="labels:gold.csv")
    store.add_reviews([{"doc_id": "d3", "decision": "reject", "reviewer": "ann"}], source="web")
    return project


def finals(project: Project) -> dict:
    return {d: (json.loads(r["label"]) if r["label"] is not None else None, r["provenance"], r["system"],
                r["probability"]) for d, r in project.store.final_labels().items()}


def proposals(project: Project) -> set:
    return {(p["doc_id"], p["system"], p["label"], p["probability"])
            for d in project.store.document_ids() for p in project.store.proposals_of(d)}


@pytest.mark.parametrize("fmt", ["label-studio", "argilla"])
@pytest.mark.parametrize("kind", ["single", "multi", "dimensions"])
def test_round_trip_keeps_final_labels_and_provenance(tmp_path, kind, fmt):
    source = build(tmp_path, kind)
    out = source.export(tmp_path / "out.json", fmt=fmt)
    assert out["rows"] == 8 and out["format"] == fmt
    expected = finals(source)
    assert {p for _, p, _, _ in expected.values()} >= {"human-verified", "human-corrected", "human-labelled", "model"}
    assert expected["d3"][1] == ("human-rejected" if kind == "single" else "human-verified")

    target = Project.init(tmp_path / "dst", make_codebook(kind))
    first = target.import_file(tmp_path / "out.json", kind=fmt)
    assert first["documents"] == 8 and first["reviews"] == 4, first
    assert finals(target) == expected
    assert {d["id"]: d["text"] for d in target.store.documents()} == {f"d{i}": f"text number {i}" for i in range(8)}
    if fmt == "label-studio":  # every system's newest proposal travels (Argilla: one suggestion per question)
        assert proposals(target) == proposals(source)
    again = target.import_file(tmp_path / "out.json", kind=fmt)
    assert (again["documents"], again["proposals"], again["reviews"], again["skipped"]) == (0, 0, 0, 4)
    assert finals(target) == expected and len(target.store.runs("import")) == 1
    assert {q["doc_id"] for q in target.store.queued()} <= {"d4"}  # only proposals no human or model decided


def test_label_studio_export_shape_and_config(tmp_path):
    project = build(tmp_path, "dimensions")
    project.export(tmp_path / "ls.json", fmt="label-studio")
    tasks = json.loads((tmp_path / "ls.json").read_text())
    d1 = next(t for t in tasks if t["data"]["annotune_id"] == "d1")
    assert d1["data"]["text"] == "text number 1"
    assert d1["meta"] == {"annotune_provenance": "human-corrected", "annotune_reviewer": "bob"}
    (annotation,) = d1["annotations"]
    assert "completed_by" not in annotation  # Label Studio accepts only a member's id or email there
    assert sorted((r["from_name"], r["value"]["choices"]) for r in annotation["result"]) == [
        ("perceiving_discrimination", ["medium"])]
    assert {r["type"] for r in annotation["result"]} == {"choices"} and annotation["result"][0]["to_name"] == "text"
    assert {p["model_version"] for p in d1["predictions"]} == {"llm-a", "tfidf"}
    tfidf = next(p for p in d1["predictions"] if p["model_version"] == "tfidf")
    assert tfidf["score"] == 0.9 and {r["from_name"] for r in tfidf["result"]} == {"perceiving_discrimination"}
    view = ET.fromstring((tmp_path / "ls.label_config.xml").read_text())
    assert view.find("Text").attrib == {"name": "text", "value": "$text"}
    choices = {c.get("name"): c for c in view.iter("Choices")}
    assert set(choices) == {"happiness", "expressing_gratitude", "perceiving_discrimination"}
    assert [c.get("value") for c in choices["happiness"]] == ["low", "medium", "high"]
    assert all(c.get("toName") == "text" and c.get("choice") == "single-radio" for c in choices.values())
    multi = build(tmp_path / "m", "multi")
    multi.export(tmp_path / "m.json", fmt="label-studio")
    (labels,) = ET.fromstring((tmp_path / "m.label_config.xml").read_text()).iter("Choices")
    assert labels.get("name") == "label" and labels.get("choice") == "multiple"
    assert [c.get("value") for c in labels] == ["business", "politics", "sport", "tech"]


def test_argilla_export_shape_and_settings(tmp_path):
    project = build(tmp_path, "dimensions")
    project.export(tmp_path / "ar.json", fmt="argilla")
    records = {r["id"]: r for r in json.loads((tmp_path / "ar.json").read_text())}
    d0 = records["d0"]
    assert d0["fields"] == {"text": "text number 0"}
    assert d0["suggestions"] == {"happiness": {"value": "high", "score": 0.5, "agent": "llm-a"}}
    # Argilla keeps responses of its own users (UUIDs) only: "ann"'s label travels in the metadata
    assert d0["responses"] == {}
    assert d0["metadata"] == {"annotune_provenance": "human-verified", "annotune_reviewer": "ann",
                              "annotune_label": json.dumps({"happiness": "high"})}
    user = "1b4e28ba-2fa1-11d2-883f-0016d3cca427"
    project.store.add_reviews([{"doc_id": "d7", "decision": "correct", "label": {"happiness": "low"},
                                "reviewer": user}], source="web")
    project.export(tmp_path / "ar2.json", fmt="argilla")
    d7 = {r["id"]: r for r in json.loads((tmp_path / "ar2.json").read_text())}["d7"]
    assert d7["responses"] == {"happiness": [{"value": "low", "user_id": user, "status": "submitted"}]}
    assert records["d5"]["metadata"] == {"annotune_provenance": "model", "annotune_model": "tfidf",
                                         "annotune_probability": 0.9}
    assert records["d7"]["metadata"] == {} and records["d7"]["suggestions"] == {}
    settings = json.loads((tmp_path / "ar.settings.json").read_text())
    assert [q["name"] for q in settings["questions"]] == ["happiness", "expressing_gratitude",
                                                           "perceiving_discrimination"]
    assert settings["questions"][1]["settings"] == {"type": "label_selection", "options": [
        {"value": v, "text": v} for v in ("low", "medium", "high")]}
    assert settings["annotune"]["dimensions"]["expressing_gratitude"] == "expressing gratitude"
    assert settings["fields"][0]["name"] == "text" and settings["allow_extra_metadata"] is True
    single = build(tmp_path / "s", "single")
    single.export(tmp_path / "s.json", fmt="argilla")
    (question,) = json.loads((tmp_path / "s.settings.json").read_text())["questions"]
    assert question["name"] == "label" and question["settings"]["type"] == "label_selection"
    multi = build(tmp_path / "m", "multi")
    multi.export(tmp_path / "m.json", fmt="argilla")
    (question,) = json.loads((tmp_path / "m.settings.json").read_text())["questions"]
    assert question["settings"]["type"] == "multi_label_selection"
    m0 = next(r for r in json.loads((tmp_path / "m.json").read_text()) if r["id"] == "d0")
    assert json.loads(m0["metadata"]["annotune_label"]) == ["sport", "tech"]


def choice(name: str, *values: str) -> dict:
    return {"id": "r", "from_name": name, "to_name": "text", "type": "choices", "value": {"choices": list(values)}}


def test_hand_written_label_studio_tasks(tmp_path):
    tasks = [  # the shapes of https://labelstud.io/guide/task_format and /guide/predictions
        {"id": 1, "data": {"text": "Shares rose"}, "project": 83,
         "annotations": [{"id": 1001, "result": [choice("label", "business")], "was_cancelled": False,
                          "ground_truth": False, "lead_time": 4.2, "completed_by": 10}],
         "predictions": [{"model_version": "model 1", "score": 0.7, "result": [choice("label", "Technology")]}]},
        {"id": 2, "data": {"text": "A late goal"}, "predictions": [{"result": [choice("label", "sport")]}]},
        {"id": 3, "data": {"text": "Votes counted"},
         "annotations": [{"result": [choice("label", "politics"), {"type": "textarea", "from_name": "note",
                                                                     "value": {"text": ["close race"]}}],
                          "completed_by": {"id": 3, "email": "ann@example.org"}},
                         {"result": [], "was_cancelled": True}]},
    ]
    path = tmp_path / "ls.json"
    path.write_text(json.dumps(tasks), encoding="utf-8")
    project = Project.init(tmp_path / "p", make_codebook("single"))
    out = project.import_file(path, kind="label-studio")
    assert (out["documents"], out["proposals"], out["reviews"]) == (3, 2, 2)
    assert finals(project) == {"1": ("business", "human-labelled", "label-studio-user-10", None),
                               "3": ("politics", "human-labelled", "ann@example.org", None)}
    assert proposals(project) == {("1", "model 1", '"tech"', 0.7), ("2", "label-studio", '"sport"', None)}
    assert [q["doc_id"] for q in project.store.queued()] == ["2"]


def test_hand_written_argilla_records(tmp_path):
    records = [  # rg.Record.to_dict() (records.to_json) and the rg.Suggestion / rg.Response list form
        {"id": "r1", "fields": {"text": "Shares and chips"}, "metadata": {"source": "news"},
         "suggestions": {"label": {"value": ["business", "tech"], "score": 0.8, "agent": "gpt-4o"}},
         "responses": {"label": [{"value": ["business"], "user_id": "0b7e8f9a-1c2d-4e5f-8a9b-0c1d2e3f4a5b"}]},
         "vectors": {}, "_server_id": None},
        {"id": "r2", "fields": {"text": "Election night"},
         "suggestions": [{"question_name": "label", "value": ["politics"], "score": 0.6, "agent": "gpt-4o"}],
         "responses": [{"question_name": "label", "value": ["politics", "sport"], "user_id": "u2",
                        "status": "submitted"},
                       {"question_name": "label", "value": ["tech"], "user_id": "u3", "status": "draft"}]},
    ]
    path = tmp_path / "ar.json"
    path.write_text(json.dumps(records), encoding="utf-8")
    project = Project.init(tmp_path / "p", make_codebook("multi"))
    project.store.add_documents([{"id": "r1", "text": "the text we had"}], source="test")
    out = project.import_file(path, kind="argilla", reviewer="team")
    assert (out["documents"], out["proposals"], out["reviews"]) == (1, 2, 2)
    assert finals(project) == {
        "r1": (["business"], "human-labelled", "0b7e8f9a-1c2d-4e5f-8a9b-0c1d2e3f4a5b", None),
        "r2": (["politics", "sport"], "human-labelled", "u2", None)}  # the draft does not count
    assert {d["id"]: d["text"] for d in project.store.documents()}["r1"] == "the text we had"
    assert ("r1", "gpt-4o", '["business", "tech"]', 0.8) in proposals(project)


def test_argilla_dimensions_by_question_name(tmp_path):
    records = [{"id": "t1", "fields": {"text": "so grateful"},
                "responses": {"expressing_gratitude": [{"value": "High", "user_id": "u"}],
                              "happiness": [{"value": "low", "user_id": "u"}]}}]
    path = tmp_path / "ar.json"
    path.write_text(json.dumps(records), encoding="utf-8")
    project = Project.init(tmp_path / "p", make_codebook("dimensions"))
    project.import_file(path, kind="argilla")
    assert finals(project)["t1"][0] == {"happiness": "low", "expressing gratitude": "high"}


def test_bad_label_names_file_row_and_field(tmp_path):
    tasks = [{"data": {"text": "a", "annotune_id": "a"}, "annotations": [{"result": [choice("label", "sport")]}]},
             {"data": {"text": "b", "annotune_id": "b"}, "annotations": [{"result": [choice("label", "weather")]}]}]
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(tasks), encoding="utf-8")
    project = Project.init(tmp_path / "p", make_codebook("single"))
    with pytest.raises(DataError, match="weather") as err:
        project.import_file(path, kind="label-studio")
    assert (err.value.file, err.value.row, err.value.field) == (str(path), 2, "annotations[0].result[0].value.choices")
    assert project.store.document_ids() == set()  # nothing written
    records = [{"id": "x", "fields": {"text": "x"}, "suggestions": {"happiness": {"value": "extreme", "agent": "m"}}}]
    path = tmp_path / "bad_ar.json"
    path.write_text(json.dumps(records), encoding="utf-8")
    dims = Project.init(tmp_path / "d", make_codebook("dimensions"))
    with pytest.raises(DataError, match="not on the scale") as err:
        dims.import_file(path, kind="argilla")
    assert (err.value.row, err.value.field) == (1, "suggestions.happiness.value")
    records[0]["suggestions"] = {"joy": {"value": "high"}}
    path.write_text(json.dumps(records), encoding="utf-8")
    with pytest.raises(DataError, match="not a codebook dimension"):
        dims.import_file(path, kind="argilla")


def test_cli_export_label_studio(tmp_path):
    project = build(tmp_path, "single")
    project.close()
    out = tmp_path / "out.json"
    result = CliRunner().invoke(app, ["export", str(tmp_path / "src"), str(out), "--format", "label-studio"])
    assert result.exit_code == 0, result.output
    assert "8 documents" in result.output
    assert len(json.loads(out.read_text())) == 8 and (tmp_path / "out.label_config.xml").exists()
    back = CliRunner().invoke(app, ["import", str(tmp_path / "src"), str(out), "--kind", "label-studio"])
    assert back.exit_code == 0, back.output
