"""Constrained verdicts for a local judge: the code writes the JSON a strict ``response_format`` describes
(`Rubric.response_format`: objects whose leaves are enums of the scale's values, as strings) and the model
only chooses each value among the scale, by the summed log-probability of its tokens
(`LocalBackend.score_options`, the closing quote scored where one value's tokens start another's: "1" /
"10"). The verdict always parses; the log-probabilities of every value at every score are kept, so the
expected score is the same probability-weighted mean as for a free-form verdict.

Why: a small instruction model asked for a JSON verdict mostly answers the question again instead
(SmolLM2-135M on MedQuAD: no parseable verdict in 12 of 12 calls). Guided, its verdict is a measured
choice among scores whose reliability the repeat, bias and agreement statistics then show.
"""

from __future__ import annotations

import json


def guided_verdict(engine, messages: list[dict], response_format: dict) -> tuple[str, list[tuple[str, dict]]]:
    """The verdict ``response_format`` describes, each value chosen by ``engine`` (a `LocalBackend`) after
    the chat ``messages``: ``(text, segments)``, the segments adding up to ``text``, each ``(piece,
    alternatives)`` with the values' log-probabilities at a chosen value and ``{}`` on written JSON."""
    prompt = engine.encode_chat(messages)
    limit = engine.context_length
    segments: list[tuple[str, dict]] = []

    def write(piece: str, alternatives: dict | None = None) -> None:
        segments.append((piece, alternatives or {}))

    def choose(values: list[str]) -> None:
        ids = prompt + engine.encode("".join(piece for piece, _ in segments))
        if limit and len(ids) + 4 > limit:
            raise ValueError(f"prompt of {len(ids)} tokens is over the model's context of {limit}")
        scored = engine.score_options(ids, values, end_of_turn='"')
        write(values[int(scored.logprobs.argmax())], {v: float(lp) for v, lp in zip(values, scored.logprobs)})

    def emit(schema: dict) -> None:
        if schema.get("type") != "object" or not isinstance(schema.get("properties"), dict):
            raise ValueError("a guided verdict needs an object schema whose leaves are string enums")
        write("{")
        for i, (key, sub) in enumerate(schema["properties"].items()):
            write((", " if i else "") + json.dumps(key) + ": ")
            if isinstance(sub.get("enum"), list):
                write('"')
                choose([str(v) for v in sub["enum"]])
                write('"')
            else:
                emit(sub)
        write("}")

    emit(response_format["json_schema"]["schema"])
    return "".join(piece for piece, _ in segments), segments


__all__ = ["guided_verdict"]
