"""``multi``: between one and ``max_labels`` labels out of N.

The label value is a ``tuple[str, ...]`` of canonical names in codebook order, without duplicates. Prompts
ask for a JSON list; constrained answering asks a yes/no question per label; the headline metric is
micro-F1, next to macro-F1, Jaccard, Hamming loss and exact match.
"""

from __future__ import annotations

import json
import re
from typing import TYPE_CHECKING, Any

import numpy as np
from sklearn.metrics import f1_score, hamming_loss, precision_recall_fscore_support
from sklearn.preprocessing import MultiLabelBinarizer

from annotune.evaluation import metrics as M
from annotune.tasks.base import (
    CellReader, ParsedAnswer, Question, TaskKind, gbnf_json_string, ordered_list_grammar)
from annotune.tasks.text import (
    balanced_end,
    clean,
    invalid,
    json_block,
    loads,
    match_label,
    normalise,
    short,
    shown,
    strip_edges,
    strip_emphasis,
)

if TYPE_CHECKING:
    from annotune.codebook import Codebook


# ----------------------------------------------------------------------------------- parsing
_MULTI_KEYS = ("labels", "label", "categories", "category", "topics", "topic", "answer", "answers")
_BULLET = re.compile(r"^\s*(?:[-*•+·]|\d{1,2}[.)]|\(\d{1,2}\))\s+")
_AND = re.compile(r"\s+(?:and|&|\+)\s+|\s*&\s*", re.I)
_LEADING_AND = re.compile(r"^(?:and|&)\s+", re.I)


def _multi_items_from_json(value: Any) -> tuple[list[Any] | None, str | None]:
    if isinstance(value, dict):
        lowered = {normalise(str(k)): v for k, v in value.items()}
        for key in _MULTI_KEYS:
            if key in lowered:
                return _multi_items_from_json(lowered[key])
        lists = [v for v in value.values() if isinstance(v, (list, str))]
        if len(value) == 1 and lists:
            return _multi_items_from_json(lists[0])
        if value and all(isinstance(v, bool) for v in value.values()):  # {"tech": true, ...}
            return [k for k, v in value.items() if v], None
        return None, "JSON object has no 'labels' list"
    if isinstance(value, list):
        return list(value), None
    if isinstance(value, str):
        return _split_items(value), None
    return None, f"expected a list of labels, got {shown(value)}"


def _split_items(text: str) -> list[str]:
    """Split a plain-text list (bullets, numbers, commas, semicolons, new lines)."""
    items: list[str] = []
    for line in text.splitlines():
        line = _BULLET.sub("", line)
        items.extend(re.split(r"[,;]", line))
    return items


def _parse_multi(raw: str, codebook: Codebook) -> ParsedAnswer:
    text = clean(raw)
    if not text:
        return invalid(raw, "empty answer")
    items: list[Any] | None = None
    if text[0] in "{[":
        end = balanced_end(text, 0)
        if end is None:
            return invalid(raw, "truncated or malformed JSON")
        ok, value = loads(text[:end])
        if ok:
            items, error = _multi_items_from_json(value)
            if items is None:
                return invalid(raw, error or "invalid JSON answer")
        elif text[0] == "[" and end == len(text):  # [business, tech]: a bracketed plain list
            items = _split_items(text[1:-1])
        else:
            return invalid(raw, "malformed JSON")
    else:
        m = re.search(r"\[\s*[\"']", text)  # a JSON list after some words
        if m:
            status, value, _ = json_block(text[m.start() :], "[")
            if status == "ok" and isinstance(value, list):
                items = list(value)
            elif status == "truncated":
                return invalid(raw, "truncated JSON list")
    if items is None:
        items = _split_items(text)

    names: list[str] = []
    for item in items:
        if not isinstance(item, str):
            return invalid(raw, f"list item {shown(item)} is not a label")
        piece = _LEADING_AND.sub("", strip_edges(strip_emphasis(_BULLET.sub("", item))))
        if not piece:
            continue
        name = match_label(codebook, piece)
        if name is not None:
            names.append(name)
            continue
        for part in _AND.split(piece):
            part = strip_edges(part)
            if not part:
                continue
            name = match_label(codebook, part)
            if name is None:
                return invalid(raw, f"unknown label {short(part)}")
            names.append(name)
    distinct = set(names)
    if not distinct:
        return invalid(raw, "no labels")
    limit = codebook.max_labels or len(codebook.labels)
    if len(distinct) > limit:
        return invalid(raw, f"too many labels ({len(distinct)} > max {limit})")
    return ParsedAnswer(tuple(n for n in codebook.label_names if n in distinct), raw)


# ----------------------------------------------------------------------------------- the kind
class MultiTask(TaskKind):
    """Between one and ``max_labels`` labels out of N."""

    name = "multi"
    description = "multi-label"
    primary_metric = "micro_f1"
    primary_name = "micro-F1"
    settings = ("max_labels",)
    constrained_words = ", with a yes/no question per label"
    threshold_option = 0
    max_new_tokens = 64
    table_columns = (("Exact (valid)", "accuracy_valid", False), ("Exact (all)", "accuracy", False),
                     ("Micro-F1 [95% CI]", "micro_f1", True), ("Macro-F1", "macro_f1", False),
                     ("Jaccard", "jaccard", False))
    data_format = "kind 'multi' expects a list of label names (a JSON list, or a string like 'a; b')"

    @classmethod
    def validate(cls, task: dict, labels: list, fail) -> dict[str, Any]:
        max_labels = task.get("max_labels")
        if max_labels is None:
            max_labels = len(labels)
        if not isinstance(max_labels, int) or isinstance(max_labels, bool) or max_labels < 1:
            raise fail("max_labels must be a positive integer", "task.max_labels")
        if max_labels > len(labels):
            raise fail(f"max_labels ({max_labels}) > number of labels ({len(labels)})", "task.max_labels")
        return {"max_labels": max_labels}

    @property
    def limit(self) -> int:
        """The most labels an answer may have."""
        return self.codebook.max_labels or len(self.codebook.labels)

    # ------------------------------------------------------------------ prompts
    def answer_format(self) -> str:
        cb = self.codebook
        return (
            f"Answer with a JSON list of between 1 and {cb.max_labels} category names, "
            f'for example ["{cb.label_names[0]}"], and nothing else.'
        )

    def main_question(self) -> str:
        return f"Which categories (at most {self.codebook.max_labels}) fit this text? Answer with a JSON list."

    def constrained_questions(self) -> list[Question]:
        return [
            Question(f'Does the category "{lab.name}" apply to this text? Answer yes or no.', ("yes", "no"), lab.name)
            for lab in self.codebook.labels
        ]

    def option_targets(self, label: tuple[str, ...]) -> list[str]:
        return ["yes" if name in label else "no" for name in self.codebook.label_names]

    def decide(self, option_probs: list[np.ndarray]) -> tuple[tuple[str, ...], float, dict]:
        names = self.codebook.label_names
        p_yes = np.array([p[0] for p in option_probs])
        order = np.argsort(-p_yes, kind="stable")
        chosen = [int(i) for i in order[: self.codebook.max_labels] if p_yes[i] > 0.5] or [int(order[0])]
        label = tuple(name for i, name in enumerate(names) if i in chosen)
        confidence = float(min(max(p, 1 - p) for p in p_yes))
        return label, confidence, {name: float(v) for name, v in zip(names, p_yes)}

    def example_stratum(self, label: tuple[str, ...]) -> str:
        return label[0] if label else ""

    def split_stratum(self, label: tuple[str, ...]) -> str:
        return label[0] if label else ""

    # ------------------------------------------------------------------ answers
    def parse(self, raw: str) -> ParsedAnswer:
        return _parse_multi(raw, self.codebook)

    def answer_text(self, label: tuple[str, ...]) -> str:
        cb = self.codebook
        if isinstance(label, str) or not isinstance(label, (tuple, list, set, frozenset)):
            raise ValueError(f"a multi-label value must be a tuple of labels, not {label!r}")
        names = set()
        for item in label:
            name = cb.canonical_label(item) if isinstance(item, str) else None
            if name is None:
                raise ValueError(f"not a label of {cb.name!r}: {item!r}")
            names.add(name)
        if not names:
            raise ValueError("a multi-label value needs at least one label")
        return json.dumps([n for n in cb.label_names if n in names], ensure_ascii=False)

    def read_label(self, raw: Any, cells: CellReader) -> tuple[str, ...]:
        cb = self.codebook
        names = {cells.name(item) for item in self._cell_items(raw, cells)}
        if not names:
            raise cells.fail("empty label list (kind 'multi' needs at least one label per row)")
        ordered = tuple(n for n in cb.label_names if n in names)
        if cb.max_labels is not None and len(ordered) > cb.max_labels:
            raise cells.fail(f"{len(ordered)} labels ({', '.join(ordered)}) but the codebook allows "
                             f"max_labels = {cb.max_labels}")
        return ordered

    def _cell_items(self, raw: Any, cells: CellReader) -> list[Any]:
        """The items of a multi-label cell: a list, a JSON list, or a string split at ; | or ,."""
        if isinstance(raw, dict):
            raise cells.fail(f"{self.data_format}; got a JSON object")
        if isinstance(raw, (list, tuple)):
            return [x for x in raw if not cells.missing(x)]
        if hasattr(raw, "tolist") and not isinstance(raw, (str, bytes)):
            return self._cell_items(raw.tolist(), cells)
        s = cells.text(raw)
        if s.startswith("["):
            try:
                parsed = json.loads(s)
            except ValueError as exc:
                raise cells.fail(f"invalid JSON list ({exc.msg} at char {exc.pos}); {self.data_format}") from None
            if not isinstance(parsed, list):
                raise cells.fail(f"{self.data_format}; got {cells.describe(parsed)}")
            return [x for x in parsed if not cells.missing(x)]
        if s.startswith("{"):
            raise cells.fail(f"{self.data_format}; got a JSON object")
        if cells.is_label(s):
            return [s]  # a single label, possibly containing a delimiter character
        for sep in (";", "|", ","):
            if sep in s:
                return [p.strip() for p in s.split(sep) if p.strip()]
        return [s]

    def answer_grammar(self) -> str:
        names = [gbnf_json_string(n) for n in self.codebook.label_names]
        return ordered_list_grammar(names, open="[", close="]", empty=False)

    def answer_schema(self) -> dict:
        names = list(self.codebook.label_names)
        props = {"labels": {"type": "array", "items": {"type": "string", "enum": names}, "minItems": 1,
                            "maxItems": int(self.codebook.max_labels or len(names))}}
        return {"type": "object", "properties": props, "required": list(props), "additionalProperties": False}

    def structured_text(self, label: tuple[str, ...]) -> str:
        return json.dumps({"labels": list(label)})

    def example_labels(self) -> list[tuple[str, ...]]:
        names = self.codebook.label_names
        out = [(name,) for name in names]
        for combo in (tuple(names[: self.limit]), tuple(names[-self.limit:])):
            if combo not in out:
                out.append(combo)
        return out

    def label_to_json(self, label: tuple[str, ...] | None) -> list[str] | None:
        return None if label is None else list(label)

    def label_from_json(self, value: Any) -> tuple[str, ...] | None:
        return None if value is None else tuple(value)

    def label_items(self, label: tuple[str, ...]) -> dict[str, str]:
        """One item per label present: ``{label: "yes"}``."""
        return {name: "yes" for name in label}

    def read_item(self, item: Any, value: Any, cells: CellReader) -> tuple[str, str]:
        """The label named by the item cell, else by the value cell: ``(label, "yes")``."""
        return cells.name(value if item is None or cells.missing(item) else item), "yes"

    def merge_items(self, accepted: dict[str, list[str]]) -> tuple[str, ...]:
        """The accepted labels, in codebook order (none accepted: the empty set, a verified answer)."""
        return tuple(n for n in self.codebook.label_names if "yes" in accepted.get(n, []))

    # ------------------------------------------------------------------ evaluation
    def metrics(self, gold: list, pred: list, n: int, *, n_boot: int, seed: int, ci: float) -> dict:
        labels = self.codebook.label_names
        known = set(labels)
        gold_sets = [M.label_set(gv, f"gold labels of document {i}", known, labels) for i, gv in enumerate(gold)]
        pred_sets = [
            set() if pv is None else M.label_set(pv, f"prediction for document {i}", known, labels)
            for i, pv in enumerate(pred)
        ]
        valid = np.array([pv is not None for pv in pred], dtype=bool)
        mlb = MultiLabelBinarizer(classes=labels)
        Y = mlb.fit_transform(gold_sets).astype(bool)
        P = mlb.transform(pred_sets).astype(bool)  # INVALID rows are all False

        tp = Y & P
        fp = P & ~Y
        fn = Y & ~P
        exact = (Y == P).all(axis=1) & valid
        hit = tp.any(axis=1) & valid
        res = M.common_fields("multi", n, valid, "micro_f1", n_boot, ci)
        res["micro_f1"] = float(f1_score(Y, P, average="micro", zero_division=0))
        res["macro_f1"] = float(f1_score(Y, P, average="macro", zero_division=0))
        res["jaccard"] = M.mean_jaccard(Y, P, valid)
        hl_valid = hamming_loss(Y[valid], P[valid]) * valid.sum() if valid.any() else 0.0
        res["hamming_loss"] = float((hl_valid + (~valid).sum()) / n)
        res["exact_match"] = float(exact.mean())
        res["at_least_one"] = float(hit.mean())
        res["accuracy"] = res["exact_match"]
        res["accuracy_valid"] = float(exact[valid].mean()) if valid.any() else None
        prec, rec, f1, sup = precision_recall_fscore_support(Y, P, average=None, zero_division=0)
        res["per_class"] = {
            lab: {"precision": float(prec[k]), "recall": float(rec[k]), "f1": float(f1[k]), "support": int(sup[k])}
            for k, lab in enumerate(labels)
        }

        tp_c, fp_c, fn_c = tp.astype(np.int32), fp.astype(np.int32), fn.astype(np.int32)
        tp_d, fp_d, fn_d = tp_c.sum(1), fp_c.sum(1), fn_c.sum(1)

        def micro(idx: np.ndarray) -> float:
            return float(M.safe_f1(tp_d[idx].sum(), fp_d[idx].sum(), fn_d[idx].sum()))

        def macro(idx: np.ndarray) -> float:
            return float(M.safe_f1(tp_c[idx].sum(0), fp_c[idx].sum(0), fn_c[idx].sum(0)).mean())

        res["micro_f1_ci"] = M.ci_or_none(micro, n, n_boot, seed, ci)
        res["macro_f1_ci"] = M.ci_or_none(macro, n, n_boot, seed, ci)
        return res

    def primary_counts(self, gold: list, pred: list) -> np.ndarray:
        """One group (micro-F1)."""
        out = np.zeros((len(gold), 1, 3))
        for i, (g, p) in enumerate(zip(gold, pred)):
            gs, ps = set(g), set(p or ())
            tp = len(gs & ps)
            out[i, 0] = (tp, len(ps) - tp, len(gs) - tp)
        return out
