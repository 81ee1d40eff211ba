"""`LlamaCppBackend`: a GGUF file run by llama.cpp (``llama-cpp-python``, the ``annotune[gguf]`` extra) — the
way a fine-tuned model is deployed (llama.cpp, Ollama, LM Studio), so that its answers can be measured there.

Each document is one greedy completion of the prompt `LocalBackend` would encode — rendered with the GGUF's
own chat template (as llama.cpp's server renders it) and tokenised in the same pieces — with a GBNF grammar
that admits only the task's canonical answers (`TaskKind.answer_grammar`); free-text kinds (qa) generate
without one. llama.cpp keeps the previous prompt's key/value cache, so the system prompt shared by
consecutive documents is encoded once. What cannot be parsed stays INVALID with its raw text; a document that
does not fit the context is INVALID with the reason.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from annotune.backends.base import Backend, Prediction, RunStats, cut_document
from annotune.errors import AnnotuneError

INSTALL_HINT = "pip install 'annotune[gguf]' (builds llama-cpp-python; needs a C++ compiler and cmake)"


def import_llama_cpp():
    """The ``llama_cpp`` module, or an error saying how to install it."""
    try:
        import llama_cpp
    except ImportError:
        raise AnnotuneError(f"llama.cpp is not installed: {INSTALL_HINT}") from None
    return llama_cpp


def default_threads() -> int:
    """The CPU cores this process may use."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


class LlamaCppBackend(Backend):
    """Labels documents with a GGUF model in llama.cpp; `generate` answering only."""

    name = "llamacpp"

    def __init__(self, model_path: str | Path, *, context: int = 4096, threads: int | None = None,
                 grammar: bool = True, max_text_tokens: int = 512, max_new_tokens: int | None = None):
        self.model_path = Path(model_path)
        self.context = context
        self.threads = threads or default_threads()
        self.grammar = grammar
        self.max_text_tokens = max_text_tokens
        self.max_new_tokens = max_new_tokens
        self._llm = None

    @property
    def llm(self):
        """The loaded model (loaded on first use)."""
        if self._llm is None:
            llama_cpp = import_llama_cpp()
            if not self.model_path.is_file():
                raise AnnotuneError("GGUF file not found", file=self.model_path)
            self._llm = llama_cpp.Llama(str(self.model_path), n_ctx=self.context, n_threads=self.threads,
                                        n_threads_batch=self.threads, seed=0, verbose=False)
        return self._llm

    def close(self) -> None:
        """Free the model (it is loaded again on next use)."""
        if self._llm is not None:
            self._llm.close()
            self._llm = None

    def tokens(self, text: str) -> list[int]:
        """Token ids of ``text``; special tokens written in it are parsed, as transformers' tokenizers do."""
        return self.llm.tokenize(text.encode("utf-8"), add_bos=False, special=True) if text else []

    def label(self, docs, builder, answer="generate", *, progress=True):
        if answer != "generate":
            raise ValueError("llama.cpp answers by generation (with a grammar); constrained scoring is not available")
        from tqdm.auto import tqdm

        llama_cpp = import_llama_cpp()
        task = builder.codebook.task
        grammar_text = task.answer_grammar() if self.grammar else None
        grammar = llama_cpp.LlamaGrammar.from_string(grammar_text, verbose=False) if grammar_text else None
        limit = self.max_new_tokens or task.max_new_tokens
        stats = RunStats(docs=len(docs))
        started = time.perf_counter()
        # the prompt in the same token pieces as LocalBackend: prefix, document, question — so that an exported
        # model is asked exactly what its PyTorch original was asked
        chat = GGUFChat(self.llm)
        parts = builder.parts(chat)
        prefix = ([self.llm.token_bos()] if chat.chat_template is None else []) + self.tokens(parts.prefix)
        between = self.tokens(parts.between)
        question = self.tokens(task.main_question() + parts.suffix)
        out: list[Prediction] = []
        bar = tqdm(total=len(docs), desc=f"{self.name} {answer}", unit="doc", disable=not progress, leave=False)
        for doc in docs:
            doc_ids, cut = cut_document(self.tokens(doc.text), self.max_text_tokens)
            stats.truncated_docs += cut
            prompt = prefix + doc_ids + between + question
            try:
                res = self.llm.create_completion(prompt, max_tokens=limit, temperature=0.0, top_k=1, grammar=grammar,
                                                 seed=0)
            except ValueError as exc:  # e.g. the prompt exceeds the context window
                out.append(Prediction(doc.id, "", None, error=f"llama.cpp: {exc}"))
            else:
                raw = res["choices"][0]["text"] or ""
                stats.prompt_tokens_nominal += len(prompt)
                stats.generated_tokens += res.get("usage", {}).get("completion_tokens", 0)
                parsed = task.parse(raw)
                out.append(Prediction(doc.id, raw, parsed.label, error=parsed.error))
            bar.update(1)
        bar.close()
        # llama.cpp reuses the previous prompt's cache for the shared prefix: encoded once, as in LocalBackend
        stats.prompt_tokens = stats.prompt_tokens_nominal - max(0, len(docs) - 1) * len(prefix)
        stats.seconds = time.perf_counter() - started
        stats.extra.update(engine="llama.cpp", llama_cpp_python=llama_cpp.__version__, threads=self.threads,
                           grammar=grammar is not None)
        return out, stats


class GGUFChat:
    """The chat template stored in a GGUF file, with the part of a transformers tokenizer's interface that
    `annotune.tasks.prompts` uses to render and cut prompts (``chat_template``, ``apply_chat_template``,
    ``eos_token``); rendered by llama-cpp-python's Jinja2 formatter, as llama.cpp's server does."""

    def __init__(self, llm):
        def text(token: int) -> str:
            return llm.detokenize([token], special=True).decode("utf-8", errors="replace") if token >= 0 else ""

        self.chat_template = llm.metadata.get("tokenizer.chat_template") or None
        self.eos_token, self.bos_token = text(llm.token_eos()), text(llm.token_bos())

    def apply_chat_template(self, messages, *, tokenize: bool = False, add_generation_prompt: bool = False) -> str:
        from llama_cpp.llama_chat_format import Jinja2ChatFormatter

        assert not tokenize
        formatter = Jinja2ChatFormatter(self.chat_template, eos_token=self.eos_token, bos_token=self.bos_token,
                                        add_generation_prompt=add_generation_prompt)
        return formatter(messages=messages).prompt


__all__ = ["LlamaCppBackend", "GGUFChat", "import_llama_cpp", "default_threads", "INSTALL_HINT"]
