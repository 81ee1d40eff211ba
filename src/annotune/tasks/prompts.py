"""Zero- and few-shot prompts derived from the codebook, identical for every backend.

A prompt is a chat: a system message with the instructions and label definitions, optional few-shot
turns (example text → canonical answer), and a user turn with the document followed by a question.
Local backends need to know where the document and the question sit inside the rendered prompt so that
they can compute the part shared by every document once (system + examples), the document once per
document, and only then the question and answer options; `PromptParts` carries those pieces.

`generate` answering asks the task's main question. `constrained` answering scores each allowed answer:
for `single` the label names; for `multi` a yes/no question per label; for `dimensions` a
none/low/medium/high question per dimension. The questions, answer options and answer format belong to
the codebook's task kind (``codebook.task``); the functions here are the kind-independent layout and thin
delegates kept for callers.
"""

from __future__ import annotations

import random
from collections import defaultdict
from dataclasses import dataclass, field

from annotune.codebook import Codebook
from annotune.data.dataset import Doc
from annotune.tasks.base import Question
from annotune.tasks.dimensions import NONE_VALUE, absent_value, dimension_values

__all__ = ["NONE_VALUE", "PromptBuilder", "PromptParts", "Question", "absent_value", "answer_format",
           "few_shot_builder", "constrained_questions", "dimension_values", "draw_examples", "end_of_turn",
           "main_question", "render_chat", "system_prompt"]

_DOC_MARK = "\x00ANNOTUNE_DOC\x00"
_QUESTION_MARK = "\x00ANNOTUNE_QUESTION\x00"


def system_prompt(codebook: Codebook, definitions: bool = True) -> str:
    """Instructions + label definitions + answer format, the codebook in words. Without
    ``definitions`` (the short prompt of fine-tuned models, which learn the labels from examples) only
    the label names are listed."""
    lines = []
    if codebook.instructions:
        lines.append(codebook.instructions)
    if codebook.labels:  # open-answer kinds (qa) have none
        lines.append(f"\n{codebook.task.labels_heading}:")
        for lab in codebook.labels:
            lines.append(f"- {lab.name}: {lab.definition}" if definitions else f"- {lab.name}")
    lines.append("")
    lines.append(answer_format(codebook))
    return "\n".join(lines).strip()


def answer_format(codebook: Codebook) -> str:
    """How to answer (the system prompt's last paragraph): ``codebook.task.answer_format()``."""
    return codebook.task.answer_format()


def main_question(codebook: Codebook) -> str:
    """The question of a `generate` answer: ``codebook.task.main_question()``."""
    return codebook.task.main_question()


def constrained_questions(codebook: Codebook) -> list[Question]:
    """The questions `constrained` answering scores: ``codebook.task.constrained_questions()``."""
    return codebook.task.constrained_questions()


def draw_examples(train: list[Doc], codebook: Codebook, k: int, seed: int) -> list[Doc]:
    """k few-shot examples from the training data, seeded and balanced across labels (round robin
    over the labels' example pools, each shuffled with the seed)."""
    if k <= 0:
        return []
    rng = random.Random(seed)
    pools: dict[str, list[Doc]] = defaultdict(list)
    for doc in train:
        if doc.label is None:
            continue
        pools[codebook.task.example_stratum(doc.label)].append(doc)
    keys = sorted(pools)
    for key in keys:
        rng.shuffle(pools[key])
    rng.shuffle(keys)
    chosen: list[Doc] = []
    while len(chosen) < k and any(pools[key] for key in keys):
        for key in keys:
            if pools[key] and len(chosen) < k:
                chosen.append(pools[key].pop())
    rng.shuffle(chosen)
    return chosen


@dataclass
class PromptParts:
    """A rendered prompt cut into pieces: ``prefix`` (shared by all documents) + ``before_doc`` … the
    document … ``between`` + question + ``suffix`` (end of user turn and start of the answer)."""

    prefix: str
    between: str
    suffix: str
    end_of_turn: str
    messages_head: list[dict] = field(default_factory=list)

    def full(self, doc_text: str, question: str) -> str:
        return self.prefix + doc_text + self.between + question + self.suffix


class PromptBuilder:
    """Builds chat messages and the `PromptParts` of one task (codebook + few-shot examples)."""

    def __init__(self, codebook: Codebook, examples: list[Doc] | None = None, *, example_chars: int = 1500,
                 definitions: bool = True):
        self.codebook = codebook
        self.examples = list(examples or [])
        self.example_chars = example_chars
        self.definitions = definitions

    def user_content(self, text: str, question: str) -> str:
        return f"{self.codebook.task.text_heading}:\n{text}\n\n{question}"

    def messages(self, text: str, question: str | None = None) -> list[dict]:
        """The chat for one document, as sent to an OpenAI-compatible API."""
        question = question or main_question(self.codebook)
        msgs = [{"role": "system", "content": system_prompt(self.codebook, self.definitions)}]
        for ex in self.examples:
            msgs.append({"role": "user", "content": self.user_content(_clip(ex.text, self.example_chars),
                                                                       main_question(self.codebook))})
            msgs.append({"role": "assistant", "content": self.codebook.task.answer_text(ex.label)})
        msgs.append({"role": "user", "content": self.user_content(text, question)})
        return msgs

    def parts(self, tokenizer) -> PromptParts:
        """Render the chat template once with markers and cut it where document and question go."""
        rendered = render_chat(tokenizer, self.messages(_DOC_MARK, _QUESTION_MARK), generation_prompt=True)
        before, _, rest = rendered.partition(_DOC_MARK)
        between, _, suffix = rest.partition(_QUESTION_MARK)
        if _DOC_MARK in rest or _QUESTION_MARK not in rest:
            raise ValueError("chat template did not keep the document and question in order")
        return PromptParts(before, between, suffix, end_of_turn(tokenizer))


def _clip(text: str, chars: int) -> str:
    return text if len(text) <= chars else text[:chars].rsplit(" ", 1)[0] + " …"


def render_chat(tokenizer, messages: list[dict], *, generation_prompt: bool) -> str:
    """Render with the model's chat template; base models without one get a plain layout."""
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=generation_prompt)
    out = []
    for msg in messages:
        out.append(f"### {msg['role'].capitalize()}:\n{msg['content']}\n\n")
    if generation_prompt:
        out.append("### Assistant:\n")
    return "".join(out)


def end_of_turn(tokenizer) -> str:
    """The text a chat template puts after an assistant answer (e.g. ``<|im_end|>``), so that scored
    answers end where the model would stop; falls back to the EOS token."""
    if getattr(tokenizer, "chat_template", None):
        probe = "\x00ANSWER\x00"
        msgs = [{"role": "system", "content": "s"}, {"role": "user", "content": "u"},
                {"role": "assistant", "content": probe}]
        try:
            rendered = tokenizer.apply_chat_template(msgs, tokenize=False)
            tail = rendered.split(probe, 1)[1].strip()
            if tail:
                return tail
        except Exception:  # templates that reject an assistant turn at the end
            pass
    return tokenizer.eos_token or ""


def few_shot_builder(codebook: Codebook, train: list[Doc], shots: int, seed: int, *, example_chars: int = 1500,
                     definitions: bool = True) -> PromptBuilder:
    """The prompt of a prompted system: ``shots`` seeded, label-balanced examples from ``train`` (its
    ``examples`` say which)."""
    return PromptBuilder(codebook, draw_examples(train, codebook, shots, seed), example_chars=example_chars,
                         definitions=definitions)
