"""`Judge`: grades answers to a question against a `Rubric`, k times, through a local model or any
OpenAI-compatible endpoint (an API, vLLM, ``annotune serve``).

A backend is one call, ``complete(messages, *, seed=None, response_format=None) -> Completion``
(the output text, its tokens with their top alternatives' log-probabilities where the backend gives
them, and whether it was cut at the token limit):

- `LocalJudgeBackend`: a `annotune.backends.local.LocalBackend` model (any name, folder, GGUF file or
  run), answering by greedy generation with the top ``top_logprobs`` tokens at every position, or with
  ``structured`` by choosing each score of a verdict the code writes (`annotune.judging.guided`).
- `ApiJudgeBackend`: chat completions with ``logprobs=True, top_logprobs=20`` through the ``openai`` SDK
  and `ApiBackend`'s sending (retries with backoff, optional response cache). The API key is read from
  the environment variable named by ``api_key_env``, handed to the SDK and nowhere else.

Repeats: repeat r shows the answers in a seeded shuffle of them rotated by r, so that over a multiple of
n repeats each answer is shown in each position equally often (two answers: AB, BA, AB, …); scores are
mapped back to the original answers. A greedy local judge gives the same verdict for the same chat, so
identical chats are judged once and the verdict reused (``reused``); an API judge gets ``seed =
seed + r`` per repeat (a distinct request, also for the cache).

Expected scores (both backends, the same code): the parser records where each score's first digit is
written; the token holding it gives the alternatives there (`expected_from_tokens`), and
`annotune.judging.scores.expected_score` weights the scale's tokens by their probabilities (scores
past 9 written as two tokens: see `score_distribution`). None where the output gave no usable
log-probabilities there; ``mass`` tells how much probability the score tokens had.
"""

from __future__ import annotations

import json
import math
import random
import time
from dataclasses import dataclass, field
from typing import Any, Protocol

from annotune.errors import ConfigError
from annotune.judging.config import JudgeConfig
from annotune.judging.guided import guided_verdict
from annotune.judging.rubric import Rubric, Verdict, parse_verdict
from annotune.judging.scores import (
    PositionBias,
    RepeatStats,
    expected_score,
    position_bias_from_scores,
    repeat_stats,
)


class JudgeCallError(Exception):
    """A judge call gave no output (refused, failed, over the context): an unparsed verdict, this reason."""


@dataclass
class TokenLogprobs:
    """One generated token, its log-probability and its top alternatives (token text → log-probability)."""

    token: str
    logprob: float | None
    top: dict[str, float] = field(default_factory=dict)


@dataclass
class Completion:
    text: str
    tokens: list[TokenLogprobs] | None = None
    truncated: bool = False


class JudgeBackend(Protocol):
    name: str
    deterministic: bool  # the same chat always gives the same output

    def complete(self, messages: list[dict], *, seed: int | None = None,
                 response_format: dict | None = None) -> Completion: ...


def merge_tops(pairs) -> dict[str, float]:
    """Alternatives as a dict; tokens with the same text (different ids) add their probabilities."""
    out: dict[str, float] = {}
    for tok, lp in pairs:
        if isinstance(tok, str) and isinstance(lp, (int, float)) and not math.isnan(lp):
            if tok in out:
                hi, lo = max(out[tok], lp), min(out[tok], lp)
                out[tok] = float(hi + math.log1p(math.exp(lo - hi)))
            else:
                out[tok] = float(lp)
    return out


class LocalJudgeBackend:
    """A local model judging by greedy generation after its chat template, or, given a strict
    ``response_format``, by choosing each score of a verdict the code writes (`guided_verdict`)."""

    deterministic = True
    supports_response_format = True

    def __init__(self, model: str | None = None, *, dtype: str | None = "auto", device: str | None = None,
                 max_new_tokens: int = 256, top_logprobs: int = 20, engine=None):
        if engine is None:
            from annotune.backends.local import LocalBackend

            engine = LocalBackend(model, dtype=dtype, device=device)
        self.engine, self.name = engine, engine.name
        self.max_new_tokens, self.top_logprobs = max_new_tokens, top_logprobs

    def complete(self, messages: list[dict], *, seed: int | None = None,
                 response_format: dict | None = None) -> Completion:
        if response_format is not None:  # constrained: the model chooses each score (annotune.judging.guided)
            try:
                text, pieces = guided_verdict(self.engine, messages, response_format)
            except ValueError as exc:
                raise JudgeCallError(str(exc)) from None
            return Completion(text, [TokenLogprobs(p, top.get(p), top) for p, top in pieces])
        ids = self.engine.encode_chat(messages)
        limit = self.engine.context_length
        if limit and len(ids) + self.max_new_tokens > limit:
            raise JudgeCallError(f"prompt of {len(ids)} tokens + max_tokens {self.max_new_tokens} is over the context of {limit}")
        gen = self.engine.generate(ids, self.max_new_tokens, top_logprobs=self.top_logprobs)
        decode = self.engine.decode
        tokens = [TokenLogprobs(decode([t]), lp, merge_tops((decode([i]), v) for i, v in top))
                  for t, lp, top in zip(gen.token_ids, gen.logprobs, gen.top_logprobs)]
        return Completion(gen.text, tokens, gen.finish_reason == "length")


class ApiJudgeBackend:
    """An OpenAI-compatible chat-completions endpoint asked for log-probabilities."""

    deterministic = False
    supports_response_format = True

    def __init__(self, base_url: str, model: str, *, api_key_env: str | None = None, max_tokens: int = 256,
                 top_logprobs: int = 20, temperature: float = 0.0, timeout: float = 60.0, cache=None,
                 retries_per_request: int = 4, max_retries: int = 100, log=None):
        from annotune.backends.api.client import ApiBackend

        self.api = ApiBackend(base_url, model, api_key_env=api_key_env, concurrency=1, timeout=timeout,
                              cache=cache, retries_per_request=retries_per_request, max_retries=max_retries,
                              max_tokens=max_tokens, top_logprobs=top_logprobs, log=log)
        self.name, self.model = model, model
        self.max_tokens, self.top_logprobs, self.temperature = max_tokens, top_logprobs, temperature

    def body(self, messages: list[dict], *, seed: int | None = None, response_format: dict | None = None) -> dict:
        """The request body (no credentials: the key goes in a header, from the SDK)."""
        body: dict[str, Any] = {"model": self.model, "messages": messages, "max_tokens": self.max_tokens,
                                "temperature": self.temperature}
        if self.top_logprobs:
            body.update(logprobs=True, top_logprobs=self.top_logprobs)
        if seed is not None:
            body["seed"] = seed
        if response_format is not None:
            body["response_format"] = response_format
        return body

    def complete(self, messages: list[dict], *, seed: int | None = None,
                 response_format: dict | None = None) -> Completion:
        from annotune.backends.api.cache import request_key
        from annotune.backends.api.requests import ApiRequest
        from annotune.backends.api.responses import response_message

        body = self.body(messages, seed=seed, response_format=response_format)
        req = ApiRequest(0, None, body, request_key(self.api.base_url, body))
        res = self.api.send_requests([req], progress=False, desc="judge")[0]  # retries, cache; fatal errors raise ApiError
        if res.response is None:
            raise JudgeCallError(res.error or "request failed")
        content, logprobs, refusal = response_message(res.response)
        if content is None:
            raise JudgeCallError(f"refusal: {refusal}" if refusal else "no content in the response")
        tokens = None
        entries = logprobs.get("content") if isinstance(logprobs, dict) else None
        if isinstance(entries, list):
            tokens = [TokenLogprobs(e.get("token", ""), e.get("logprob"),
                                    merge_tops((t.get("token"), t.get("logprob")) for t in e.get("top_logprobs") or []
                                               if isinstance(t, dict)))
                      for e in entries if isinstance(e, dict)]
        finish = res.response["choices"][0].get("finish_reason")
        return Completion(content, tokens, finish == "length")

    def close(self) -> None:
        self.api.close()


def expected_from_tokens(text: str, tokens: list[TokenLogprobs] | None, offset: int, scale_min: int,
                         scale_max: int) -> tuple[float | None, float]:
    """`expected_score` at the token that holds character ``offset`` of ``text`` (a score's first digit).

    The token texts must add up to ``text`` up to there. Text of that token before the digit (``": "``
    merged into it) is a prefix every alternative must share, and is cut off them; the next token's
    alternatives split a digit that may continue (``"1"`` → 10). ``(None, 0.0)`` when unusable."""
    if not tokens:
        return None, 0.0
    pos = 0
    for j, tok in enumerate(tokens):
        end = pos + len(tok.token)
        if text[pos:end] != tok.token:
            return None, 0.0
        if pos <= offset < end:
            break
        pos = end
    else:
        return None, 0.0
    if not tok.top:
        return None, 0.0
    prefix = tok.token[:offset - pos]
    if prefix.strip():
        alts = merge_tops((t[len(prefix):], lp) for t, lp in tok.top.items() if t.startswith(prefix))
        chosen = tok.token[len(prefix):]
    else:
        alts, chosen = tok.top, tok.token
    nxt = tokens[j + 1].top if j + 1 < len(tokens) and tokens[j + 1].top else None
    return expected_score(alts, scale_min, scale_max, chosen=chosen, next_logprobs=nxt)


@dataclass
class JudgedRepeat:
    """One judge call: the order shown (``order[p]`` = original answer at position p) and the verdict's
    scores by original answer (empty when ``error``), with expected scores and their mass."""

    order: list[int]
    scores: dict[int, dict[str, int]]
    expected: dict[int, dict[str, float | None]]
    mass: dict[int, dict[str, float]]
    error: str | None
    raw: str
    truncated: bool = False
    n_tokens: int = 0
    logprobs: bool = False  # top alternatives came back with the tokens
    reused: bool = False
    seconds: float = 0.0


@dataclass
class Judgement:
    """The k repeats of judging one question's answers."""

    question: str
    n_answers: int
    criteria: list[str]
    repeats: list[JudgedRepeat]

    @property
    def unparsed(self) -> int:
        return sum(r.error is not None for r in self.repeats)

    def scores(self, answer: int = 0, criterion: str | None = None, *, expected: bool = False) -> list[float | None]:
        """One value per repeat for ``answer``: the ``criterion``'s score, or the mean over the criteria
        (None: unparsed; with ``expected``, also where an expected score is missing)."""
        out: list[float | None] = []
        for rep in self.repeats:
            table = (rep.expected if expected else rep.scores).get(answer)
            vals = None if table is None else [table.get(c) for c in ([criterion] if criterion else self.criteria)]
            missing = rep.error or vals is None or any(v is None for v in vals)
            out.append(None if missing else float(sum(vals) / len(vals)))
        return out


class Judge:
    """Grades (question, answers, reference) ``repeats`` times through ``backend``: ``"local"`` (``model``:
    any model name, folder, GGUF file or run), ``"api"`` (``base_url`` and ``model``; key from
    ``api_key_env``), or a backend object with `complete`."""

    def __init__(self, backend: str | JudgeBackend = "local", *, model: str | None = None,
                 base_url: str | None = None, api_key_env: str | None = None, rubric: Rubric | None = None,
                 repeats: int = 3, seed: int = 0, max_tokens: int = 256, top_logprobs: int = 20,
                 temperature: float = 0.0, structured: bool = False, dtype: str | None = "auto",
                 device: str | None = None, cache=None, timeout: float = 60.0):
        if repeats < 1:
            raise ConfigError("repeats must be >= 1", field="repeats")
        self.rubric = rubric or Rubric()
        self.repeats, self.seed, self.structured = repeats, seed, structured
        if backend == "local":
            self.backend = LocalJudgeBackend(model, dtype=dtype, device=device, max_new_tokens=max_tokens,
                                             top_logprobs=top_logprobs)
        elif backend == "api":
            if not base_url or not model:
                raise ConfigError("an api judge needs base_url and model", field="base_url")
            self.backend = ApiJudgeBackend(base_url, model, api_key_env=api_key_env, max_tokens=max_tokens,
                                           top_logprobs=top_logprobs, temperature=temperature, timeout=timeout,
                                           cache=cache)
        elif isinstance(backend, str):
            raise ConfigError(f"judge backend must be 'local' or 'api', not {backend!r}", field="backend")
        else:
            self.backend = backend
        if structured and not getattr(self.backend, "supports_response_format", False):
            raise ConfigError("this judge backend cannot give structured verdicts", field="structured")

    @classmethod
    def from_config(cls, cfg: JudgeConfig) -> Judge:
        return cls(cfg.backend, model=cfg.model, base_url=cfg.base_url, api_key_env=cfg.api_key_env,
                   rubric=cfg.rubric, repeats=cfg.repeats, seed=cfg.seed, max_tokens=cfg.max_tokens,
                   top_logprobs=cfg.top_logprobs, temperature=cfg.temperature, structured=cfg.structured,
                   dtype=cfg.dtype, device=cfg.device, cache=cfg.cache, timeout=cfg.timeout)

    def close(self) -> None:
        """Close the backend's connections and cache, where it has any."""
        if hasattr(self.backend, "close"):
            self.backend.close()

    def orders(self, question: str, n: int) -> list[list[int]]:
        """The order shown in each repeat: a shuffle seeded by the judge's seed and the question, rotated by
        the repeat number."""
        base = list(range(n))
        random.Random(f"{self.seed}\x00{question}").shuffle(base)
        return [base[r % n:] + base[:r % n] for r in range(self.repeats)]

    def judge(self, question: str, answers: list[str], reference: str | None = None) -> Judgement:
        """Judge ``answers`` to ``question`` (all at once when several) ``repeats`` times."""
        n = len(answers)
        memo: dict[str, Completion | JudgeCallError] = {}
        fmt = self.rubric.response_format(n) if self.structured else None
        repeats = []
        for r, order in enumerate(self.orders(question, n)):
            messages = self.rubric.messages(question, [answers[i] for i in order], reference)
            key = json.dumps(messages, sort_keys=True)
            started = time.perf_counter()
            reused = self.backend.deterministic and key in memo
            if not reused:
                try:
                    memo[key] = self.backend.complete(messages, seed=self.seed + r, response_format=fmt)
                except JudgeCallError as exc:
                    memo[key] = exc
            repeats.append(self._repeat(order, memo[key], reused, time.perf_counter() - started))
        return Judgement(question, n, self.rubric.names, repeats)

    def judge_many(self, items, *, progress: bool = False) -> list[Judgement]:
        """`judge` for each ``(question, answers, reference)`` of ``items``."""
        from tqdm.auto import tqdm

        return [self.judge(q, list(a), ref) for q, a, ref in tqdm(list(items), desc="judge", disable=not progress)]

    def _repeat(self, order: list[int], out: Completion | JudgeCallError, reused: bool, seconds: float) -> JudgedRepeat:
        if isinstance(out, JudgeCallError):
            return JudgedRepeat(order, {}, {}, {}, str(out), "", reused=reused, seconds=seconds)
        verdict: Verdict = parse_verdict(out.text, self.rubric, len(order), truncated=out.truncated)
        rep = JudgedRepeat(order, {}, {}, {}, verdict.error, out.text, out.truncated, len(out.tokens or []),
                           any(t.top for t in out.tokens or []), reused, seconds)
        lo, hi = self.rubric.scale_min, self.rubric.scale_max
        for shown, crits in verdict.scores.items():
            original = order[shown]
            rep.scores[original] = dict(crits)
            rep.expected[original], rep.mass[original] = {}, {}
            for crit in crits:
                offset = verdict.positions.get((shown, crit))
                value, mass = (None, 0.0)
                if offset is not None:
                    value, mass = expected_from_tokens(out.text, out.tokens, offset, lo, hi)
                rep.expected[original][crit], rep.mass[original][crit] = value, mass
        return rep


def judgement_stats(judgements: list[Judgement], answer: int = 0, criterion: str | None = None, *,
                    expected: bool = False, **kw) -> RepeatStats:
    """`repeat_stats` of one answer slot over judged items (``kw``: interval, ci, n_boot, seed)."""
    return repeat_stats([j.scores(answer, criterion, expected=expected) for j in judgements], **kw)


def pair_position_bias(judgements: list[Judgement], criterion: str | None = None) -> PositionBias:
    """Position bias from two-answer judgements that were shown in both orders (the first repeat of
    each order; judgements with one order only are left out)."""
    ab, ba = [], []
    for j in judgements:
        if j.n_answers != 2:
            continue
        first = {tuple(r.order): i for i, r in reversed(list(enumerate(j.repeats)))}
        if (0, 1) not in first or (1, 0) not in first:
            continue
        s0, s1 = j.scores(0, criterion), j.scores(1, criterion)
        i, k = first[(0, 1)], first[(1, 0)]
        ab.append(None if s0[i] is None else (s0[i], s1[i]))
        ba.append(None if s1[k] is None else (s1[k], s0[k]))
    return position_bias_from_scores(ab, ba)


def unparsed_reasons(judgements: list[Judgement]) -> dict[str, int]:
    """How many verdicts were unparsed, by reason."""
    out: dict[str, int] = {}
    for j in judgements:
        for r in j.repeats:
            if r.error is not None:
                out[r.error] = out.get(r.error, 0) + 1
    return out


__all__ = ["ApiJudgeBackend", "Completion", "Judge", "JudgeBackend", "JudgeCallError", "JudgedRepeat",
           "Judgement", "LocalJudgeBackend", "TokenLogprobs", "expected_from_tokens", "judgement_stats", "merge_tops",
           "pair_position_bias", "unparsed_reasons"]
