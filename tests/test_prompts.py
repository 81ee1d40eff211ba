"""Prompts derived from the codebook (annotune.prompts): system prompt, questions, few-shot examples,
and the `PromptParts` cut of the rendered chat template that the local backend relies on."""

from __future__ import annotations

import copy
import json
from collections import Counter

import pytest

from annotune.codebook import Codebook
from annotune.data.dataset import Doc
from annotune.tasks.parsing import answer_text, parse_answer
from annotune.tasks.prompts import (
    NONE_VALUE,
    PromptBuilder,
    answer_format,
    constrained_questions,
    draw_examples,
    end_of_turn,
    main_question,
    render_chat,
    system_prompt,
)

from conftest import make_codebook

KINDS = ("single", "multi", "dimensions")

DOC_TEXTS = [
    "Shares rose 3% today.",
    "",
    "  leading and trailing spaces \n",
    "Line one\n\nLine two with {{ braces }} and {% percent %} and <|im_end|> inside.",
    "Ünïcödé — 東京 🙂",
]


@pytest.fixture(scope="module")
def tokenizer(embedded_model_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(embedded_model_dir)


@pytest.fixture(scope="module")
def plain_tokenizer(tokenizer):
    """The same tokenizer without a chat template (a base model)."""
    tok = copy.deepcopy(tokenizer)
    tok.chat_template = None
    assert tokenizer.chat_template  # the original is untouched
    return tok


def _example(kind: str, i: int) -> Doc:
    label = {"single": "sport", "multi": ("business", "tech"), "dimensions": {"happiness": "high"}}[kind]
    return Doc(f"ex{i}", f"Example text number {i}.", label)


# ---------------------------------------------------------------------------- system prompt
@pytest.mark.parametrize("kind", KINDS)
def test_system_prompt_lists_labels_and_format(kind):
    cb = make_codebook(kind)
    text = system_prompt(cb)
    assert text.startswith("Code the text.")
    for lab in cb.labels:
        assert f"- {lab.name}: {lab.definition}" in text
    assert text.endswith(answer_format(cb))
    assert ("Dimensions:" in text) == (kind == "dimensions")
    assert ("Categories:" in text) == (kind != "dimensions")
    # label order is the codebook's
    positions = [text.index(f"- {name}:") for name in cb.label_names]
    assert positions == sorted(positions)


def test_answer_format_per_kind():
    single = answer_format(make_codebook("single"))
    assert "exactly one category name (business, politics, sport, tech)" in single
    multi = answer_format(make_codebook("multi"))
    assert "JSON list of between 1 and 2 category names" in multi
    assert '["business"]' in multi
    dims_cb = make_codebook("dimensions")
    dims = answer_format(dims_cb)
    assert "(low, medium, high)" in dims
    assert '{"happiness": "high"}' in dims
    assert "answer {} if none is present" in dims
    # the example answers in the instructions are themselves valid answers
    assert parse_answer('["business"]', make_codebook("multi")).label == ("business",)
    assert parse_answer('{"happiness": "high"}', dims_cb).label == {"happiness": "high"}


def test_system_prompt_without_instructions():
    cb = Codebook.from_dict({"task": {"kind": "single"},
                             "labels": [{"name": "a", "definition": "first"}, {"name": "b", "definition": "second"}]})
    text = system_prompt(cb)
    assert text.startswith("Categories:")
    assert "- a: first" in text and "- b: second" in text


def test_main_question_per_kind():
    assert "category name only" in main_question(make_codebook("single"))
    assert "at most 2" in main_question(make_codebook("multi"))
    assert "JSON object" in main_question(make_codebook("dimensions"))


# ---------------------------------------------------------------------------- constrained questions
def test_constrained_questions_single():
    cb = make_codebook("single")
    (q,) = constrained_questions(cb)
    assert q.text == main_question(cb)
    assert q.options == ("business", "politics", "sport", "tech")
    assert q.target is None


def test_constrained_questions_multi():
    cb = make_codebook("multi")
    qs = constrained_questions(cb)
    assert [q.target for q in qs] == cb.label_names
    for q in qs:
        assert q.options == ("yes", "no")
        assert f'"{q.target}"' in q.text
        assert "yes or no" in q.text


def test_constrained_questions_dimensions():
    cb = make_codebook("dimensions")
    qs = constrained_questions(cb)
    assert [q.target for q in qs] == cb.label_names
    for q in qs:
        assert q.options == (NONE_VALUE, "low", "medium", "high")
        assert f'"{q.target}"' in q.text
        assert q.text.endswith("Answer none, low, medium or high.")
    # every option but "none" is a scale value the parser accepts
    for value in qs[0].options[1:]:
        assert parse_answer(json.dumps({"happiness": value}), cb).label == {"happiness": value}


def test_constrained_questions_one_value_scale():
    cb = make_codebook("dimensions", scale=["present"])
    (q, *_) = constrained_questions(cb)
    assert q.options == ("none", "present")
    assert q.text.endswith("Answer none or present.")


# ---------------------------------------------------------------------------- prompt parts
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("n_examples", [0, 2])
def test_parts_full_equals_chat_template(tokenizer, kind, n_examples):
    cb = make_codebook(kind)
    builder = PromptBuilder(cb, [_example(kind, i) for i in range(n_examples)])
    parts = builder.parts(tokenizer)
    questions = [main_question(cb)] + [q.text for q in constrained_questions(cb)]
    for doc in DOC_TEXTS:
        for question in questions:
            direct = tokenizer.apply_chat_template(builder.messages(doc, question), tokenize=False,
                                                   add_generation_prompt=True)
            assert parts.full(doc, question) == direct
    # the prefix is shared by every document: the system prompt and the examples, nothing of the document
    assert parts.prefix.startswith("<|im_start|>system\n" + system_prompt(cb))
    assert parts.prefix.endswith("<|im_start|>user\nText:\n")
    assert parts.between == "\n\n"
    assert parts.suffix == "<|im_end|>\n<|im_start|>assistant\n"
    assert parts.prefix.count("<|im_start|>assistant\n") == n_examples
    assert "\x00" not in parts.prefix + parts.between + parts.suffix


@pytest.mark.parametrize("kind", KINDS)
def test_parts_without_chat_template(plain_tokenizer, kind):
    cb = make_codebook(kind)
    builder = PromptBuilder(cb, [_example(kind, 0)])
    parts = builder.parts(plain_tokenizer)
    for doc in DOC_TEXTS:
        question = main_question(cb)
        msgs = builder.messages(doc, question)
        assert parts.full(doc, question) == render_chat(plain_tokenizer, msgs, generation_prompt=True)
        expected = (
            f"### System:\n{system_prompt(cb)}\n\n"
            f"### User:\nText:\nExample text number 0.\n\n{main_question(cb)}\n\n"
            f"### Assistant:\n{answer_text(_example(kind, 0).label, cb)}\n\n"
            f"### User:\nText:\n{doc}\n\n{question}\n\n"
            "### Assistant:\n"
        )
        assert parts.full(doc, question) == expected
    # without a template the answer ends at the EOS token
    assert parts.end_of_turn == plain_tokenizer.eos_token


def test_end_of_turn_smollm2(tokenizer):
    assert end_of_turn(tokenizer) == "<|im_end|>"
    parts = PromptBuilder(make_codebook("single")).parts(tokenizer)
    assert parts.end_of_turn == "<|im_end|>"
    # a single token, so generation can stop on it
    assert len(tokenizer("<|im_end|>", add_special_tokens=False)["input_ids"]) == 1


LLAMA3_LIKE = (
    "{{ bos_token }}{% for message in messages %}"
    "{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n' + message['content'] | trim + '<|eot_id|>' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}"
)


def test_parts_with_other_template(tokenizer):
    """Another template layout (a BOS in the text, trimmed contents, another end-of-turn marker)."""
    tok = copy.deepcopy(tokenizer)
    tok.chat_template = LLAMA3_LIKE
    cb = make_codebook("multi")
    builder = PromptBuilder(cb, [_example("multi", 0)])
    parts = builder.parts(tok)
    assert parts.end_of_turn == "<|eot_id|>"
    assert parts.prefix.startswith(tok.bos_token + "<|start_header_id|>system")
    for doc in DOC_TEXTS:
        for q in constrained_questions(cb):
            direct = tok.apply_chat_template(builder.messages(doc, q.text), tokenize=False,
                                             add_generation_prompt=True)
            assert parts.full(doc, q.text) == direct


def test_end_of_turn_falls_back_to_eos(tokenizer):
    """A template that rejects a final assistant turn: the answer ends at the EOS token."""
    tok = copy.deepcopy(tokenizer)
    tok.chat_template = (
        "{% if messages[-1]['role'] == 'assistant' %}{{ raise_exception('no assistant at the end') }}{% endif %}"
        "{% for m in messages %}[{{ m['role'] }}] {{ m['content'] }}\n{% endfor %}"
        "{% if add_generation_prompt %}[assistant] {% endif %}"
    )
    assert end_of_turn(tok) == tok.eos_token
    parts = PromptBuilder(make_codebook("single")).parts(tok)
    assert parts.full("doc", "q?") == tok.apply_chat_template(
        PromptBuilder(make_codebook("single")).messages("doc", "q?"), tokenize=False, add_generation_prompt=True)


# ---------------------------------------------------------------------------- messages and few-shot
def test_messages_zero_shot():
    cb = make_codebook("single")
    msgs = PromptBuilder(cb).messages("Some text.")
    assert [m["role"] for m in msgs] == ["system", "user"]
    assert msgs[0]["content"] == system_prompt(cb)
    assert msgs[1]["content"] == f"Text:\nSome text.\n\n{main_question(cb)}"
    assert PromptBuilder(cb).messages("t", "Other?")[1]["content"] == "Text:\nt\n\nOther?"


@pytest.mark.parametrize("kind", KINDS)
def test_few_shot_messages_alternate_with_canonical_answers(kind):
    cb = make_codebook(kind)
    examples = {
        "single": [Doc("a", "Match report.", "sport"), Doc("b", "Market news.", "business")],
        "multi": [Doc("a", "Tech firms.", ("tech", "business")), Doc("b", "Vote.", ("politics",))],
        "dimensions": [Doc("a", "Thanks!", {"expressing gratitude": "high", "happiness": "low"}),
                       Doc("b", "Nothing.", {})],
    }[kind]
    msgs = PromptBuilder(cb, examples).messages("The document.", "The question?")
    assert [m["role"] for m in msgs] == ["system", "user", "assistant", "user", "assistant", "user"]
    for ex, user, assistant in zip(examples, msgs[1:-1:2], msgs[2:-1:2]):
        assert user["content"] == f"Text:\n{ex.text}\n\n{main_question(cb)}"  # examples ask the main question
        assert assistant["content"] == answer_text(ex.label, cb)
        assert parse_answer(assistant["content"], cb).label == (
            tuple(n for n in cb.label_names if n in ex.label) if kind == "multi" else ex.label)
    assert msgs[-1]["content"] == "Text:\nThe document.\n\nThe question?"
    if kind == "multi":
        assert msgs[2]["content"] == '["business", "tech"]'  # codebook order
    if kind == "dimensions":
        assert msgs[2]["content"] == '{"happiness": "low", "expressing gratitude": "high"}'
        assert msgs[4]["content"] == "{}"


def test_few_shot_examples_are_clipped():
    cb = make_codebook("single")
    long_text = " ".join(f"word{i}" for i in range(100))
    msgs = PromptBuilder(cb, [Doc("a", long_text, "tech")], example_chars=30).messages("doc")
    content = msgs[1]["content"]
    clipped = content.split("\n")[1]
    assert clipped.endswith(" …")
    assert len(clipped) <= 32
    assert long_text.startswith(clipped[:-2])
    assert not clipped[:-2].endswith("word")  # cut at a word boundary
    # the document itself is never clipped
    assert long_text in PromptBuilder(cb, example_chars=30).messages(long_text)[-1]["content"]


# ---------------------------------------------------------------------------- draw_examples
def _train_single() -> list[Doc]:
    counts = {"business": 10, "politics": 2, "sport": 5, "tech": 3}
    docs = [Doc(f"{lab}{i}", f"{lab} text {i}", lab) for lab, n in counts.items() for i in range(n)]
    docs.append(Doc("unlabelled", "no label", None))
    return docs


def test_draw_examples_balanced():
    cb = make_codebook("single")
    train = _train_single()
    four = draw_examples(train, cb, 4, seed=0)
    assert sorted(d.label for d in four) == ["business", "politics", "sport", "tech"]
    eight = draw_examples(train, cb, 8, seed=1)
    assert Counter(d.label for d in eight) == {"business": 2, "politics": 2, "sport": 2, "tech": 2}
    ten = Counter(d.label for d in draw_examples(train, cb, 10, seed=2))  # politics runs out
    assert sum(ten.values()) == 10 and ten["politics"] == 2
    assert all(ten[lab] in (2, 3) for lab in ("business", "sport", "tech"))
    every = draw_examples(train, cb, 1000, seed=0)
    assert sorted(d.id for d in every) == sorted(d.id for d in train if d.label is not None)
    assert len({d.id for d in eight}) == 8  # no document twice


def test_draw_examples_seeded_and_deterministic():
    cb = make_codebook("single")
    train = _train_single()
    before = [d.id for d in train]
    a = [d.id for d in draw_examples(train, cb, 6, seed=7)]
    b = [d.id for d in draw_examples(list(train), cb, 6, seed=7)]
    assert a == b
    assert [d.id for d in train] == before  # the training data is not reordered
    others = {tuple(d.id for d in draw_examples(train, cb, 6, seed=s)) for s in range(8)}
    assert len(others) > 1  # the seed matters


def test_draw_examples_edge_cases():
    cb = make_codebook("single")
    assert draw_examples(_train_single(), cb, 0, seed=0) == []
    assert draw_examples([], cb, 3, seed=0) == []
    assert draw_examples([Doc("x", "t", None)], cb, 3, seed=0) == []


def test_draw_examples_multi_and_dimensions():
    multi = make_codebook("multi")
    train = [Doc(f"m{i}", "t", lab) for i, lab in enumerate(
        [("business",), ("business", "tech"), ("politics",), ("politics", "sport"), ("sport",), ("tech",)] * 3)]
    drawn = draw_examples(train, multi, 4, seed=0)
    assert len(drawn) == 4
    assert len({d.label[0] for d in drawn}) == 4  # one per leading label
    dims = make_codebook("dimensions")
    train = [Doc(f"d{i}", "t", lab) for i, lab in enumerate(
        [{}, {"happiness": "low"}, {"expressing gratitude": "high", "happiness": "low"},
         {"perceiving discrimination": "medium"}] * 3)]
    drawn = draw_examples(train, dims, 3, seed=0)
    strata = {min(d.label, key=dims.label_names.index) if d.label else "" for d in drawn}
    assert len(strata) == 3  # three different strata, the empty answer being one of them
