"""What an API run sends: the chat-completion requests, their JSON schemas and their token estimates.

`build_requests` lists every request of a run (before fallbacks) in document order; the backend sends
them and `annotune plan` counts them, so the plan prices exactly what is sent. With ``structured =
true`` a request carries a strict JSON-schema ``response_format`` (the task kind's ``answer_schema()`` for
``generate``, `option_schema` for a constrained question); `structured_text` is the answer such a schema
accepts. The generation budget of a ``generate`` answer is the kind's ``max_new_tokens``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from annotune.backends.api.cache import request_key
from annotune.codebook import Codebook
from annotune.tasks.prompts import PromptBuilder, constrained_questions, main_question

QUESTION_MAX_TOKENS = 8


# ---------------------------------------------------------------------------------- schemas
def _strict(schema: dict) -> dict:
    return {"type": "json_schema", "json_schema": {"name": "answer", "strict": True, "schema": schema}}


def option_schema(options: tuple[str, ...] | list[str]) -> dict:
    """A one-field object whose value is one of ``options`` (a constrained question's answers)."""
    return {"type": "object", "properties": {"answer": {"type": "string", "enum": list(options)}},
            "required": ["answer"], "additionalProperties": False}


def structured_text(label, cb: Codebook) -> str:
    """``label`` as the JSON answer the task kind's ``answer_schema()`` describes (what a structured response
    would say)."""
    return cb.task.structured_text(label)


# ---------------------------------------------------------------------------------- tokens
def estimate_tokens(text: str) -> int:
    """A tokenizer-free estimate (~4 characters a token, as OpenAI's rule of thumb)."""
    return max(1, math.ceil(len(text) / 4)) if text else 0


def estimate_prompt_tokens(messages: list[dict], tokenizer=None) -> int:
    """Prompt tokens of a chat: exact with a HF tokenizer (its chat template, as `annotune serve` and
    vLLM count them), else OpenAI's estimate (content + 3 per message + 3 to start the answer)."""
    if tokenizer is not None:
        from annotune.backends.prompt_tokens import encode_chat

        return len(encode_chat(tokenizer, messages))
    return sum(estimate_tokens(m["content"]) + 3 for m in messages) + 3


# ---------------------------------------------------------------------------------- requests
@dataclass
class ApiRequest:
    """One chat completion to send: for document ``doc`` (and constrained question ``question``)."""

    doc: int
    question: int | None
    body: dict
    key: str = ""


def build_requests(docs: list, builder: PromptBuilder, answer: str, *, model: str, base_url: str,
                   structured: bool = False, max_tokens: int | None = None, top_logprobs: int = 20
                   ) -> list[ApiRequest]:
    """Every request a run sends (before fallbacks), in document order. Shared by the backend and
    `annotune plan`, so that the plan counts exactly what is sent."""
    cb = builder.codebook
    out: list[ApiRequest] = []
    if answer == "generate":
        limit = max_tokens or cb.task.max_new_tokens
        schema = _strict(cb.task.answer_schema()) if structured else None
        for i, doc in enumerate(docs):
            out.append(ApiRequest(i, None, _body(model, builder.messages(doc.text, main_question(cb)), limit,
                                                 schema=schema)))
    else:
        questions = constrained_questions(cb)
        limit = max_tokens or (QUESTION_MAX_TOKENS + (8 if structured else 0))
        for i, doc in enumerate(docs):
            for qi, q in enumerate(questions):
                schema = _strict(option_schema(q.options)) if structured else None
                out.append(ApiRequest(i, qi, _body(model, builder.messages(doc.text, q.text), limit, schema=schema,
                                                   top_logprobs=top_logprobs)))
    for r in out:
        r.key = request_key(base_url, r.body)
    return out


def _body(model: str, messages: list[dict], max_tokens: int, *, schema: dict | None = None,
          top_logprobs: int | None = None) -> dict:
    body: dict[str, Any] = {"model": model, "messages": messages, "temperature": 0, "max_tokens": max_tokens}
    if schema is not None:
        body["response_format"] = schema
    if top_logprobs is not None:
        body["logprobs"] = True
        body["top_logprobs"] = top_logprobs
    return body
