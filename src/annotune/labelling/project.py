"""A labelling project: one folder with ``annotune-project.toml`` (codebook, store, systems) and its store.

    annotune init flourishing-project --codebook examples/flourishing.toml
    annotune import flourishing-project ../shared/data/flourishing/tweets.jsonl --no-labels

The project file takes the same ``[model]``, ``[finetune]`` and ``[[systems]]`` tables as a comparison config
(every system type works: the AI crowd of `propose`, the fine-tuned labeller of `train` and `label`), plus
``store`` (a SQLite file in the folder by default, or a ``postgresql://`` URL; a password belongs in
``PGPASSWORD``, never in the file) and the ``[label]`` and ``[propose]`` defaults.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from pydantic import ConfigDict, Field, SerializeAsAny, ValidationError

from annotune.codebook import Codebook
from annotune.config import ConfigModel, config_error, resolve_model_path
from annotune.errors import ConfigError
from annotune.experiments.config import ModelConfig, check_system_names, codebook_of, parse_system, read_toml
from annotune.finetune.config import FineTuneConfig
from annotune.systems.base import Defaults, ModelPool, RunContext, System, SystemConfig, system_types

PROJECT_FILE = "annotune-project.toml"


class LabelSettings(ConfigModel):
    """``[label]``: how `annotune train` / `label` / `route` work by default."""

    system: str | None = Field(None, min_length=1, description="The [[systems]] name that labels the corpus "
                                                                "(default: the last system).")
    batch_size: int = Field(256, ge=1, description="Documents labelled and committed together.")
    holdout: float = Field(0.1, ge=0, lt=1, description="Share of the human-labelled documents kept out of "
                                                         "training, to measure precision for `route --precision`.")


class ProposeSettings(ConfigModel):
    """``[propose]``: the AI crowd's defaults."""

    systems: list[str] | None = Field(None, description="[[systems]] names that propose (default: all but the "
                                                         "labeller).")
    sample: int = Field(100, ge=1, description="Documents drawn (seeded) from those without a human label.")


class ProjectConfig(ConfigModel):
    model_config = ConfigDict(extra="forbid", strict=True, arbitrary_types_allowed=True)

    name: str = Field(min_length=1)
    seed: int = 0
    store: str = Field("labels.db", min_length=1, description="A SQLite file (relative to the project) or a "
                                                              "postgresql:// URL.")
    codebook: Codebook
    model: ModelConfig = Field(default_factory=ModelConfig)
    finetune: dict[str, Any] = Field(default_factory=dict)
    systems: list[SerializeAsAny[SystemConfig]] = Field(default_factory=list)
    label: LabelSettings = Field(default_factory=LabelSettings)
    propose: ProposeSettings = Field(default_factory=ProposeSettings)
    source: Path

    @property
    def folder(self) -> Path:
        return self.source.parent

    def system(self, name: str | None, *, role: str = "label") -> SystemConfig:
        """A [[systems]] entry by name (None: the ``[label]`` system, else the last one)."""
        if not self.systems:
            raise ConfigError("the project has no [[systems]]: add one (any system type)", file=self.source,
                              field="systems")
        wanted = name or (self.label.system if role == "label" else None)
        if wanted is None:
            return self.systems[-1]
        for s in self.systems:
            if s.name == wanted:
                return s
        names = ", ".join(repr(s.name) for s in self.systems)
        raise ConfigError(f"no system named {wanted!r} (systems: {names})", file=self.source,
                          field="label.system" if name is None else "systems")


SECTIONS = {"model": ModelConfig, "label": LabelSettings, "propose": ProposeSettings}
TOP_KEYS = {"name", "seed", "store", "codebook", "finetune", "systems", *SECTIONS}


def load_project_config(folder: str | Path) -> ProjectConfig:
    folder = Path(folder)
    path = folder / PROJECT_FILE if folder.is_dir() or not folder.suffix else folder
    if not path.exists():
        raise ConfigError(f"not an annotune project (no {PROJECT_FILE}): run `annotune init {folder}` first",
                          file=path)
    raw, _ = read_toml(path)
    for key in raw:
        if key not in TOP_KEYS:
            raise ConfigError(f"unknown key {key!r} (allowed: {', '.join(sorted(TOP_KEYS))})", file=path, field=key)
    sections = {key: cls.parse(raw[key], file=path, where=key) for key, cls in SECTIONS.items() if key in raw}
    if "finetune" in raw:
        FineTuneConfig.parse({"seed": 0, **raw["finetune"]}, file=path, where="finetune")
    seed = raw.get("seed", 0)
    defaults = Defaults(model=raw.get("model", {}), finetune=raw.get("finetune", {}),
                        seed=seed if isinstance(seed, int) else 0)
    systems = raw.get("systems", [])
    if not isinstance(systems, list):
        raise ConfigError("systems must be a list of [[systems]] tables", file=path, field="systems")
    parsed = [parse_system(s, i, defaults, file=path) for i, s in enumerate(systems, start=1)]
    check_system_names(parsed, path)
    if "model" in sections:
        sections["model"].name = resolve_model_path(sections["model"].name, path.parent)
    values = {k: v for k, v in raw.items() if k not in ("codebook", "systems", *sections)}
    try:
        cfg = ProjectConfig.model_validate({"name": path.parent.resolve().name, **values, **sections,
                                            "codebook": codebook_of(raw, path), "systems": parsed, "source": path})
    except ValidationError as exc:
        raise config_error(exc, file=path) from None
    names = [s.name for s in cfg.systems]
    if cfg.label.system and cfg.label.system not in names:
        raise ConfigError(f"no system named {cfg.label.system!r}", file=path, field="label.system")
    for name in cfg.propose.systems or []:
        if name not in names:
            raise ConfigError(f"no system named {name!r}", file=path, field="propose.systems")
    return cfg


PROJECT_TEMPLATE = '''\
# annotune labelling project: `annotune status {folder}` shows where it stands.
name = "{name}"
seed = 0
store = "{store}"          # a SQLite file in this folder, or postgresql://user@host/db (password: PGPASSWORD)
codebook = "codebook.yaml"

# The AI crowd (`annotune propose`) and the labeller (`annotune train`, `annotune label`): any system type,
# with the same keys as in a comparison config.
[[systems]]
name = "zero-shot"
type = "prompt"
answer = "constrained"

[[systems]]
name = "head"
type = "head"              # LoRA + a classification head on the verified labels

[label]
system = "head"
'''


def write_project(folder: Path, codebook: Codebook, *, store: str | None = None, name: str | None = None) -> Path:
    """Create ``folder`` with a project file and a copy of the codebook (an existing project is an error)."""
    import yaml

    path = folder / PROJECT_FILE
    if path.exists():
        raise ConfigError("this folder already holds an annotune project", file=path)
    if store and "://" in store:
        import sqlalchemy as sa

        try:
            url = sa.engine.make_url(store)
            has_password = url.password is not None or any("password" in k.lower() for k in url.query)
        except sa.exc.ArgumentError:
            has_password = False  # store_url names what is wrong with it when the store opens
        if has_password:
            raise ConfigError("the store URL holds a password, which would be written to the project file: give "
                              "postgresql://user@host/db and set PGPASSWORD (or ~/.pgpass)", field="store")
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "codebook.yaml").write_text(yaml.safe_dump(codebook.to_dict(), allow_unicode=True, sort_keys=False),
                                          encoding="utf-8")
    text = PROJECT_TEMPLATE.format(folder=folder, name=(name or folder.resolve().name).replace('"', "'"),
                                   store=(store or "labels.db").replace('"', "%22"))
    path.write_text(text, encoding="utf-8")
    return path


def run_context(cfg: ProjectConfig, *, progress: bool, log: Callable[[str], None],
                models: ModelPool | None = None) -> RunContext:
    return RunContext(codebook=cfg.codebook, seed=cfg.seed, output=cfg.folder / "runs", base_dir=cfg.folder,
                      source=cfg.source, progress=progress, log=log, models=models or ModelPool())


def build_system(config: SystemConfig, context: RunContext) -> System:
    return system_types()[config.type](config, context)


__all__ = ["ProjectConfig", "LabelSettings", "ProposeSettings", "load_project_config", "write_project",
           "PROJECT_FILE"]
