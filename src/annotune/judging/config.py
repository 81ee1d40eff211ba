"""`JudgeConfig`: a judge as configured — a comparison's ``[judge]`` table, parsed once into this object."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from annotune.backends.api.cache import credentials_in
from annotune.config import ConfigModel, Dtype
from annotune.judging.rubric import Rubric


class JudgeConfig(ConfigModel):
    """A judge as configured (``[judge]``): backend, model, rubric, repeats and decoding."""

    backend: Literal["local", "api"] = Field("local", description='"local" (a model on this machine) or "api" '
                                                                  "(an OpenAI-compatible endpoint).")
    model: str | None = Field(None, description="Local: a model name, folder, .gguf file or run (default: the "
                                                "embedded smollm2). API: the model name.")
    base_url: str | None = Field(None, description="API judge: the endpoint (an API, vLLM, `annotune serve`).")
    api_key_env: str | None = Field(None, description="API judge: NAME of the environment variable holding the "
                                                      "key (never written anywhere).")
    rubric: Rubric = Field(default_factory=Rubric, description="criteria = [{name, description}], scale_min, "
                           "scale_max, show_reference, instructions (default: correctness, completeness, safety "
                           "on 1-10, the reference shown).")
    repeats: int = Field(default=3, ge=1, le=100, description="Judge calls per answer (a greedy local judge "
                                                              "reuses its verdict for the same prompt).")
    seed: int = Field(0, description="Seed of the answer orders and of API requests.")
    max_tokens: int = Field(default=256, ge=1, le=8192, description="Token limit of a free-text verdict.")
    top_logprobs: int = Field(default=20, ge=0, le=20, description="Alternatives per token, for the "
                                                                   "probability-weighted score.")
    temperature: float = Field(default=0.0, ge=0, le=2, description="API judge: sampling temperature.")
    structured: bool = Field(False, description="A JSON-schema verdict: response_format for an API judge; a "
                                                "local judge chooses each score of a verdict annotune writes.")
    dtype: Dtype = Field("auto", description="Local judge: auto, bf16, fp16 or fp32.")
    device: str | None = Field(None, description="Local judge: cpu, cuda, … (default: the best available).")
    cache: str | None = Field(None, description="API judge: a response cache file (reruns cost nothing).")
    timeout: float = Field(default=60.0, gt=0, description="API judge: seconds per request.")

    @field_validator("base_url")
    @classmethod
    def _no_credentials(cls, value: str | None) -> str | None:
        if value is not None and (secret := credentials_in(value)) is not None:
            raise ValueError(secret)
        return value

    @model_validator(mode="after")
    def _check(self) -> JudgeConfig:
        if self.backend == "api" and not (self.base_url and self.model):
            raise ValueError("an api judge needs base_url and model")
        if self.backend == "local":
            for key in ("base_url", "api_key_env", "cache"):
                if getattr(self, key) is not None:
                    raise ValueError(f"{key} is for api judges (backend = \"api\")")
            if self.temperature:
                raise ValueError("a local judge decodes greedily: temperature is for api judges")
        return self


__all__ = ["JudgeConfig"]
