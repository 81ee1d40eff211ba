"""API prices: a dated, editable table (``prices.toml``) and the cost of a response's token usage.

Prices are USD per million tokens. The table shipped with annotune can be replaced by the user's own
file (``ANNOTUNE_PRICES=path`` or ``price = "path.toml"`` in a system); a system can also give its
prices inline (``price = {input = 2.5, output = 10}``) or ``price = 0`` for a free endpoint. Endpoints
on this machine (localhost) cost nothing unless a price is given: their cost is compute time, which
the comparison measures.
"""

from __future__ import annotations

import math

import os
import tomllib
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from annotune.errors import ConfigError

DEFAULT_PRICES = Path(__file__).with_name("prices.toml")
_PRICE_KEYS = {"provider", "input", "output", "cached_input", "batch_discount", "date", "source"}


@dataclass(frozen=True)
class Price:
    """What one model costs, per million tokens."""

    model: str
    input: float
    output: float
    cached_input: float | None = None
    batch_discount: float = 0.0
    date: str | None = None
    provider: str | None = None
    source: str | None = None

    def cost(self, prompt_tokens: int, completion_tokens: int, cached_tokens: int = 0, *,
             batch: bool = False) -> float:
        """USD for one response's usage (cached prompt tokens at their own price when known)."""
        cached = min(max(cached_tokens, 0), prompt_tokens) if self.cached_input is not None else 0
        usd = ((prompt_tokens - cached) * self.input + cached * (self.cached_input or 0.0)
               + completion_tokens * self.output) / 1e6
        return usd * (1 - self.batch_discount) if batch else usd

    def as_dict(self) -> dict:
        return {k: v for k, v in asdict(self).items() if v is not None}


FREE = Price("local", 0.0, 0.0, date=None, provider="self-hosted")


def _number(value: Any, what: str, file: str | Path, field: str, *, upper: float | None = None) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0 or (
            upper is not None and value > upper):
        bound = f" and <= {upper}" if upper is not None else ""
        raise ConfigError(f"{what} must be a number >= 0{bound}, not {value!r}", file=file, field=field)
    return float(value)


def price_from_dict(model: str, entry: dict, *, file: str | Path, field: str) -> Price:
    """A `Price` from a table ``{input, output, cached_input?, batch_discount?, date?, ...}``."""
    if not isinstance(entry, dict):
        raise ConfigError(f"a price must be a table with input and output (USD per 1M tokens), not {entry!r}",
                          file=file, field=field)
    unknown = set(entry) - _PRICE_KEYS
    if unknown:
        raise ConfigError(f"unknown key(s) {', '.join(sorted(map(repr, unknown)))} (allowed: "
                          f"{', '.join(sorted(_PRICE_KEYS))})", file=file, field=field)
    for key in ("input", "output"):
        if key not in entry:
            raise ConfigError(f"a price needs {key} (USD per 1M tokens)", file=file, field=f"{field}.{key}")
    cached = entry.get("cached_input")
    return Price(
        model=model,
        input=_number(entry["input"], "input", file, f"{field}.input"),
        output=_number(entry["output"], "output", file, f"{field}.output"),
        cached_input=None if cached is None else _number(cached, "cached_input", file, f"{field}.cached_input"),
        batch_discount=_number(entry.get("batch_discount", 0.0), "batch_discount", file, f"{field}.batch_discount",
                               upper=1.0),
        date=None if entry.get("date") is None else str(entry["date"]),
        provider=entry.get("provider"),
        source=entry.get("source"),
    )


def load_prices(path: str | Path | None = None) -> dict[str, Price]:
    """The price table: ``path``, else ``$ANNOTUNE_PRICES``, else the one shipped with annotune."""
    path = Path(path or os.environ.get("ANNOTUNE_PRICES") or DEFAULT_PRICES).expanduser()
    if not path.is_file():
        raise ConfigError("price file not found", file=path)
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"invalid price file: {exc}", file=path) from None
    models = raw.get("models")
    if not isinstance(models, dict):
        raise ConfigError('a price file needs [models."<name>"] tables', file=path, field="models")
    return {name: price_from_dict(name, entry, file=path, field=f"models.{name}") for name, entry in models.items()}


def lookup(model: str, table: dict[str, Price]) -> Price | None:
    """The table's entry for ``model``: exact (case-insensitive), else the longest name that is a prefix
    of ``model`` at a "-" boundary ("gpt-4o-2024-08-06" → "gpt-4o"); provider prefixes such as
    "openai/" are ignored."""
    if model.lower() in (by_lower := {k.lower(): v for k, v in table.items()}):
        return by_lower[model.lower()]
    name = model.lower().rsplit("/", 1)[-1]
    by_lower = {k.rsplit("/", 1)[-1]: v for k, v in by_lower.items()}
    if name in by_lower:
        return by_lower[name]
    best = None
    for key, price in by_lower.items():
        if name.startswith(key + "-") and (best is None or len(key) > len(best[0])):
            best = (key, price)
    return best[1] if best else None


def is_local(base_url: str) -> bool:
    host = (urlsplit(base_url).hostname or "").lower()
    return host in ("localhost", "127.0.0.1", "::1", "0.0.0.0") or host.startswith("127.")


def resolve_price(spec: Any, model: str, base_url: str, *, base_dir: Path, file: str | Path,
                  field: str = "price") -> Price | None:
    """The price of a system: ``spec`` is None (look ``model`` up; free on localhost), a number 0 (free),
    an inline table, or the path of a price file to look ``model`` up in. None: unknown."""
    if spec is None:  # a self-hosted endpoint costs nothing unless the system sets a price
        return FREE if is_local(base_url) else lookup(model, load_prices())
    if isinstance(spec, (int, float)) and not isinstance(spec, bool):
        if spec != 0:
            raise ConfigError("price must be 0 (free), a table {input = ..., output = ...} (USD per 1M tokens) "
                              f"or a price file, not {spec!r}", file=file, field=field)
        return FREE
    if isinstance(spec, dict):
        return price_from_dict(model, spec, file=file, field=field)
    if isinstance(spec, str) and spec.strip():
        path = Path(spec).expanduser()
        path = path if path.is_absolute() else base_dir / path
        found = lookup(model, load_prices(path))
        if found is None:
            raise ConfigError(f"no price for model {model!r} in {path}", file=file, field=field)
        return found
    raise ConfigError(f"price must be 0, a table {{input = ..., output = ...}} or a price file, not {spec!r}",
                      file=file, field=field)
