"""The task-kind contract: every registered kind passes the same checks (like scikit-learn's
``check_estimator``), and a new kind plugs in as one class plus a registration."""

from __future__ import annotations

import json
import random
from typing import Any

import numpy as np
import pytest

from annotune.codebook import Codebook
from annotune.data.dataset import Doc
from annotune.errors import CodebookError
from annotune.evaluation.metrics import evaluate
from annotune.experiments.results import markdown_table, table_rows
from annotune.tasks import get_task, register_task, task_names, unregister_task
from annotune.tasks.base import ParsedAnswer, Question, TaskKind
from annotune.tasks.labels import label_from_json, label_to_json
from annotune.tasks.parsing import answer_text, parse_answer
from annotune.tasks.prompts import (
    PromptBuilder,
    constrained_questions,
    draw_examples,
    system_prompt,
)

# [task] settings a kind needs to build a test codebook (a new kind with settings adds its entry)
SETTINGS: dict[str, dict[str, Any]] = {"multi": {"max_labels": 2}, "dimensions": {"scale": ["low", "medium", "high"]}}
LABELS = [
    {"name": "business", "definition": "companies and markets"},
    {"name": "politics", "definition": "government and elections"},
    {"name": "sport", "definition": "matches and athletes", "aliases": ["sports"]},
    {"name": "tech", "definition": "computers and the internet", "aliases": ["technology"]},
]


def codebook_for(kind: str, labels: list[dict] = LABELS) -> Codebook:
    task = {"name": f"contract-{kind}", "kind": kind, "instructions": "Code the text.", **SETTINGS.get(kind, {})}
    return Codebook.from_dict({"task": task, "labels": [] if kind in task_names() and get_task(kind).open_answers else labels})


def _check_schema(schema: dict, value: Any) -> None:
    """The subset of JSON Schema that structured answers use: object/array/string with enums."""
    kind = schema.get("type")
    if kind == "object":
        assert isinstance(value, dict)
        assert set(schema.get("required", [])) <= set(value)
        if schema.get("additionalProperties") is False:
            assert set(value) <= set(schema["properties"])
        for key, sub in schema["properties"].items():
            if key in value:
                _check_schema(sub, value[key])
    elif kind == "array":
        assert isinstance(value, list)
        assert schema.get("minItems", 0) <= len(value) <= schema.get("maxItems", len(value))
        for item in value:
            _check_schema(schema["items"], item)
    elif kind == "string":
        assert isinstance(value, str)
    if "enum" in schema:
        assert value in schema["enum"]


class Cells:
    """A minimal `CellReader` (the data package lends its own)."""

    def __init__(self, codebook: Codebook):
        self.codebook = codebook

    def fail(self, message):
        return ValueError(message)

    def name(self, item, what="label"):
        canon = self.codebook.canonical_label(self.text(item))
        if canon is None:
            raise self.fail(f"unknown {what} {item!r}")
        return canon

    def is_label(self, text):
        return self.codebook.canonical_label(text) is not None

    def missing(self, value):
        return value is None or (isinstance(value, str) and not value.strip())

    def text(self, value):
        return str(value).strip()

    def describe(self, value):
        return repr(value)


def check_task_kind(cb: Codebook) -> None:
    """Every check a task kind must pass, on a codebook of that kind."""
    task = cb.task
    cls = get_task(cb.kind)
    assert isinstance(task, cls) and task.name == cb.kind and task.codebook is cb
    for attr in ("description", "primary_metric", "primary_name", "labels_heading", "item_word", "per_item_key"):
        assert isinstance(getattr(cls, attr), str) and getattr(cls, attr), attr
    assert isinstance(cls.max_new_tokens, int) and cls.max_new_tokens > 0

    examples = task.example_labels()
    assert examples, "example_labels() must cover the codebook"

    # prompts
    assert task.answer_format() and task.main_question()
    assert (f"{cls.labels_heading}:" in system_prompt(cb)) is not cls.open_answers
    assert f"{cls.text_heading}:\nA text." in PromptBuilder(cb).messages("A text.")[-1]["content"]
    questions = constrained_questions(cb)
    if cls.open_answers:  # free-text answers: nothing to choose among
        assert questions == [] and cb.labels == []
    else:
        assert questions and all(isinstance(q, Question) and q.text and len(q.options) >= 2 for q in questions)
        assert all(len(set(q.options)) == len(q.options) for q in questions)

    for label in examples:
        # answer text -> parse round trip (also through the public delegates)
        text = answer_text(label, cb)
        assert isinstance(text, str) and text
        parsed = parse_answer(text, cb)
        assert isinstance(parsed, ParsedAnswer) and parsed.valid and parsed.label == label, (label, text, parsed)
        # structured (schema-constrained) answers satisfy the schema and parse to the same label
        structured = task.structured_text(label)
        _check_schema(task.answer_schema(), json.loads(structured))
        assert task.parse(structured).label == label
        # JSON round trip
        stored = json.loads(json.dumps(label_to_json(label, cb)))
        assert label_from_json(stored, cb) == label
        assert json.loads(json.dumps(label_to_json(label))) == stored  # the codebook-free form agrees
        # constrained options and decide agree: one-hot on the right options decides the label
        targets = task.option_targets(label)
        assert len(targets) == len(questions)
        assert all(t in q.options for t, q in zip(targets, questions))
        if questions:
            one_hot = [np.array([1.0 if o == t else 0.0 for o in q.options]) for q, t in zip(questions, targets)]
            decided, confidence, probs = task.decide(one_hot)
            assert decided == label and confidence == pytest.approx(1.0)
            json.dumps(probs)
        assert isinstance(task.example_stratum(label), str) and isinstance(task.split_stratum(label), str)
        # data cells: the JSON form and the canonical answer text both read back as the label
        assert task.read_label(label_to_json(label, cb), Cells(cb)) == label
        assert task.read_label(text, Cells(cb)) == label
        # review items (the label store): every item accepted makes the label again
        items = task.label_items(label)
        assert all(isinstance(k, str) and isinstance(v, str) for k, v in items.items())
        assert task.merge_items({k: [v] for k, v in items.items()}) == label
        assert all(task.read_item(k or None, v, Cells(cb)) == (k, v) for k, v in items.items())
    assert label_from_json(None, cb) is None and label_to_json(None, cb) is None
    assert task.missing_training_labels(examples) == []  # the examples cover every label
    assert 1 <= task.min_training_examples() <= len(examples)
    assert not parse_answer("", cb).valid and parse_answer("", cb).error

    # metrics: perfect predictions, all INVALID, and random predictions vs. primary_counts
    perfect = evaluate(cb, examples, examples, n_boot=20)
    assert perfect["kind"] == cb.kind and perfect["primary"] == cls.primary_metric
    assert perfect[cls.primary_metric] == pytest.approx(1.0)
    assert perfect["valid_rate"] == 1.0 and perfect["n"] == len(examples)
    for key in ("accuracy", "accuracy_valid", "macro_f1", f"{cls.primary_metric}_ci"):
        assert key in perfect
    nothing = evaluate(cb, examples, [None] * len(examples), n_boot=0)
    assert nothing["valid_rate"] == 0.0 and nothing["n_invalid"] == len(examples)
    assert nothing[cls.primary_metric] == 0.0 and nothing["accuracy_valid"] is None
    rng = random.Random(0)
    gold = [rng.choice(examples) for _ in range(40)]
    pred = [rng.choice([*examples, None]) for _ in range(40)]
    scored = evaluate(cb, gold, pred, n_boot=0)
    if cls.open_answers:  # no counts to resample: a mean of per-document scores
        with pytest.raises(NotImplementedError):
            task.primary_counts(gold, pred)
    else:
        counts = task.primary_counts(gold, pred)
        assert counts.shape[0] == len(gold) and counts.shape[2] == 3
        tp, fp, fn = counts.sum(0).T
        den = 2 * tp + fp + fn
        from_counts = np.divide(2 * tp, den, out=np.zeros_like(den), where=den > 0).mean()
        assert from_counts == pytest.approx(scored[cls.primary_metric])
    if cls.per_item_key in scored:  # the per-label figure's scores
        assert set(cls.per_item_scores(scored)) == set(cb.label_names)
        assert all(0.0 <= v <= 1.0 for v in cls.per_item_scores(scored).values())

    # the comparison table: header and cells agree, for the class alone and through table_rows
    assert len(cls.table_header()) == len(cls.table_cells(scored)) == len(cls.table_cells(nothing))
    results = {"task": cb.to_dict(), "systems": [
        {"name": "perfect", "metrics": perfect, "stats": {"docs_per_s": 10.0, "seconds": 1.0}},
        {"name": "nothing", "metrics": nothing, "stats": {}},
    ]}
    header, rows = table_rows(results)
    assert all(len(row) == len(header) for row in rows)
    assert markdown_table(results).count("\n") == 3

    # the codebook survives a round trip with its kind and settings
    again = Codebook.from_dict(cb.to_dict())
    assert again == cb and again.task.name == cb.kind

    # prompts with few-shot examples use the kind's answer text
    docs = [Doc(f"d{i}", f"text {i}", label) for i, label in enumerate(examples)]
    shots = draw_examples(docs, cb, 2, seed=1)
    msgs = PromptBuilder(cb, shots).messages("A new text.")
    assert [m["content"] for m in msgs if m["role"] == "assistant"] == [answer_text(d.label, cb) for d in shots]


def gbnf_regex(grammar: str):
    """The regular expression of a GBNF grammar without recursion (what `answer_grammar` writes): literals,
    rule names, ( ), | and ?, expanded from ``root``."""
    import re

    rules = dict(line.split(" ::= ", 1) for line in grammar.splitlines())
    token = re.compile(r'"((?:[^"\\]|\\.)*)"|([A-Za-z][A-Za-z0-9_-]*)|([()|?])|\s+')

    def expand(expr: str) -> str:
        out = []
        for lit, name, op in token.findall(expr):
            if name:
                out.append(f"(?:{expand(rules[name])})")
            elif op:
                out.append({"(": "(?:"}.get(op, op))
            else:
                out.append(re.escape(json.loads(f'"{lit}"')))  # our literals escape as JSON strings do
        return "".join(out)

    return re.compile(expand(rules["root"]), re.DOTALL)


def check_answer_grammar(cb: Codebook) -> None:
    """A grammar admits every canonical answer and nothing that is not one."""
    grammar = cb.task.answer_grammar()
    if grammar is None:
        return
    pattern = gbnf_regex(grammar)
    answers = [cb.task.answer_text(v) for v in cb.task.example_labels()]
    for text in answers:
        assert pattern.fullmatch(text), (text, grammar)
        assert not pattern.fullmatch(text + " x") and not pattern.fullmatch(" " + text)
    rng = random.Random(0)
    for _ in range(200):  # random strings over the answers' characters: admitted only if they parse
        chars = "".join(answers)
        text = "".join(rng.choice(chars) for _ in range(rng.randint(1, 12)))
        if pattern.fullmatch(text):
            assert cb.task.parse(text).label is not None, text
    for text in answers:
        if pattern.fullmatch(text):
            assert cb.task.parse(text).label is not None


@pytest.mark.parametrize("kind", task_names())
def test_every_answer_grammar_admits_exactly_the_canonical_answers(kind):
    check_answer_grammar(codebook_for(kind))
    check_answer_grammar(codebook_for(kind, [{"name": 'say "no"\\', "definition": "quotes"}, *LABELS[:2]])
                         if not get_task(kind).open_answers else codebook_for(kind))


@pytest.mark.parametrize("kind", task_names())
def test_every_registered_kind_passes_the_contract(kind):
    check_task_kind(codebook_for(kind))


def test_builtin_kinds_in_registration_order():
    assert task_names()[:4] == ("single", "multi", "dimensions", "qa")
    with pytest.raises(KeyError, match="unknown task kind 'ranking'"):
        get_task("ranking")


# ------------------------------------------------------------------------------ a new kind in one class
class BinaryTask(TaskKind):
    """Does the codebook's one label apply? The label value is a bool."""

    name = "binary"
    description = "binary"
    primary_metric = "f1"
    primary_name = "F1"
    max_new_tokens = 4
    settings = ("threshold",)  # a setting the Codebook has no field for: kept in codebook.options

    @classmethod
    def validate(cls, task, labels, fail):
        if len(labels) != 1:
            raise fail("a binary task has exactly one label", "labels")
        threshold = task.get("threshold", 0.5)
        if not isinstance(threshold, float) or not 0 < threshold < 1:
            raise fail("threshold must be a number between 0 and 1", "task.threshold")
        return {"threshold": threshold}

    def answer_format(self):
        return "Answer yes or no."

    def main_question(self):
        return f'Does "{self.codebook.label_names[0]}" apply to this text? Answer yes or no.'

    def constrained_questions(self):
        return [Question(self.main_question(), ("yes", "no"))]

    def option_targets(self, label):
        return ["yes" if label else "no"]

    def decide(self, option_probs):
        p = option_probs[0]
        return bool(p[0] > self.codebook.options["threshold"]), float(max(p)), {"yes": float(p[0]), "no": float(p[1])}

    def parse(self, raw):
        word = raw.strip().strip(".").lower()
        if word.startswith("{"):
            word = str(json.loads(word).get("answer", ""))
        if word in ("yes", "no"):
            return ParsedAnswer(word == "yes", raw)
        return ParsedAnswer(None, raw, "expected yes or no")

    def answer_text(self, label):
        return "yes" if label else "no"

    def read_label(self, raw, cells):
        if isinstance(raw, bool):
            return raw
        word = cells.text(raw).lower()
        if word not in ("yes", "no", "true", "false"):
            raise cells.fail(f"expected yes or no, got {cells.describe(raw)}")
        return word in ("yes", "true")

    def answer_schema(self):
        return {"type": "object", "properties": {"answer": {"type": "string", "enum": ["yes", "no"]}},
                "required": ["answer"], "additionalProperties": False}

    def structured_text(self, label):
        return json.dumps({"answer": self.answer_text(label)})

    def example_labels(self):
        return [True, False]

    def metrics(self, gold, pred, n, *, n_boot, seed, ci):
        g = np.array(gold, dtype=bool)
        valid = np.array([p is not None for p in pred])
        p = np.array([bool(x) for x in pred])
        tp, fp, fn = (g & p).sum(), (~g & p).sum(), (g & ~p).sum()
        f1 = 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 0.0
        correct = (g == p) & valid
        return {"kind": self.name, "n": n, "n_valid": int(valid.sum()), "n_invalid": int(n - valid.sum()),
                "valid_rate": float(valid.mean()), "primary": "f1", "accuracy": float(correct.mean()),
                "accuracy_valid": float(correct[valid].mean()) if valid.any() else None, "macro_f1": float(f1),
                "f1": float(f1), "f1_ci": None}

    def primary_counts(self, gold, pred):
        return np.array([[[g and bool(p), (not g) and bool(p), g and not p]] for g, p in zip(gold, pred)], float)

    @classmethod
    def table_header(cls):
        return ["Accuracy", "F1"]

    @classmethod
    def table_cells(cls, metrics):
        return [f"{metrics['accuracy']:.3f}", f"{metrics['f1']:.3f}"]


@pytest.fixture
def binary_kind():
    register_task(BinaryTask)
    try:
        yield BinaryTask
    finally:
        unregister_task("binary")


def test_a_new_kind_plugs_in(binary_kind):
    assert "binary" in task_names() and get_task("binary") is BinaryTask
    cb = codebook_for("binary", LABELS[:1])
    check_task_kind(cb)
    assert "Answer yes or no." in system_prompt(cb)
    assert cb.options == {"threshold": 0.5} and cb.to_dict()["task"]["threshold"] == 0.5
    with pytest.raises(CodebookError, match="exactly one label"):
        codebook_for("binary")
    with pytest.raises(CodebookError, match="threshold only applies to kind 'binary', not 'single'") as err:
        Codebook.from_dict({"task": {"kind": "single", "threshold": 0.3}, "labels": LABELS})
    assert err.value.field == "task.threshold"


def test_an_unregistered_kind_is_rejected_by_the_codebook():
    assert "binary" not in task_names()
    with pytest.raises(CodebookError) as err:
        codebook_for("binary", LABELS[:1])
    assert err.value.field == "task.kind" and "expected one of single, multi, dimensions" in err.value.message
    with pytest.raises(CodebookError, match="unknown key 'threshold'"):  # its settings went with it
        Codebook.from_dict({"task": {"kind": "single", "threshold": 0.3}, "labels": LABELS})


def test_registering_needs_a_named_task_kind():
    with pytest.raises(TypeError):
        register_task(dict)  # type: ignore[arg-type]

    class Nameless(BinaryTask):
        name = ""

    with pytest.raises(ValueError, match="no kind name"):
        register_task(Nameless)

    class OtherSingle(BinaryTask):
        name = "single"

    with pytest.raises(ValueError, match="already registered"):
        register_task(OtherSingle)


def test_a_kind_from_an_entry_point(monkeypatch, tmp_path):
    """A package that declares an `annotune.tasks` entry point (a real installed distribution's metadata
    on sys.path) is found on the first lookup of its kind."""
    import annotune.plugins
    from annotune.tasks import ENTRY_POINT_GROUP

    from conftest import install_fake_distribution

    install_fake_distribution(monkeypatch, tmp_path, {ENTRY_POINT_GROUP: {"binary": "test_task_contract:BinaryTask"}})
    monkeypatch.setattr(annotune.plugins, "_LOADED", set())
    try:
        assert get_task("binary").__name__ == "BinaryTask"  # looked up on the first miss
        assert task_names()[-1] == "binary"
    finally:
        unregister_task("binary")
