"""The local backend's engine (annotune.backend): tree-attention scoring and the greedy decoding loop
against naive transformers references, result order, run statistics, INVALID accounting and the
constrained decision rule. Everything runs on the tiny random model except one check with the real
embedded model (fast: it loads from the materialised cache)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from annotune.backends.base import Prediction, RunStats, decide_constrained
from annotune.backends.local import LocalBackend
from annotune.codebook import Codebook
from annotune.data.dataset import Doc
from annotune.tasks.parsing import answer_text, parse_answer
from annotune.tasks.prompts import PromptBuilder, constrained_questions, main_question

from conftest import make_codebook

torch = pytest.importorskip("torch")

TEXTS = [
    "Short one.",
    "The central bank raised interest rates again on Tuesday, and shares of several large companies "
    "fell sharply in early trading as investors weighed the outlook for the rest of the year.",
    "Parliament passed the new budget after a long debate.",
]


def _docs(texts=TEXTS) -> list[Doc]:
    return [Doc(f"d{i}", t, None) for i, t in enumerate(texts)]


def _multitoken_single() -> Codebook:
    """Labels of several tokens, two of them sharing their first token ("science")."""
    return Codebook.from_dict({
        "task": {"name": "mt", "kind": "single", "instructions": "Code the topic."},
        "labels": [
            {"name": "science and technology", "definition": "research, gadgets"},
            {"name": "science", "definition": "research only"},
            {"name": "sport", "definition": "matches"},
            {"name": "politics", "definition": "elections"},
        ],
    })


def _multitoken_dimensions() -> Codebook:
    return make_codebook("dimensions", scale=["slightly", "very much so"])


CODEBOOKS = {
    "single": lambda: make_codebook("single"),
    "single-multitoken": _multitoken_single,
    "multi": lambda: make_codebook("multi"),
    "dimensions": lambda: make_codebook("dimensions"),
    "dimensions-multitoken-scale": _multitoken_dimensions,
}



@pytest.fixture(scope="module")
def backend(tiny_model_dir) -> LocalBackend:
    return LocalBackend(str(tiny_model_dir), dtype="fp32", batch_size=8)


def _with(backend: LocalBackend, **settings) -> LocalBackend:
    """The module's backend (same weights) with other batching/limit settings."""
    return LocalBackend(loaded=(backend.model, backend.tokenizer, backend.source), **settings)


def _spy_forward(monkeypatch, b: LocalBackend) -> list[list[int]]:
    """Record the row lengths of every tree forward, to check that padding really happens."""
    calls: list[list[int]] = []
    real = b._forward_tree

    def spy(prefix_kv, prefix_len, rows, parents, keep_cache=False):
        calls.append([len(r) for r in rows])
        return real(prefix_kv, prefix_len, rows, parents, keep_cache)

    monkeypatch.setattr(b, "_forward_tree", spy)
    return calls


def _head_ids(b: LocalBackend, parts) -> list[int]:
    ids = b.encode(parts.prefix)
    if getattr(b.tokenizer, "chat_template", None) is None and b.tokenizer.bos_token_id is not None:
        ids = [b.tokenizer.bos_token_id] + ids
    return ids


def _reference_option_probs(b: LocalBackend, builder: PromptBuilder, doc: Doc) -> list[np.ndarray]:
    """Naive: one plain forward per (question, option) over the full prompt + option tokens."""
    parts = builder.parts(b.tokenizer)
    head = _head_ids(b, parts) + b._doc_ids(doc.text, RunStats()) + b.encode(parts.between)
    out = []
    for q in constrained_questions(builder.codebook):
        ctx = head + b.encode(q.text + parts.suffix)
        if b.max_text_tokens is None or len(b.encode(doc.text)) <= b.max_text_tokens:
            # the piecewise token ids are the full prompt string
            assert b.tokenizer.decode(ctx) == parts.full(doc.text, q.text)
        opts = b.option_ids(q.options, parts.end_of_turn)
        # one plain causal forward for all options, right-padded (padding comes after what is scored)
        width = len(ctx) + max(map(len, opts))
        ids = torch.full((len(opts), width), b.tokenizer.pad_token_id)
        for i, opt in enumerate(opts):
            ids[i, : len(ctx) + len(opt)] = torch.tensor(ctx + opt)
        with torch.no_grad():
            logits = b.model(ids).logits[:, len(ctx) - 1:]
        logp = torch.log_softmax(logits.double(), dim=-1)
        s = np.array([sum(float(logp[i, j, tok]) for j, tok in enumerate(opt)) for i, opt in enumerate(opts)])
        e = np.exp(s - s.max())
        out.append(e / e.sum())
    return out


def _assert_probs_close(got, want, tol=1e-4, log_tol=None):
    """Probabilities within ``tol``; with ``log_tol`` also their logarithms, which catches differences
    in options whose probability is tiny (multi-token options of the random model)."""
    if isinstance(want, dict):
        assert isinstance(got, dict) and set(got) == set(want)
        for k in want:
            _assert_probs_close(got[k], want[k], tol, log_tol)
    else:
        assert got == pytest.approx(want, abs=tol)
        if log_tol is not None:
            assert math.log(max(got, 1e-300)) == pytest.approx(math.log(max(want, 1e-300)), abs=log_tol)


# ---------------------------------------------------------------------------- constrained scoring
@pytest.mark.parametrize("name", list(CODEBOOKS))
def test_constrained_equals_naive_reference(backend, monkeypatch, name):
    codebook = CODEBOOKS[name]()
    builder = PromptBuilder(codebook)
    b = _with(backend, batch_size=3)
    calls = _spy_forward(monkeypatch, b)
    docs = _docs()
    preds, stats = b.label(docs, builder, "constrained", progress=False)
    # the documents went through at least one padded batch
    assert any(len(set(lens)) > 1 for lens in calls), calls
    assert [p.id for p in preds] == [d.id for d in docs]
    for doc, pred in zip(docs, preds):
        ref = _reference_option_probs(b, builder, doc)
        label, conf, probs = decide_constrained(codebook, ref)
        _assert_probs_close(pred.probs, probs, 1e-4, log_tol=1e-4)
        assert pred.confidence == pytest.approx(conf, abs=1e-4)
        assert pred.label == label
        assert pred.error is None
        # constrained answers are always valid and round-trip through the parser
        assert pred.raw == answer_text(pred.label, codebook)
        assert parse_answer(pred.raw, codebook).label == pred.label
        for p in ref:
            assert p.sum() == pytest.approx(1.0)
    assert stats.docs == len(docs)


@pytest.mark.parametrize("budget", [1, 200])
def test_question_rows_in_forwards_of_any_size_equal_the_reference(backend, monkeypatch, budget):
    """Many questions in two stages: each question is a row of its own after its document's cache, as many rows
    per forward as `BRANCH_CACHE_TOKENS` allows (1: a row per forward, each padded to its own width)."""
    import annotune.backends.local as local

    monkeypatch.setattr(local, "BRANCH_TREE_TOKENS", 0)
    monkeypatch.setattr(local, "BRANCH_CACHE_TOKENS", budget)
    codebook = _multitoken_dimensions()
    builder = PromptBuilder(codebook)
    b = _with(backend, batch_size=3)
    docs = _docs()
    preds, _ = b.label(docs, builder, "constrained", progress=False)
    for doc, pred in zip(docs, preds):
        want = decide_constrained(codebook, _reference_option_probs(b, builder, doc))[2]
        _assert_probs_close(pred.probs, want, 1e-4, log_tol=1e-4)


def test_constrained_with_few_shot_and_truncation_equals_reference(backend):
    codebook = make_codebook("single")
    examples = [Doc("e1", "Stocks rallied.", "business"), Doc("e2", "The team won.", "sport")]
    builder = PromptBuilder(codebook, examples)
    b = _with(backend, batch_size=2, max_text_tokens=6)
    docs = _docs()
    preds, stats = b.label(docs, builder, "constrained", progress=False)
    assert stats.truncated_docs == 2  # the two longer texts
    for doc, pred in zip(docs, preds):
        ref = _reference_option_probs(b, builder, doc)
        _assert_probs_close(pred.probs, decide_constrained(codebook, ref)[2], 1e-4, log_tol=1e-4)


def test_constrained_is_batch_invariant(backend):
    codebook = make_codebook("dimensions")
    builder = PromptBuilder(codebook)
    docs = _docs()
    one, _ = _with(backend, batch_size=1).label(docs, builder, "constrained", progress=False)
    many, _ = _with(backend, batch_size=8).label(docs, builder, "constrained", progress=False)
    for a, c in zip(one, many):
        assert a.id == c.id and a.label == c.label
        _assert_probs_close(a.probs, c.probs, 1e-5)


# ---------------------------------------------------------------------------- greedy generation
def _hf_greedy_answer(b: LocalBackend, ids: list[int], stop: set[int], max_new_tokens: int) -> list[int]:
    """Hugging Face's greedy continuation of ``ids``, cut before the first stop token."""
    with torch.no_grad():
        out = b.model.generate(torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                               max_new_tokens=max_new_tokens, do_sample=False, eos_token_id=sorted(stop),
                               pad_token_id=b.tokenizer.pad_token_id)
    new = out[0, len(ids):].tolist()
    return new[: next((i for i, t in enumerate(new) if t in stop), len(new))]


@pytest.mark.parametrize("kind,batch_size,merged", [("single", 3, True), ("multi", 3, True), ("single", 1, True),
                                                     ("single", 1, False)])
def test_generate_equals_hf_generate(backend, monkeypatch, kind, batch_size, merged):
    """Prompts encoded ``batch_size`` rows at a time, then decoded together (``merged``: one cache of all rows,
    zero-padded; else batch by batch, the path for caches of other layer kinds): HF's greedy answers."""
    from annotune.backends import local

    codebook = make_codebook(kind)
    builder = PromptBuilder(codebook, [Doc("e1", "Stocks rallied.", "business" if kind == "single"
                                            else ("business",))])
    b = _with(backend, batch_size=batch_size, max_new_tokens=8)
    calls = _spy_forward(monkeypatch, b)
    if not merged:
        monkeypatch.setattr(local, "empty_like", lambda *args: None)
    docs = _docs()
    preds, stats = b.label(docs, builder, "generate", progress=False)
    if batch_size == 3:
        assert len(calls) == 1 and len(set(calls[0])) == 3  # one padded batch of three
    else:
        assert len(calls) == 3 and len({n for c in calls for n in c}) == 3  # three prompts of different lengths
    parts = builder.parts(b.tokenizer)
    stop = b.stop_ids(parts.end_of_turn)
    assert stop == {b.tokenizer.convert_tokens_to_ids("<|im_end|>")}
    q_ids = b.encode(main_question(codebook) + parts.suffix)
    total = 0
    for doc, pred in zip(docs, preds):
        ids = _head_ids(b, parts) + b._doc_ids(doc.text, RunStats()) + b.encode(parts.between) + q_ids
        answer = _hf_greedy_answer(b, ids, stop, 8)
        assert pred.id == doc.id
        assert pred.raw == b.tokenizer.decode(answer, skip_special_tokens=False)
        total += len(answer)
    assert stats.generated_tokens == total


def test_a_sliding_window_model_answers_as_hugging_face_does(tiny_gemma_dir, monkeypatch):
    """Gemma 3's sliding-window layers (16 tokens here, prompts of hundreds): the shared prefix's cache keeps
    every token and the sliding layers' mask hides keys a window or more behind each query — generated answers
    are HF's `generate`'s, constrained probabilities a plain forward's (prefill in two batches, then merged)."""
    b = LocalBackend(str(tiny_gemma_dir), dtype="fp32", batch_size=2, max_new_tokens=6)
    assert b.window == 16
    codebook = make_codebook("single")
    builder = PromptBuilder(codebook)
    parts = builder.parts(b.tokenizer)
    docs = _docs()
    preds, _ = b.label(docs, builder, "generate", progress=False)
    stop = b.stop_ids(parts.end_of_turn)
    for doc, pred in zip(docs, preds):
        ids = (_head_ids(b, parts) + b._doc_ids(doc.text, RunStats()) + b.encode(parts.between)
               + b.encode(main_question(codebook) + parts.suffix))
        assert len(ids) > 4 * b.window
        assert pred.raw == b.tokenizer.decode(_hf_greedy_answer(b, ids, stop, 6), skip_special_tokens=False)
    scored, _ = b.label(docs, builder, "constrained", progress=False)
    for doc, pred in zip(docs, scored):
        _assert_probs_close(pred.probs, decide_constrained(codebook, _reference_option_probs(b, builder, doc))[2],
                            1e-4, log_tol=1e-4)
    # many questions in two stages: each a row after its document's cache, the sliding layers told the cached
    # keys' positions
    monkeypatch.setattr("annotune.backends.local.BRANCH_TREE_TOKENS", 0)
    dimensions = make_codebook("dimensions")
    builder = PromptBuilder(dimensions)
    scored, _ = b.label(docs, builder, "constrained", progress=False)
    for doc, pred in zip(docs, scored):
        want = decide_constrained(dimensions, _reference_option_probs(b, builder, doc))[2]
        _assert_probs_close(pred.probs, want, 1e-4, log_tol=1e-4)


def test_generate_invalid_answers_are_kept(backend):
    """The random model answers gibberish: INVALID with its raw text, never a made-up label."""
    for kind in ("single", "multi", "dimensions"):
        codebook = make_codebook(kind)
        b = _with(backend, batch_size=2, max_new_tokens=6)
        docs = _docs()
        preds, _ = b.label(docs, PromptBuilder(codebook), "generate", progress=False)
        assert [p.id for p in preds] == [d.id for d in docs]
        for p in preds:
            assert isinstance(p, Prediction)
            parsed = parse_answer(p.raw, codebook)
            assert p.label == parsed.label
            assert p.error == parsed.error
            assert p.confidence is None and p.probs is None
        invalid = [p for p in preds if p.label is None]
        assert invalid, [p.raw for p in preds]
        for p in invalid:
            assert p.error
            assert isinstance(p.raw, str)
        assert any(p.raw for p in invalid)


def test_generate_stops_at_end_of_turn(backend, monkeypatch):
    """A stop token ends a row; other rows go on; the stop token is not part of the answer."""
    b = _with(backend, batch_size=2, max_new_tokens=5)
    eot = b.tokenizer.convert_tokens_to_ids("<|im_end|>")
    sport = b.encode("sport")
    script = {0: [*sport, eot, 111, 111], 1: [222, 223, 224, 225, 226]}  # per row, by step
    real_head = b.lm_head
    step = {"n": 0}

    class Scripted(torch.nn.Module):
        def forward(self, h):
            logits = real_head(h).clone()
            n = step["n"]
            step["n"] += 1
            for r in range(logits.shape[0]):
                logits[r, script[r][n]] = 1e4
            return logits

    b.lm_head = Scripted()
    docs = [Doc("long", TEXTS[1], None), Doc("short", TEXTS[0], None)]  # row 0 = longest doc
    preds, stats = b.label(docs, PromptBuilder(make_codebook("single")), "generate", progress=False)
    assert preds[0].raw == "sport" and preds[0].label == "sport" and preds[0].error is None
    assert preds[1].raw == b.tokenizer.decode([222, 223, 224, 225, 226])
    assert stats.generated_tokens == len(sport) + 5


# ---------------------------------------------------------------------------- the public engine surface
def _chat_ids(b: LocalBackend, text: str = TEXTS[1]) -> list[int]:
    return b.encode_chat(PromptBuilder(make_codebook("single")).messages(text))


def test_engine_tokens(backend):
    from annotune.backends.local import encode_chat

    b = backend
    assert b.decode(b.encode("Shares fell.")) == "Shares fell."
    messages = PromptBuilder(make_codebook("single")).messages(TEXTS[0])
    ids = b.encode_chat(messages)
    assert ids == encode_chat(b.tokenizer, messages)
    assert b.decode(ids).endswith("<|im_start|>assistant\n")  # rendered for answering
    assert b.context_length == 2048
    # one definition of the stop tokens: the chat template's end of turn (and EOS)
    parts = PromptBuilder(make_codebook("single")).parts(b.tokenizer)
    assert b.stop_ids() == b.stop_ids(parts.end_of_turn) == {b.tokenizer.convert_tokens_to_ids("<|im_end|>")}
    assert b.option_ids(("sport", "sport news")) == b.option_ids(("sport", "sport news"), parts.end_of_turn)


def test_engine_generate_equals_hf_generate_with_logprobs(backend):
    b = backend
    ids = _chat_ids(b)
    gen = b.generate(ids, 8, top_logprobs=5)
    stop = b.stop_ids()
    with torch.no_grad():
        out = b.model.generate(torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                               max_new_tokens=8, do_sample=False, eos_token_id=sorted(stop),
                               pad_token_id=b.tokenizer.pad_token_id, output_scores=True,
                               return_dict_in_generate=True)
    new = out.sequences[0, len(ids):].tolist()
    cut = next((i for i, t in enumerate(new) if t in stop), len(new))
    assert gen.token_ids == new[:cut]
    assert gen.text == b.decode(new[:cut])
    assert gen.finish_reason == ("stop" if cut < len(new) or len(new) < 8 else "length")
    assert len(gen.logprobs) == len(gen.top_logprobs) == len(gen.token_ids)
    for step, (tok, lp, top) in enumerate(zip(gen.token_ids, gen.logprobs, gen.top_logprobs)):
        ref = torch.log_softmax(out.scores[step][0].double(), dim=-1)
        assert lp == pytest.approx(float(ref[tok]), abs=1e-4)
        assert len(top) == 5 and top[0][0] == tok
        assert [v for _, v in top] == sorted((v for _, v in top), reverse=True)
        for i, v in top:
            assert v == pytest.approx(float(ref[i]), abs=1e-4)
    # without top_logprobs nothing is recorded, the answer is the same; a token limit ends with "length"
    plain = b.generate(ids, 8)
    assert plain.token_ids == gen.token_ids and plain.logprobs is None and plain.top_logprobs is None
    assert b.generate(ids, 8, top_logprobs=0).top_logprobs == [[] for _ in gen.token_ids]
    short = b.generate(ids, 1, stop_ids=set())
    assert len(short.token_ids) == 1 and short.finish_reason == "length"
    with pytest.raises(ValueError):
        b.generate([], 4)


def test_engine_score_options_equals_reference(backend):
    b = backend
    ids = _chat_ids(b)
    options = ("sport", "sport news", "politics and government")
    scores = b.score_options(ids, options)
    assert scores.options == options
    assert scores.token_ids == b.option_ids(options)
    assert scores.token_ids[0][-1] == b.tokenizer.convert_tokens_to_ids("<|im_end|>")  # "sport" is a prefix
    ref = []
    for opt in scores.token_ids:
        with torch.no_grad():
            logits = b.model(torch.tensor([ids + opt])).logits[0, len(ids) - 1: -1]
        logp = torch.log_softmax(logits.double(), dim=-1)
        ref.append(sum(float(logp[j, t]) for j, t in enumerate(opt)))
    assert scores.logprobs == pytest.approx(ref, abs=1e-4)
    assert scores.probs.sum() == pytest.approx(1.0)
    assert scores.probs == pytest.approx(np.exp(ref) / np.exp(ref).sum(), abs=1e-5)


# ---------------------------------------------------------------------------- order and statistics
@pytest.mark.parametrize("answer", ["generate", "constrained"])
def test_results_in_input_order(backend, answer):
    codebook = make_codebook("single")
    builder = PromptBuilder(codebook)
    # ascending lengths, so the backend's longest-first order reverses them
    texts = ["A.", "A bit longer text.", "An even longer text about many things.",
             "The longest text of all, about markets, elections, football matches and computers."]
    docs = [Doc(f"id{i}", t, None) for i, t in enumerate(texts)]
    b = _with(backend, batch_size=2, max_new_tokens=4)
    preds, stats = b.label(docs, builder, answer, progress=False)
    assert [p.id for p in preds] == [d.id for d in docs]
    for doc, pred in zip(docs, preds):  # each one is that document's own answer
        alone, _ = b.label([doc], builder, answer, progress=False)
        assert alone[0].raw == pred.raw and alone[0].label == pred.label
        if answer == "constrained":
            _assert_probs_close(alone[0].probs, pred.probs, 1e-5)
    assert stats.docs == 4
    assert stats.prompt_tokens > 0
    assert stats.truncated_docs == 0
    assert stats.seconds > 0
    parts = builder.parts(b.tokenizer)
    prefix_len = len(b.encode(parts.prefix))
    doc_lens = [len(b.encode(d.text)) + len(b.encode(parts.between)) for d in docs]
    if answer == "generate":
        q_len = len(b.encode(main_question(codebook) + parts.suffix))
        assert stats.prompt_tokens == prefix_len + sum(doc_lens) + 4 * q_len
        assert stats.prompt_tokens_nominal == sum(prefix_len + n + q_len for n in doc_lens)
        assert stats.generated_tokens > 0
        # the shared prefix is encoded once, not once per document
        assert stats.prompt_tokens < stats.prompt_tokens_nominal
    else:
        q_len = len(b.encode(main_question(codebook) + parts.suffix))
        assert stats.prompt_tokens_nominal == sum(prefix_len + n + q_len for n in doc_lens)
        assert stats.prompt_tokens > prefix_len + sum(doc_lens)
        assert stats.generated_tokens == 0
    d = stats.as_dict()
    assert d["docs"] == 4 and d["docs_per_s"] > 0 and d["prompt_tokens_per_s"] > 0


def test_truncated_docs_counted(backend):
    b = _with(backend, batch_size=4, max_text_tokens=5, max_new_tokens=2)
    docs = _docs()
    n_long = sum(len(b.encode(d.text)) > 5 for d in docs)
    assert n_long == 2
    for answer in ("generate", "constrained"):
        _, stats = b.label(docs, PromptBuilder(make_codebook("multi")), answer, progress=False)
        assert stats.truncated_docs == n_long
    # only the first max_text_tokens tokens count: texts equal up to there get equal answers
    same_start = [Doc("a", TEXTS[1], None), Doc("b", TEXTS[1] + " And then much more happened.", None)]
    preds, _ = b.label(same_start, PromptBuilder(make_codebook("single")), "constrained", progress=False)
    _assert_probs_close(preds[0].probs, preds[1].probs, 1e-6)


def test_unknown_answer_mode(backend):
    with pytest.raises(ValueError, match="answer must be"):
        backend.label(_docs(), PromptBuilder(make_codebook("single")), "sample", progress=False)


def test_empty_docs(backend):
    preds, stats = backend.label([], PromptBuilder(make_codebook("single")), "constrained", progress=False)
    assert preds == [] and stats.docs == 0


# ---------------------------------------------------------------------------- decide_constrained
def test_decide_single_argmax():
    cb = make_codebook("single")
    label, conf, probs = decide_constrained(cb, [np.array([0.1, 0.6, 0.2, 0.1])])
    assert label == "politics"
    assert conf == pytest.approx(0.6)
    assert probs == pytest.approx({"business": 0.1, "politics": 0.6, "sport": 0.2, "tech": 0.1})


def _yes(*p_yes):
    return [np.array([p, 1 - p]) for p in p_yes]


def test_decide_multi_threshold_and_max_labels():
    cb = make_codebook("multi")  # max_labels = 2
    label, conf, probs = decide_constrained(cb, _yes(0.9, 0.7, 0.8, 0.2))
    assert label == ("business", "sport")  # the top two above 0.5, in codebook order
    assert conf == pytest.approx(0.7)  # the least certain yes/no decision
    assert probs == pytest.approx({"business": 0.9, "politics": 0.7, "sport": 0.8, "tech": 0.2})
    label, _, _ = decide_constrained(cb, _yes(0.2, 0.6, 0.4, 0.1))
    assert label == ("politics",)
    # nothing above 0.5: still one label, the most likely one
    label, conf, _ = decide_constrained(cb, _yes(0.1, 0.3, 0.45, 0.05))
    assert label == ("sport",)
    assert conf == pytest.approx(0.55)
    # exactly 0.5 is not "yes"
    label, _, _ = decide_constrained(cb, _yes(0.5, 0.2, 0.2, 0.2))
    assert label == ("business",)
    label, _, _ = decide_constrained(cb, _yes(0.5, 0.6, 0.2, 0.2))
    assert label == ("politics",)
    # without a max_labels limit every label above 0.5 is taken
    cb_all = make_codebook("multi", max_labels=4)
    label, _, _ = decide_constrained(cb_all, _yes(0.9, 0.7, 0.8, 0.6))
    assert label == ("business", "politics", "sport", "tech")
    for value in (("business", "sport"), ("politics",)):
        assert parse_answer(answer_text(value, cb), cb).label == value


def test_decide_dimensions_with_none():
    cb = make_codebook("dimensions")  # values: none, low, medium, high
    option_probs = [np.array([0.7, 0.1, 0.1, 0.1]), np.array([0.1, 0.1, 0.2, 0.6]), np.array([0.4, 0.5, 0.05, 0.05])]
    label, conf, probs = decide_constrained(cb, option_probs)
    assert label == {"expressing gratitude": "high", "perceiving discrimination": "low"}
    assert conf == pytest.approx(0.5)
    assert probs["happiness"] == pytest.approx({"none": 0.7, "low": 0.1, "medium": 0.1, "high": 0.1})
    assert set(probs) == set(cb.label_names)
    nothing, conf, _ = decide_constrained(cb, [np.array([0.9, 0.05, 0.03, 0.02])] * 3)
    assert nothing == {}
    assert conf == pytest.approx(0.9)
    assert parse_answer(answer_text(nothing, cb), cb).label == {}


# ---------------------------------------------------------------------------- real embedded model
def test_real_model_constrained_obvious_texts(embedded_model_dir):
    codebook = make_codebook("single")
    builder = PromptBuilder(codebook)
    docs = [
        Doc("football", "Manchester United beat Liverpool 3-1 in the Premier League on Saturday; "
                        "the striker scored twice in the second half of the match.", None),
        Doc("stocks", "Shares fell on Wall Street as the stock market reacted to weak quarterly earnings "
                      "from several large companies; the Dow Jones index lost two percent.", None),
    ]
    fp32 = LocalBackend("smollm2", dtype="fp32")
    preds, stats = fp32.label(docs, builder, "constrained", progress=False)
    assert [p.id for p in preds] == ["football", "stocks"]
    assert all(p.label is not None and p.error is None for p in preds)  # 100 % valid
    for p in preds:
        assert set(p.probs) == set(codebook.label_names)
        assert math.isclose(sum(p.probs.values()), 1.0, abs_tol=1e-5)
        assert p.confidence == pytest.approx(max(p.probs.values()))
    assert stats.docs == 2 and stats.truncated_docs == 0
    # bf16 agrees with fp32 on the decision
    bf16 = LocalBackend("smollm2", dtype="bf16")
    assert bf16.dtype == torch.bfloat16
    preds16, _ = bf16.label(docs, builder, "constrained", progress=False)
    assert [p.label for p in preds16] == [p.label for p in preds]
    for p in preds16:
        assert math.isclose(sum(p.probs.values()), 1.0, abs_tol=1e-4)


def test_end_of_turn_is_scored_only_where_an_option_is_a_prefix_of_another(backend):
    b = backend if not isinstance(backend, tuple) else backend[0]
    eot = "<|im_end|>"
    plain = b.option_ids(("business", "sport"), eot)
    assert plain == [b.encode("business"), b.encode("sport")]
    assert b.encode("sport news")[:2] == b.encode("sport")  # a token-level prefix
    ambiguous = b.option_ids(("sport", "sport news"), eot)
    assert ambiguous == [b.encode("sport" + eot), b.encode("sport news" + eot)]

