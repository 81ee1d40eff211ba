"""Chat completions over a local engine: the request checked into a `ChatRequest`, then answered by
greedy generation or, for a label-enum ``response_format``, by the engine's constrained scorer.

The engine is anything with `LocalBackend`'s public engine methods (`encode_chat`, `decode`,
`context_length`, `generate`, `score_options`); nothing here touches a model directly.

A label-enum constraint is a ``response_format`` of type ``json_schema`` whose schema is
``{"enum": [...]}`` (the content is the chosen answer) or an object with one property that is an enum
(the content is ``{"<property>":"<answer>"}``). The answer is the option whose full token sequence is
most likely (probabilities normalised over the options); with ``logprobs`` the answer's position
carries every option as a top-logprob "token" with its normalised log-probability. Other schemas are
not enforced (free generation).
"""

from __future__ import annotations

import json
import math
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Protocol

from annotune.serve.errors import OpenAIError

MAX_TOKENS_LIMIT = 4096  # the most tokens one answer may ask for
DEFAULT_MAX_TOKENS = 256
ROLES = ("system", "user", "assistant", "developer")


class ChatEngine(Protocol):  # what `LocalBackend` offers
    def encode_chat(self, messages: list[dict]) -> list[int]: ...
    def decode(self, ids: list[int]) -> str: ...
    @property
    def context_length(self) -> int | None: ...
    def generate(self, prompt_ids: list[int], max_new_tokens: int, stop_ids=None, *, top_logprobs=None): ...
    def score_options(self, prompt_ids: list[int], options, *, end_of_turn=None): ...


@dataclass
class ChatRequest:
    """A checked chat completion request (n = 1, no streaming)."""

    messages: list[dict]
    max_tokens: int = DEFAULT_MAX_TOKENS
    logprobs: bool = False
    top_logprobs: int = 0
    stop: list[str] = field(default_factory=list)
    options: list[str] | None = None  # a label-enum constraint's answers
    property: str | None = None  # the constraint's JSON property (None: the bare answer)


@dataclass
class Completion:
    """An answer: the OpenAI response body and its token counts."""

    body: dict
    prompt_tokens: int
    completion_tokens: int


def parse_chat_request(body: Any, model_name: str) -> ChatRequest:
    """Check an OpenAI chat completion body; an `OpenAIError` (400, or 404 for another model) if wrong."""
    if not isinstance(body, dict):
        raise OpenAIError(400, "the request body must be a JSON object")
    if body.get("stream"):
        raise OpenAIError(400, "streaming is not supported by annotune serve", code="unsupported")
    if body.get("n", 1) != 1:
        raise OpenAIError(400, "only n = 1 is supported", code="unsupported")
    model = body.get("model")
    if model != model_name:
        raise OpenAIError(404, f"the model {model!r} does not exist; this server serves {model_name!r}",
                          code="model_not_found")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise OpenAIError(400, "messages must be a non-empty list")
    chat = []
    for m in messages:
        if not isinstance(m, dict) or m.get("role") not in ROLES:
            raise OpenAIError(400, "each message needs a role (system, user, assistant) and content")
        role = "system" if m["role"] == "developer" else m["role"]
        chat.append({"role": role, "content": _text_content(m.get("content"))})
    max_tokens = body.get("max_completion_tokens") or body.get("max_tokens") or DEFAULT_MAX_TOKENS
    if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1:
        raise OpenAIError(400, "max_tokens must be a positive integer")
    want_lp = bool(body.get("logprobs"))
    top_k = body.get("top_logprobs") or 0
    if isinstance(top_k, bool) or not isinstance(top_k, int) or not 0 <= top_k <= 20:
        raise OpenAIError(400, "top_logprobs must be an integer between 0 and 20")
    if top_k and not want_lp:
        raise OpenAIError(400, "top_logprobs needs logprobs = true")
    stop = body.get("stop")
    stops = [stop] if isinstance(stop, str) else [s for s in (stop or []) if isinstance(s, str) and s]
    options, prop = enum_constraint(body.get("response_format")) or (None, None)
    return ChatRequest(chat, min(max_tokens, MAX_TOKENS_LIMIT), want_lp, top_k, stops, options, prop)


def enum_constraint(response_format: Any) -> tuple[list[str], str | None] | None:
    """(options, property) of a label-enum ``response_format``; property None: the bare answer."""
    if not isinstance(response_format, dict) or response_format.get("type") != "json_schema":
        return None
    spec = response_format.get("json_schema") or {}
    schema = spec.get("schema") if isinstance(spec, dict) else None
    if not isinstance(schema, dict):
        return None
    if isinstance(schema.get("enum"), list):
        options, prop = schema["enum"], None
    else:
        props = schema.get("properties")
        if schema.get("type") != "object" or not isinstance(props, dict) or len(props) != 1:
            return None
        prop, inner = next(iter(props.items()))
        if not isinstance(inner, dict) or not isinstance(inner.get("enum"), list):
            return None
        options = inner["enum"]
    if not options or not all(isinstance(o, str) and o for o in options) or len(set(options)) != len(options):
        raise OpenAIError(400, "an enum constraint needs distinct non-empty string options", code="invalid_schema")
    return list(options), prop


def _text_content(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # [{"type": "text", "text": ...}]
        parts = []
        for part in content:
            if not isinstance(part, dict) or part.get("type") != "text" or not isinstance(part.get("text"), str):
                raise OpenAIError(400, "only text content parts are supported")
            parts.append(part["text"])
        return "".join(parts)
    raise OpenAIError(400, "message content must be a string or a list of text parts")


# ---------------------------------------------------------------------------------- answering
def complete(engine: ChatEngine, req: ChatRequest, model_name: str) -> Completion:
    """Answer a checked request with the engine (blocking: one or more model forwards)."""
    ids = engine.encode_chat(req.messages)
    limit = engine.context_length
    if limit and len(ids) + (1 if req.options else req.max_tokens) > limit:
        raise OpenAIError(400, f"the prompt has {len(ids)} tokens; this model's context is {limit}",
                          code="context_length_exceeded")
    if req.options:
        content, n_gen, lp_content, finish = _constrained(engine, ids, req)
    else:
        content, n_gen, lp_content, finish = _generate(engine, ids, req)
    body = {
        "id": f"chatcmpl-{uuid.uuid4().hex[:24]}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model_name,
        "system_fingerprint": "annotune-serve",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": content},
                     "logprobs": {"content": lp_content} if req.logprobs else None, "finish_reason": finish}],
        "usage": {"prompt_tokens": len(ids), "completion_tokens": n_gen, "total_tokens": len(ids) + n_gen},
    }
    return Completion(body, len(ids), n_gen)


def _entry(text: str, lp: float) -> dict:
    return {"token": text, "logprob": lp, "bytes": list(text.encode("utf-8"))}


def _generate(engine: ChatEngine, ids: list[int], req: ChatRequest):
    gen = engine.generate(ids, req.max_tokens, top_logprobs=req.top_logprobs if req.logprobs else None)
    content, finish = gen.text, gen.finish_reason
    for s in req.stop:
        if s in content:
            content, finish = content.split(s, 1)[0], "stop"
    lp_content = None
    if req.logprobs:
        k = req.top_logprobs
        lp_content = [{**_entry(engine.decode([t]), lp),
                       "top_logprobs": [_entry(engine.decode([i]), v) for i, v in top[:k]] if k else []}
                      for t, lp, top in zip(gen.token_ids, gen.logprobs, gen.top_logprobs)]
    return content, len(gen.token_ids), lp_content, finish


def _constrained(engine: ChatEngine, ids: list[int], req: ChatRequest):
    scores = engine.score_options(ids, req.options)
    probs = scores.probs
    best = int(probs.argmax())
    answer, prop = req.options[best], req.property
    content = answer if prop is None else json.dumps({prop: answer}, ensure_ascii=False, separators=(",", ":"))
    lp_content = None
    if req.logprobs:
        tops = sorted(((o, math.log(max(float(p), 1e-300))) for o, p in zip(req.options, probs)), key=lambda x: -x[1])
        mid = {**_entry(answer, math.log(max(float(probs[best]), 1e-300))),
               "top_logprobs": [_entry(o, lp) for o, lp in tops[:20]]}
        if prop is None:
            lp_content = [mid]
        else:
            head = '{' + json.dumps(prop, ensure_ascii=False) + ':"'
            lp_content = [{**_entry(head, 0.0), "top_logprobs": []}, mid, {**_entry('"}', 0.0), "top_logprobs": []}]
    return content, len(scores.token_ids[best]), lp_content, "stop"
