"""The codebook: what the labels are and what they mean.

A codebook is the contract between the researcher, the human coders and the models: every prompt,
parser, metric and report is derived from it. Three task kinds are supported:

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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from annotune.errors import CodebookError

TaskKind = Literal["single", "multi", "dimensions"]
KINDS: tuple[str, ...] = ("single", "multi", "dimensions")
TOP_KEYS = ("task", "labels", "dimensions")
TASK_KEYS = ("name", "kind", "instructions", "text_field", "label_field", "id_field", "max_labels", "scale")
LABEL_KEYS = ("name", "definition", "aliases")


def normalise(text: str) -> str:
    """Case-, whitespace- and punctuation-insensitive form used to match labels and aliases."""
    out = []
    for ch in text.casefold().strip():
        out.append(ch if ch.isalnum() else " ")
    return " ".join("".join(out).split())


@dataclass(frozen=True)
class Label:
    name: str
    definition: str
    aliases: tuple[str, ...] = ()


@dataclass
class Codebook:
    """Labels, definitions and instructions of one annotation task."""

    name: str
    kind: TaskKind
    labels: list[Label]
    instructions: str = ""
    text_field: str = "text"
    label_field: str = "label"
    id_field: str | None = "id"
    max_labels: int | None = None
    scale: list[str] = field(default_factory=list)
    source: str | None = None

    def __post_init__(self) -> None:
        self._lookup = self._build_lookup()
        self._scale_lookup = {normalise(v): v for v in self.scale}

    # ------------------------------------------------------------------ loading
    @classmethod
    def load(cls, path: str | Path) -> "Codebook":
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
    def from_dict(cls, data: dict[str, Any], source: str | None = None) -> "Codebook":
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
        for key in task:
            if key not in TASK_KEYS:
                raise fail(f"unknown key {key!r} in [task] (allowed: {', '.join(TASK_KEYS)})", f"task.{key}")
        name = str(task.get("name") or (Path(source).stem if source else "task"))
        kind = task.get("kind", "single")
        if kind not in KINDS:
            raise fail(f"unknown task kind {kind!r}; expected one of {', '.join(KINDS)}", "task.kind")

        raw_labels = data.get("labels") or data.get("dimensions")
        if not raw_labels:
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

        max_labels = task.get("max_labels")
        scale = task.get("scale", [])
        if not isinstance(scale, list) or not all(isinstance(v, (str, int, float)) for v in scale):
            raise fail("scale must be a list of values, e.g. scale = ['low', 'medium', 'high']", "task.scale")
        if kind == "multi":
            if max_labels is None:
                max_labels = len(labels)
            if not isinstance(max_labels, int) or isinstance(max_labels, bool) or max_labels < 1:
                raise fail("max_labels must be a positive integer", "task.max_labels")
            if max_labels > len(labels):
                raise fail(f"max_labels ({max_labels}) > number of labels ({len(labels)})", "task.max_labels")
        elif max_labels is not None:
            raise fail(f"max_labels only applies to kind 'multi', not {kind!r}", "task.max_labels")
        if kind == "dimensions":
            if len(scale) < 1:
                raise fail("kind 'dimensions' needs a scale, e.g. scale = ['low', 'medium', 'high']", "task.scale")
            norms = [normalise(str(v)) for v in scale]
            if len(set(norms)) != len(norms) or not all(norms):
                raise fail("scale values must be distinct and non-empty", "task.scale")
            scale = [str(v) for v in scale]
        elif scale:
            raise fail(f"scale only applies to kind 'dimensions', not {kind!r}", "task.scale")
        if kind == "single" and len(labels) < 2:
            raise fail("a single-label task needs at least two labels", "labels")

        id_field = task.get("id_field", "id")
        return cls(
            name=name,
            kind=kind,
            labels=labels,
            instructions=str(task.get("instructions", "")).strip(),
            text_field=str(task.get("text_field", "text")),
            label_field=str(task.get("label_field", "labels" if kind == "dimensions" else "label")),
            id_field=str(id_field) if id_field else None,
            max_labels=max_labels,
            scale=scale,
            source=source,
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
