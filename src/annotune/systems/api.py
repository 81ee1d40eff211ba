"""`type = "api"` systems: a model behind an OpenAI-compatible endpoint (see `annotune.backends.api`)."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Callable

from annotune.backends.api.cache import endpoint_id
from annotune.backends.api.client import ANSWER_MODES, ApiBackend, _reasons
from annotune.backends.api.pricing import Price, resolve_price
from annotune.backends.base import Prediction, RunStats
from annotune.errors import ConfigError
from annotune.tasks.prompts import PromptBuilder

_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def check_api_spec(spec: dict, file: Path, where: str) -> None:
    """ConfigError for an `api` system whose options are missing or of the wrong type. Never echoes
    ``api_key_env`` when it does not look like a variable name (it may be the key itself)."""
    def fail(msg: str, key: str) -> ConfigError:
        return ConfigError(msg, file=file, field=f"{where}.{key}")

    for key in ("base_url", "model"):
        if not isinstance(spec.get(key), str) or not spec[key].strip():
            raise fail(f"an api system needs {key} = \"...\"", key)
    if not re.match(r"^https?://", spec["base_url"]):
        raise fail(f"base_url must start with http:// or https://, not {spec['base_url']!r}", "base_url")
    env = spec.get("api_key_env")
    if env is not None and (not isinstance(env, str) or not _ENV_NAME.match(env)):
        raise fail("api_key_env must be the NAME of the environment variable that holds the API key "
                   "(e.g. OPENAI_API_KEY), never the key itself", "api_key_env")
    if spec.get("answer", "generate") not in ANSWER_MODES:
        raise fail("answer must be 'generate' or 'constrained'", "answer")
    ints = {"concurrency": (1, 256), "max_retries": (0, None), "retries_per_request": (0, None),
            "malformed_retries": (0, None), "max_tokens": (1, None), "top_logprobs": (1, 20)}
    for key, (lo, hi) in ints.items():
        if key in spec:
            v = spec[key]
            if isinstance(v, bool) or not isinstance(v, int) or v < lo or (hi is not None and v > hi):
                rng = f"between {lo} and {hi}" if hi is not None else f">= {lo}"
                raise fail(f"{key} must be an integer {rng}, not {v!r}", key)
    for key, positive in (("budget_usd", False), ("timeout", True), ("backoff", False)):
        if key in spec:
            v = spec[key]
            if isinstance(v, bool) or not isinstance(v, (int, float)) or v < 0 or (positive and v == 0):
                raise fail(f"{key} must be a number {'> 0' if positive else '>= 0'}, not {v!r}", key)
    for key in ("structured", "definitions"):
        if key in spec and not isinstance(spec[key], bool):
            raise fail(f"{key} must be true or false, not {spec[key]!r}", key)
    for key in ("cache", "tokenizer"):
        if key in spec and (not isinstance(spec[key], str) or not spec[key].strip()):
            raise fail(f"{key} must be a path, not {spec[key]!r}", key)
    resolve_price(spec.get("price"), spec["model"], spec["base_url"], base_dir=file.parent, file=file,
                  field=f"{where}.price")


def system_price(cfg, spec: dict, where: str = "price") -> Price | None:
    return resolve_price(spec.get("price"), spec["model"], spec["base_url"], base_dir=cfg.source.parent,
                         file=cfg.source, field=where)


def _path(cfg, value: str) -> Path:
    path = Path(value).expanduser()
    return path if path.is_absolute() else cfg.source.parent / path


def cache_path(cfg, spec: dict) -> Path:
    """Where an api system's responses are cached: ``cache`` (relative to the config) or
    ``<output>/api-cache.sqlite``."""
    return _path(cfg, spec["cache"]) if spec.get("cache") else Path(cfg.output) / "api-cache.sqlite"


def load_tokenizer(cfg, spec: dict):
    """The HF tokenizer a system names for exact token counts (``tokenizer = "<model or folder>"``)."""
    if not spec.get("tokenizer"):
        return None
    from transformers import AutoTokenizer

    from annotune.backends.models import loadable_path, resolve_model

    value = spec["tokenizer"]
    local = _path(cfg, value)
    source = resolve_model(str(local) if local.exists() else value)
    return AutoTokenizer.from_pretrained(loadable_path(source))


def api_identity(cfg, spec: dict, index: int) -> dict:
    """Preflight of an api system (key variable set, price known where a budget needs one) and what
    identifies it in the fingerprint (never the key)."""
    where = f"systems[{index}]"
    env = spec.get("api_key_env")
    if env and not os.environ.get(env, "").strip():
        raise ConfigError(f"the environment variable {env} is not set (it must hold the API key)", file=cfg.source,
                          field=f"{where}.api_key_env")
    price = system_price(cfg, spec, f"{where}.price")
    if spec.get("budget_usd") is not None and price is None:
        raise ConfigError(f"budget_usd needs a price for model {spec['model']!r}: set price = {{input = ..., "
                          "output = ...}} (USD per 1M tokens)", file=cfg.source, field=f"{where}.price")
    return {"endpoint": endpoint_id(spec["base_url"]), "model": spec["model"],
            "price": price.as_dict() if price else None}


def backend_from_spec(cfg, spec: dict, log: Callable[[str], None] | None = None) -> ApiBackend:
    price = system_price(cfg, spec)
    if price is None:
        (log or print)(f"warning: {spec['name']}: no price known for model {spec['model']!r}; cost is not "
                       "reported (set price = {input = ..., output = ...} in the system)")
    return ApiBackend(
        spec["base_url"], spec["model"], api_key_env=spec.get("api_key_env"),
        concurrency=spec.get("concurrency", 4), max_retries=spec.get("max_retries", 100),
        retries_per_request=spec.get("retries_per_request", 8), malformed_retries=spec.get("malformed_retries", 1),
        budget_usd=spec.get("budget_usd"), structured=spec.get("structured", False), price=price,
        timeout=float(spec.get("timeout", 60.0)), backoff=float(spec.get("backoff", 1.0)),
        max_tokens=spec.get("max_tokens"), top_logprobs=spec.get("top_logprobs", 20),
        cache=cache_path(cfg, spec), budget_tokenizer=load_tokenizer(cfg, spec) if spec.get("budget_usd") else None,
        log=log)


def system_builder(cfg, spec: dict, train_docs: list) -> PromptBuilder:
    from annotune.tasks.prompts import draw_examples

    examples = draw_examples(train_docs, cfg.codebook, int(spec.get("shots", 0)), cfg.seed)
    # definitions = false: the short prompt a fine-tuned run was trained with (a served fine-tuned model)
    return PromptBuilder(cfg.codebook, examples, example_chars=int(spec.get("example_chars", 1500)),
                         definitions=bool(spec.get("definitions", True)))


def run_api_system(cfg, spec: dict, train, test, *, progress: bool = True,
                   log: Callable[[str], None] | None = None) -> tuple[list[Prediction], RunStats]:
    """An `api` system of a comparison on the test split."""
    backend = backend_from_spec(cfg, spec, log)
    try:
        builder = system_builder(cfg, spec, train.docs)
        preds, stats = backend.label(test.docs, builder, spec.get("answer", "generate"), progress=progress)
    finally:
        backend.close()
    stats.extra["examples"] = [d.id for d in builder.examples]
    ex = stats.extra
    if log and (ex["retries"] or ex["failed_requests"]):
        log(f"{spec['name']}: {ex['retries']} retries ({_reasons(ex['retry_reasons'])}), "
            f"{ex['failed_requests']} failed requests recorded as INVALID")
    return preds, stats
