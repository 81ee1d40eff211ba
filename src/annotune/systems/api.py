"""`type = "api"`: a model behind an OpenAI-compatible endpoint (OpenAI, Azure, vLLM, Ollama, llama.cpp's
server or `annotune serve`), through `annotune.backends.api.ApiBackend`."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator

from annotune.backends.api.cache import credentials_in, endpoint_id
from annotune.backends.api.client import ApiBackend, retry_summary
from annotune.backends.api.pricing import Price, resolve_price
from annotune.config import Answer, resolve_path
from annotune.errors import ConfigError
from annotune.systems.base import System, SystemConfig, answer_words, register_system, shot_words
from annotune.tasks.prompts import PromptBuilder, few_shot_builder


class ApiConfig(SystemConfig):
    type: Literal["api"] = "api"
    base_url: str = Field(pattern=r"^https?://", description="Endpoint, e.g. https://api.openai.com/v1 (never a "
                          "key or password in it: api_key_env names the key).")
    model: str = Field(min_length=1, description="Model id the endpoint knows.")
    api_key_env: str | None = Field(None, description="NAME of the environment variable holding the API key "
                                                      "(never the key itself).")
    shots: int = Field(0, ge=0, description="Labelled training examples shown before each document.")
    answer: Answer = Field("generate", description="generate, or constrained (per-question logprobs).")
    example_chars: int = Field(1500, ge=1, description="Characters of each example's text kept in the prompt.")
    definitions: bool = Field(True, description="Show label definitions (false: the short prompt a fine-tuned "
                                                "run was trained with).")
    structured: bool = Field(False, description="Ask for strict JSON-schema output.")
    concurrency: int = Field(4, ge=1, le=256, description="Requests in flight at once.")
    max_retries: int = Field(100, ge=0, description="Retry budget for the whole run.")
    retries_per_request: int = Field(8, ge=0, description="Retries of one request.")
    malformed_retries: int = Field(1, ge=0, description="Retries of a malformed response before INVALID.")
    budget_usd: float | None = Field(None, ge=0, description="Stop before spending more than this (needs a price).")
    timeout: float = Field(60.0, gt=0, description="Seconds per request.")
    backoff: float = Field(1.0, ge=0, description="Base of the exponential backoff, in seconds.")
    max_tokens: int | None = Field(None, ge=1, description="Longest answer (default: by task kind).")
    top_logprobs: int = Field(20, ge=1, le=20, description="Alternatives per position for constrained answers.")
    price: float | dict[str, Any] | str | None = Field(None, description="0 (free), {input = ..., output = ...} "
                                                                          "USD per 1M tokens, or a price file.")
    cache: str | None = Field(None, min_length=1, description="Response cache (default: <output>/api-cache.sqlite).")
    tokenizer: str | None = Field(None, min_length=1, description="HF tokenizer for exact token counts in `plan`.")

    @field_validator("base_url")
    @classmethod
    def _no_credentials(cls, value: str) -> str:
        if (secret := credentials_in(value)) is not None:
            raise ValueError(secret)
        return value

    @field_validator("api_key_env")
    @classmethod
    def _env_name(cls, value: str | None) -> str | None:
        import re

        if value is not None and not re.match(r"^[A-Za-z_][A-Za-z0-9_]*$", value):
            # never echo the value: it may be the key itself
            raise ValueError("api_key_env must be the NAME of the environment variable that holds the API key "
                             "(e.g. OPENAI_API_KEY), never the key itself")
        return value

    def resolve_paths(self, base: Path) -> None:
        if self.cache:
            self.cache = str(resolve_path(self.cache, base))
        if self.tokenizer and resolve_path(self.tokenizer, base).exists():
            self.tokenizer = str(resolve_path(self.tokenizer, base))
        if isinstance(self.price, str):
            self.price = str(resolve_path(self.price, base))


@register_system
class ApiSystem(System):
    type = "api"
    open_answers = True
    config_class = ApiConfig

    @classmethod
    def describe(cls, record: dict) -> str:
        spec = record.get("spec", {})
        return (f"{spec.get('model', record['name'])} through its API, prompted {shot_words(spec)} with "
                f"{answer_words(spec)} "
                f"(“{record['name']}”)")

    def price(self, index: int | None = None) -> Price | None:
        cfg, ctx = self.config, self.context
        where = f"systems[{index}].price" if index is not None else "price"
        return resolve_price(cfg.price, cfg.model, cfg.base_url, base_dir=ctx.base_dir, file=ctx.source, field=where)

    def cache_path(self) -> Path:
        return Path(self.config.cache) if self.config.cache else self.context.output / "api-cache.sqlite"

    def tokenizer(self):
        """The HF tokenizer the system names for exact token counts, else None."""
        if not self.config.tokenizer:
            return None
        from transformers import AutoTokenizer

        from annotune.backends.models import loadable_path, resolve_model

        return AutoTokenizer.from_pretrained(loadable_path(resolve_model(self.config.tokenizer)))

    def preflight(self, index: int) -> dict:
        """Key variable set, price known where a budget needs one; the identity never holds the key."""
        cfg = self.config
        if cfg.api_key_env and not os.environ.get(cfg.api_key_env, "").strip():
            raise self.fail(f"the environment variable {cfg.api_key_env} is not set (it must hold the API key)",
                            "api_key_env", index)
        price = self.price(index)
        if cfg.budget_usd is not None and price is None:
            raise self.fail(f"budget_usd needs a price for model {cfg.model!r}: set price = {{input = ..., "
                            "output = ...}} (USD per 1M tokens)", "price", index)
        return {"endpoint": endpoint_id(cfg.base_url), "model": cfg.model,
                "price": price.as_dict() if price else None}

    def backend(self) -> ApiBackend:
        cfg, ctx = self.config, self.context
        price = self.price()
        if price is None:
            ctx.log(f"warning: {self.name}: no price known for model {cfg.model!r}; cost is not reported (set "
                    "price = {input = ..., output = ...} in the system)")
        return ApiBackend(
            cfg.base_url, cfg.model, api_key_env=cfg.api_key_env, concurrency=cfg.concurrency,
            max_retries=cfg.max_retries, retries_per_request=cfg.retries_per_request,
            malformed_retries=cfg.malformed_retries, budget_usd=cfg.budget_usd, structured=cfg.structured,
            price=price, timeout=float(cfg.timeout), backoff=float(cfg.backoff), max_tokens=cfg.max_tokens,
            top_logprobs=cfg.top_logprobs, cache=self.cache_path(),
            budget_tokenizer=self.tokenizer() if cfg.budget_usd is not None else None, log=ctx.log)

    def builder(self, train_docs: list) -> PromptBuilder:
        cfg, ctx = self.config, self.context
        return few_shot_builder(ctx.codebook, train_docs, cfg.shots, ctx.seed, example_chars=cfg.example_chars,
                                definitions=cfg.definitions)

    def run(self, train, test):
        backend = self.backend()
        try:
            builder = self.builder(train.docs)
            preds, stats = backend.label(test.docs, builder, self.config.answer, progress=self.context.progress)
        finally:
            backend.close()
        stats.extra["examples"] = [d.id for d in builder.examples]
        ex = stats.extra
        if ex["retries"] or ex["failed_requests"]:
            self.context.log(f"{self.name}: {ex['retries']} retries ({retry_summary(ex['retry_reasons'])}), "
                             f"{ex['failed_requests']} failed requests recorded as INVALID")
        return preds, stats


__all__ = ["ApiConfig", "ApiSystem", "ConfigError"]
