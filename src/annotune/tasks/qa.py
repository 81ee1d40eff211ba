"""``qa``: open question answering. The "label" of a document is its reference answer, a free text.

A qa codebook has no ``[[labels]]``: the document is the question (``text_field``, default ``question``),
the reference answer sits in ``label_field`` (default ``answer``). Models answer in free text
(`generate` only: there are no options to score), fine-tuning learns the reference answers (the loss on
the answer tokens only), and the headline metric is ROUGE-L F1 against the reference (Google's
``rouge-score``, Porter stemming), an empty answer counted INVALID and scored 0. ROUGE-L is the judge-free
cross-check; ``annotune judge`` and a comparison's ``[judge]`` table grade the answers with an LLM judge.
"""

from __future__ import annotations

import functools
import json
from typing import Any, ClassVar

import numpy as np

from annotune.evaluation import metrics as M
from annotune.tasks.base import CellReader, ParsedAnswer, Question, TaskKind

ANSWER_KEYS = ("answer", "response", "text")


@functools.cache
def _scorer():
    from rouge_score import rouge_scorer

    return rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)


def rouge_l(prediction: str, reference: str) -> float:
    """ROUGE-L F1 of one answer against its reference (``rouge-score``, stemmed, case-folded)."""
    return float(_scorer().score(reference, prediction)["rougeL"].fmeasure)


def _words(text: str | None) -> int:
    return len(text.split()) if text else 0


class QATask(TaskKind):
    """Questions answered in free text; the reference answer is the label."""

    name = "qa"
    description = "open question answering"
    primary_metric = "rouge_l"
    primary_name = "ROUGE-L"
    open_answers = True
    default_text_field = "question"
    default_label_field = "answer"
    text_heading = "Question"
    labels_heading = "Reference answers"
    item_word = "question"
    items_word = "questions"
    per_item_key = "per_question"
    per_item_metric = "ROUGE-L"
    max_new_tokens = 256
    data_format = "a reference answer (text)"
    table_columns: ClassVar[tuple[tuple[str, str, bool], ...]] = (
        ("ROUGE-L", "rouge_l", True),
        ("ROUGE-L (valid)", "rouge_l_valid", False),
        ("Words", "mean_words", False),
        ("Judge [95% CI]", "judge_score", True),  # a comparison's [judge]: mean verdict on the valid answers
        ("Judge E[score]", "judge_expected", False),  # probability-weighted, where the judge gives logprobs
        ("Unparsed verdicts", "judge_unparsed", False),
    )

    @classmethod
    def table_cells(cls, metrics: dict) -> list[str]:
        cells = super().table_cells(metrics)
        unparsed, words = metrics.get("judge_unparsed"), metrics.get("mean_words")
        cells[2] = "–" if words is None else f"{words:.0f}"
        cells[-1] = "–" if unparsed is None else f"{unparsed}/{metrics.get('judge_calls', 0)}"
        return cells

    # ------------------------------------------------------------------ prompts
    def answer_format(self) -> str:
        return ("Answer the question accurately and completely, in plain prose. If the question cannot be "
                "answered, say so.")

    def main_question(self) -> str:
        return "Answer the question."

    def constrained_questions(self) -> list[Question]:
        return []  # free text: nothing to score option by option

    def option_targets(self, label: Any) -> list[str]:
        return []

    def decide(self, option_probs: list[np.ndarray]):
        raise NotImplementedError("qa answers are generated, not chosen among options")

    def example_stratum(self, label: Any) -> str:
        return ""

    def split_stratum(self, label: Any) -> str:
        return ""

    # ------------------------------------------------------------------ answers
    def parse(self, raw: str) -> ParsedAnswer:
        text = (raw or "").strip()
        if text.startswith("{") and text.endswith("}"):  # a structured answer {"answer": "..."}
            try:
                value = json.loads(text)
            except json.JSONDecodeError:
                value = None
            if isinstance(value, dict):
                found = next((value[k] for k in ANSWER_KEYS if isinstance(value.get(k), str)), None)
                if found is None:
                    return ParsedAnswer(None, raw, "JSON answer without an 'answer' text")
                text = found.strip()
        if not text:
            return ParsedAnswer(None, raw, "empty answer")
        return ParsedAnswer(text, raw)

    def answer_text(self, label: Any) -> str:
        if not isinstance(label, str) or not label.strip():
            raise ValueError(f"a qa answer is a non-empty text, not {label!r}")
        return label.strip()

    def answer_schema(self) -> dict:
        return {"type": "object", "properties": {"answer": {"type": "string"}}, "required": ["answer"],
                "additionalProperties": False}

    def structured_text(self, label: Any) -> str:
        return json.dumps({"answer": self.answer_text(label)}, ensure_ascii=False)

    def example_labels(self) -> list[str]:
        return ["Iron deficiency anaemia is a lack of red blood cells caused by too little iron.",
                "See a doctor if the symptoms last longer than two weeks."]

    def read_label(self, raw: Any, cells: CellReader) -> str:
        text = cells.text(raw)
        if not text:
            raise cells.fail("the reference answer is empty")
        return text

    # ------------------------------------------------------------------ review items: the answer as written
    def label_items(self, label: Any) -> dict[str, str]:
        return {"": self.answer_text(label)}

    def merge_items(self, accepted: dict[str, list[str]]) -> str | None:
        values = set(accepted.get("", []))
        return values.pop() if len(values) == 1 else None

    # ------------------------------------------------------------------ evaluation
    def metrics(self, gold: list, pred: list, n: int, *, n_boot: int, seed: int, ci: float) -> dict:
        for i, g in enumerate(gold):
            if not isinstance(g, str):
                raise ValueError(f"gold answer of document {i} is not a text: {g!r}")
        valid = np.array([isinstance(p, str) and bool(p.strip()) for p in pred])
        for i, p in enumerate(pred):
            if p is not None and not isinstance(p, str):
                raise ValueError(f"prediction for document {i} is not a text or None: {p!r}")
        scores = np.array([rouge_l(p, g) if ok else 0.0 for p, g, ok in zip(pred, gold, valid)])
        exact = np.array([ok and " ".join(p.split()).lower() == " ".join(g.split()).lower()
                          for p, g, ok in zip(pred, gold, valid)])
        res = M.common_fields(self.name, n, valid, self.primary_metric, n_boot, ci)
        res["rouge_l"] = float(scores.mean())
        res["rouge_l_ci"] = M.ci_or_none(lambda idx: float(scores[idx].mean()), n, n_boot, seed, ci)
        res["rouge_l_valid"] = float(scores[valid].mean()) if valid.any() else None
        res["accuracy"] = float(exact.mean())  # exact match (whitespace and case folded)
        res["accuracy_valid"] = float(exact[valid].mean()) if valid.any() else None
        res["macro_f1"] = None  # no classes
        res["mean_words"] = float(np.mean([_words(p) for p, ok in zip(pred, valid) if ok])) if valid.any() else None
        res["mean_reference_words"] = float(np.mean([_words(g) for g in gold]))
        res["rouge_l_per_document"] = [round(float(s), 4) for s in scores]
        return res

    def primary_counts(self, gold: list, pred: list) -> np.ndarray:
        raise NotImplementedError("ROUGE-L is a mean of per-document scores, not an F1 of summed counts: qa "
                                  "tasks have no learning curve by counts")


__all__ = ["QATask", "rouge_l"]
