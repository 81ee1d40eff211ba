"""``single``: exactly one label out of N.

The label value is a ``str``, the canonical label name. Prompts ask for the category name; constrained
answering scores every label name; the headline metric is macro-F1 over all codebook labels, with a
confusion matrix (INVALID as its own column) and Cohen's kappa.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import numpy as np
from sklearn.metrics import confusion_matrix, f1_score, precision_recall_fscore_support

from annotune.evaluation import metrics as M
from annotune.tasks.base import (
    COLLAPSE_MIN_DOCS, KAPPA_NEAR_ZERO, CellReader, ParsedAnswer, Question, TaskKind, gbnf_literal)
from annotune.tasks.text import (
    balanced_end,
    clean,
    invalid,
    loads,
    match_label,
    mentions,
    normalise,
    short,
    shown,
    strip_edges,
    strip_emphasis,
)

if TYPE_CHECKING:
    from annotune.codebook import Codebook


# ----------------------------------------------------------------------------------- parsing
_SINGLE_KEYS = ("label", "category", "topic", "answer", "class", "classification", "prediction")


def _single_from_json(value: Any, codebook: Codebook) -> tuple[str | None, str | None]:
    """(label, error) for a parsed JSON single-label answer."""
    if isinstance(value, dict):
        if len(value) == 1:
            value = next(iter(value.values()))
        else:
            lowered = {normalise(str(k)): v for k, v in value.items()}
            for key in _SINGLE_KEYS:
                if key in lowered:
                    value = lowered[key]
                    break
            else:
                return None, "JSON object has no 'label' field"
    if isinstance(value, list):
        if not value:
            return None, "empty list, expected one label"
        names: list[str] = []
        for item in value:
            if not isinstance(item, str):
                return None, f"list item {shown(item)} is not a label"
            name = match_label(codebook, strip_edges(item))
            if name is None:
                return None, f"unknown label {short(item)}"
            if name not in names:
                names.append(name)
        if len(names) > 1:
            return None, f"expected one label, got {len(names)}: {', '.join(names)}"
        return names[0], None
    if isinstance(value, str):
        cleaned = strip_edges(strip_emphasis(value))
        if not cleaned:
            return None, "empty label"
        name = match_label(codebook, cleaned)
        if name is None:
            return None, f"unknown label {short(cleaned)}"
        return name, None
    return None, f"expected a label, got {shown(value)}"


def _parse_single(raw: str, codebook: Codebook) -> ParsedAnswer:
    text = clean(raw)
    if not text:
        return invalid(raw, "empty answer")
    name = match_label(codebook, text)
    if name is not None:
        return ParsedAnswer(name, raw)
    if text[0] in "{[":
        end = balanced_end(text, 0)
        if end is None:
            return invalid(raw, "truncated or malformed JSON")
        ok, value = loads(text[:end])
        if ok:
            label, error = _single_from_json(value, codebook)
            return ParsedAnswer(label, raw) if label else invalid(raw, error or "invalid JSON answer")
        # balanced but not JSON, e.g. "[tech]": fall through to mention search
    # a first line that is exactly a label, followed by an explanation
    lines = [ln for ln in (strip_edges(x) for x in text.splitlines()) if ln]
    if len(lines) > 1:
        name = match_label(codebook, lines[0])
        if name is not None:
            return ParsedAnswer(name, raw)
    found = mentions(codebook, text)
    if len(found) == 1:
        return ParsedAnswer(found[0], raw)
    if len(found) > 1:
        return invalid(raw, f"ambiguous: mentions {', '.join(found)}")
    return invalid(raw, f"no known label in {short(text)}")


# ----------------------------------------------------------------------------------- the kind
class SingleTask(TaskKind):
    """Exactly one label out of N."""

    name = "single"
    description = "single-label"
    primary_metric = "macro_f1"
    primary_name = "macro-F1"
    max_new_tokens = 24
    table_columns = (("Acc (valid)", "accuracy_valid", False), ("Acc (all)", "accuracy", False),
                     ("Macro-F1 [95% CI]", "macro_f1", True), ("κ", "kappa", False))
    data_format = "kind 'single' expects one label name per row, as a string"

    @classmethod
    def validate(cls, task: dict, labels: list, fail) -> dict[str, Any]:
        if len(labels) < 2:
            raise fail("a single-label task needs at least two labels", "labels")
        return {}

    # ------------------------------------------------------------------ prompts
    def answer_format(self) -> str:
        names = ", ".join(self.codebook.label_names)
        return f"Answer with exactly one category name ({names}) and nothing else."

    def main_question(self) -> str:
        return "Which category fits this text best? Answer with the category name only."

    def constrained_questions(self) -> list[Question]:
        return [Question(self.main_question(), tuple(self.codebook.label_names))]

    def option_targets(self, label: str) -> list[str]:
        return [label]

    def decide(self, option_probs: list[np.ndarray]) -> tuple[str, float, dict]:
        names = self.codebook.label_names
        p = option_probs[0]
        best = int(np.argmax(p))
        probs = {name: float(v) for name, v in zip(names, p)}
        return names[best], float(p[best]), probs

    def warnings(self, gold: list, pred: list, metrics: dict) -> list[str]:
        out = super().warnings(gold, pred, metrics)
        k = metrics.get("kappa")
        if k is not None and abs(k) < KAPPA_NEAR_ZERO and len(gold) >= COLLAPSE_MIN_DOCS and not out:
            out.append(f"κ = {k:.2f}: agreement with the gold labels is no better than chance. Check that the "
                       "model answers with the codebook's labels (valid rate), train longer, or try type = "
                       "\"head\" / \"embedding\"")
        return out

    def missing_training_labels(self, labels: list) -> list[str]:
        seen = set(labels)
        return [name for name in self.codebook.label_names if name not in seen]

    def min_training_examples(self) -> int:
        return len(self.codebook.labels)

    # ------------------------------------------------------------------ answers
    def parse(self, raw: str) -> ParsedAnswer:
        return _parse_single(raw, self.codebook)

    def answer_text(self, label: str) -> str:
        cb = self.codebook
        if not isinstance(label, str) or cb.canonical_label(label) is None:
            raise ValueError(f"not a label of {cb.name!r}: {label!r}")
        return cb.canonical_label(label)  # type: ignore[return-value]

    def label_items(self, label: str) -> dict[str, str]:
        return {"": label}

    def merge_items(self, accepted: dict[str, list[str]]) -> str | None:
        values = set(accepted.get("", []))
        return values.pop() if len(values) == 1 else None

    def read_item(self, item: Any, value: Any, cells: CellReader) -> tuple[str, str]:
        return "", cells.name(value)

    def read_label(self, raw: Any, cells: CellReader) -> str:
        if isinstance(raw, str) and raw.strip()[:1] in ("[", "{"):
            try:
                parsed = json.loads(raw)
            except ValueError:
                parsed = None
            if isinstance(parsed, (list, dict)):
                raw = parsed
        if isinstance(raw, (list, tuple, dict)):
            raise cells.fail(f"{self.data_format}; got {cells.describe(raw)}")
        return cells.name(raw)

    def answer_grammar(self) -> str:
        return "root ::= " + " | ".join(gbnf_literal(name) for name in self.codebook.label_names)

    def answer_schema(self) -> dict:
        props = {"label": {"type": "string", "enum": list(self.codebook.label_names)}}
        return {"type": "object", "properties": props, "required": list(props), "additionalProperties": False}

    def structured_text(self, label: str) -> str:
        return json.dumps({"label": label})

    def example_labels(self) -> list[str]:
        return list(self.codebook.label_names)

    # ------------------------------------------------------------------ evaluation
    def metrics(self, gold: list, pred: list, n: int, *, n_boot: int, seed: int, ci: float) -> dict:
        labels = self.codebook.label_names
        INVALID = M.INVALID
        if INVALID in labels:
            raise ValueError(f"a codebook label may not be called {INVALID!r}: it is reserved for unparseable answers")
        index = {lab: i for i, lab in enumerate(labels)}
        L = len(labels)
        g = np.empty(n, dtype=int)
        p = np.empty(n, dtype=int)
        for i, (gv, pv) in enumerate(zip(gold, pred)):
            if not isinstance(gv, str) or gv not in index:
                raise M.unknown_value(gv, f"gold label of document {i}", labels)
            g[i] = index[gv]
            if pv is None:
                p[i] = L  # INVALID
            elif isinstance(pv, str) and pv in index:
                p[i] = index[pv]
            else:
                raise M.unknown_value(pv, f"prediction for document {i}", labels)
        valid = p < L
        correct = g == p
        gold_names = [labels[k] for k in g]
        pred_names = [labels[k] if k < L else INVALID for k in p]

        res = M.common_fields("single", n, valid, "macro_f1", n_boot, ci)
        res["accuracy"] = float(correct.mean())
        res["accuracy_valid"] = float(correct[valid].mean()) if valid.any() else None
        res["macro_f1"] = float(f1_score(gold_names, pred_names, labels=labels, average="macro", zero_division=0))
        prec, rec, f1, sup = precision_recall_fscore_support(
            gold_names, pred_names, labels=labels, average=None, zero_division=0
        )
        res["per_class"] = {
            lab: {"precision": float(prec[k]), "recall": float(rec[k]), "f1": float(f1[k]), "support": int(sup[k])}
            for k, lab in enumerate(labels)
        }
        columns = [*labels, INVALID]
        cm = confusion_matrix(gold_names, pred_names, labels=columns)[:L]  # gold is never INVALID
        res["confusion"] = {"rows": list(labels), "columns": columns, "matrix": cm.astype(int).tolist()}
        res["kappa"] = M.kappa(g.tolist(), p.tolist())

        # bootstrap: per-class counts from bincounts over the resampled documents
        def acc(idx: np.ndarray) -> float:
            return float(correct[idx].mean())

        def macro(idx: np.ndarray) -> float:
            gi, pi, ci_ = g[idx], p[idx], correct[idx]
            tp = np.bincount(gi[ci_], minlength=L)
            n_gold = np.bincount(gi, minlength=L)
            n_pred = np.bincount(pi, minlength=L + 1)[:L]
            return float(M.safe_f1(tp, n_pred - tp, n_gold - tp).mean())

        res["accuracy_ci"] = M.ci_or_none(acc, n, n_boot, seed, ci)
        res["macro_f1_ci"] = M.ci_or_none(macro, n, n_boot, seed, ci)
        return res

    def primary_counts(self, gold: list, pred: list) -> np.ndarray:
        """One group per label (macro-F1)."""
        labels = self.codebook.label_names
        index = {lab: i for i, lab in enumerate(labels)}
        out = np.zeros((len(gold), len(labels), 3))
        for i, (g, p) in enumerate(zip(gold, pred)):
            gi = index[g]
            if p is None:
                out[i, gi, 2] = 1
            elif p == g:
                out[i, gi, 0] = 1
            else:
                out[i, index[p], 1] = 1
                out[i, gi, 2] = 1
        return out
