"""`annotune.backends.api.pricing`: the shipped price table and user price files (errors name file and
field), model lookup, a system's price (None, 0, inline table, file), localhost endpoints, and the cost of
a response's usage computed by hand."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from annotune.backends.api.pricing import (
    DEFAULT_PRICES,
    FREE,
    Price,
    is_local,
    load_prices,
    lookup,
    price_from_dict,
    resolve_price,
)
from annotune.errors import ConfigError


@pytest.fixture(autouse=True)
def _shipped_prices(monkeypatch):
    """Every test starts from the shipped table, whatever the environment of the run."""
    monkeypatch.delenv("ANNOTUNE_PRICES", raising=False)


def write(tmp_path: Path, text: str, name: str = "prices.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def error(fn, *args, **kw) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        fn(*args, **kw)
    return info.value


# ---------------------------------------------------------------------------- the shipped table
def test_shipped_table_matches_its_file():
    table = load_prices()
    raw = tomllib.loads(DEFAULT_PRICES.read_text())["models"]
    assert set(table) == set(raw) and len(table) >= 5
    for name, price in table.items():
        entry = raw[name]
        assert price.model == name
        assert (price.input, price.output) == (entry["input"], entry["output"])
        assert price.cached_input == entry.get("cached_input")
        assert price.batch_discount == entry.get("batch_discount", 0.0)
        assert price.date and price.provider and price.source.startswith("https://")
        assert 0 <= price.batch_discount <= 1 and price.output >= price.input > 0
    assert load_prices(DEFAULT_PRICES) == table


def test_environment_variable_replaces_the_shipped_table(tmp_path, monkeypatch):
    own = write(tmp_path, '[models."house-model"]\ninput = 0.2\noutput = 0.4\n')
    monkeypatch.setenv("ANNOTUNE_PRICES", str(own))
    assert list(load_prices()) == ["house-model"]
    assert resolve_price(None, "house-model-v3", "https://llm.example/v1", base_dir=tmp_path,
                         file="c.toml").output == 0.4
    assert resolve_price(None, "gpt-4o", "https://api.openai.com/v1", base_dir=tmp_path, file="c.toml") is None


# ---------------------------------------------------------------------------- user files with errors
def test_missing_and_unreadable_price_files(tmp_path):
    missing = tmp_path / "nope.toml"
    err = error(load_prices, missing)
    assert err.file == str(missing) and "price file not found" in str(err)
    bad = write(tmp_path, '[models."m"\ninput = 1\n')
    err = error(load_prices, bad)
    assert err.file == str(bad) and "invalid price file" in err.message
    latin = tmp_path / "latin.toml"
    latin.write_bytes('[models."caf\xe9"]\ninput = 1\noutput = 1\n'.encode("latin-1"))
    assert "invalid price file" in error(load_prices, latin).message


@pytest.mark.parametrize("text,field,fragment", [
    ('title = "no models"\n', "models", "[models."),
    ('models = 3\n', "models", "[models."),
    ('[models]\n"m" = 2\n', "models.m", "must be a table"),
    ('[models."m"]\noutput = 1\n', "models.m.input", "needs input"),
    ('[models."m"]\ninput = 1\n', "models.m.output", "needs output"),
    ('[models."m"]\ninput = -1\noutput = 1\n', "models.m.input", ">= 0"),
    ('[models."m"]\ninput = "cheap"\noutput = 1\n', "models.m.input", "'cheap'"),
    ('[models."m"]\ninput = true\noutput = 1\n', "models.m.input", "True"),
    ('[models."m"]\ninput = 1\noutput = 1\ncached_input = -0.5\n', "models.m.cached_input", ">= 0"),
    ('[models."m"]\ninput = 1\noutput = 1\nbatch_discount = 1.5\n', "models.m.batch_discount", "<= 1.0"),
    ('[models."m"]\ninput = 1\noutput = 1\nouptut = 2\n', "models.m", "unknown key(s) 'ouptut'"),
    ('[models."ok"]\ninput = 1\noutput = 1\n[models."bad"]\ninput = 1\n', "models.bad.output", "needs output"),
])
def test_user_file_errors_name_file_and_field(tmp_path, text, field, fragment):
    path = write(tmp_path, text)
    err = error(load_prices, path)
    assert err.file == str(path) and err.field == field
    assert fragment in err.message
    assert str(err).startswith(f"{path}, field '{field}': ")


@pytest.mark.parametrize("value", ["nan", "inf"])
def test_non_finite_prices_are_rejected(tmp_path, value):
    path = write(tmp_path, f'[models."m"]\ninput = {value}\noutput = 1\n')
    assert error(load_prices, path).field == "models.m.input"


def test_user_file_keeps_optional_fields(tmp_path):
    path = write(tmp_path, '[models."m"]\ninput = 3\noutput = 9\ncached_input = 0\nbatch_discount = 1\n'
                           'date = 2025-03-01\nprovider = "acme"\n')
    price = load_prices(path)["m"]
    assert price == Price("m", 3.0, 9.0, cached_input=0.0, batch_discount=1.0, date="2025-03-01", provider="acme")
    assert price.as_dict() == {"model": "m", "input": 3.0, "output": 9.0, "cached_input": 0.0,
                               "batch_discount": 1.0, "date": "2025-03-01", "provider": "acme"}
    assert isinstance(price.input, float)  # integers in the file become floats


# ---------------------------------------------------------------------------- lookup
def test_lookup_exact_prefixed_and_unknown():
    table = load_prices()
    assert lookup("gpt-4.1", table) is table["gpt-4.1"]
    assert lookup("GPT-4.1-MINI", table) is table["gpt-4.1-mini"]  # case-insensitive
    assert lookup("gpt-4.1-nano-2025-04-14", table).model == "gpt-4.1-nano"  # longest prefix wins
    assert lookup("gpt-4.1-2025-04-14", table).model == "gpt-4.1"
    assert lookup("claude-sonnet-4-20250514", table).model == "claude-sonnet-4"
    assert lookup("anthropic/claude-3-5-haiku-latest", table).model == "claude-3-5-haiku"
    assert lookup("gpt-4o2", table) is None  # a prefix only counts at a "-" boundary
    assert lookup("gpt", table) is None
    assert lookup("my-gpt-4o", table) is None
    assert lookup("gpt-4o", {}) is None


def test_lookup_prefers_the_longest_key_whatever_the_table_order():
    a, b = Price("m", 1, 1), Price("m-large", 2, 2)
    for table in ({"m": a, "m-large": b}, {"m-large": b, "m": a}):
        assert lookup("m-large-0601", table) is b
        assert lookup("m-small", table) is a


def test_lookup_finds_a_key_written_with_its_provider_prefix():
    price = Price("meta-llama/llama-3.1-8b-instruct", 0.02, 0.05)
    assert lookup("meta-llama/llama-3.1-8b-instruct", {price.model: price}) is price


# ---------------------------------------------------------------------------- resolve_price
URL = "https://api.example.com/v1"


def test_resolve_price_none_looks_the_model_up(tmp_path):
    assert resolve_price(None, "gpt-4o-mini-2024-07-18", URL, base_dir=tmp_path, file="c.toml") == \
        load_prices()["gpt-4o-mini"]
    assert resolve_price(None, "unknown-model", URL, base_dir=tmp_path, file="c.toml") is None


@pytest.mark.parametrize("url", ["http://localhost:8000/v1", "http://127.0.0.1:1234/v1", "http://127.3.4.5/v1",
                                 "http://[::1]:8080/v1", "http://0.0.0.0:9/v1", "HTTP://LOCALHOST/v1"])
def test_local_endpoints_are_free(tmp_path, url):
    assert is_local(url)
    assert resolve_price(None, "my-local-llama", url, base_dir=tmp_path, file="c.toml") is FREE
    assert FREE.cost(10**6, 10**6) == 0.0


@pytest.mark.parametrize("url", [URL, "http://localhost.example.com/v1", "http://10.0.0.5:8000/v1", "not a url"])
def test_other_endpoints_are_not_local(url):
    assert not is_local(url)


def test_resolve_price_zero_inline_and_file(tmp_path):
    assert resolve_price(0, "gpt-4o", URL, base_dir=tmp_path, file="c.toml") is FREE
    assert resolve_price(0.0, "gpt-4o", URL, base_dir=tmp_path, file="c.toml") is FREE
    inline = resolve_price({"input": 2.5, "output": 10, "date": "2025-01-01"}, "mine", URL, base_dir=tmp_path,
                           file="c.toml")
    assert inline == Price("mine", 2.5, 10.0, date="2025-01-01")
    (tmp_path / "conf").mkdir()
    write(tmp_path / "conf", '[models."mine"]\ninput = 4\noutput = 8\n', "own.toml")
    # a relative path is relative to base_dir (the config's folder), not the working directory
    assert resolve_price("own.toml", "mine-2", URL, base_dir=tmp_path / "conf", file="c.toml").input == 4.0
    assert resolve_price(str(tmp_path / "conf" / "own.toml"), "mine", URL, base_dir=Path("/"),
                         file="c.toml").output == 8.0


@pytest.mark.parametrize("spec,fragment", [
    (1.5, "price must be 0 (free)"),
    (-1, "price must be 0 (free)"),
    (True, "price must be 0, a table"),
    ("", "price must be 0, a table"),
    ("   ", "price must be 0, a table"),
    ([1, 2], "price must be 0, a table"),
    ({"input": 1}, "needs output"),
    ({"input": 1, "output": 2, "currency": "EUR"}, "unknown key(s) 'currency'"),
])
def test_resolve_price_errors_name_the_config_field(tmp_path, spec, fragment):
    err = error(resolve_price, spec, "m", URL, base_dir=tmp_path, file="exp.toml", field="systems[2].price")
    assert err.file == "exp.toml" and err.field.startswith("systems[2].price")
    assert fragment in err.message


def test_resolve_price_file_errors(tmp_path):
    write(tmp_path, '[models."other"]\ninput = 1\noutput = 1\n', "own.toml")
    err = error(resolve_price, "own.toml", "mine", URL, base_dir=tmp_path, file="exp.toml", field="price")
    assert (err.file, err.field) == ("exp.toml", "price") and "no price for model 'mine'" in err.message
    err = error(resolve_price, "missing.toml", "mine", URL, base_dir=tmp_path, file="exp.toml")
    assert err.file == str(tmp_path / "missing.toml") and "not found" in err.message


# ---------------------------------------------------------------------------- Price.cost by hand
def test_cost_plain_cached_and_batch():
    p = Price("m", input=2.0, output=8.0, cached_input=0.5, batch_discount=0.5)
    # 1000 prompt tokens (300 cached) and 200 completion tokens:
    # (700 * 2 + 300 * 0.5 + 200 * 8) / 1e6 = (1400 + 150 + 1600) / 1e6 = 0.00315
    assert p.cost(1000, 200, 300) == pytest.approx(0.00315)
    assert p.cost(1000, 200, 300, batch=True) == pytest.approx(0.001575)
    # no cached tokens: (1000 * 2 + 200 * 8) / 1e6 = 0.0036
    assert p.cost(1000, 200) == pytest.approx(0.0036)
    # cached tokens are clipped to [0, prompt tokens]
    assert p.cost(1000, 0, 5000) == pytest.approx(1000 * 0.5 / 1e6)
    assert p.cost(1000, 0, -7) == pytest.approx(1000 * 2 / 1e6)
    assert p.cost(0, 0) == 0.0


def test_cost_without_a_cached_price_bills_cached_tokens_as_input():
    p = Price("m", input=3.0, output=15.0)
    # 2000 prompt tokens (all 2000 reported cached, but no cached price): 2000 * 3 + 100 * 15 = 7500
    assert p.cost(2000, 100, 2000) == pytest.approx(0.0075)
    assert p.cost(2000, 100, 2000, batch=True) == pytest.approx(0.0075)  # no batch discount declared
    free_cache = Price("m", input=3.0, output=15.0, cached_input=0.0, batch_discount=1.0)
    assert free_cache.cost(2000, 100, 2000) == pytest.approx(0.0015)
    assert free_cache.cost(2000, 100, 2000, batch=True) == 0.0


def test_cost_with_the_shipped_gpt_4o_mini_price():
    p = load_prices()["gpt-4o-mini"]  # input 0.15, cached 0.075, output 0.60, batch half price
    # 1M prompt tokens of which 400k cached, 50k completion tokens:
    # 600k * 0.15 + 400k * 0.075 + 50k * 0.60 = 0.09 + 0.03 + 0.03 = 0.15 USD
    assert p.cost(1_000_000, 50_000, 400_000) == pytest.approx(0.15)
    assert p.cost(1_000_000, 50_000, 400_000, batch=True) == pytest.approx(0.075)


def test_price_from_dict_requires_a_table():
    err = error(price_from_dict, "m", 3, file="f.toml", field="price")
    assert (err.file, err.field) == ("f.toml", "price") and "must be a table" in err.message


def test_a_self_hosted_endpoint_is_free_even_for_a_model_in_the_table(tmp_path):
    """`annotune serve` (or vLLM on localhost) serving a model named like a paid one costs nothing."""
    free = resolve_price(None, "gpt-4o", "http://127.0.0.1:8000/v1", base_dir=tmp_path, file="c.toml")
    paid = resolve_price(None, "gpt-4o", "https://api.openai.com/v1", base_dir=tmp_path, file="c.toml")
    assert free.cost(1_000_000, 1_000_000) == 0.0 and paid.cost(1_000_000, 0) > 0
