"""`annotune plan`: tokens and cost of a config's API systems, before anything is sent."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from annotune.backends.api.cache import ResponseCache
from annotune.backends.api.requests import build_requests, estimate_prompt_tokens, estimate_tokens, structured_text
from annotune.backends.api.pricing import Price
from annotune.systems.api import ApiSystem
from annotune.tasks.parsing import answer_text
from annotune.tasks.prompts import constrained_questions


@dataclass
class SystemPlan:
    name: str
    model: str
    answer: str
    docs: int
    requests: int
    cached: int
    input_tokens: int
    output_tokens: int
    exact_tokens: bool
    price: Price | None
    notes: list[str] = field(default_factory=list)

    def cost(self, *, batch: bool = False, remaining: bool = False) -> float | None:
        if self.price is None:
            return None
        usd = self.price.cost(self.input_tokens, self.output_tokens, batch=batch)
        if remaining and self.requests:
            usd *= (self.requests - self.cached) / self.requests
        return usd

    def as_dict(self) -> dict:
        cost = self.cost()
        batch = self.cost(batch=True) if self.price and self.price.batch_discount else None
        return {
            "name": self.name, "model": self.model, "answer": self.answer, "docs": self.docs,
            "requests": self.requests, "cached_requests": self.cached, "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens, "token_counts": "exact" if self.exact_tokens else "estimated",
            "cost_usd": cost, "cost_usd_batch": batch, "cost_usd_remaining": self.cost(remaining=True),
            "cost_per_1k_docs": cost * 1000 / self.docs if cost is not None and self.docs else None,
            "price": self.price.as_dict() if self.price else None, "notes": self.notes,
        }


def plan_config(cfg) -> list[SystemPlan]:
    """Tokens and cost of every api system of a comparison, counted from the requests the run would send
    (nothing is sent). Input tokens are exact with a system's ``tokenizer``, estimated otherwise; output
    tokens are estimated from the gold answers' length."""
    from annotune.experiments.compare import run_context, split_data
    from annotune.experiments.config import build_systems

    dataset = cfg.load_data()
    train, test = split_data(cfg, dataset)
    context = run_context(cfg, progress=False, log=lambda m: None)
    plans = []
    for i, system in enumerate(build_systems(cfg, context), start=1):
        if not isinstance(system, ApiSystem):
            continue
        sc = system.config
        builder = system.builder(system.training_data(train).docs)
        reqs = build_requests(test.docs, builder, sc.answer, model=sc.model, base_url=sc.base_url,
                              structured=sc.structured, max_tokens=sc.max_tokens, top_logprobs=sc.top_logprobs)
        tokenizer = system.tokenizer()
        count = (lambda text: len(tokenizer(text, add_special_tokens=False)["input_ids"])) if tokenizer else \
            estimate_tokens
        input_tokens = sum(estimate_prompt_tokens(r.body["messages"], tokenizer) for r in reqs)
        output_tokens = 0
        cb = cfg.codebook
        questions = constrained_questions(cb)
        for r in reqs:
            if r.question is None:
                gold = test.docs[r.doc].label
                text = answer_text(gold, cb) if gold is not None else "x" * 4 * 8
                if sc.structured:
                    text = structured_text(gold, cb) if gold is not None else text
                output_tokens += min(count(text) + 1, int(r.body["max_tokens"]))
            else:
                opts = questions[r.question].options
                avg = sum(count(o) for o in opts) / len(opts)
                output_tokens += min(math.ceil(avg + (count('{"answer":""}') if sc.structured else 0)) + 1,
                                     int(r.body["max_tokens"]))
        cached = 0
        path = system.cache_path()
        if path.exists():
            with ResponseCache(path) as cache:
                cached = sum(r.key in cache for r in reqs)
        notes = []
        if sc.answer == "constrained":
            notes.append("constrained: assumes the endpoint returns logprobs (else one more request per document)")
        price = system.price(i)
        if price is None:
            notes.append(f"no price known for {sc.model!r}")
        plans.append(SystemPlan(sc.name, sc.model, sc.answer, len(test.docs), len(reqs), cached,
                                input_tokens, output_tokens, tokenizer is not None, price, notes))
    return plans
