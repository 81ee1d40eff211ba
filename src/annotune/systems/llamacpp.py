"""`type = "llamacpp"`: a GGUF file run by llama.cpp, as it is deployed (needs ``annotune[gguf]``).

``model`` is a ``.gguf`` file (one written by ``annotune export-run <run> --gguf``, or any other) or a name whose
model is a GGUF file (``smollm2``: the embedded one). A file from ``annotune export-run`` is asked with the prompt
its run was trained on, so the row sits beside the run's own ``finetuned`` row: the metric before and after
export.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field

from annotune.config import DEFAULT_MODEL, resolve_model_path
from annotune.errors import AnnotuneError
from annotune.systems.base import System, SystemConfig, register_system, shot_words


class LlamaCppConfig(SystemConfig):
    type: Literal["llamacpp"] = "llamacpp"
    model: str = Field(DEFAULT_MODEL, min_length=1, description="GGUF file (e.g. <run>/gguf/model-q4_k_m.gguf "
                                                                "from `annotune export-run`) or smollm2 (embedded).")
    shots: int = Field(0, ge=0, description="Labelled training examples shown before each document.")
    example_chars: int = Field(1500, ge=1, description="Characters of each example's text kept in the prompt.")
    grammar: bool = Field(True, description="Restrict answers to the codebook's canonical answers (a GBNF "
                                            "grammar); false: free generation, parsed.")
    context: int = Field(4096, ge=256, description="llama.cpp context window in tokens.")
    threads: int | None = Field(None, ge=1, description="CPU threads (default: every core this process may use).")
    max_text_tokens: int | None = Field(None, ge=1, description="Document tokens kept in the prompt (default: "
                                                                "an exported run's fine-tuning max_text_tokens, "
                                                                "else 512).")
    max_new_tokens: int | None = Field(None, ge=1, description="Longest generated answer (default: by task kind).")

    def resolve_paths(self, base: Path) -> None:
        self.model = resolve_model_path(self.model, base)


@register_system
class LlamaCppSystem(System):
    """Labels with a GGUF model through llama.cpp (greedy, grammar-constrained)."""

    type = "llamacpp"
    open_answers = True
    config_class = LlamaCppConfig

    @classmethod
    def describe(cls, record: dict) -> str:
        spec, stats = record.get("spec", {}), record.get("stats", {})
        what = (f"the GGUF export ({Path(spec.get('model', '')).name}) of a fine-tuned run"
                if stats.get("exported_run") else f"{spec.get('model')} (GGUF) prompted {shot_words(spec)}")
        grammar = "restricted by a grammar to the codebook's answers" if spec.get("grammar", True) else "free"
        return f"{what}, run by llama.cpp, answers {grammar} (“{record['name']}”)"

    def gguf_file(self, index: int | None = None) -> Path:
        """The GGUF file ``model`` names."""
        from annotune.backends.models import resolve_model

        try:
            source = resolve_model(self.config.model)
        except AnnotuneError as exc:
            raise self.fail(exc.format(), "model", index) from None
        if not source.gguf_file:
            raise self.fail(f"{self.config.model!r} is not a GGUF file: llama.cpp runs .gguf files (write one from "
                            "a fine-tuned run with `annotune export-run <run> --gguf`)", "model", index)
        return Path(source.location) / source.gguf_file

    def preflight(self, index: int) -> dict:
        from annotune.backends.llamacpp import import_llama_cpp

        try:
            version = import_llama_cpp().__version__
        except AnnotuneError as exc:
            raise self.fail(exc.format(), "type", index) from None
        path = self.gguf_file(index)
        stat = path.stat()
        return {"file": str(path.resolve()), "bytes": stat.st_size, "mtime_ns": stat.st_mtime_ns,
                "llama_cpp_python": version}

    def builder(self, train, info: dict | None):
        """The prompt: an exported run's own (``info``: its export.json; no label definitions if it was trained
        without), else the full codebook prompt with ``shots`` examples."""
        from annotune.finetune.trainer import run_prompt_builder
        from annotune.tasks.prompts import draw_examples, few_shot_builder

        cfg, ctx = self.config, self.context
        if info is None:
            return few_shot_builder(ctx.codebook, train.docs, cfg.shots, ctx.seed, example_chars=cfg.example_chars)
        builder = run_prompt_builder(info["folder"], ctx.codebook)
        builder.examples = draw_examples(train.docs, ctx.codebook, cfg.shots, ctx.seed)
        builder.example_chars = cfg.example_chars
        return builder

    def run(self, train, test):
        from annotune.backends.llamacpp import LlamaCppBackend
        from annotune.export.gguf import export_info

        cfg, ctx = self.config, self.context
        path = self.gguf_file()
        info = export_info(path)
        text_tokens = cfg.max_text_tokens or (info or {}).get("max_text_tokens") or 512
        backend = LlamaCppBackend(path, context=cfg.context, threads=cfg.threads, grammar=cfg.grammar,
                                  max_text_tokens=text_tokens, max_new_tokens=cfg.max_new_tokens)
        builder = self.builder(train, info)
        try:
            preds, stats = backend.label(test.docs, builder, progress=ctx.progress)
        finally:
            backend.close()
        stats.extra["examples"] = [d.id for d in builder.examples]
        stats.extra["gguf_bytes"] = path.stat().st_size
        stats.extra["max_text_tokens"] = text_tokens
        if info is not None:
            stats.extra["exported_run"] = info["run"]
        return preds, stats
