"""`ApiBackend`: labels documents through an OpenAI-compatible endpoint with the ``openai`` SDK, sending
``concurrency`` requests at a time through the response cache, retries with backoff and jitter, the
retry budget and the money budget (all described in `annotune.backends.api`).
"""

from __future__ import annotations

import json
import os
import random
import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path
from typing import Callable

import numpy as np

from annotune.backends.api.cache import ResponseCache, credentials_in, endpoint_id
from annotune.backends.api.logprobs import option_probs, question_probs
from annotune.backends.api.pricing import Price
from annotune.backends.api.requests import ApiRequest, build_requests, estimate_prompt_tokens, estimate_tokens
from annotune.backends.api.responses import (ApiResult, error_detail, is_well_formed, response_message, retry_after,
                                             total_cost, usage_tokens)
from annotune.backends.base import ANSWER_MODES, Backend, Prediction, RunStats, decide_constrained
from annotune.codebook import Codebook
from annotune.errors import AnnotuneError, ConfigError
from annotune.tasks.parsing import answer_text, parse_answer
from annotune.tasks.prompts import PromptBuilder, constrained_questions

RETRY_STATUSES = (408, 409, 429, 500, 502, 503, 504)
FATAL_STATUSES = (401, 403, 404)
MAX_RETRY_AFTER = 300.0
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class ApiError(AnnotuneError):
    """The API run cannot go on (credentials, budget, an endpoint that keeps failing). Responses received
    so far are in the cache: rerunning resumes from there."""


class _Stopped(Exception):
    """Another request failed fatally; this one was not sent."""


# ---------------------------------------------------------------------------------- backend
class ApiBackend(Backend):
    """Labels documents through an OpenAI-compatible chat-completions endpoint (see `annotune.backends.api`)."""

    def __init__(self, base_url: str, model: str, *, api_key_env: str | None = None, concurrency: int = 4,
                 max_retries: int = 100, retries_per_request: int = 8, malformed_retries: int = 1,
                 budget_usd: float | None = None, structured: bool = False, price: Price | None = None,
                 timeout: float = 60.0, backoff: float = 1.0, max_backoff: float = 60.0,
                 max_tokens: int | None = None, top_logprobs: int = 20, cache: str | Path | ResponseCache | None = None,
                 budget_tokenizer=None, log: Callable[[str], None] | None = None):
        if (secret := credentials_in(base_url)) is not None:
            raise ConfigError(secret, field="base_url")
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
                               f"{retry_summary(self.retry_reasons)}); responses received so far are cached — run "
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

    def _send(self, req: ApiRequest) -> ApiResult:
        """One request, through cache, budget and retries; a fatal error stops the other requests at once."""
        try:
            return self._send_one(req)
        except _Stopped:
            raise
        except BaseException:
            self._stop.set()
            raise

    def _send_one(self, req: ApiRequest) -> ApiResult:
        if self.cache is not None:
            hit = self.cache.get(req.key)
            if hit is not None:
                return ApiResult(hit.response, cached=True, prompt_tokens=hit.prompt_tokens,
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
                self._wait(attempt, retry_after(headers))
                attempt += 1
                continue
            if failure is not None and status in FATAL_STATUSES:
                raise ApiError(f"{self.model} at {endpoint_id(self.base_url)}: {self._why(failure, text)}")
            if failure is not None:  # another 4xx: this document's request is refused, the run goes on
                return ApiResult(None, raw=self.redact(text)[:4000], error=f"HTTP {self._why(failure, text)}",
                                  seconds=seconds)
            try:
                payload = json.loads(text)
            except ValueError:
                payload = None
            if not is_well_formed(payload):
                if malformed < self.malformed_retries:
                    malformed += 1
                    self._count_retry("malformed")
                    self._wait(attempt, None)
                    attempt += 1
                    continue
                with self._lock:
                    self.retry_reasons.setdefault("malformed_recorded", 0)
                    self.retry_reasons["malformed_recorded"] += 1
                return ApiResult(None, raw=self.redact(text)[:4000], error="malformed API response", seconds=seconds)
            payload = json.loads(self.redact(text)) if self._secret and self._secret in text else payload
            usage = usage_tokens(payload)
            if usage is None:  # no usage reported: estimate, so that cost is not silently zero
                content = response_message(payload)[0] or ""
                usage = (estimate_prompt_tokens(req.body["messages"]), estimate_tokens(content), 0)
            cost = self._cost(*usage)
            with self._lock:
                self.paid_calls += 1
                self.spent_usd += cost or 0.0
            if self.cache is not None:
                self.cache.put(req.key, self.base_url, req.body, payload, prompt_tokens=usage[0],
                               completion_tokens=usage[1], cached_tokens=usage[2], cost_usd=cost, seconds=seconds)
            return ApiResult(payload, prompt_tokens=usage[0], completion_tokens=usage[1], cost=cost, seconds=seconds)

    def _why(self, failure: str, text: str) -> str:
        detail = " ".join(self.redact(str(error_detail(text) or "")).split())[:200]
        return f"{failure}: {detail}" if detail else failure

    def send_requests(self, reqs: list[ApiRequest], progress: bool, desc: str) -> list[ApiResult]:
        """Send ``reqs`` ``concurrency`` at a time; the first fatal error stops the rest and is raised."""
        from tqdm.auto import tqdm

        results: list[ApiResult | None] = [None] * len(reqs)
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
        used: list[ApiResult] = []
        preds: list[Prediction | None] = [None] * len(docs)
        fallback: list[int] = []
        coverage: list[float] = []
        if answer == "generate":
            reqs = self.requests(docs, builder, "generate")
            results = self.send_requests(reqs, progress, f"{self.model} generate")
            used += results
            for r, res in zip(reqs, results):
                preds[r.doc] = self._parsed(docs[r.doc].id, res, cb)
        else:
            questions = constrained_questions(cb)
            reqs = self.requests(docs, builder, "constrained")
            per_doc = len(questions)
            # probe the first document: an endpoint that ignores logprobs is not asked every question
            first = self.send_requests(reqs[:per_doc], progress=False, desc="probe") if docs else []
            answered = [(res, q) for res, q in zip(first, questions) if res.response is not None]
            probe_ok = not answered or any(
                option_probs(response_message(res.response)[1], q.options, structured=self.structured)[0] is not None
                for res, q in answered)
            if docs and not probe_ok:
                self.log(f"warning: {self.model}: no usable logprobs in the responses; every document falls back "
                         "to generate + parse (constrained_fallback_docs)")
                used += first
                fallback = list(range(len(docs)))
            else:
                rest = self.send_requests(reqs[per_doc:], progress, f"{self.model} constrained")
                results = first + rest
                used += results
                for d in range(len(docs)):
                    probs, covered = question_probs([res.response for res in results[d * per_doc:(d + 1) * per_doc]],
                                                    questions, structured=self.structured)
                    coverage += covered
                    if len(probs) < len(questions):
                        fallback.append(d)
                        continue
                    label, conf, pdict = decide_constrained(cb, probs)
                    preds[d] = Prediction(docs[d].id, answer_text(label, cb), label, conf, pdict)
            if fallback:
                sub = [docs[d] for d in fallback]
                fb_reqs = self.requests(sub, builder, "generate")
                fb_results = self.send_requests(fb_reqs, progress, f"{self.model} fallback")
                used += fb_results
                for r, res in zip(fb_reqs, fb_results):
                    preds[fallback[r.doc]] = self._parsed(sub[r.doc].id, res, cb)
        stats.seconds = time.perf_counter() - started
        for res in used:
            stats.prompt_tokens += res.prompt_tokens
            stats.prompt_tokens_nominal += res.prompt_tokens
            stats.generated_tokens += res.completion_tokens
        total = total_cost(used)
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

    def _parsed(self, doc_id: str, res: ApiResult, cb: Codebook) -> Prediction:
        if res.response is None:
            return Prediction(doc_id, res.raw, None, error=res.error)
        content, _, refusal = response_message(res.response)
        if content is None:
            return Prediction(doc_id, "", None, error=f"no answer (refusal: {refusal})" if refusal else "no answer")
        parsed = parse_answer(content, cb)
        return Prediction(doc_id, content, parsed.label, None, None, parsed.error)

    def close(self) -> None:
        if self.cache is not None:
            self.cache.close()
        if self._client is not None:
            self._client.close()


def retry_summary(reasons: dict[str, int]) -> str:
    """Retry counts by reason, for a message: ``"429 ×3, timeout ×1"`` (``"none"`` when there were none)."""
    return ", ".join(f"{k} ×{v}" for k, v in sorted(reasons.items())) or "none"
