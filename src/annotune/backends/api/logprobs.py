"""Answer probabilities from a chat completion's log-probabilities (``answer = "constrained"``).

An endpoint returns, at each generated position, the ``top_logprobs`` most likely tokens. The
probabilities of the tokens that start each allowed answer become the answer's probability, following
the generated path where two answers share a first token (``sport`` / ``sport news``). Responses that
carry no usable log-probabilities give None, and the backend falls back to ``generate``.
"""

from __future__ import annotations

import math
import re
from typing import Any

import numpy as np

from annotune.backends.api.responses import response_message

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


def question_probs(responses: list[dict | None], questions: list, *, structured: bool = False
                   ) -> tuple[list[np.ndarray], list[float]]:
    """One document's constrained questions: each question's option probabilities from its response,
    in order, up to the first response (None: a failed request) without usable log-probabilities, and
    the coverage of each. Fewer probabilities than questions: the document falls back to ``generate``."""
    probs: list[np.ndarray] = []
    coverage: list[float] = []
    for response, q in zip(responses, questions):
        p, info = (None, {}) if response is None else option_probs(
            response_message(response)[1], q.options, structured=structured)
        if p is None:
            break
        probs.append(p)
        coverage.append(info.get("coverage", 1.0))
    return probs, coverage
