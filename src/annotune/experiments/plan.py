"""`annotune plan`: tokens and cost of a config's API systems, before anything is sent."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from annotune.backends.api.cache import ResponseCache
from annotune.backends.api.client import _structured_text, build_requests, estimate_prompt_tokens, estimate_tokens
from annotune.backends.api.pricing import Price
from annotune.systems.api import cache_path, load_tokenizer, system_builder, system_price
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
    from annotune.experiments.compare import split_data

    dataset = cfg.load_data()
    train, test = split_data(cfg, dataset)
    plans = []
    for i, spec in enumerate(cfg.systems, start=1):
        if spec.get("type") != "api":
            continue
        answer = spec.get("answer", "generate")
        structured = bool(spec.get("structured", False))
        builder = system_builder(cfg, spec, train.docs)
        reqs = build_requests(test.docs, builder, answer, model=spec["model"], base_url=spec["base_url"],
                              structured=structured, max_tokens=spec.get("max_tokens"),
                              top_logprobs=spec.get("top_logprobs", 20))
        tokenizer = load_tokenizer(cfg, spec)
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
                if structured:
                    text = _structured_text(gold, cb) if gold is not None else text
                output_tokens += min(count(text) + 1, int(r.body["max_tokens"]))
            else:
                opts = questions[r.question].options
                avg = sum(count(o) for o in opts) / len(opts)
                output_tokens += min(math.ceil(avg + (count('{"answer":""}') if structured else 0)) + 1,
                                     int(r.body["max_tokens"]))
        cached = 0
        path = cache_path(cfg, spec)
        if path.exists():
            with ResponseCache(path) as cache:
                cached = sum(r.key in cache for r in reqs)
        notes = []
        if answer == "constrained":
            notes.append("constrained: assumes the endpoint returns logprobs (else one more request per document)")
        price = system_price(cfg, spec, f"systems[{i}].price")
        if price is None:
            notes.append(f"no price known for {spec['model']!r}")
        plans.append(SystemPlan(spec["name"], spec["model"], answer, len(test.docs), len(reqs), cached,
                                input_tokens, output_tokens, tokenizer is not None, price, notes))
    return plans
