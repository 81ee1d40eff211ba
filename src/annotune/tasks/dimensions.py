"""``dimensions``: any subset of named dimensions, each with a value on an ordinal ``scale``.

The label value is a ``dict[str, str]`` ``{dimension name: scale value}`` holding only the dimensions that
are present (e.g. 46 flourishing dimensions x low/medium/high). Prompts ask for a JSON object; constrained
answering asks one absent/scale question per dimension; the headline metric is intensity micro-F1 (a
(dimension, value) pair predicted exactly), next to presence F1, accD, Jaccard and exact match.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import numpy as np
from sklearn.metrics import f1_score, precision_recall_fscore_support

from annotune.evaluation import metrics as M
from annotune.tasks.base import (
    CellReader, ParsedAnswer, Question, TaskKind, gbnf_json_string, ordered_list_grammar)
from annotune.tasks.text import (
    invalid,
    json_block,
    match_label,
    normalise,
    short,
    shown,
    strip_chat,
    strip_fences,
)

if TYPE_CHECKING:
    from annotune.codebook import Codebook

NONE_VALUE = "none"


def absent_value(codebook: Codebook) -> str:
    """The answer meaning "dimension not present": "none", or "absent" if "none" is itself on the scale."""
    return "absent" if codebook.canonical_value(NONE_VALUE) is not None else NONE_VALUE


def dimension_values(codebook: Codebook) -> tuple[str, ...]:
    """The answers to a per-dimension question: absent, then the scale."""
    return (absent_value(codebook), *codebook.scale)


# ----------------------------------------------------------------------------------- parsing
_ABSENT = {"", "none", "absent", "n a", "na", "null", "nil", "not present", "not applicable", "no", "false", "0"}
_WRAPPERS = {"dimensions", "labels", "label", "answer", "output", "result", "results", "annotations", "annotation"}
_DIM_KEYS = ("dimension", "name", "label", "dim", "key")
_VALUE_KEYS = ("value", "intensity", "level", "score", "rating")
_ABSENT_MARK = object()


def _field(obj: dict, keys: tuple[str, ...]) -> tuple[bool, Any]:
    lowered = {normalise(str(k)): v for k, v in obj.items()}
    for key in keys:
        if key in lowered:
            return True, lowered[key]
    return False, None


def _dim_value(value: Any, codebook: Codebook) -> Any:
    """The canonical scale value, ``_ABSENT_MARK``, or None when the value is not on the scale."""
    if isinstance(value, dict):
        found, inner = _field(value, _VALUE_KEYS)
        return _dim_value(inner, codebook) if found else None
    if value is None or value is False:
        return _ABSENT_MARK
    if value is True or isinstance(value, (list, tuple)):
        return None
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    text = str(value)
    hit = codebook.canonical_value(text)
    if hit is not None:
        return hit
    if normalise(text) in _ABSENT:
        return _ABSENT_MARK
    return None


def _parse_dimensions(raw: str, codebook: Codebook) -> ParsedAnswer:
    text = strip_fences(strip_chat(raw)).strip()
    if not text:
        return invalid(raw, "empty answer")
    status, value, _ = json_block(text)
    problems = {"none": "no JSON object found", "truncated": "truncated JSON (never closed)", "bad": "malformed JSON"}
    if status in problems:
        return invalid(raw, problems[status])

    # {"dimensions": {...}} wrapper
    if isinstance(value, dict) and len(value) == 1:
        (key, inner), = value.items()
        if isinstance(inner, (dict, list)) and normalise(str(key)) in _WRAPPERS and not match_label(codebook, str(key)):
            value = inner

    pairs: list[tuple[Any, Any]]
    if isinstance(value, dict):
        pairs = list(getattr(value, "pairs", value.items()))
    elif isinstance(value, list):
        pairs = []
        for item in value:
            if not isinstance(item, dict):
                return invalid(raw, "expected a JSON object of dimensions")
            has_dim, dim = _field(item, _DIM_KEYS)
            has_val, val = _field(item, _VALUE_KEYS)
            if not has_dim:
                return invalid(raw, f"list entry without a dimension: {shown(item)}")
            if not has_val:
                return invalid(raw, f"list entry without a value for {short(dim)}")
            pairs.append((dim, val))
    else:
        return invalid(raw, "expected a JSON object of dimensions")

    seen: dict[str, Any] = {}
    for key, val in pairs:
        if not isinstance(key, str):
            key = str(key)
        dim = match_label(codebook, key)
        if dim is None:
            return invalid(raw, f"unknown dimension {short(key)}")
        canon = _dim_value(val, codebook)
        if canon is None:
            val_text = val if isinstance(val, str) else json.dumps(val, ensure_ascii=False, default=str)
            return invalid(raw, f"unknown value {short(val_text)} for {dim!r}")
        if dim in seen and seen[dim] != canon:
            return invalid(raw, f"conflicting values for {dim!r}")
        seen[dim] = canon
    label = {d: seen[d] for d in codebook.label_names if d in seen and seen[d] is not _ABSENT_MARK}
    return ParsedAnswer(label, raw)


# ----------------------------------------------------------------------------------- the kind
class DimensionsTask(TaskKind):
    """Named dimensions, each absent or with a value on the codebook's scale."""

    name = "dimensions"
    description = "multi-dimension (with an intensity scale)"
    primary_metric = "intensity_micro_f1"
    primary_name = "intensity micro-F1"
    settings = ("scale",)
    default_label_field = "labels"
    labels_heading = "Dimensions"
    item_word = "dimension"
    items_word = "dimensions"
    per_item_key = "per_dimension"
    per_item_score_key = "presence_f1"
    per_item_metric = "presence F1"
    constrained_words = ", with a question per dimension"
    threshold_option = 0
    max_new_tokens = 384
    table_columns = (("Presence µF1", "presence_micro_f1", False),
                     ("Intensity µF1 [95% CI]", "intensity_micro_f1", True),
                     ("accD", "accD", False), ("accI", "accI", False), ("Jaccard", "jaccard", False))
    empty_label_hint = ", or write {} for a text with no dimensions"
    data_format = 'kind \'dimensions\' expects a JSON object {dimension: value}, e.g. {"happiness": "high"}'

    @classmethod
    def validate(cls, task: dict, labels: list, fail) -> dict[str, Any]:
        scale = task.get("scale", [])
        if not isinstance(scale, list) or not all(isinstance(v, (str, int, float)) for v in scale):
            raise fail("scale must be a list of values, e.g. scale = ['low', 'medium', 'high']", "task.scale")
        if len(scale) < 1:
            raise fail("kind 'dimensions' needs a scale, e.g. scale = ['low', 'medium', 'high']", "task.scale")
        norms = [normalise(str(v)) for v in scale]
        if len(set(norms)) != len(norms) or not all(norms):
            raise fail("scale values must be distinct and non-empty", "task.scale")
        return {"scale": [str(v) for v in scale]}

    def values(self) -> tuple[str, ...]:
        """The answers to a per-dimension question: the absent answer, then the scale."""
        return dimension_values(self.codebook)

    # ------------------------------------------------------------------ prompts
    def answer_format(self) -> str:
        cb = self.codebook
        scale = ", ".join(cb.scale)
        example = {cb.label_names[0]: cb.scale[-1]}
        return (
            f"Answer with a JSON object that maps each dimension the text expresses to its intensity "
            f"({scale}), for example {self.answer_text(example)}. Leave out dimensions that are absent; "
            "answer {} if none is present. Answer with the JSON object only."
        )

    def main_question(self) -> str:
        return "Which dimensions does this text express, and how strongly? Answer with a JSON object."

    def constrained_questions(self) -> list[Question]:
        values = self.values()
        return [
            Question(
                f'How strongly does the text express "{lab.name}"? '
                f"Answer {', '.join(values[:-1])} or {values[-1]}.",
                values,
                lab.name,
            )
            for lab in self.codebook.labels
        ]

    def option_targets(self, label: dict[str, str]) -> list[str]:
        absent = absent_value(self.codebook)
        return [label.get(name, absent) for name in self.codebook.label_names]

    def decide(self, option_probs: list[np.ndarray]) -> tuple[dict[str, str], float, dict]:
        values = self.values()
        label: dict[str, str] = {}
        probs: dict[str, dict[str, float]] = {}
        confidence = 1.0
        for name, p in zip(self.codebook.label_names, option_probs):
            best = int(np.argmax(p))
            if best != 0:  # values[0] is the absent answer
                label[name] = values[best]
            probs[name] = {v: float(x) for v, x in zip(values, p)}
            confidence = min(confidence, float(p[best]))
        return label, confidence, probs

    def example_stratum(self, label: dict[str, str]) -> str:
        return min(label, key=self.codebook.label_names.index) if label else ""

    def split_stratum(self, label: dict[str, str]) -> str:
        return str(min(len(label), 3))

    # ------------------------------------------------------------------ answers
    def parse(self, raw: str) -> ParsedAnswer:
        return _parse_dimensions(raw, self.codebook)

    def answer_text(self, label: dict[str, str]) -> str:
        cb = self.codebook
        if not isinstance(label, dict):
            raise ValueError(f"a dimensions value must be a dict, not {label!r}")
        out: dict[str, str] = {}
        for key, val in label.items():
            dim = cb.canonical_label(key) if isinstance(key, str) else None
            if dim is None:
                raise ValueError(f"not a dimension of {cb.name!r}: {key!r}")
            canon = cb.canonical_value(val) if isinstance(val, str) else None
            if canon is None:
                raise ValueError(f"{val!r} is not on the scale {cb.scale}")
            out[dim] = canon
        ordered = {d: out[d] for d in cb.label_names if d in out}
        return json.dumps(ordered, ensure_ascii=False)

    def read_label(self, raw: Any, cells: CellReader) -> dict[str, str]:
        cb = self.codebook
        value = raw
        if isinstance(value, str):
            s = value.strip()
            if not s.startswith("{"):
                raise cells.fail(f"{self.data_format}; got {cells.describe(value)}")
            try:
                value = json.loads(s)
            except ValueError as exc:
                raise cells.fail(f"invalid JSON object ({exc.msg} at char {exc.pos}); {self.data_format}") from None
        if isinstance(value, list) and all(isinstance(p, (list, tuple)) and len(p) == 2 for p in value):
            value = dict(value) if value else value  # Parquet map columns come as [(key, value), ...]
        if not isinstance(value, dict):
            raise cells.fail(f"{self.data_format}; got {cells.describe(value)}")
        found: dict[str, str] = {}
        for key, val in value.items():
            if cells.missing(val):
                continue  # null = dimension absent (e.g. Parquet struct columns)
            dim = cells.name(key, "dimension")
            canon = cb.canonical_value(cells.text(val)) if not isinstance(val, (dict, list)) else None
            if canon is None:
                raise cells.fail(f"unknown value {cells.describe(val)} for dimension {dim!r}; "
                                 f"expected one of {', '.join(cb.scale)}")
            if dim in found and found[dim] != canon:
                raise cells.fail(f"dimension {dim!r} given twice with different values ({found[dim]!r}, {canon!r})")
            found[dim] = canon
        return {n: found[n] for n in cb.label_names if n in found}

    def answer_grammar(self) -> str:
        values = "(" + " | ".join(gbnf_json_string(v) for v in self.codebook.scale) + ")"
        pairs = [f'{gbnf_json_string(n)} ": " {values}' for n in self.codebook.label_names]
        return ordered_list_grammar(pairs, open="{", close="}", empty=True)

    def answer_schema(self) -> dict:
        values = list(self.values())
        props = {name: {"type": "string", "enum": values} for name in self.codebook.label_names}
        return {"type": "object", "properties": props, "required": list(props), "additionalProperties": False}

    def structured_text(self, label: dict[str, str]) -> str:
        absent = absent_value(self.codebook)
        return json.dumps({name: label.get(name, absent) for name in self.codebook.label_names})

    def label_items(self, label: dict[str, str]) -> dict[str, str]:
        return dict(label)  # one item per present dimension

    def read_item(self, item: Any, value: Any, cells: CellReader) -> tuple[str, str]:
        if item is None or cells.missing(item):
            raise cells.fail("a dimensions task needs the dimension of each proposed item (an item column)")
        scale_value = self.codebook.canonical_value(cells.text(value))
        if scale_value is None:
            raise cells.fail(f"{cells.text(value)!r} is not on the scale ({', '.join(self.codebook.scale)})")
        return cells.name(item, "dimension"), scale_value

    def merge_items(self, accepted: dict[str, list[str]]) -> dict[str, str]:
        """Each accepted dimension at its highest accepted value (the seed paper's rule); none: the empty label."""
        rank = {v: i for i, v in enumerate(self.codebook.scale)}
        out = {}
        for name in self.codebook.label_names:
            values = [v for v in accepted.get(name, []) if v in rank]
            if values:
                out[name] = max(values, key=rank.__getitem__)
        return out

    def example_labels(self) -> list[dict[str, str]]:
        names, scale = self.codebook.label_names, self.codebook.scale
        out: list[dict[str, str]] = [{}]
        out += [{name: value} for name in names for value in scale]
        out.append({name: scale[i % len(scale)] for i, name in enumerate(names)})
        return out

    # ------------------------------------------------------------------ evaluation
    def metrics(self, gold: list, pred: list, n: int, *, n_boot: int, seed: int, ci: float) -> dict:
        cb = self.codebook
        dims = cb.label_names
        D = len(dims)
        dindex = {d: j for j, d in enumerate(dims)}
        scale = list(cb.scale)
        sindex = {v: k + 1 for k, v in enumerate(scale)}  # 0 = not present

        def encode(value: Any, where: str) -> np.ndarray:
            if not isinstance(value, dict):
                raise ValueError(f"{where}: expected a {{dimension: value}} dict for a dimensions task, got {value!r}")
            row = np.zeros(D, dtype=np.int8)
            for dim, v in value.items():
                if not isinstance(dim, str) or dim not in dindex:
                    raise M.unknown_value(dim, where, dims, "dimension")
                if not isinstance(v, str) or v not in sindex:
                    raise M.unknown_value(v, f"{where}, dimension {dim!r}", scale, "scale value")
                row[dindex[dim]] = sindex[v]
            return row

        G = np.stack([encode(gv, f"gold labels of document {i}") for i, gv in enumerate(gold)])
        valid = np.array([pv is not None for pv in pred], dtype=bool)
        zero = np.zeros(D, dtype=np.int8)
        Pm = np.stack(
            [zero if pv is None else encode(pv, f"prediction for document {i}") for i, pv in enumerate(pred)]
        )
        Gp, Pp = G > 0, Pm > 0  # presence matrices; INVALID rows predict nothing

        # presence counts per document x dimension
        tp = (Gp & Pp).astype(np.int32)
        fp = (Pp & ~Gp).astype(np.int32)
        fn = (Gp & ~Pp).astype(np.int32)
        # intensity: (dimension, value) pairs; TP = predicted pair exactly in gold
        itp_d = (Pp & (G == Pm)).sum(1)
        ipred_d = Pp.sum(1)
        igold_d = Gp.sum(1)
        tp_d, fp_d, fn_d = tp.sum(1), fp.sum(1), fn.sum(1)

        def intensity(itp: float, ipred: float, igold: float) -> tuple[float, float, float]:
            p_, r_ = M.ratio(itp, ipred), M.ratio(itp, igold)
            return p_, r_, (2 * p_ * r_ / (p_ + r_) if p_ + r_ > 0 else 0.0)

        correct_cells = (Gp == Pp).sum(1)
        correct_cells[~valid] = 0  # an INVALID document is wrong on every dimension
        correct_intensity = (G == Pm).sum(1)  # absent counts as a value, as in the seed paper's accI
        correct_intensity[~valid] = 0
        exact = (G == Pm).all(axis=1) & valid

        res = M.common_fields("dimensions", n, valid, "intensity_micro_f1", n_boot, ci)
        res["presence_micro_f1"] = float(f1_score(Gp, Pp, average="micro", zero_division=0))
        res["presence_precision"] = M.ratio(tp_d.sum(), tp_d.sum() + fp_d.sum())
        res["presence_recall"] = M.ratio(tp_d.sum(), tp_d.sum() + fn_d.sum())
        ip, ir, if1 = intensity(itp_d.sum(), ipred_d.sum(), igold_d.sum())
        res["intensity_micro_f1"] = if1
        res["intensity_precision"] = ip
        res["intensity_recall"] = ir
        res["macro_f1"] = float(f1_score(Gp, Pp, average="macro", zero_division=0))
        res["accD"] = float(correct_cells.sum() / (n * D))
        res["accI"] = float(correct_intensity.sum() / (n * D))
        res["accD_predict_nothing"] = float((~Gp).sum() / (n * D))  # the empty answer's accD
        res["accuracy"] = res["accD"]
        res["accuracy_valid"] = float(correct_cells[valid].sum() / (valid.sum() * D)) if valid.any() else None
        res["jaccard"] = M.mean_jaccard(Gp, Pp, valid)
        res["exact_match"] = float(exact.mean())
        pf1 = f1_score(Gp, Pp, average=None, zero_division=0)
        itp_j, ipred_j, igold_j = (Pp & (G == Pm)).sum(0), Pp.sum(0), Gp.sum(0)
        prec, rec, _, sup = precision_recall_fscore_support(Gp, Pp, average=None, zero_division=0)
        res["per_dimension"] = {
            d: {
                "presence_f1": float(pf1[j]),
                "presence_precision": float(prec[j]),
                "presence_recall": float(rec[j]),
                "intensity_f1": float(intensity(itp_j[j], ipred_j[j], igold_j[j])[2]),
                "support": int(sup[j]),
            }
            for j, d in enumerate(dims)
        }

        def presence(idx: np.ndarray) -> float:
            return float(M.safe_f1(tp_d[idx].sum(), fp_d[idx].sum(), fn_d[idx].sum()))

        def intens(idx: np.ndarray) -> float:
            return intensity(itp_d[idx].sum(), ipred_d[idx].sum(), igold_d[idx].sum())[2]

        res["presence_micro_f1_ci"] = M.ci_or_none(presence, n, n_boot, seed, ci)
        res["intensity_micro_f1_ci"] = M.ci_or_none(intens, n, n_boot, seed, ci)
        return res

    def warnings(self, gold: list, pred: list, metrics: dict) -> list[str]:
        out = super().warnings(gold, pred, metrics)
        acc, empty = metrics.get("accD"), metrics.get("accD_predict_nothing")
        if acc is not None and empty is not None and acc <= empty:
            out.append(f"accD {acc:.3f} is not above {empty:.3f}, the accD of predicting no dimension at all: on "
                       "this data accD rewards silence; judge the system by intensity/presence F1")
        return out

    def primary_counts(self, gold: list, pred: list) -> np.ndarray:
        """One group (intensity micro-F1): a (dimension, value) pair predicted exactly is a true positive."""
        out = np.zeros((len(gold), 1, 3))
        for i, (g, p) in enumerate(zip(gold, pred)):
            p = p or {}
            tp = sum(1 for d, v in p.items() if g.get(d) == v)
            out[i, 0] = (tp, len(p) - tp, len(g) - tp)
        return out
