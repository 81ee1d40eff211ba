"""Closed and remote models through any OpenAI-compatible chat-completions endpoint.

`ApiBackend` labels documents with the official ``openai`` SDK against OpenAI, Azure OpenAI, vLLM,
Ollama, llama.cpp's server or ``annotune serve``. The chat it sends is exactly `PromptBuilder.messages`,
the chat the local backend renders with its template, zero- or k-shot.

- ``generate``: one completion per document with the main question, temperature 0; with
  ``structured = true`` a strict JSON-schema ``response_format`` (an enum of labels for single, a list
  of them for multi, an object of dimensions). The answer goes through `parse_answer`, so INVALID is
  counted exactly as for local models.
- ``constrained``: one completion per constrained question with ``logprobs``/``top_logprobs``; the
  probabilities of the tokens that start each allowed answer become the answer's probability
  (following the generated path where two answers share a first token). A document whose responses
  carry no usable log-probabilities falls back to ``generate`` (structured output if enabled) and is
  counted in ``constrained_fallback_docs``.

Faults: requests run ``concurrency`` at a time; 408/409/429/5xx, timeouts and connection errors are
retried with exponential backoff and jitter, honouring ``Retry-After``/``retry-after-ms``, within a
per-request limit and a per-run retry budget (``max_retries``); a malformed (non-JSON or shapeless)
response is retried ``malformed_retries`` times, then recorded as INVALID with its raw payload; other
4xx answers on one document are INVALID for that document, while 401/403/404 stop the run. A money
budget (``budget_usd``) reserves each request's worst-case cost before it is sent.

Every well-formed response is committed to a SQLite cache (`ResponseCache`) as soon as it arrives,
keyed by endpoint, model, messages and decoding parameters, so reruns cost nothing and an interrupted
run resumes where it stopped. The API key is read from the environment variable a config names, given
to the SDK and nowhere else; any text from the endpoint that is recorded or raised has it redacted.

Modules: ``client`` (`ApiBackend`: sending, retries, budgets, labelling), ``requests`` (what is sent:
request bodies, JSON schemas, token estimates), ``responses`` (what comes back: response shape, usage,
``Retry-After``), ``logprobs`` (log-probabilities to answer probabilities), ``cache`` (`ResponseCache`),
``pricing`` (`Price`, the ``prices.toml`` table).
"""

from annotune.backends.api.cache import CachedResponse, ResponseCache, endpoint_id, request_key
from annotune.backends.api.client import ApiBackend, ApiError, retry_summary
from annotune.backends.api.logprobs import option_probs, question_probs
from annotune.backends.api.pricing import FREE, Price, load_prices, lookup, price_from_dict, resolve_price
from annotune.backends.api.requests import (
    QUESTION_MAX_TOKENS,
    ApiRequest,
    build_requests,
    estimate_prompt_tokens,
    estimate_tokens,
    option_schema,
    structured_text,
)
from annotune.backends.api.responses import ApiResult, total_cost

__all__ = [
    "ApiBackend", "ApiError", "retry_summary",
    "ApiRequest", "build_requests", "option_schema", "structured_text",
    "estimate_tokens", "estimate_prompt_tokens", "QUESTION_MAX_TOKENS",
    "ApiResult", "total_cost",
    "option_probs", "question_probs",
    "ResponseCache", "CachedResponse", "endpoint_id", "request_key",
    "Price", "FREE", "load_prices", "lookup", "price_from_dict", "resolve_price",
]
