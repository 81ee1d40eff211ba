"""The `qa` task kind: free-text answers, ROUGE-L, fine-tuning on question–answer pairs, and a comparison whose
``[judge]`` table grades every system's answers (real tiny model runs end to end)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from annotune.cli import app
from annotune.codebook import Codebook
from annotune.errors import CodebookError
from annotune.evaluation.metrics import evaluate
from annotune.tasks.qa import rouge_l

MEDQUAD = Path(__file__).resolve().parents[2] / "shared" / "data" / "medquad" / "qa.jsonl"
QA_CODEBOOK = """\
[task]
name = "medical-qa"
kind = "qa"
instructions = "You answer questions about health."
"""


def qa_codebook() -> Codebook:
    return Codebook.from_dict({"task": {"name": "qa", "kind": "qa", "instructions": "Answer."}})


def test_codebook_defaults_and_refuses_labels():
    cb = qa_codebook()
    assert (cb.text_field, cb.label_field, cb.labels) == ("question", "answer", [])
    with pytest.raises(CodebookError, match="no \\[\\[labels\\]\\]"):
        Codebook.from_dict({"task": {"kind": "qa"}, "labels": [{"name": "a", "definition": "b"}]})
    prompt = cb.task.codebook and __import__("annotune.tasks.prompts", fromlist=["PromptBuilder"]).PromptBuilder(cb)
    msgs = prompt.messages("What causes anaemia?")
    assert msgs[-1]["content"].startswith("Question:\nWhat causes anaemia?")
    assert "Categories" not in msgs[0]["content"] and "Reference answers" not in msgs[0]["content"]


def test_rouge_l_by_hand_and_invalid_answers():
    # LCS("the cat sat", "the cat sat on the mat") = 3 tokens: P = 1, R = 1/2, F = 2/3
    assert rouge_l("the cat sat", "the cat sat on the mat") == pytest.approx(2 / 3)
    assert rouge_l("Cats sitting", "the cat sits") == pytest.approx(2 * 2 / (2 + 3))  # stemmed: cat, sit
    cb = qa_codebook()
    gold = ["the cat sat on the mat", "iron deficiency causes anaemia"]
    m = evaluate(cb, gold, ["the cat sat", None], n_boot=50)
    assert m["rouge_l"] == pytest.approx((2 / 3 + 0) / 2)  # INVALID scores 0 …
    assert m["rouge_l_valid"] == pytest.approx(2 / 3)  # … and is left out here
    assert m["valid_rate"] == 0.5 and m["n_invalid"] == 1 and m["accuracy"] == 0.0
    assert m["rouge_l_ci"][0] <= m["rouge_l"] <= m["rouge_l_ci"][1]
    assert m["mean_words"] == 3 and m["mean_reference_words"] == 5.0


@pytest.mark.parametrize("raw, label", [
    ("  Iron helps. ", "Iron helps."),
    ('{"answer": "Iron helps."}', "Iron helps."),
    ("", None), ("   \n", None), ('{"answer": ""}', None), ('{"verdict": 3}', None),
    ("{not json}", "{not json}"),  # free text that happens to have braces
])
def test_parse(raw, label):
    parsed = qa_codebook().task.parse(raw)
    assert parsed.label == label and (parsed.error is None) == (label is not None)


def test_classifier_systems_and_curves_refuse_a_qa_task(tmp_path, tiny_model_dir):
    from annotune.errors import ConfigError
    from annotune.experiments.compare import check
    from annotune.experiments.config import load_config
    from annotune.experiments.curve import Curve

    write_qa(tmp_path)
    for systems, field in (('[[systems]]\nname = "t"\ntype = "tfidf"\n', "systems[1].type"),
                           ('[[systems]]\nname = "c"\ntype = "prompt"\nanswer = "constrained"\n', "systems[1].answer")):
        (tmp_path / "config.toml").write_text(qa_config(tiny_model_dir, systems), encoding="utf-8")
        with pytest.raises(ConfigError) as err:
            check(load_config(tmp_path / "config.toml"))
        assert err.value.field == field
    (tmp_path / "config.toml").write_text(qa_config(tiny_model_dir, '[[systems]]\nname = "f"\ntype = "finetuned"\n'
                                                      '[curve]\nsizes = [4, 8]\nseeds = [0]\n'), encoding="utf-8")
    with pytest.raises(ConfigError, match="learning curves") as err:
        Curve(load_config(tmp_path / "config.toml"))
    assert err.value.field == "curve"


def write_qa(root: Path, n: int = 14) -> Path:
    rows = [{"id": f"q{i}", "question": f"What is condition number {i}?",
             "answer": f"Condition {i} is a disorder of the {['blood', 'heart', 'skin'][i % 3]}.",
             "split": "test" if i < 4 else "train"} for i in range(n)]
    path = root / "qa.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def qa_config(model_dir: Path, systems: str) -> str:
    return (f'name = "qa-demo"\nseed = 3\nbootstrap = 50\n\n[codebook.task]\nname = "qa"\nkind = "qa"\n'
            f'instructions = "Answer the medical question."\n\n[data]\npath = "qa.jsonl"\n\n[split]\nfield = "split"\n\n'
            f'[model]\nname = "{model_dir}"\ndtype = "fp32"\nbatch_size = 4\nmax_new_tokens = 8\n\n{systems}')


QA_SYSTEMS = """\
[finetune]
epochs = 1
batch_size = 4
max_length = 96
dev_size = 2
save_steps = 100

[[systems]]
name = "base"
type = "prompt"

[[systems]]
name = "fine-tuned"
type = "finetuned"

[[systems]]
name = "reference answers"
type = "reference"

[[systems]]
name = "closed model (file)"
type = "predictions"
path = "closed.jsonl"

[judge]
repeats = 2
max_tokens = 12
top_logprobs = 5
"""


def test_qa_compare_fine_tunes_generates_and_judges(tmp_path, tiny_model_dir):
    write_qa(tmp_path)
    # a closed model's answers from a file: one empty (INVALID, not judged), one missing (INVALID)
    answers = {"q0": "It is a blood disorder.", "q1": "", "q2": "A disorder of the skin, I think."}
    (tmp_path / "closed.jsonl").write_text("".join(json.dumps({"id": k, "answer": v}) + "\n"
                                                   for k, v in answers.items()), encoding="utf-8")
    cfg_text = qa_config(tiny_model_dir, QA_SYSTEMS).replace("[judge]\n", f'[judge]\nmodel = "{tiny_model_dir}"\n'
                                                                         'dtype = "fp32"\n')
    (tmp_path / "config.toml").write_text(cfg_text, encoding="utf-8")
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["compare", str(tmp_path / "config.toml"), "--output", str(out), "--quiet"])
    assert result.exit_code == 0, (result.stdout, result.stderr, result.exception)
    assert "ROUGE-L" in result.stdout and "Judge" in result.stdout
    results = json.loads((out / "results.json").read_text())
    by_name = {s["name"]: s for s in results["systems"]}
    ref = by_name["reference answers"]["metrics"]
    assert ref["rouge_l"] == pytest.approx(1.0) and ref["accuracy"] == 1.0
    assert ref["judge_show_reference"] is False  # the reference is not shown as its own reference
    closed = by_name["closed model (file)"]["metrics"]
    assert closed["n_valid"] == 2 and closed["judge_judged"] == 2
    assert closed["rouge_l"] == pytest.approx((rouge_l(answers["q0"], "Condition 0 is a disorder of the blood.")
                                               + rouge_l(answers["q2"], "Condition 2 is a disorder of the skin."))
                                              / 4)  # 4 test questions, 2 INVALID scored 0
    for name in ("base", "fine-tuned", "closed model (file)"):
        m = by_name[name]["metrics"]
        assert m["kind"] == "qa" and 0 <= m["rouge_l"] <= 1 and m["judge_show_reference"] is True
        assert m["judge_judged"] == m["n_valid"]  # every valid answer judged …
        assert m["judge_calls"] == 2 * m["n_valid"]  # … twice (identical greedy calls are reused, still counted)
        # a random tiny judge writes no verdict: every call counted unparsed, nothing scored
        assert m["judge_unparsed"] == m["judge_calls"] and m["judge_score"] is None
    manifest = json.loads(next((out / "finetuned").glob("*/manifest.json")).read_text())
    assert manifest["task_kind"] == "qa" and manifest["training"]["dev_loss"] is not None
    assert manifest["training"]["dev"] is None  # no constrained dev metric for free text
    saved = json.loads((out / "systems" / "fine-tuned.judge.json").read_text())
    assert len(saved["items"]) == by_name["fine-tuned"]["metrics"]["judge_judged"]
    assert all(len(it["raw"]) == 2 for it in saved["items"])
    # a rerun reuses the systems and the judge's verdicts
    again = CliRunner().invoke(app, ["compare", str(tmp_path / "config.toml"), "--output", str(out)])
    assert again.exit_code == 0 and "reusing the judge's verdicts" in again.stdout + again.stderr
    print(again.stdout)
    # the report renders for a qa comparison
    html = (out / "report.html").read_text()
    assert "ROUGE-L" in html and "reference answers" in html
    assert 'id="fig-answer-scores"' in html and "Judge score (chosen)" not in html  # drawn, not text
    assert "Per-question F1" not in html and "Score distributions" in html


def test_judge_table_refused_for_a_labelled_task(tmp_path):
    from annotune.errors import ConfigError
    from annotune.experiments.compare import check
    from annotune.experiments.config import load_config

    (tmp_path / "data.csv").write_text("id,text,label\n" + "".join(f"{i},text {i},{'ab'[i % 2]}\n"
                                                                  for i in range(20)), encoding="utf-8")
    (tmp_path / "config.toml").write_text(
        'name = "x"\n[codebook.task]\nkind = "single"\n[[codebook.labels]]\nname = "a"\ndefinition = "A"\n'
        '[[codebook.labels]]\nname = "b"\ndefinition = "B"\n[data]\npath = "data.csv"\n'
        '[[systems]]\nname = "t"\ntype = "tfidf"\n[judge]\nrepeats = 1\n', encoding="utf-8")
    with pytest.raises(ConfigError, match="grades free-text answers") as err:
        check(load_config(tmp_path / "config.toml"))
    assert err.value.field == "judge"


@pytest.mark.skipif(not MEDQUAD.exists(), reason="needs ../shared/data/medquad")
def test_medquad_loads_with_the_qa_defaults():
    from annotune.data.dataset import Dataset

    from annotune.errors import DataError

    with pytest.raises(DataError, match=r"row \d+, field 'id': duplicate id"):  # MedQuAD ids name source documents
        Dataset.load(MEDQUAD, Codebook.from_dict({"task": {"name": "medquad", "kind": "qa"}}), split_field="split")
    cb = Codebook.from_dict({"task": {"name": "medquad", "kind": "qa", "id_field": ""}})
    ds = Dataset.load(MEDQUAD, cb, split_field="split")
    assert len(ds) > 16000 and all(isinstance(d.label, str) and d.label for d in ds.docs[:50])
    assert {d.split for d in ds.docs} == {"train", "test"}
