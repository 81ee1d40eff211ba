"""Turning a model's free-text answer into a label value, or an honest INVALID.

Small open LLMs, generating freely, rarely answer with exactly the label string the codebook
asks for: they wrap it in markdown, quote it, prefix it with ``Answer:``, pluralise it, explain
themselves in a sentence, emit JSON with single quotes and trailing commas, leak chat tokens such
as ``<|im_end|>``, or run out of tokens half-way through a JSON object. Counting every such answer
as wrong would measure formatting, not coding ability, so this module parses *tolerantly*.

It never *guesses*, though. An answer that names no label, names two labels where one is
expected, names something that is not in the codebook, or is cut off, is INVALID: its label is
``None``, its raw text is kept, and ``error`` says why. It is never mapped to a default or random
label, because that would silently inflate (or deflate) agreement with the human coders; the
evaluation reports the invalid rate separately.

Label values follow the project conventions:

- ``single``: ``str``, the canonical label name;
- ``multi``: ``tuple[str, ...]`` of canonical names, in codebook order, without duplicates;
- ``dimensions``: ``dict[str, str]`` ``{dimension name: scale value}`` with only the dimensions
  that are present.

Each task kind implements its parser (``codebook.task.parse``, in ``tasks/single.py``, ``tasks/multi.py``,
``tasks/dimensions.py``); the shared clean-up and tolerant-JSON helpers are in ``tasks/text.py``.

`answer_text` is the inverse: the canonical answer a model should produce for a label value (used
to build fine-tuning targets and few-shot examples). ``parse_answer(answer_text(x)).label == x``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from annotune.tasks.base import LabelValue, ParsedAnswer

if TYPE_CHECKING:
    from annotune.codebook import Codebook

__all__ = ["LabelValue", "ParsedAnswer", "answer_text", "parse_answer"]


def parse_answer(text: str, codebook: Codebook) -> ParsedAnswer:
    """Parse a model's answer for ``codebook``; INVALID answers have ``label=None`` and an error."""
    raw = "" if text is None else str(text)
    return codebook.task.parse(raw)


def answer_text(label: LabelValue, codebook: Codebook) -> str:
    """The canonical answer string a model should produce for ``label`` (a valid label value).

    single: the label name; multi: a JSON list in codebook order; dimensions: a one-line JSON
    object in codebook order. Raises ValueError for a value that does not fit the codebook."""
    return codebook.task.answer_text(label)
