"""The codebook: what the labels are and what they mean.

A codebook is the contract between the researcher, the human coders and the models: every prompt,
parser, metric and report is derived from it, through the codebook's task kind (``codebook.task``, a
registered `annotune.tasks.base.TaskKind` bound to the codebook). Built-in kinds:

- ``single``: exactly one label out of N;
- ``multi``: between one and ``max_labels`` labels out of N;
- ``dimensions``: any subset of named dimensions, each with a value on an ordinal ``scale``
  (e.g. 46 flourishing dimensions x low/medium/high), answered as a JSON object.

Codebooks are TOML (or YAML) files::

    [task]
    name = "bbc-news"
    kind = "single"
    instructions = "Classify the news article by its main topic."
    text_field = "text"
    label_field = "label"

    [[labels]]
    name = "business"
    definition = "Companies, markets, the economy."
    aliases = ["economy"]
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from annotune.errors import CodebookError
from annotune.tasks import get_task, task_names
from annotune.tasks.base import TaskKind
from annotune.tasks.text import normalise

TOP_KEYS = ("task", "labels", "dimensions")
BASE_TASK_KEYS = ("name", "kind", "instructions", "text_field", "label_field", "id_field")
LABEL_KEYS = ("name", "definition", "aliases")


def task_keys() -> tuple[str, ...]:
    """The keys a ``[task]`` table may have: the common ones and every registered kind's settings."""
    keys = list(BASE_TASK_KEYS)
    for kind in task_names():
        keys += [k for k in get_task(kind).settings if k not in keys]
    return tuple(keys)


__all__ = ["Codebook", "Label", "normalise", "task_keys"]


@dataclass(frozen=True)
class Label:
    name: str
    definition: str
    aliases: tuple[str, ...] = ()


@dataclass
class Codebook:
    """Labels, definitions and instructions of one annotation task."""

    name: str
    kind: str  # a registered task kind: see `task`
    labels: list[Label]
    instructions: str = ""
    text_field: str = "text"
    label_field: str = "label"
    id_field: str | None = "id"
    max_labels: int | None = None
    scale: list[str] = field(default_factory=list)
    source: str | None = None
    options: dict[str, Any] = field(default_factory=dict)  # settings of a plug-in kind without a field here

    def __post_init__(self) -> None:
        self._lookup = self._build_lookup()
        self._scale_lookup = {normalise(v): v for v in self.scale}

    @property
    def task(self) -> TaskKind:
        """The codebook's task kind, bound to this codebook: prompts, parser, metrics, label JSON…"""
        bound = self.__dict__.get("_task")
        if bound is None or bound.name != self.kind or bound.codebook is not self:  # e.g. after copy.copy
            bound = get_task(self.kind)(self)
            self.__dict__["_task"] = bound
        return bound

    # ------------------------------------------------------------------ loading
    @classmethod
    def load(cls, path: str | Path) -> Codebook:
        path = Path(path)
        if not path.exists():
            raise CodebookError("codebook file not found", file=path)
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError as exc:
            raise CodebookError(f"not UTF-8 text ({exc.reason} at byte {exc.start})", file=path) from None
        if path.suffix.lower() in (".yaml", ".yml"):
            import yaml

            try:
                data = yaml.safe_load(text) or {}
            except yaml.YAMLError as exc:
                raise CodebookError(f"invalid YAML: {exc}".replace("\n", " "), file=path) from None
        else:
            try:
                data = tomllib.loads(text)
            except tomllib.TOMLDecodeError as exc:
                raise CodebookError(f"invalid TOML: {exc}", file=path) from None
        if "codebook" in data and isinstance(data["codebook"], dict):
            data = data["codebook"]
        return cls.from_dict(data, source=str(path))

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str | None = None) -> Codebook:
        """Build and validate a codebook from the parsed ``[task]`` + ``[[labels]]`` tables."""

        def fail(msg: str, fld: str | None = None) -> CodebookError:
            return CodebookError(msg, file=source, field=fld)

        if not isinstance(data, dict):
            raise fail("a codebook must be a table with [task] and [[labels]]")
        for key in data:
            if key not in TOP_KEYS:
                raise fail(f"unknown key {key!r} (allowed: {', '.join(TOP_KEYS)})", str(key))
        task = data.get("task", {})
        if not isinstance(task, dict):
            raise fail("[task] must be a table", "task")
        allowed = task_keys()
        for key in task:
            if key not in allowed:
                raise fail(f"unknown key {key!r} in [task] (allowed: {', '.join(allowed)})", f"task.{key}")
        name = str(task.get("name") or (Path(source).stem if source else "task"))
        kind = task.get("kind", "single")
        kinds = task_names()
        if not isinstance(kind, str) or kind not in kinds:
            raise fail(f"unknown task kind {kind!r}; expected one of {', '.join(kinds)}", "task.kind")
        task_cls = get_task(kind)

        raw_labels = data.get("labels") or data.get("dimensions")
        if task_cls.open_answers:
            if raw_labels:
                raise fail(f"a {kind!r} codebook has no [[labels]]: its answers are free text (the reference "
                           "answers sit in the data's label_field)", "labels")
            raw_labels = []
        elif not raw_labels:
            raise fail("the codebook defines no labels (add [[labels]] entries)", "labels")
        if isinstance(raw_labels, dict):  # {name: definition} shorthand
            raw_labels = [{"name": k, "definition": v} for k, v in raw_labels.items()]
        if not isinstance(raw_labels, list):
            raise fail("labels must be a list of [[labels]] tables with name and definition", "labels")
        labels: list[Label] = []
        seen: dict[str, str] = {}
        for i, item in enumerate(raw_labels, start=1):
            where = f"labels[{i}]"
            if isinstance(item, str):
                raise fail("each label needs a name and a definition, not just a string", where)
            if not isinstance(item, dict):
                raise fail("each label must be a table with name and definition", where)
            for key in item:
                if key not in LABEL_KEYS:
                    raise fail(f"unknown key {key!r} in a label (allowed: {', '.join(LABEL_KEYS)})",
                               f"{where}.{key}")
            lname = str(item.get("name", "")).strip()
            if not lname:
                raise fail("label without a name", f"{where}.name")
            definition = str(item.get("definition", "")).strip()
            if not definition:
                raise fail(f"label {lname!r} has an empty definition", f"{where}.definition")
            aliases = item.get("aliases", [])
            if isinstance(aliases, str):
                aliases = [aliases]
            if not isinstance(aliases, list) or not all(isinstance(a, (str, int, float)) for a in aliases):
                raise fail("aliases must be a list of strings", f"{where}.aliases")
            aliases = tuple(str(a).strip() for a in aliases if str(a).strip())
            for j, key in enumerate((lname, *aliases)):
                norm = normalise(key)
                fld = f"{where}.name" if j == 0 else f"{where}.aliases"
                if not norm:
                    raise fail(f"label or alias {key!r} has no letters or digits", fld)
                if norm in seen:
                    what = "label" if j == 0 else "alias"
                    raise fail(f"duplicate {what} {key!r} (clashes with label {seen[norm]!r})", fld)
                seen[norm] = lname
            labels.append(Label(lname, definition, aliases))

        for other in kinds:  # another kind's settings, e.g. max_labels in a single-label codebook
            for key in get_task(other).settings:
                if key in task and key not in task_cls.settings:
                    raise fail(f"{key} only applies to kind {other!r}, not {kind!r}", f"task.{key}")
        settings = task_cls.validate(task, labels, fail)
        own = {f.name for f in fields(cls)}
        options = {k: v for k, v in settings.items() if k not in own}
        settings = {k: v for k, v in settings.items() if k in own}

        id_field = task.get("id_field", "id")
        return cls(
            name=name,
            kind=kind,
            labels=labels,
            instructions=str(task.get("instructions", "")).strip(),
            text_field=str(task.get("text_field", task_cls.default_text_field)),
            label_field=str(task.get("label_field", task_cls.default_label_field)),
            id_field=str(id_field) if id_field else None,
            source=source,
            options=options,
            **settings,
        )

    def to_dict(self) -> dict[str, Any]:
        task: dict[str, Any] = {
            "name": self.name,
            "kind": self.kind,
            "instructions": self.instructions,
            "text_field": self.text_field,
            "label_field": self.label_field,
        }
        task["id_field"] = self.id_field or ""  # "" = no id column (None is not expressible in TOML)
        if self.max_labels is not None:
            task["max_labels"] = self.max_labels
        if self.scale:
            task["scale"] = list(self.scale)
        task.update(self.options)
        labels = []
        for lab in self.labels:
            entry: dict[str, Any] = {"name": lab.name, "definition": lab.definition}
            if lab.aliases:
                entry["aliases"] = list(lab.aliases)
            labels.append(entry)
        return {"task": task, "labels": labels}

    # ------------------------------------------------------------------ lookups
    def _build_lookup(self) -> dict[str, str]:
        table: dict[str, str] = {}
        for lab in self.labels:
            for key in (lab.name, *lab.aliases):
                table[normalise(key)] = lab.name
        return table

    @property
    def label_names(self) -> list[str]:
        return [lab.name for lab in self.labels]

    def canonical_label(self, value: str) -> str | None:
        """The label a name or alias refers to (case/space/punctuation-insensitive), else None."""
        return self._lookup.get(normalise(str(value)))

    def canonical_value(self, value: str) -> str | None:
        """The scale value a string refers to (dimensions tasks), else None."""
        return self._scale_lookup.get(normalise(str(value)))
