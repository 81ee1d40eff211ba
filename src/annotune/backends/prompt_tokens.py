"""The token pieces of a local model's prompts: a chat as token ids (`encode_chat`), a document cut to its
token budget (`document_ids`), answer options (`option_token_ids`) and the pieces of `constrained` answering
(`ConstrainedPrompt`) that the scorer (`annotune.backends.local`) and the ``questions`` training objective
(`annotune.finetune.tree`) share."""

from __future__ import annotations

from dataclasses import dataclass

from annotune.backends.base import cut_document
from annotune.tasks.prompts import constrained_questions, render_chat
from annotune.tasks.prompts import end_of_turn as template_end_of_turn


def encode_chat(tokenizer, messages: list[dict]) -> list[int]:
    """Token ids of a chat rendered for answering, as `LocalBackend` encodes a prompt (the model's chat
    template, or a plain layout with BOS for base models). Needs only the tokenizer."""
    ids = tokenizer(render_chat(tokenizer, messages, generation_prompt=True), add_special_tokens=False)["input_ids"]
    return _with_bos(tokenizer, ids)


def _with_bos(tokenizer, ids: list[int]) -> list[int]:
    """A base model without a chat template gets BOS in front of its prompt."""
    if getattr(tokenizer, "chat_template", None) is None and tokenizer.bos_token_id is not None:
        return [tokenizer.bos_token_id] + ids
    return ids


def text_ids(tokenizer, text: str) -> list[int]:
    """Token ids of ``text`` without special tokens."""
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def document_ids(tokenizer, text: str, max_tokens: int | None) -> tuple[list[int], bool]:
    """A document's token ids as every prompt holds them, cut to ``max_tokens`` (None: whole), and whether
    it was cut."""
    return cut_document(text_ids(tokenizer, text), max_tokens)


def option_token_ids(tokenizer, options, end_of_turn: str | None = None) -> list[list[int]]:
    """Token ids of a question's answer options (``end_of_turn``: default the chat template's).

    The end-of-turn marker is appended only where one option's tokens are a prefix of another's
    ("sport" / "sport news"): scoring it everywhere measured worse on BBC zero-shot with SmolLM2
    (accuracy 0.34 vs 0.53 on 100 test articles), because a small model rarely ends its turn right
    after a bare label."""
    if end_of_turn is None:
        end_of_turn = template_end_of_turn(tokenizer)
    ids = [text_ids(tokenizer, o) for o in options]
    ambiguous = any(a != b and b[: len(a)] == a for a in ids for b in ids)
    if ambiguous and end_of_turn:
        ids = [text_ids(tokenizer, o + end_of_turn) for o in options]
    return ids


@dataclass
class ConstrainedPrompt:
    """The token pieces of `constrained` answering for one codebook and tokenizer: the prefix every document
    shares, what follows a document, and each question with its options' token ids. The scorer and the
    trainer of the ``questions`` objective (`annotune.finetune.tree`) both build on it, so a model is
    trained on exactly the tokens it is later asked."""

    prefix_ids: list[int]
    between_ids: list[int]
    suffix: str
    questions: list
    q_rows: list[list[int]]
    opt_rows: list[list[list[int]]]

    @classmethod
    def build(cls, tokenizer, builder, *, questions: bool = True) -> "ConstrainedPrompt":
        parts = builder.parts(tokenizer)
        qs = constrained_questions(builder.codebook) if questions else []
        return cls(_with_bos(tokenizer, text_ids(tokenizer, parts.prefix)), text_ids(tokenizer, parts.between),
                   parts.suffix, qs, [text_ids(tokenizer, q.text + parts.suffix) for q in qs],
                   [option_token_ids(tokenizer, q.options, parts.end_of_turn) for q in qs])

    @property
    def tree_length(self) -> int:
        """Tokens the questions and options add to a document's tree."""
        return sum(len(q) + sum(len(o) - 1 for o in opts) for q, opts in zip(self.q_rows, self.opt_rows))


__all__ = ["ConstrainedPrompt", "document_ids", "encode_chat", "option_token_ids", "text_ids"]
