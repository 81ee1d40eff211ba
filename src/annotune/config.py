"""Typed configuration: every table of a config file is parsed once into a pydantic model.

`ConfigModel` is the base of every config class in annotune (experiment sections in
`annotune.experiments.config`, one class per system type in `annotune.systems`, fine-tuning
hyper-parameters in `annotune.finetune.config`). It rejects unknown keys and values of the wrong type
(strict: TOML's integers, floats, strings and booleans are taken as they are, never coerced), and
`parse` turns pydantic's errors into one `ConfigError` line naming the file and the field, e.g.
``config.toml, field 'systems[2].learning_rate': must be > 0, not -1``.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError

from annotune.errors import ConfigError

DEFAULT_MODEL = "smollm2"  # the embedded SmolLM2-135M-Instruct (annotune.backends.models)
ANSWER_MODES = ("generate", "constrained")
Answer = Literal["generate", "constrained"]
Dtype = Literal["auto", "bf16", "bfloat16", "fp16", "float16", "fp32", "float32"]  # backends.models.parse_dtype

M = TypeVar("M", bound="ConfigModel")


class ConfigModel(BaseModel):
    """Base of config tables: unknown keys and wrongly typed values are errors."""

    model_config = ConfigDict(extra="forbid", strict=True, validate_assignment=True)

    @classmethod
    def parse(cls: type[M], data: Any, *, file: str | Path | None = None, where: str = "") -> M:
        """Validate one table; a `ConfigError` names ``file`` and the dotted field under ``where``."""
        if not isinstance(data, dict):
            what = f"[{where}]" if where else "a table"
            raise ConfigError(f"must be a table ({what}), not {data!r}", file=file, field=where or None)
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            raise config_error(exc, file=file, where=where, allowed=cls.model_fields) from None

    def settings(self) -> dict[str, Any]:
        """The values as plain JSON-able data (what fingerprints and manifests record)."""
        return self.model_dump(mode="json")


def _path(where: str, loc: tuple) -> str:
    parts = [where] if where else []
    for item in loc:
        if isinstance(item, int):
            if not parts:
                parts.append(f"[{item + 1}]")
            else:
                parts[-1] += f"[{item + 1}]"
        else:
            parts.append(str(item))
    return ".".join(parts)


_TYPE_WORDS = {
    "int_type": "an integer", "int_parsing": "an integer", "int_from_float": "an integer",
    "float_type": "a number", "float_parsing": "a number", "bool_type": "true or false",
    "bool_parsing": "true or false", "string_type": "a string", "list_type": "a list",
    "dict_type": "a table", "model_type": "a table", "model_attributes_type": "a table",
}


def error_message(err: dict, allowed: Any = None) -> str:
    """A short sentence for one pydantic error."""
    kind, value, ctx = err["type"], err.get("input"), err.get("ctx") or {}
    shown = "" if isinstance(value, dict) else f", not {value!r}"
    if kind == "extra_forbidden":
        key = err["loc"][-1] if err["loc"] else "?"
        names = f" (allowed: {', '.join(sorted(allowed))})" if allowed and len(err["loc"]) == 1 else ""
        return f"unknown key {key!r}{names}"
    if kind == "missing":
        return "is required"
    if kind in _TYPE_WORDS:
        return f"must be {_TYPE_WORDS[kind]}{shown}"
    bounds = {"greater_than": "> {gt}", "greater_than_equal": ">= {ge}", "less_than": "< {lt}",
              "less_than_equal": "<= {le}"}
    if kind in bounds:
        limits = {k: f"{v:g}" if isinstance(v, float) else v for k, v in ctx.items()}
        return f"must be {bounds[kind].format(**limits)}{shown}"
    if kind == "literal_error":
        return f"must be {ctx.get('expected', 'one of the allowed values')}{shown}"
    if kind in ("string_too_short", "too_short"):
        return f"must not be empty{shown}"
    if kind == "value_error":
        return str(ctx.get("error", err["msg"]))
    if kind.startswith(("union_", "literal")):
        return f"{err['msg']}{shown}"
    return f"{err['msg'].rstrip('.')}{shown}"


_UNION_MEMBER = re.compile(r"^(int|float|str|bool|none)$|^(list|dict|tuple|literal)\[|^function-|^tagged-union")


def config_error(exc: ValidationError, *, file: str | Path | None, where: str = "", allowed: Any = None) -> ConfigError:
    """The first (most specific) error of a validation as a `ConfigError`."""
    errors = exc.errors(include_url=False)
    # a union reports one error per alternative: prefer one that names a field inside the value
    # an unknown key first (a typo explains a "missing" one too), then the deepest location
    err = max(errors, key=lambda e: (e["type"] == "extra_forbidden", len(e["loc"])))
    loc = tuple(x for x in err["loc"] if not (isinstance(x, str) and _UNION_MEMBER.match(x)))
    return ConfigError(error_message(err, allowed), file=file, field=_path(where, loc) or None)


def resolve_path(value: str | Path, base: Path) -> Path:
    """A path written in a config: relative to the config's folder."""
    path = Path(value).expanduser()
    return path if path.is_absolute() else base / path


def resolve_model_path(value: str, base: Path) -> str:
    """A model named in a config: a path relative to the config's folder when it is one (an existing
    file or folder there, or a value that looks like a path); names and hub ids as they are."""
    path = Path(value).expanduser()
    if path.is_absolute():
        return value
    candidate = base / path
    looks_like_path = value.startswith((".", "~")) or value.lower().endswith(".gguf")
    if candidate.exists() or looks_like_path:
        return str(candidate)
    return value


__all__ = ["ConfigModel", "ConfigError", "DEFAULT_MODEL", "ANSWER_MODES", "config_error", "resolve_path",
           "resolve_model_path", "Answer", "Dtype"]
