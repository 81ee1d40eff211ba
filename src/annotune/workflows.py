"""The top-level verbs of annotune's Python API (re-exported by `annotune`); the CLI is a thin layer over
them.

    import annotune
    cfg = annotune.load_config("examples/bbc-news.toml")
    results = annotune.compare(cfg)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from annotune.errors import ConfigError
from annotune.experiments.config import ExperimentConfig, load_config


def _config(cfg: ExperimentConfig | str | Path) -> ExperimentConfig:
    return cfg if isinstance(cfg, ExperimentConfig) else load_config(cfg)


def compare(cfg: ExperimentConfig | str | Path, *, progress: bool = False, fresh: bool = False,
            log: Callable[[str], None] = lambda m: None) -> dict:
    """Run every system of a config on its test split; returns results.json's content."""
    from annotune.experiments.compare import Comparison

    cfg = _config(cfg)
    if not cfg.systems:
        raise ConfigError("no [[systems]] to compare (this config only has a [curve]: run `annotune curve`)",
                          file=cfg.source, field="systems")
    return Comparison(cfg, progress=progress, fresh=fresh, log=log).run()


def curve(cfg: ExperimentConfig | str | Path, *, progress: bool = False, fresh: bool = False,
          log: Callable[[str], None] = lambda m: None) -> dict:
    """The learning curve of a config's ``[curve]`` table; returns curve.json's content."""
    from annotune.experiments.curve import Curve

    return Curve(_config(cfg), progress=progress, fresh=fresh, log=log).run()


def finetune(cfg: ExperimentConfig | str | Path, *, system: str | None = None, run: str | Path | None = None,
             resume: bool = False, progress: bool = False,
             log: Callable[[str], None] = lambda m: None) -> tuple[Path, bool]:
    """Train a config's fine-tuned system (``system``, else the first one, else one built from
    ``[finetune]``) on its training split. Returns the run folder and whether it was trained now."""
    from annotune.experiments.compare import run_context, split_data
    from annotune.experiments.config import parse_system
    from annotune.finetune.trainer import is_run_folder
    from annotune.systems.finetuned import FinetunedConfig, FinetunedSystem

    cfg = _config(cfg)
    candidates = [s for s in cfg.systems if isinstance(s, FinetunedConfig)]
    if system:
        candidates = [s for s in candidates if s.name == system]
        if not candidates:
            raise ConfigError(f"no 'finetuned' system named {system!r}", file=cfg.source, field="systems")
    if candidates:
        config = candidates[0]
    else:
        config = parse_system({"name": "finetune", "type": "finetuned"}, 1, cfg.defaults(), file=cfg.source)
    if run is not None:
        config = config.model_copy(update={"run": str(run)})
    target = FinetunedSystem(config, run_context(cfg, progress=progress, log=log))
    train, _ = split_data(cfg, cfg.load_data())
    data = target.training_data(train)
    folder = target.run_folder(data)
    if is_run_folder(folder) and not resume:
        return folder, False
    return target.train(data, resume=resume, data_file=str(cfg.data.path or cfg.data.builtin)), True


def get_backend(model: str | None = None, **options: Any):
    """A labelling backend: a local model (name, HF folder or hub id, .gguf file, run folder), or with
    ``base_url=...`` an OpenAI-compatible endpoint (`annotune.backends.api.ApiBackend` options)."""
    if "base_url" in options:
        from annotune.backends.api.client import ApiBackend

        return ApiBackend(options.pop("base_url"), model or "", **options)
    from annotune.backends.local import LocalBackend

    return LocalBackend(model, **options)


__all__ = ["load_config", "compare", "curve", "finetune", "get_backend"]
