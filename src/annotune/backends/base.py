"""Backends: anything that can label documents from a prompt, behind one interface.

`LocalBackend` runs a causal LM from transformers on this machine, with two ways to answer:

- ``generate``: greedy free generation, then `parse_answer`; what cannot be parsed stays INVALID with
  its raw text (the Sarus valid-answer measure).
- ``constrained``: the probability of every allowed answer's full token sequence (multi-token labels and
  the end-of-turn marker included), normalised over the answers; always valid.

Both share one engine built for CPUs, where a 135M model's output layer over a 49k vocabulary costs more
than the rest of the network: the prompt part common to all documents (system prompt + few-shot turns)
is encoded once per run and its key/value cache reused; each document is encoded once, and all questions
and answer options about it are appended *in the same row* as a token tree with a custom attention mask
(each option sees the prefix, the document, its question and itself), so nothing is copied per option;
vocabulary logits are computed only at the positions that are scored.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from annotune.codebook import Codebook
from annotune.data.dataset import Doc
from annotune.tasks.prompts import PromptBuilder

ANSWER_MODES = ("generate", "constrained")


@dataclass
class Prediction:
    """One document's answer. ``label`` is None when the answer is INVALID; ``raw`` is always kept."""

    id: str
    raw: str
    label: Any
    confidence: float | None = None
    probs: dict | None = None
    error: str | None = None


@dataclass
class RunStats:
    """Throughput bookkeeping of one labelling run."""

    docs: int = 0
    prompt_tokens: int = 0  # tokens actually encoded (the shared prefix counted once)
    prompt_tokens_nominal: int = 0  # tokens of the full prompts, as an API would bill them
    generated_tokens: int = 0
    seconds: float = 0.0
    truncated_docs: int = 0
    extra: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        d = {k: v for k, v in self.__dict__.items() if k != "extra"}
        d.update(self.extra)
        d["docs_per_s"] = self.docs / self.seconds if self.seconds else None
        d["prompt_tokens_per_s"] = self.prompt_tokens_nominal / self.seconds if self.seconds else None
        return d


class Backend(ABC):
    """Labels documents with a codebook's prompt; one implementation per kind of model access."""

    name: str = "backend"

    @abstractmethod
    def label(self, docs: list[Doc], builder: PromptBuilder, answer: str = "generate", *,
              progress: bool = True) -> tuple[list[Prediction], RunStats]:
        """Predictions in the order of ``docs`` and the run's throughput statistics."""


def cut_document(ids: list[int], max_tokens: int | None) -> tuple[list[int], bool]:
    """A document's token ids cut to ``max_tokens`` (None or 0: whole), and whether they were cut."""
    if max_tokens and len(ids) > max_tokens:
        return ids[:max_tokens], True
    return ids, False


def softmax(logps: np.ndarray) -> np.ndarray:
    e = np.exp(logps - logps.max())
    return e / e.sum()


def decide_constrained(codebook: Codebook, option_probs: list[np.ndarray]) -> tuple[Any, float, dict]:
    """Turn per-question option probabilities into a label, a confidence and a JSON-able probs dict
    (``codebook.task.decide``)."""
    return codebook.task.decide(option_probs)
