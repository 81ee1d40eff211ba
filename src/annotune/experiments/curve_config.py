"""The ``[curve]`` table of an experiment config (`annotune curve`) and the checks that need the whole
config (its references name [[systems]])."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import Field, field_validator

from annotune.config import ANSWER_MODES, ConfigModel
from annotune.errors import ConfigError
from annotune.systems.base import system_types

if TYPE_CHECKING:
    from annotune.experiments.config import ExperimentConfig


class CurveConfig(ConfigModel):
    """``[curve]``: fine-tune (and train the references that learn) on subsamples of each size × seed
    (`annotune curve`)."""

    sizes: list[int | str] = Field([25, 50, 100, 200], description='Training documents per point; "all": the '
                                                                  'whole training split.')
    seeds: list[int] = Field([1, 2], description="One point (a subsample, a training run) per (size, seed).")
    answer: str | list[str] = Field("generate", description="Answer mode(s) of the fine-tuned points: generate, "
                                                            "constrained, both, or [] (no LoRA points: a curve of "
                                                            "the trained reference systems only).")
    references: list[str] | None = Field(None, description="[[systems]] drawn as horizontal lines (default: all).")
    model: str | None = Field(None, min_length=1, description="Base model (default: [model] name).")
    keep_checkpoints: bool = Field(False, description="Keep each point's training checkpoints.")

    @field_validator("sizes", mode="before")
    @classmethod
    def _sizes(cls, sizes: Any) -> Any:
        ok = isinstance(sizes, list) and sizes and all(
            (isinstance(s, int) and not isinstance(s, bool) and s >= 1) or s == "all" for s in sizes)
        if not ok:
            raise ValueError(f'sizes must be a non-empty list of integers >= 1 or "all", not {sizes!r}')
        if len(set(map(str, sizes))) != len(sizes):
            raise ValueError(f"sizes must not repeat: {sizes!r}")
        return sizes

    @field_validator("seeds", mode="before")
    @classmethod
    def _seeds(cls, seeds: Any) -> Any:
        if not (isinstance(seeds, list) and seeds and all(isinstance(s, int) and not isinstance(s, bool)
                                                          for s in seeds)):
            raise ValueError(f"seeds must be a non-empty list of integers, not {seeds!r}")
        if len(set(seeds)) != len(seeds):
            raise ValueError(f"seeds must not repeat: {seeds!r}")
        return seeds

    @field_validator("answer", mode="before")
    @classmethod
    def _answer(cls, answer: Any) -> Any:
        answers = [answer] if isinstance(answer, str) else answer
        if not isinstance(answers, list) or any(a not in ANSWER_MODES for a in answers):
            raise ValueError(f"answer must be 'generate', 'constrained', a list of them or [] (no fine-tuned "
                             f"points), not {answer!r}")
        return answer

    @property
    def answers(self) -> list[str]:
        return list(dict.fromkeys([self.answer] if isinstance(self.answer, str) else self.answer))


def reference_systems(cfg: "ExperimentConfig") -> list:
    """The [[systems]] a [curve] names as references (all of them by default), in config order."""
    names = cfg.curve.references
    return [s for s in cfg.systems if names is None or s.name in names]


def trained_references(cfg: "ExperimentConfig") -> list:
    """The references that learn from labelled documents, other than fine-tuning (which the points are): each
    is also run at every size × seed, a line of its own beside the fine-tuned points."""
    types = system_types()
    return [s for s in reference_systems(cfg)
            if types[s.type].trains and not issubclass(types[s.type], types["finetuned"])]


def check_curve(cfg: "ExperimentConfig", path: Path) -> None:
    """A [curve]'s references name [[systems]] (none named like an answer mode, a curve line's name), and
    ``answer = []`` needs a reference that learns from the training documents."""
    names = [s.name for s in cfg.systems]
    for ref in cfg.curve.references or ():
        if ref not in names:
            raise ConfigError(f"reference {ref!r} is not a [[systems]] name (systems: "
                              f"{', '.join(map(repr, names)) or 'none'})", file=path, field="curve.references")
    for ref in reference_systems(cfg):
        if ref.name in ANSWER_MODES:
            raise ConfigError(f"a reference system named {ref.name!r} would share its line with the fine-tuned "
                              f"points' {ref.name!r} answers: rename it", file=path, field="curve.references")
    if not cfg.curve.answers and not trained_references(cfg):
        raise ConfigError("answer = [] asks for no fine-tuned points, and no reference system learns from the "
                          "training documents: add a head, embedding, setfit or tfidf system to the references",
                          file=path, field="curve.answer")


__all__ = ["CurveConfig", "check_curve", "reference_systems", "trained_references"]
