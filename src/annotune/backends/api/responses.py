"""What an API run receives: the shape of a chat-completion response and the outcome of one request.

`is_well_formed` decides whether a payload is a response at all (anything else is retried, then
recorded as INVALID with its raw text); `response_message` and `usage_tokens` read the parts the
backend uses; `retry_after` reads how long a server asked the client to wait.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Any


@dataclass
class ApiResult:
    """The outcome of one request: a well-formed response, or a recorded failure (INVALID)."""

    response: dict | None
    raw: str = ""
    error: str | None = None
    cached: bool = False
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost: float | None = 0.0
    seconds: float = 0.0


def response_message(response: dict) -> tuple[str | None, Any, str | None]:
    """The first choice's ``(content, logprobs, refusal)`` of a well-formed response."""
    choice = response["choices"][0]
    msg = choice.get("message") or {}
    return msg.get("content"), choice.get("logprobs"), msg.get("refusal")


def is_well_formed(payload: Any) -> bool:
    """Whether ``payload`` (parsed JSON) is a chat completion with a message whose content is text or null."""
    if not isinstance(payload, dict):
        return False
    choices = payload.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        return False
    msg = choices[0].get("message")
    return isinstance(msg, dict) and (msg.get("content") is None or isinstance(msg.get("content"), str))


def usage_tokens(payload: dict) -> tuple[int, int, int] | None:
    """``(prompt, completion, cached prompt)`` tokens a response reports, or None when it reports none."""
    usage = payload.get("usage")
    if not isinstance(usage, dict) or not isinstance(usage.get("prompt_tokens"), int):
        return None
    details = usage.get("prompt_tokens_details") or {}
    cached = details.get("cached_tokens") if isinstance(details, dict) else 0
    return usage["prompt_tokens"], int(usage.get("completion_tokens") or 0), int(cached or 0)


def retry_after(headers) -> float | None:
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


def error_detail(text: str) -> Any:
    """The message of an error response's body (``{"error": {"message": ...}}`` or ``{"error": ...}``),
    else the body itself."""
    try:
        err = json.loads(text).get("error")
        return err.get("message") if isinstance(err, dict) else str(err or "")
    except (ValueError, AttributeError):
        return text


def total_cost(results: list[ApiResult]) -> float | None:
    """The cost of the answered results together; None when the cost of any of them is unknown."""
    costs = [res.cost for res in results if res.response is not None]
    known = all(c is not None for c in costs)
    return sum(c for c in costs if c is not None) if known else None
