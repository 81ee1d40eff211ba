"""What every system type implements, and the registry that `compare` and `curve` loop over.

A system type is one module: a config class (a `SystemConfig`: the keys of its ``[[systems]]`` table,
validated where they are declared) and a `System` subclass registered with `register_system`::

    class KeywordConfig(SystemConfig):
        type: Literal["keywords"] = "keywords"
        keywords: dict[str, list[str]]

    @register_system
    class KeywordSystem(System):
        type = "keywords"
        config_class = KeywordConfig

        def run(self, train, test):
            ...  # -> (list[Prediction], RunStats)

Third-party packages add types through the ``annotune.systems`` entry-point group (each entry point
names a `System` subclass); `system_types()` loads them on first use.
"""

from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, ClassVar

from pydantic import Field

from annotune.backends.base import Prediction, RunStats
from annotune.codebook import Codebook
from annotune.config import ConfigModel
from annotune.data.dataset import Dataset
from annotune.errors import ConfigError
from annotune.plugins import load_plugins

ENTRY_POINT_GROUP = "annotune.systems"


class SystemConfig(ConfigModel):
    """Keys every ``[[systems]]`` table has."""

    name: str = Field(min_length=1, description="Name in the table, results and reports (unique).")
    type: str = Field(description="System type (prompt, finetuned, head, embedding, setfit, tfidf, api, "
                                  "llamacpp, predictions, reference, or a plugin's).")
    train_size: int | None = Field(None, ge=1, description="Training documents this system learns from (or draws "
                                                           "few-shot examples from): a seeded stratified subsample "
                                                           "of the training split (default: the config's "
                                                           "train_size, else all of it).")

    inherited: ClassVar[tuple[str, ...]] = ()  # [model] keys this type takes as defaults ("model" ← name)

    @classmethod
    def inherit(cls, raw: dict[str, Any], defaults: "Defaults") -> dict[str, Any]:
        """The system's table with the config-wide defaults it takes (the ``[model]`` keys named in
        ``inherited``) filled in."""
        out = dict(raw)
        for key in cls.inherited:
            source = "name" if key == "model" else key
            if key not in out and source in defaults.model:
                out[key] = defaults.model[source]
        return out

    def resolve_paths(self, base: Path) -> None:
        """Make paths written in the config relative to the config's folder (``base``)."""


@dataclass(frozen=True)
class Defaults:
    """Config-wide values that systems may inherit: ``[model]`` and ``[finetune]`` as written, and the seed."""

    model: dict[str, Any] = field(default_factory=dict)
    finetune: dict[str, Any] = field(default_factory=dict)
    seed: int = 0


class ModelPool:
    """Loaded local models, one in memory at a time (a comparison runs its systems one after another)."""

    def __init__(self) -> None:
        self._key: tuple | None = None
        self._loaded: Any = None

    def get(self, model: str, dtype: str, seed: int | None = None):
        """(model, tokenizer, source) of a model name/folder/run, loaded once."""
        key = (model, dtype)
        if key != self._key:
            from annotune.backends.models import load_causal_lm

            if seed is not None:
                import torch

                torch.manual_seed(seed)
            self._key, self._loaded = None, None  # free the previous model first
            self._loaded = load_causal_lm(model, dtype=dtype)
            self._key = key
        return self._loaded


@dataclass
class RunContext:
    """What a system may use of the experiment it runs in."""

    codebook: Codebook
    seed: int = 0
    output: Path = Path("runs")
    base_dir: Path = Path(".")
    source: Path | None = None  # the config file, for messages
    progress: bool = True
    log: Callable[[str], None] = print
    models: ModelPool = field(default_factory=ModelPool)
    train_size: int | None = None  # the config-wide training-set size


class System(ABC):
    """One row of the comparison table. ``__init__`` stores the config; nothing heavy happens before
    `run`."""

    type: ClassVar[str]
    config_class: ClassVar[type[SystemConfig]]
    trains: ClassVar[bool] = False  # learns from the labelled training documents
    open_answers: ClassVar[bool] = False  # can answer tasks whose answers are free text (qa): it generates

    def __init__(self, config: SystemConfig, context: RunContext):
        self.config = config
        self.context = context

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def train_size(self) -> int | None:
        """How many training documents this system sees (None: the whole training split)."""
        return self.config.train_size or self.context.train_size

    def training_data(self, train: Dataset) -> Dataset:
        """The seeded stratified subsample of ``train`` this system learns from. Systems of the same size
        get the same documents: the sample depends only on the split, the size and the seed."""
        size = self.train_size
        return train.subsample(size, seed=self.context.seed) if size else train

    def fail(self, message: str, key: str, index: int | None = None) -> ConfigError:
        """A `ConfigError` naming this system's field in the config file."""
        where = f"systems[{index}]" if index is not None else f"systems.{self.name}"
        return ConfigError(message, file=self.context.source, field=f"{where}.{key}")

    @classmethod
    def describe(cls, record: dict) -> str:
        """How a methods paragraph names this system, from its stored record in results.json (``name``,
        ``spec``: its settings, ``stats``, ``train_docs``)."""
        return f"“{record['name']}”"

    def check_task(self, index: int) -> None:
        """Refuse a task this system cannot answer: a free-text (qa) task for a system that classifies, or
        one whose ``answer`` setting scores options (constrained)."""
        task = self.context.codebook.task
        if not task.open_answers:
            return
        if not self.open_answers:
            raise self.fail(f"type {self.type!r} classifies into codebook labels; a {task.name!r} task needs "
                            "generated answers (types prompt, api, finetuned, predictions)", "type", index)
        if getattr(self.config, "answer", "generate") != "generate":
            raise self.fail(f"a {task.name!r} task is answered in free text: answer = \"generate\" (there are no "
                            "options to score)", "answer", index)

    def preflight(self, index: int) -> Any:
        """Check, before any system runs, what this one needs (files, model names, keys); return what
        identifies its inputs beyond its settings (e.g. a model's weights), for the fingerprint."""
        return None

    def fingerprint(self, identity: Any = None) -> dict[str, Any]:
        """Everything that determines this system's answers on given data."""
        return {"settings": self.config.settings(), "identity": identity}

    @abstractmethod
    def run(self, train: Dataset, test: Dataset) -> tuple[list[Prediction], RunStats]:
        """Label ``test``, learning from ``train`` where the system trains (the caller passes
        `training_data`: the system's own training documents)."""

    def predictor(self, train: Dataset) -> Callable[[Dataset], list[Prediction]]:
        """A function labelling batch after batch of a corpus with what was learnt from ``train``: by default
        each batch is a `run`; systems that fit in memory override it to fit once."""
        return lambda test: self.run(train, test)[0]


_REGISTRY: dict[str, type[System]] = {}


def register_system(cls: type[System]) -> type[System]:
    """Class decorator: make a system type available to configs by its ``type`` name."""
    if not (isinstance(cls, type) and issubclass(cls, System)):
        raise TypeError(f"{cls!r} is not a System subclass")
    _REGISTRY[cls.type] = cls
    return cls


def unregister_system(name: str) -> None:
    _REGISTRY.pop(name, None)


def system_types() -> dict[str, type[System]]:
    """Every registered system type, built-in and plugin, by name."""
    load_plugins(ENTRY_POINT_GROUP, register_system, lambda name: name in _REGISTRY)
    return dict(_REGISTRY)


def get_system_class(name: str) -> type[System]:
    types = system_types()
    if name not in types:
        raise KeyError(name)
    return types[name]


def trained_on(record: dict) -> str:
    """``1,891 training documents`` (or ``the training split`` for records that do not say)."""
    n = record.get("train_docs") or record.get("stats", {}).get("train_examples")
    return f"{n:,} training documents" if n else "the training split"


def readable_model(spec: dict) -> str:
    from annotune.report.format import system_model

    return system_model(spec)


ANSWER_WORDS = {"generate": "free generation", "constrained": "constrained answering"}


def answer_words(spec: dict) -> str:
    """``free generation`` / ``constrained answering`` for a stored spec's answer mode."""
    answer = spec.get("answer", "generate")
    return ANSWER_WORDS.get(answer, answer)


def shot_words(spec: dict) -> str:
    shots = int(spec.get("shots", 0))
    return "zero-shot" if shots == 0 else f"{shots}-shot"


def file_identity(path: Path) -> str:
    """The sha256 of a file's content (a corrected predictions file is not mistaken for the old one)."""
    return hashlib.sha256(path.read_bytes()).hexdigest()


__all__ = ["SystemConfig", "System", "RunContext", "ModelPool", "Defaults", "register_system",
           "unregister_system", "system_types", "get_system_class", "ENTRY_POINT_GROUP"]
