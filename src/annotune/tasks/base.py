"""What every task kind implements: the `TaskKind` interface.

A task kind (``single``, ``multi``, ``dimensions``, …) owns everything that depends on the shape of a label:
the prompt's answer format and questions, the answer parser, the canonical answer text, the metrics, the
comparison-table columns, how labels go to and from JSON and how a label is decided from constrained option
probabilities. Code outside ``annotune.tasks`` asks the codebook's task (``codebook.task``) instead of
branching on ``codebook.kind``.

Two kinds of members:

- **bound to a codebook** (instance methods): ``codebook.task`` is ``get_task(codebook.kind)(codebook)``;
  they read the codebook's labels, ``max_labels``, ``scale``…;
- **codebook-free** (class attributes and classmethods): names, the primary metric, table columns and
  per-label figures, which only read a results dict's metrics — call them on ``get_task(kind)``.

A new kind is one module with a `TaskKind` subclass plus a `register_task` call (see ``tasks/__init__.py``);
``tests/test_task_contract.py`` runs the same checks on every registered kind.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

import numpy as np

from annotune.evaluation.formatting import fmt, fmt_ci
from annotune.evaluation.metrics import check_inputs

if TYPE_CHECKING:  # no runtime import: annotune.codebook imports this package
    from annotune.codebook import Codebook, Label

LabelValue = Any  # str (single) | tuple[str, ...] (multi) | dict[str, str] (dimensions) | …


@dataclass(frozen=True)
class ParsedAnswer:
    """One parsed model answer. ``label is None`` means INVALID; ``raw`` is always the input."""

    label: LabelValue | None  # None = INVALID
    raw: str
    error: str | None = None  # why it is invalid (short, human readable), None when valid

    @property
    def valid(self) -> bool:
        return self.label is not None


@dataclass(frozen=True)
class Question:
    """One question asked about a document, with the answers that `constrained` mode scores."""

    text: str
    options: tuple[str, ...]  # answer strings (without the end-of-turn marker)
    target: str | None = None  # the label/dimension the question is about (multi/dimensions)


Fail = Callable[..., Exception]  # fail(message, field) -> the exception to raise


class CellReader(Protocol):
    """What a data reader lends a task kind to read one raw label cell (`TaskKind.read_label`): the data
    package's cell helpers and error context, so that the kinds need not import it."""

    def fail(self, message: str) -> Exception:
        """The error to raise (with file, row and field)."""

    def name(self, item: Any, what: str = "label") -> str:
        """The canonical label a scalar cell names (the user's aliases applied); raises `fail` otherwise."""

    def is_label(self, text: str) -> bool:
        """Whether ``text`` names a label (aliases applied)."""

    def missing(self, value: Any) -> bool:
        """None, NaN or a blank string."""

    def text(self, value: Any) -> str:
        """A scalar cell as a stripped string (``2.0`` -> ``"2"``)."""

    def describe(self, value: Any) -> str:
        """A short description of a value for error messages."""


COLLAPSE_SHARE = 0.95  # one answer for this share of the documents is a collapse …
COLLAPSE_MIN_DOCS = 20  # … when there are this many documents to judge from
KAPPA_NEAR_ZERO = 0.05  # |Cohen's κ| below this: no better than chance


def _hashable(value: Any) -> Any:
    if isinstance(value, dict):
        return ("\0dict", tuple(sorted(value.items())))
    return value


def _unhashable(value: Any) -> Any:
    if isinstance(value, tuple) and len(value) == 2 and value[0] == "\0dict":
        return dict(value[1])
    return value


def gbnf_literal(text: str) -> str:
    """``text`` as a GBNF string literal."""
    out = []
    for ch in text:
        if ch in '"\\':
            out.append("\\" + ch)
        elif ch == "\n":
            out.append("\\n")
        elif ord(ch) < 32 or ord(ch) == 127:
            out.append(f"\\x{ord(ch):02X}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def gbnf_json_string(text: str) -> str:
    """The JSON string of ``text`` (as `json.dumps` writes it, non-ASCII kept) as a GBNF string literal."""
    return gbnf_literal(json.dumps(text, ensure_ascii=False))


def ordered_list_grammar(items: list[str], *, open: str, close: str, empty: bool) -> str:
    """A GBNF grammar for ``open item, item … close`` where the items (GBNF expressions) appear at most once
    each, in the given order, separated by ``", "`` — how `json.dumps` writes a list or object in codebook
    order. ``empty``: ``open close`` alone is admitted too."""
    n = len(items)
    rules = [f"item{i} ::= {item}" for i, item in enumerate(items)]

    def chain(i: int) -> str:
        return f"item{i}" + (f" rest{i}" if i < n - 1 else "")

    for i in range(n - 1):
        rules.append(f"rest{i} ::= (" + " | ".join(f'", " {chain(j)}' for j in range(i + 1, n)) + ")?")
    body = "(" + " | ".join(chain(i) for i in range(n)) + ")" + ("?" if empty else "")
    return "\n".join([f"root ::= {gbnf_literal(open)} {body} {gbnf_literal(close)}", *rules])


class TaskKind(ABC):
    """One task kind. Subclasses set the class attributes and implement the abstract methods."""

    # ------------------------------------------------------------------ identity (class level)
    name: ClassVar[str]  # the codebook's ``kind`` value
    description: ClassVar[str]  # "single-label", for reports
    primary_metric: ClassVar[str]  # key of the headline metric in `evaluate`'s result
    primary_name: ClassVar[str]  # its display name, e.g. "macro-F1"
    settings: ClassVar[tuple[str, ...]] = ()  # kind-specific [task] keys (e.g. "max_labels")
    default_label_field: ClassVar[str] = "label"  # the data column holding the labels
    default_text_field: ClassVar[str] = "text"  # the data column holding the documents
    text_heading: ClassVar[str] = "Text"  # what the prompt calls the document ("Text:\n…")
    open_answers: ClassVar[bool] = False  # free-text answers (qa): no [[labels]], no constrained answering,
    # no classifiers on representations, no learning curve by counts; systems that need labels refuse the task
    labels_heading: ClassVar[str] = "Categories"  # heading of the label list in the system prompt
    item_word: ClassVar[str] = "class"  # one label in report headings ("Per-class F1")
    items_word: ClassVar[str] = "labels"  # the labels in running text ("a codebook of 5 labels")
    per_item_key: ClassVar[str] = "per_class"  # metrics key of the per-label figures
    per_item_score_key: ClassVar[str] = "f1"  # the score in them that `per_item_scores` returns
    per_item_metric: ClassVar[str] = "F1"  # its display name
    constrained_words: ClassVar[str] = ""  # how constrained answering asks, for a methods paragraph
    max_new_tokens: ClassVar[int] = 64  # generation budget of a `generate` answer
    threshold_option: ClassVar[int | None] = None  # the option of every constrained question whose weight a
    # classifier may tune on dev data (multi: "yes", dimensions: absent); None: argmax only
    data_format: ClassVar[str] = ""  # what one label cell of a data file looks like (error messages)
    empty_label_hint: ClassVar[str] = ""  # how to write "no label" where that is a valid label value

    def __init__(self, codebook: Codebook):
        self.codebook = codebook

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r} of codebook {self.codebook.name!r}>"

    # ------------------------------------------------------------------ codebook (class level)
    @classmethod
    def validate(cls, task: dict, labels: list[Label], fail: Fail) -> dict[str, Any]:
        """Check the kind's settings in the ``[task]`` table; return the Codebook fields they set
        (``max_labels``, ``scale``). Raise ``fail(message, field)`` on an error. Keys listed in another
        kind's ``settings`` are rejected by the Codebook before this is called."""
        return {}

    # ------------------------------------------------------------------ prompts
    @abstractmethod
    def answer_format(self) -> str:
        """The system prompt's last paragraph: how to answer."""

    @abstractmethod
    def main_question(self) -> str:
        """The question of a `generate` answer, after the document."""

    @abstractmethod
    def constrained_questions(self) -> list[Question]:
        """The questions that `constrained` answering scores, each with its answer options."""

    @abstractmethod
    def option_targets(self, label: LabelValue) -> list[str]:
        """For a label value, the right option of each constrained question (same order): what a
        classifier per question learns, and what `decide` turns back into ``label``."""

    @abstractmethod
    def decide(self, option_probs: list[np.ndarray]) -> tuple[LabelValue, float, dict]:
        """Per-question option probabilities -> (label, confidence, JSON-able probabilities)."""

    def example_stratum(self, label: LabelValue) -> str:
        """The pool a few-shot example is drawn from (examples are balanced over pools)."""
        return str(label)

    def split_stratum(self, label: LabelValue) -> str:
        """The stratum of a document in a stratified train/test split."""
        return str(label)

    def missing_training_labels(self, labels: list[LabelValue]) -> list[str]:
        """Labels a fine-tuning set must contain an example of but does not (default: none required)."""
        return []

    def min_training_examples(self) -> int:
        """The fewest training examples that can cover every required label."""
        return 1

    # ------------------------------------------------------------------ answers
    @abstractmethod
    def parse(self, raw: str) -> ParsedAnswer:
        """A model's answer -> a label value, or INVALID (``label=None``) with an error."""

    @abstractmethod
    def answer_text(self, label: LabelValue) -> str:
        """The canonical answer a model should give for ``label``; ``parse(answer_text(x)).label == x``.
        Raises ValueError for a value that does not fit the codebook."""

    @abstractmethod
    def answer_schema(self) -> dict:
        """The strict JSON schema of a structured `generate` answer (structured API output)."""

    def answer_grammar(self) -> str | None:
        """A GBNF grammar (llama.cpp) that admits exactly the canonical answers (`answer_text`), for
        grammar-constrained generation; None: free text."""
        return None

    @abstractmethod
    def structured_text(self, label: LabelValue) -> str:
        """The answer of ``label`` as JSON that satisfies `answer_schema` (and that `parse` reads)."""

    @abstractmethod
    def example_labels(self) -> list[LabelValue]:
        """Label values that cover every label and value of the codebook (for tests and examples)."""

    @abstractmethod
    def read_label(self, raw: Any, cells: CellReader) -> LabelValue:
        """A raw label cell of a data file (not missing) -> the canonical label value; raises
        ``cells.fail(message)`` for a cell that does not fit (data files are strict, unlike `parse`)."""

    def label_to_json(self, label: LabelValue | None) -> Any:
        """A label value as JSON data (results files, caches); None (INVALID) stays None."""
        return label

    def label_from_json(self, value: Any) -> LabelValue | None:
        """The inverse of `label_to_json`."""
        return value

    # ------------------------------------------------------------------ review items (the label store)
    def label_items(self, label: LabelValue) -> dict[str, str]:
        """A label as the items a reviewer accepts or rejects one by one, ``{key: value}``: here the whole
        label (as JSON text) under the key ``""``; kinds whose labels have parts (labels, dimensions) split them."""
        return {"": json.dumps(self.label_to_json(label), sort_keys=True)}

    def merge_items(self, accepted: dict[str, list[str]]) -> LabelValue | None:
        """The label that the accepted items make (``{key: [accepted values]}``), or None when they make
        none: here one accepted value, and None when reviewers accepted different ones (a conflict)."""
        values = set(accepted.get("", []))
        return self.label_from_json(json.loads(values.pop())) if len(values) == 1 else None

    def read_item(self, item: Any, value: Any, cells: CellReader) -> tuple[str, str]:
        """One row of a proposals/reviews table — an item cell (None when the table has no item column) and a
        value cell — as a review item ``(key, value)`` of `label_items`; here the value is a whole label."""
        return next(iter(self.label_items(self.read_label(value, cells)).items()))

    # ------------------------------------------------------------------ evaluation
    def evaluate(self, gold: list, pred: list, *, n_boot: int = 1000, seed: int = 0, ci: float = 0.95) -> dict:
        """Score predictions (None = INVALID) against gold; see `annotune.evaluation.metrics`."""
        n = check_inputs(gold, pred, n_boot, ci)
        res = self.metrics(gold, pred, n, n_boot=n_boot, seed=seed, ci=ci)
        res["warnings"] = self.warnings(gold, pred, res)
        return res

    def warnings(self, gold: list, pred: list, metrics: dict) -> list[str]:
        """What a user must not miss about these predictions: here, a collapse to (nearly) one answer for
        every document while the gold labels vary. Kinds add their own (κ ≈ 0, below predicting nothing)."""
        valid = [_hashable(p) for p in pred if p is not None]
        if len(gold) < COLLAPSE_MIN_DOCS or not valid:
            return []
        top, count = Counter(valid).most_common(1)[0]
        share, gold_share = count / len(pred), Counter(map(_hashable, gold)).most_common(1)[0][1] / len(gold)
        if share < COLLAPSE_SHARE or gold_share >= COLLAPSE_SHARE:
            return []
        shown = self.answer_text(self.label_from_json(_unhashable(top)))
        return [f"collapse: the same answer ({shown}) for {share:.0%} of the documents, while no gold answer covers "
                f"more than {gold_share:.0%}. The model learned the label prior, not the texts: train longer or "
                "with a different learning rate, check the training labels' balance, or use type = \"head\" / "
                "\"embedding\" (a classifier on the model's representations)"]

    @abstractmethod
    def metrics(self, gold: list, pred: list, n: int, *, n_boot: int, seed: int, ci: float) -> dict:
        """The kind's metrics on checked inputs: starts with `common_fields` and sets ``accuracy``,
        ``accuracy_valid``, ``macro_f1``, the primary metric and its ``_ci``."""

    @abstractmethod
    def primary_counts(self, gold: list, pred: list) -> np.ndarray:
        """Per-document (tp, fp, fn) counts, shape (documents, groups, 3): the primary metric is the mean
        over groups of F1 of the summed counts (learning-curve resampling)."""

    # ------------------------------------------------------------------ results (class level)
    # the comparison table's metric columns: (header, metrics key, with its bootstrap interval)
    table_columns: ClassVar[tuple[tuple[str, str, bool], ...]] = ()

    @classmethod
    def table_header(cls) -> list[str]:
        """The comparison table's metric columns (between "Valid %" and the speed columns)."""
        return [header for header, _, _ in cls.table_columns]

    @classmethod
    def table_cells(cls, metrics: dict) -> list[str]:
        """One system's cells for `table_header`'s columns."""
        return [fmt_ci(metrics, key) if ci else fmt(metrics.get(key)) for _, key, ci in cls.table_columns]

    @classmethod
    def per_item_scores(cls, metrics: dict) -> dict[str, float]:
        """Per-label score (``per_item_metric``) from a system's metrics, for the per-class figure."""
        return {lab: v[cls.per_item_score_key] for lab, v in metrics.get(cls.per_item_key, {}).items()}
