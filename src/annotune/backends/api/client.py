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
"""

from __future__ import annotations

import json
import math
import os
import random
import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any, Callable

import numpy as np

from annotune.backends.base import ANSWER_MODES, Backend, Prediction, RunStats, decide_constrained
from annotune.backends.api.cache import ResponseCache, endpoint_id, request_key
from annotune.codebook import Codebook
from annotune.errors import AnnotuneError, ConfigError
from annotune.tasks.parsing import answer_text, parse_answer
from annotune.backends.api.pricing import Price
from annotune.tasks.prompts import PromptBuilder, constrained_questions, dimension_values, main_question

API_SYSTEM_KEYS = {"name", "type", "base_url", "model", "api_key_env", "shots", "answer", "example_chars",
                   "concurrency", "max_retries", "retries_per_request", "malformed_retries", "budget_usd",
                   "structured", "price", "timeout", "backoff", "max_tokens", "top_logprobs", "cache", "tokenizer",
                   "definitions"}
GENERATE_MAX_TOKENS = {"single": 24, "multi": 64, "dimensions": 384}
QUESTION_MAX_TOKENS = 8
RETRY_STATUSES = (408, 409, 429, 500, 502, 503, 504)
FATAL_STATUSES = (401, 403, 404)
MAX_RETRY_AFTER = 300.0
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class ApiError(AnnotuneError):
    """The API run cannot go on (credentials, budget, an endpoint that keeps failing). Responses received
    so far are in the cache: rerunning resumes from there."""


class _Stopped(Exception):
    """Another request failed fatally; this one was not sent."""


# ---------------------------------------------------------------------------------- schemas
def _strict(schema: dict) -> dict:
    return {"type": "json_schema", "json_schema": {"name": "answer", "strict": True, "schema": schema}}


def answer_schema(codebook: Codebook) -> dict:
    """The JSON schema of a structured `generate` answer (parsed by `parse_answer` like any answer)."""
    names = list(codebook.label_names)
    if codebook.kind == "single":
        props = {"label": {"type": "string", "enum": names}}
    elif codebook.kind == "multi":
        props = {"labels": {"type": "array", "items": {"type": "string", "enum": names}, "minItems": 1,
                            "maxItems": int(codebook.max_labels or len(names))}}
    else:
        values = list(dimension_values(codebook))
        props = {name: {"type": "string", "enum": values} for name in names}
    return {"type": "object", "properties": props, "required": list(props), "additionalProperties": False}


def option_schema(options: tuple[str, ...] | list[str]) -> dict:
    """A one-field object whose value is one of ``options`` (a constrained question's answers)."""
    return {"type": "object", "properties": {"answer": {"type": "string", "enum": list(options)}},
            "required": ["answer"], "additionalProperties": False}


# ---------------------------------------------------------------------------------- log-probabilities
_PLAIN_PREFIX = re.compile(r"^\s*[\"'`*]*")
_JSON_PREFIX = re.compile(r'^\s*\{\s*"answer"\s*:\s*"')


def _after_prefix(text: str, structured: bool) -> str | None:
    """The part of ``text`` after the answer's prefix (the JSON wrapper when structured); None while the
    prefix is not complete."""
    if not structured:
        return _PLAIN_PREFIX.sub("", text, count=1)
    m = _JSON_PREFIX.match(text)
    return text[m.end():] if m else None


def _consistent(cand: str, options: list[str], final: bool) -> list[str]:
    """Options an answer starting with ``cand`` may be: complete ones (``cand`` covers the option and
    goes on with a non-word character, or ends there when ``final``) and ones ``cand`` is a prefix of."""
    full, partial = [], []
    for opt in options:
        o = opt.lower()
        if cand.startswith(o) and (len(cand) == len(o) or not cand[len(o)].isalnum()):
            if len(cand) > len(o) or final:
                full.append(opt)
            else:
                partial.append(opt)  # exactly the option so far: it may still go on ("sport" / "sport news")
        elif o.startswith(cand) and not final:  # a finished answer cannot grow into a longer option
            partial.append(opt)
    if full and not any(p for p in partial if len(p) > max(map(len, full))):
        return [max(full, key=len)]
    return full + [p for p in partial if p not in full]


def _option_mass(positions: list[dict], i: int, before: str, options: list[str], structured: bool,
                 info: dict) -> dict[str, float]:
    mass = {o: 0.0 for o in options}
    pos = positions[i]
    tops = pos.get("top_logprobs") or [{"token": pos.get("token", ""), "logprob": pos.get("logprob", 0.0)}]
    for top in tops:
        token, lp = top.get("token"), top.get("logprob")
        if not isinstance(token, str) or not isinstance(lp, (int, float)) or not math.isfinite(lp):
            continue
        rest = _after_prefix(before + token, structured)
        if rest is None or not rest.strip():
            continue
        cand = rest.lower()
        on_path = token == pos.get("token")
        final = on_path and i + 1 >= len(positions)
        matched = _consistent(cand, options, final)
        p = math.exp(lp)
        if len(matched) == 1:
            mass[matched[0]] += p
        elif matched:
            if on_path and i + 1 < len(positions):  # follow the generated answer to tell them apart
                sub = _option_mass(positions, i + 1, before + token, matched, structured, info)
                total = sum(sub.values())
                if total > 0:
                    for o, v in sub.items():
                        mass[o] += p * v / total
                    continue
            info["ambiguous"] = info.get("ambiguous", 0.0) + p
            for o in matched:
                mass[o] += p / len(matched)
    return mass


def option_probs(logprobs: Any, options: tuple[str, ...] | list[str], *, structured: bool = False
                 ) -> tuple[np.ndarray | None, dict]:
    """Probabilities of ``options`` from a chat completion's ``logprobs.content`` (a list of
    ``{token, logprob, top_logprobs}``), or None when they carry no usable information.

    The answer starts at the first generated token that goes beyond the prefix (leading spaces and
    quotes; ``{"answer":"`` when structured). Each top-k token there is matched to the options it can
    start (case-insensitive); where several options share it, the generated path's next position splits
    its mass. The result is normalised over the options; ``info["coverage"]`` is the probability mass
    that matched an option at all."""
    info: dict = {}
    content = logprobs.get("content") if isinstance(logprobs, dict) else None
    if not isinstance(content, list) or not content:
        return None, {"reason": "no logprobs"}
    positions = [p for p in content if isinstance(p, dict)]
    before = ""
    for i, pos in enumerate(positions):
        token = pos.get("token")
        if not isinstance(token, str):
            return None, {"reason": "malformed logprobs"}
        rest = _after_prefix(before + token, structured)
        if rest is not None and rest.strip():
            mass = _option_mass(positions, i, before, list(options), structured, info)
            total = sum(mass.values())
            if total <= 0:
                return None, {"reason": "no answer token among the top logprobs"}
            info["coverage"] = total
            return np.array([mass[o] for o in options]) / total, info
        before += token
    return None, {"reason": "answer not found in logprobs"}


# ---------------------------------------------------------------------------------- tokens
def estimate_tokens(text: str) -> int:
    """A tokenizer-free estimate (~4 characters a token, as OpenAI's rule of thumb)."""
    return max(1, math.ceil(len(text) / 4)) if text else 0


def estimate_prompt_tokens(messages: list[dict], tokenizer=None) -> int:
    """Prompt tokens of a chat: exact with a HF tokenizer (its chat template, as `annotune serve` and
    vLLM count them), else OpenAI's estimate (content + 3 per message + 3 to start the answer)."""
    if tokenizer is not None:
        from annotune.serve.server import encode_chat

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
        limit = max_tokens or GENERATE_MAX_TOKENS[cb.kind]
        schema = _strict(answer_schema(cb)) if structured else None
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


@dataclass
class _Result:
    """The outcome of one request: a well-formed response, or a recorded failure (INVALID)."""

    response: dict | None
    raw: str = ""
    error: str | None = None
    cached: bool = False
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost: float | None = 0.0
    seconds: float = 0.0


def _message(response: dict) -> tuple[str | None, Any, str | None]:
    choice = response["choices"][0]
    msg = choice.get("message") or {}
    return msg.get("content"), choice.get("logprobs"), msg.get("refusal")


def _well_formed(payload: Any) -> bool:
    if not isinstance(payload, dict):
        return False
    choices = payload.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        return False
    msg = choices[0].get("message")
    return isinstance(msg, dict) and (msg.get("content") is None or isinstance(msg.get("content"), str))


def _usage(payload: dict) -> tuple[int, int, int] | None:
    usage = payload.get("usage")
    if not isinstance(usage, dict) or not isinstance(usage.get("prompt_tokens"), int):
        return None
    details = usage.get("prompt_tokens_details") or {}
    cached = details.get("cached_tokens") if isinstance(details, dict) else 0
    return usage["prompt_tokens"], int(usage.get("completion_tokens") or 0), int(cached or 0)


def _retry_after(headers) -> float | None:
    """Seconds the server asked us to wait (``retry-after-ms``, or ``Retry-After`` in seconds or as a date)."""
    if headers is None:
        return None
    try:
        ms = headers.get("retry-after-ms")
        if ms is not None:
            return max(0.0, float(ms) / 1000)
        value = headers.get("retry-after")
        if value is None:
            return None
        try:
            return max(0.0, float(value))
        except ValueError:
            return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError, OverflowError):
        return None


# ---------------------------------------------------------------------------------- backend
class ApiBackend(Backend):
    """Labels documents through an OpenAI-compatible chat-completions endpoint (see the module doc)."""

    def __init__(self, base_url: str, model: str, *, api_key_env: str | None = None, concurrency: int = 4,
                 max_retries: int = 100, retries_per_request: int = 8, malformed_retries: int = 1,
                 budget_usd: float | None = None, structured: bool = False, price: Price | None = None,
                 timeout: float = 60.0, backoff: float = 1.0, max_backoff: float = 60.0,
                 max_tokens: int | None = None, top_logprobs: int = 20, cache: str | Path | ResponseCache | None = None,
                 budget_tokenizer=None, log: Callable[[str], None] | None = None):
        if api_key_env is not None and not _ENV_NAME.match(api_key_env):
            raise ConfigError("api_key_env must be the NAME of the environment variable that holds the API key "
                              "(e.g. OPENAI_API_KEY), not the key itself", field="api_key_env")
        if budget_usd is not None and price is None:
            raise ConfigError(f"budget_usd needs a price for model {model!r}: set price = {{input = ..., output = "
                              "...}} (USD per 1M tokens)", field="price")
        self.base_url = base_url.rstrip("/")
        self.model = model
        self.name = model
        self.api_key_env = api_key_env
        self.concurrency = max(1, int(concurrency))
        self.max_retries = int(max_retries)
        self.retries_per_request = int(retries_per_request)
        self.malformed_retries = int(malformed_retries)
        self.budget_usd = budget_usd
        self.structured = bool(structured)
        self.price = price
        self.timeout = float(timeout)
        self.backoff = float(backoff)
        self.max_backoff = float(max_backoff)
        self.max_tokens = max_tokens
        self.top_logprobs = int(top_logprobs)
        self.cache = cache if isinstance(cache, ResponseCache) or cache is None else ResponseCache(cache)
        self.budget_tokenizer = budget_tokenizer
        self.log = log or (lambda msg: None)
        self._client = None
        self._secret: str | None = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._reset_counters()

    # ------------------------------------------------------------------ plumbing
    def _reset_counters(self) -> None:
        self.retries = 0
        self.retry_reasons: dict[str, int] = {}
        self.http_requests = 0
        self.paid_calls = 0
        self.spent_usd = 0.0
        self.reserved_usd = 0.0
        self.retry_wait_s = 0.0

    def _key(self) -> str:
        if self.api_key_env is None:
            return "none"  # local servers without authentication; the SDK wants some key
        value = os.environ.get(self.api_key_env, "").strip()
        if not value:
            raise ConfigError(f"the environment variable {self.api_key_env} (api_key_env) is not set",
                              field="api_key_env")
        return value

    def redact(self, text: str) -> str:
        """``text`` with the API key (if it occurs) replaced by ``***``."""
        if self._secret and len(self._secret) >= 4 and self._secret in text:
            text = text.replace(self._secret, "***")
        return text

    def client(self):
        if self._client is None:
            try:
                from openai import OpenAI
            except ImportError:  # pragma: no cover - openai is a core dependency
                raise ConfigError("API systems need the openai package: pip install openai") from None
            key = self._key()
            self._secret = key if self.api_key_env else None
            # retries are ours (budget, Retry-After, jitter, accounting): the SDK's are switched off
            self._client = OpenAI(base_url=self.base_url, api_key=key, max_retries=0, timeout=self.timeout)
        return self._client

    def _count_retry(self, reason: str) -> None:
        with self._lock:
            if self.retries >= self.max_retries:
                raise ApiError(f"{self.model}: retry budget exhausted ({self.max_retries} retries: "
                               f"{_reasons(self.retry_reasons)}); responses received so far are cached — run "
                               "again to resume")
            self.retries += 1
            self.retry_reasons[reason] = self.retry_reasons.get(reason, 0) + 1

    def _wait(self, attempt: int, retry_after: float | None) -> None:
        delay = min(self.backoff * 2 ** attempt, self.max_backoff) * random.uniform(0.5, 1.0)
        if retry_after is not None:
            delay = max(delay, min(retry_after, MAX_RETRY_AFTER))
        with self._lock:
            self.retry_wait_s += delay
        if self._stop.wait(delay):
            raise _Stopped()

    def _reserve(self, body: dict) -> float:
        """Reserve the worst-case cost of a request against the money budget (0 without a budget)."""
        if self.budget_usd is None or self.price is None:
            return 0.0
        est = self.price.cost(estimate_prompt_tokens(body["messages"], self.budget_tokenizer),
                              int(body.get("max_tokens") or 0))
        with self._lock:
            if self.spent_usd + self.reserved_usd + est > self.budget_usd:
                raise ApiError(f"{self.model}: budget_usd {self.budget_usd:g} reached (spent ${self.spent_usd:.4f}"
                               f", next request up to ${est:.4f}); responses received so far are cached — raise the "
                               "budget and run again to resume")
            self.reserved_usd += est
        return est

    def _cost(self, prompt: int, completion: int, cached: int) -> float | None:
        return None if self.price is None else self.price.cost(prompt, completion, cached)

    def _send(self, req: ApiRequest) -> _Result:
        """One request, through cache, budget and retries; a fatal error stops the other requests at once."""
        try:
            return self._send_one(req)
        except _Stopped:
            raise
        except BaseException:
            self._stop.set()
            raise

    def _send_one(self, req: ApiRequest) -> _Result:
        if self.cache is not None:
            hit = self.cache.get(req.key)
            if hit is not None:
                return _Result(hit.response, cached=True, prompt_tokens=hit.prompt_tokens,
                               completion_tokens=hit.completion_tokens,
                               cost=self._cost(hit.prompt_tokens, hit.completion_tokens, hit.cached_tokens),
                               seconds=hit.seconds or 0.0)
        import openai

        client = self.client()
        attempt = malformed = 0
        while True:
            if self._stop.is_set():
                raise _Stopped()
            reserved = self._reserve(req.body)
            started = time.perf_counter()
            status, text, headers, failure = None, "", None, None
            try:
                with self._lock:
                    self.http_requests += 1
                raw = client.chat.completions.with_raw_response.create(**req.body)
                status, text = raw.http_response.status_code, raw.http_response.text
            except openai.APITimeoutError:
                failure = "timeout"
            except openai.APIConnectionError:
                failure = "connection"
            except openai.APIStatusError as exc:
                status, headers = exc.status_code, exc.response.headers
                try:
                    text = exc.response.text
                except Exception:  # a body that cannot be read
                    text = ""
                failure = str(status)
            finally:
                with self._lock:
                    self.reserved_usd -= reserved
            seconds = time.perf_counter() - started
            if failure is not None and (status is None or status in RETRY_STATUSES):
                if attempt >= self.retries_per_request:
                    raise ApiError(f"{self.model}: request failed {attempt + 1} times ({self._why(failure, text)}); "
                                   "responses received so far are cached — run again to resume")
                self._count_retry(failure)
                self._wait(attempt, _retry_after(headers))
                attempt += 1
                continue
            if failure is not None and status in FATAL_STATUSES:
                raise ApiError(f"{self.model} at {endpoint_id(self.base_url)}: {self._why(failure, text)}")
            if failure is not None:  # another 4xx: this document's request is refused, the run goes on
                return _Result(None, raw=self.redact(text)[:4000], error=f"HTTP {self._why(failure, text)}",
                               seconds=seconds)
            try:
                payload = json.loads(text)
            except ValueError:
                payload = None
            if not _well_formed(payload):
                if malformed < self.malformed_retries:
                    malformed += 1
                    self._count_retry("malformed")
                    self._wait(attempt, None)
                    attempt += 1
                    continue
                with self._lock:
                    self.retry_reasons.setdefault("malformed_recorded", 0)
                    self.retry_reasons["malformed_recorded"] += 1
                return _Result(None, raw=self.redact(text)[:4000], error="malformed API response", seconds=seconds)
            payload = json.loads(self.redact(text)) if self._secret and self._secret in text else payload
            usage = _usage(payload)
            if usage is None:  # no usage reported: estimate, so that cost is not silently zero
                content = _message(payload)[0] or ""
                usage = (estimate_prompt_tokens(req.body["messages"]), estimate_tokens(content), 0)
            cost = self._cost(*usage)
            with self._lock:
                self.paid_calls += 1
                self.spent_usd += cost or 0.0
            if self.cache is not None:
                self.cache.put(req.key, self.base_url, req.body, payload, prompt_tokens=usage[0],
                               completion_tokens=usage[1], cached_tokens=usage[2], cost_usd=cost, seconds=seconds)
            return _Result(payload, prompt_tokens=usage[0], completion_tokens=usage[1], cost=cost, seconds=seconds)

    def _why(self, failure: str, text: str) -> str:
        detail = ""
        try:
            err = json.loads(text).get("error")
            detail = err.get("message") if isinstance(err, dict) else str(err or "")
        except (ValueError, AttributeError):
            detail = text
        detail = " ".join(self.redact(str(detail or "")).split())[:200]
        return f"{failure}: {detail}" if detail else failure

    def _run(self, reqs: list[ApiRequest], progress: bool, desc: str) -> list[_Result]:
        """Send ``reqs`` ``concurrency`` at a time; the first fatal error stops the rest and is raised."""
        from tqdm.auto import tqdm

        results: list[_Result | None] = [None] * len(reqs)
        self._stop.clear()
        bar = tqdm(total=len(reqs), desc=desc, unit="req", disable=not progress, leave=False)
        pool = ThreadPoolExecutor(max_workers=self.concurrency, thread_name_prefix="annotune-api")
        error: BaseException | None = None
        try:
            futures = {pool.submit(self._send, r): i for i, r in enumerate(reqs)}  # each is cached at once
            for fut in as_completed(futures):
                try:
                    results[futures[fut]] = fut.result()
                except _Stopped:
                    pass
                except BaseException as exc:  # noqa: BLE001 - re-raised below, after stopping the others
                    if error is None:
                        error = exc
                        self._stop.set()
                        for f in futures:
                            f.cancel()
                bar.update(1)
        except KeyboardInterrupt:
            self._stop.set()
            pool.shutdown(wait=False, cancel_futures=True)
            raise
        finally:
            bar.close()
        pool.shutdown(wait=True)
        if error is not None:
            raise error
        return results  # type: ignore[return-value]

    # ------------------------------------------------------------------ public
    def requests(self, docs, builder: PromptBuilder, answer: str) -> list[ApiRequest]:
        return build_requests(docs, builder, answer, model=self.model, base_url=self.base_url,
                              structured=self.structured, max_tokens=self.max_tokens,
                              top_logprobs=self.top_logprobs)

    def label(self, docs, builder, answer="generate", *, progress=True):
        if answer not in ANSWER_MODES:
            raise ValueError(f"answer must be one of {ANSWER_MODES}, not {answer!r}")
        cb = builder.codebook
        self._reset_counters()
        started = time.perf_counter()
        stats = RunStats(docs=len(docs))
        used: list[_Result] = []
        preds: list[Prediction | None] = [None] * len(docs)
        fallback: list[int] = []
        coverage: list[float] = []
        if answer == "generate":
            reqs = self.requests(docs, builder, "generate")
            results = self._run(reqs, progress, f"{self.model} generate")
            used += results
            for r, res in zip(reqs, results):
                preds[r.doc] = self._parsed(docs[r.doc].id, res, cb)
        else:
            questions = constrained_questions(cb)
            reqs = self.requests(docs, builder, "constrained")
            per_doc = len(questions)
            # probe the first document: an endpoint that ignores logprobs is not asked every question
            first = self._run(reqs[:per_doc], progress=False, desc="probe") if docs else []
            answered = [(res, q) for res, q in zip(first, questions) if res.response is not None]
            probe_ok = not answered or any(
                option_probs(_message(res.response)[1], q.options, structured=self.structured)[0] is not None
                for res, q in answered)
            if docs and not probe_ok:
                self.log(f"warning: {self.model}: no usable logprobs in the responses; every document falls back "
                         "to generate + parse (constrained_fallback_docs)")
                used += first
                fallback = list(range(len(docs)))
            else:
                rest = self._run(reqs[per_doc:], progress, f"{self.model} constrained")
                results = first + rest
                used += results
                for d in range(len(docs)):
                    probs = []
                    for qi, q in enumerate(questions):
                        res = results[d * per_doc + qi]
                        p, info = (None, {}) if res.response is None else option_probs(
                            _message(res.response)[1], q.options, structured=self.structured)
                        if p is None:
                            break
                        probs.append(p)
                        coverage.append(info.get("coverage", 1.0))
                    if len(probs) < len(questions):
                        fallback.append(d)
                        continue
                    label, conf, pdict = decide_constrained(cb, probs)
                    preds[d] = Prediction(docs[d].id, answer_text(label, cb), label, conf, pdict)
            if fallback:
                sub = [docs[d] for d in fallback]
                fb_reqs = self.requests(sub, builder, "generate")
                fb_results = self._run(fb_reqs, progress, f"{self.model} fallback")
                used += fb_results
                for r, res in zip(fb_reqs, fb_results):
                    preds[fallback[r.doc]] = self._parsed(sub[r.doc].id, res, cb)
        stats.seconds = time.perf_counter() - started
        for res in used:
            stats.prompt_tokens += res.prompt_tokens
            stats.prompt_tokens_nominal += res.prompt_tokens
            stats.generated_tokens += res.completion_tokens
        costs = [res.cost for res in used if res.response is not None]
        known = all(c is not None for c in costs)
        total = sum(c for c in costs if c is not None) if known else None
        stats.extra.update({
            "backend": "api",
            "endpoint": endpoint_id(self.base_url),
            "model": self.model,
            "answer_method": ("logprobs" if answer == "constrained" else "structured" if self.structured
                              else "parse"),
            "requests": len(used),
            "http_requests": self.http_requests,
            "paid_calls": self.paid_calls,
            "cache_hits": sum(r.cached for r in used),
            "retries": self.retries,
            "retry_reasons": dict(self.retry_reasons),
            "retry_wait_s": round(self.retry_wait_s, 3),
            "failed_requests": sum(r.response is None for r in used),
            "cost_usd": total,
            "cost_usd_this_run": self.spent_usd if self.price is not None else None,
            "cost_per_1k_docs": (total * 1000 / len(docs)) if total is not None and docs else None,
            "api_seconds": round(sum(r.seconds for r in used), 3),
            "price": self.price.as_dict() if self.price is not None else None,
        })
        if answer == "constrained":
            stats.extra["constrained_fallback_docs"] = len(fallback)
            stats.extra["logprob_coverage_mean"] = float(np.mean(coverage)) if coverage else None
        return preds, stats  # type: ignore[return-value]

    def _parsed(self, doc_id: str, res: _Result, cb: Codebook) -> Prediction:
        if res.response is None:
            return Prediction(doc_id, res.raw, None, error=res.error)
        content, _, refusal = _message(res.response)
        if content is None:
            return Prediction(doc_id, "", None, error=f"no answer (refusal: {refusal})" if refusal else "no answer")
        parsed = parse_answer(content, cb)
        return Prediction(doc_id, content, parsed.label, None, None, parsed.error)

    def close(self) -> None:
        if self.cache is not None:
            self.cache.close()
        if self._client is not None:
            self._client.close()


def _reasons(reasons: dict[str, int]) -> str:
    return ", ".join(f"{k} ×{v}" for k, v in sorted(reasons.items())) or "none"


def _structured_text(label, cb: Codebook) -> str:
    if cb.kind == "single":
        return json.dumps({"label": label})
    if cb.kind == "multi":
        return json.dumps({"labels": list(label)})
    absent = dimension_values(cb)[0]
    return json.dumps({name: label.get(name, absent) for name in cb.label_names})
