"""The API backend against real HTTP on 127.0.0.1: `annotune serve` over the tiny model (and, where a
misbehaving endpoint is needed, a small server of the tests' own). No mocks of the openai SDK.

Covers a full `compare` with API systems, cost accounting, the response cache (rerun for free, resume
after a kill with zero repeated paid calls), faults injected in front of the real server by
`fault_injection` (429 + Retry-After, 500, stalls, malformed JSON),
retry and money budgets, `annotune plan` against the tokens actually sent, and that the API key is
never written anywhere.
"""

from __future__ import annotations

import csv
import json
import math
import os
import sqlite3
import subprocess
import sys
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from annotune.backends.api import ApiBackend, ApiError, option_probs
from annotune.backends.local import LocalBackend, encode_chat
from annotune.backends.api.cache import ResponseCache, request_key
from annotune.cli import app
from annotune.data.dataset import Doc
from annotune.backends.api.pricing import Price, load_prices, lookup, resolve_price
from annotune.tasks.prompts import PromptBuilder
from annotune.serve import create_app

from conftest import REPO, TOPIC_LABELS as LABELS, TOPICS_CODEBOOK as CODEBOOK, make_codebook
from fault_injection import MALFORMED_BODY, serve_with_faults

KEY_ENV = "ANNOTUNE_TEST_API_KEY"
WORDS = {"business": "shares profit market company", "sport": "match goal team player",
         "tech": "software computer internet chip"}
PRICE = "{input = 1.5, output = 6.0, batch_discount = 0.5, date = \"2025-01-01\"}"

@pytest.fixture(scope="module")
def secret() -> str:
    return f"sk-annotune-test-{uuid.uuid4().hex}"


@pytest.fixture(scope="module")
def backend(tiny_model_dir):
    return LocalBackend(str(tiny_model_dir), dtype="fp32")


def start(backend, token: str | None = None, faults: str | None = None, **fault_opts):
    """The real `annotune serve` app over the tiny model, on a uvicorn thread, behind the tests' fault
    injector (tests/fault_injection.py; with no plan it passes every request on, counting them)."""
    return serve_with_faults(create_app(backend, model_name="tiny", token=token), faults, **fault_opts)


@pytest.fixture(scope="module")
def server(backend, secret):
    srv = start(backend, token=secret)
    yield srv
    srv.stop()


def docs(n: int = 6) -> list[Doc]:
    return [Doc(id=f"d{i}", text=f"Story {i}: {WORDS[LABELS[i % 3]]} news", label=LABELS[i % 3]) for i in range(n)]


def write_project(root: Path, systems: str, *, test_size: int = 9) -> Path:
    with open(root / "data.csv", "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["id", "text", "label"])
        for i in range(36):
            label = LABELS[i % 3]
            writer.writerow([f"doc{i:03d}", f"Story {i}: {WORDS[label]} news {i % 5}", label])
    (root / "codebook.toml").write_text(CODEBOOK, encoding="utf-8")
    cfg = (f'name = "api-demo"\nseed = 3\nbootstrap = 50\ncodebook = "codebook.toml"\n\n[data]\npath = "data.csv"\n\n'
           f"[split]\ntest_size = {test_size}\n\n{systems}")
    (root / "config.toml").write_text(cfg, encoding="utf-8")
    return root / "config.toml"


def api_system(name: str, url: str, **opts) -> str:
    lines = [f'[[systems]]\nname = "{name}"\ntype = "api"\nbase_url = "{url}"\nmodel = "tiny"']
    for k, v in opts.items():
        if isinstance(v, bool):
            v = str(v).lower()
        elif isinstance(v, str) and not v.startswith("{"):
            v = json.dumps(v)
        lines.append(f"{k} = {v}")
    return "\n".join(lines) + "\n\n"


def invoke(*args, ok: bool = True):
    result = CliRunner().invoke(app, [str(a) for a in args])
    if ok:
        assert result.exit_code == 0, (result.stdout, result.stderr, result.exception)
    assert "Traceback" not in result.stderr
    return result


def all_bytes(root: Path) -> bytes:
    return b"".join(p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file())


# ------------------------------------------------------------------------------ compare end to end
@pytest.fixture(scope="module")
def compared(tmp_path_factory, server, secret, tiny_model_dir):
    """`annotune plan`, then `annotune compare` with three API systems and a local baseline, via the CLI."""
    mp = pytest.MonkeyPatch()
    mp.setenv(KEY_ENV, secret)
    root = tmp_path_factory.mktemp("api-compare")
    url = server.url
    systems = ('[[systems]]\nname = "tf-idf"\ntype = "tfidf"\n\n'
               + api_system("api generate", url, api_key_env=KEY_ENV, price=PRICE, max_tokens=6,
                            tokenizer=str(tiny_model_dir))
               + api_system("api 2-shot structured", url, api_key_env=KEY_ENV, price=PRICE, shots=2,
                            structured=True, tokenizer=str(tiny_model_dir))
               + api_system("api constrained", url, api_key_env=KEY_ENV, price=PRICE, answer="constrained",
                            structured=True, concurrency=3, tokenizer=str(tiny_model_dir)))
    config = write_project(root, systems)
    out = root / "out"
    served_before = server.usage.prompt_tokens
    plan_before = json.loads(invoke("plan", config, "--output", out, "--json").stdout)
    result = invoke("compare", config, "--output", out, "--quiet")
    sent = server.usage.prompt_tokens - served_before
    plan_after = json.loads(invoke("plan", config, "--output", out, "--json").stdout)
    rerun = invoke("compare", config, "--output", out, "--quiet", "--fresh")
    yield {"root": root, "out": out, "result": result, "rerun": rerun, "plan_before": plan_before,
           "plan_after": plan_after, "sent": sent, "config": config}
    mp.undo()


def test_compare_reports_api_systems_with_cost(compared):
    results = json.loads((compared["out"] / "results.json").read_text())
    systems = {s["name"]: s for s in results["systems"]}
    assert set(systems) == {"tf-idf", "api generate", "api 2-shot structured", "api constrained"}
    n = results["data"]["test"]
    for name in ("api generate", "api 2-shot structured", "api constrained"):
        st = systems[name]["stats"]
        assert st["backend"] == "api" and st["endpoint"].startswith("http://127.0.0.1:")
        assert st["failed_requests"] == 0 and st["retries"] == 0
        expected = (st["prompt_tokens"] * 1.5 + st["generated_tokens"] * 6.0) / 1e6
        assert st["cost_usd"] == pytest.approx(expected)
        assert st["cost_per_1k_docs"] == pytest.approx(expected * 1000 / n)
        assert st["price"]["date"] == "2025-01-01"
        assert st["prompt_tokens"] > 0
    # structured output through the server's enum constraint: every answer valid
    assert systems["api 2-shot structured"]["metrics"]["valid_rate"] == 1.0
    assert systems["api constrained"]["metrics"]["valid_rate"] == 1.0
    assert systems["api constrained"]["stats"]["constrained_fallback_docs"] == 0
    assert systems["api constrained"]["stats"]["requests"] == n  # one question per document (single)
    assert len(systems["api 2-shot structured"]["stats"]["examples"]) == 2
    # the table shows $ per 1,000 documents next to the compute time
    stdout = compared["result"].stdout
    assert "$/1k docs" in stdout and "seconds" in stdout
    rows = list(csv.DictReader(open(compared["out"] / "predictions.csv", encoding="utf-8")))
    for name in systems:
        assert sum(r["system"] == name for r in rows) == n  # nothing lost


def test_api_prompts_are_the_local_prompts(compared, backend):
    """The chat sent to the API is `PromptBuilder.messages` — what the local backend renders — so the
    server's prompt token count is the local rendering's."""
    cache = ResponseCache(compared["out"] / "api-cache.sqlite")
    rows = cache._db.execute("SELECT request, prompt_tokens FROM responses").fetchall()
    cache.close()
    assert rows
    for request, prompt_tokens in rows:
        body = json.loads(request)
        assert body["messages"][0]["role"] == "system" and body["messages"][-1]["role"] == "user"
        assert prompt_tokens == len(encode_chat(backend.tokenizer, body["messages"]))


def test_rerun_is_free_from_the_cache(compared):
    results = json.loads((compared["out"] / "results.json").read_text())
    for s in results["systems"]:
        if s["stats"].get("backend") == "api":
            st = s["stats"]
            assert st["paid_calls"] == 0 and st["http_requests"] == 0
            assert st["cache_hits"] == st["requests"] and st["cost_usd_this_run"] == 0
            assert st["cost_usd"] > 0  # what the labelling costs, from the cached usage


def test_plan_matches_tokens_sent(compared):
    """`annotune plan` before the run: input tokens within 5 % of what the server counted (exact here,
    with the tokenizer named in the config); after the run everything is cached and nothing is due."""
    before = {p["name"]: p for p in compared["plan_before"]["systems"]}
    assert set(before) == {"api generate", "api 2-shot structured", "api constrained"}
    planned = sum(p["input_tokens"] for p in before.values())
    assert abs(planned - compared["sent"]) <= 0.05 * compared["sent"]
    assert planned == compared["sent"]
    results = json.loads((compared["out"] / "results.json").read_text())
    stats = {s["name"]: s["stats"] for s in results["systems"]}
    for name, p in before.items():
        assert p["cached_requests"] == 0 and p["token_counts"] == "exact"
        assert p["requests"] == stats[name]["requests"]
        assert p["cost_usd_batch"] == pytest.approx(p["cost_usd"] * 0.5)
        assert p["output_tokens"] > 0
    for p in compared["plan_after"]["systems"]:
        assert p["cached_requests"] == p["requests"] and p["cost_usd_remaining"] == 0


def test_plan_table_and_estimates(compared, tmp_path):
    result = invoke("plan", compared["config"], "--output", tmp_path / "fresh")
    assert "Batch API" in result.stdout and "api constrained" in result.stdout
    assert "2025-01-01" in result.stdout


def test_api_key_is_never_written(compared, secret):
    """Not in the cache (or its WAL), results, per-system files, predictions, nor the CLI's output."""
    assert secret.encode() not in all_bytes(compared["root"])
    for res in (compared["result"], compared["rerun"]):
        assert secret not in res.stdout and secret not in res.stderr
    assert KEY_ENV in (compared["root"] / "config.toml").read_text()  # only the variable's name


# ------------------------------------------------------------------------------ faults
def label_with(srv, tmp_path, n=6, answer="generate", **kw) -> tuple[ApiBackend, list, object]:
    opts = dict(cache=tmp_path / "cache.sqlite", backoff=0.01, timeout=2.0, max_tokens=4)
    opts.update(kw)
    be = ApiBackend(srv.url, "tiny", **opts)
    try:
        preds, stats = be.label(docs(n), PromptBuilder(make_codebook("single")), answer, progress=False)
    finally:
        be.close()
    return be, preds, stats


def test_faults_are_retried_and_nothing_is_lost(backend, tmp_path):
    """429 with Retry-After, 500, a stalled response (client timeout) and malformed JSON: the run finishes,
    every fault is counted as a retry, every document gets exactly one paid, cached answer."""
    # the client's timeout is generous enough that only the injected stalls time out on a busy machine
    srv = start(backend, faults="ok,429,ok,500,ok,stall,ok,malformed", retry_after=0.2, stall_seconds=2.5)
    try:
        be, preds, stats = label_with(srv, tmp_path, n=8, concurrency=2, timeout=1.5, malformed_retries=3)
        injected = dict(srv.faults.injected)
        served = list(srv.faults.served)
    finally:
        srv.stop()
    ex = stats.extra
    assert sum(injected.values()) >= 4
    assert ex["retries"] == sum(injected.values())
    assert ex["retry_reasons"]["429"] == injected["429"] and ex["retry_reasons"]["500"] == injected["500"]
    assert ex["retry_reasons"]["timeout"] == injected["stall"]
    assert ex["retry_reasons"]["malformed"] == injected["malformed"]
    assert ex["retry_wait_s"] >= 0.2 * injected["429"]  # Retry-After honoured
    assert ex["failed_requests"] == 0 and ex["paid_calls"] == 8
    assert [p.id for p in preds] == [d.id for d in docs(8)]
    assert all(p.error is None or "malformed" not in p.error for p in preds)
    assert len(served) == len(set(served)) == 8  # no document paid twice
    with ResponseCache(tmp_path / "cache.sqlite") as cache:
        assert len(cache) == 8


def test_malformed_response_is_invalid_with_raw_payload(backend, tmp_path):
    srv = start(backend, faults="malformed")
    try:
        _, preds, stats = label_with(srv, tmp_path, n=3, malformed_retries=1)
    finally:
        srv.stop()
    assert all(p.label is None and p.raw == MALFORMED_BODY and p.error == "malformed API response" for p in preds)
    assert stats.extra["failed_requests"] == 3 and stats.extra["retry_reasons"]["malformed_recorded"] == 3
    assert stats.extra["retries"] == 3  # one retry each, then recorded: not retried forever
    with ResponseCache(tmp_path / "cache.sqlite") as cache:
        assert len(cache) == 0  # a malformed answer is asked again on the next run


def test_retry_budget_stops_the_run(backend, tmp_path):
    srv = start(backend, faults="ok,500")
    try:
        with pytest.raises(ApiError, match="retry budget exhausted"):
            label_with(srv, tmp_path, n=6, concurrency=1, max_retries=2)
        requests = srv.faults.chat_requests
    finally:
        srv.stop()
    assert requests == 6  # 3 answered + 3 failures of which 2 were retried, then the run stopped
    with ResponseCache(tmp_path / "cache.sqlite") as cache:
        assert len(cache) == 3  # what was answered is kept


def test_money_budget_stops_before_overspending(backend, tmp_path):
    price = Price("tiny", input=1000.0, output=1000.0)
    builder = PromptBuilder(make_codebook("single"))
    one = (len(encode_chat(backend.tokenizer, builder.messages(docs(1)[0].text))) + 4) * 1000 / 1e6
    srv = start(backend)
    try:
        be = ApiBackend(srv.url, "tiny", cache=tmp_path / "c.sqlite", price=price, budget_usd=2.5 * one,
                        max_tokens=4, concurrency=1, budget_tokenizer=backend.tokenizer)
        with pytest.raises(ApiError, match="budget_usd"):
            be.label(docs(6), builder, progress=False)
        assert be.paid_calls == 2 and be.spent_usd <= 2.5 * one
        be.close()
    finally:
        srv.stop()


def test_retry_after_is_honoured(backend, tmp_path):
    srv = start(backend, faults="429,ok", retry_after=0.6)
    try:
        started = time.perf_counter()
        _, preds, stats = label_with(srv, tmp_path, n=1, backoff=0.001)
        elapsed = time.perf_counter() - started
    finally:
        srv.stop()
    assert elapsed >= 0.6 and stats.extra["retries"] == 1 and stats.extra["retry_wait_s"] >= 0.6


def test_constrained_without_logprobs_falls_back(backend, tmp_path):
    """The random tiny model answers newlines: no option in the top logprobs, so documents fall back to
    generate + parse, counted, after probing the first document only."""
    srv = start(backend)
    try:
        _, preds, stats = label_with(srv, tmp_path, n=4, answer="constrained")
        sent = srv.faults.chat_requests
    finally:
        srv.stop()
    assert stats.extra["constrained_fallback_docs"] == 4
    assert sent == 1 + 4  # one probe question, then one generate request per document
    assert all(p.probs is None for p in preds)


# ------------------------------------------------------------------------------ kill and resume
def test_killed_run_resumes_with_zero_repeated_paid_calls(backend, tmp_path, secret):
    """`annotune compare` in a subprocess is killed while a request hangs; the rerun sends only the
    documents not answered yet."""
    srv = start(backend, token=secret, faults="ok*4,stall", stall_seconds=60)
    try:
        config = write_project(tmp_path, api_system("api", srv.url, api_key_env=KEY_ENV, price=PRICE,
                                                    concurrency=1, max_tokens=4), test_size=9)
        out = tmp_path / "out"
        env = {**os.environ, KEY_ENV: secret, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO / "src")}
        proc = subprocess.Popen([sys.executable, "-m", "annotune.cli", "compare", str(config), "--output", str(out),
                                 "--quiet"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        deadline = time.time() + 45
        while time.time() < deadline and srv.faults.chat_requests < 5 and proc.poll() is None:
            time.sleep(0.05)
        assert srv.faults.chat_requests == 5, proc.stderr.read() if proc.poll() is not None else "timeout"
        proc.kill()
        _, stderr = proc.communicate(timeout=30)
        assert secret not in stderr
        db = sqlite3.connect(out / "api-cache.sqlite")
        assert db.execute("SELECT COUNT(*) FROM responses").fetchone()[0] == 4
        db.close()
        assert not (out / "results.json").exists()
        srv.faults.plan = []
        mp = pytest.MonkeyPatch()
        mp.setenv(KEY_ENV, secret)
        try:
            invoke("compare", config, "--output", out, "--quiet")
        finally:
            mp.undo()
        served = list(srv.faults.served)
    finally:
        srv.stop()
    st = json.loads((out / "results.json").read_text())["systems"][0]["stats"]
    assert st["cache_hits"] == 4 and st["paid_calls"] == 5 and st["requests"] == 9
    assert len(served) == 9 and len(set(served)) == 9  # every document paid exactly once
    assert secret.encode() not in all_bytes(tmp_path)


# ------------------------------------------------------------------------------ keys and config errors
class _EchoAuth(BaseHTTPRequestHandler):
    """A misbehaving endpoint that echoes the Authorization header in its 401 error."""

    def do_POST(self):  # noqa: N802
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        body = json.dumps({"error": {"message": f"bad key: {self.headers.get('Authorization')}"}}).encode()
        self.send_response(401)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def test_key_echoed_by_endpoint_is_redacted(tmp_path, secret, monkeypatch):
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _EchoAuth)
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{srv.server_address[1]}/v1"
        monkeypatch.setenv(KEY_ENV, secret)
        config = write_project(tmp_path, api_system("api", url, api_key_env=KEY_ENV, price=PRICE))
        result = invoke("compare", config, "--output", tmp_path / "out", "--quiet", ok=False)
    finally:
        srv.shutdown()
        srv.server_close()
    assert result.exit_code == 2
    assert "401" in result.stderr and "***" in result.stderr
    assert secret not in result.stderr and secret not in result.stdout
    assert secret.encode() not in all_bytes(tmp_path)


def test_missing_key_variable_is_one_line(tmp_path, server, monkeypatch):
    monkeypatch.delenv("ANNOTUNE_UNSET_KEY_VAR", raising=False)
    config = write_project(tmp_path, api_system("api", server.url, api_key_env="ANNOTUNE_UNSET_KEY_VAR"))
    result = invoke("compare", config, "--output", tmp_path / "out", ok=False)
    assert result.exit_code == 2
    assert "ANNOTUNE_UNSET_KEY_VAR" in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_key_pasted_into_api_key_env_is_refused_without_echo(tmp_path, server):
    pasted = "sk-proj-" + "x9" * 20
    config = write_project(tmp_path, api_system("api", server.url, api_key_env=pasted))
    result = invoke("check", config, ok=False)
    assert result.exit_code == 2 and "api_key_env" in result.stderr
    assert pasted not in result.stderr


@pytest.mark.parametrize("url", ["https://bob:s3cr3t-v4lue@proxy.example.invalid/v1",
                                 "https://proxy.example.invalid/v1?api_key=s3cr3t-v4lue",
                                 "https://fn.example.invalid/api?code=s3cr3t-v4lue"])
def test_credentials_in_base_url_are_refused_without_echo(tmp_path, url):
    """A base_url is written to results.json, systems/*.json, the report and the label store: one holding a
    password or a key in its query is refused (system, judge and Python API alike), naming no value."""
    from annotune.errors import ConfigError
    from annotune.judging.config import JudgeConfig

    result = invoke("check", write_project(tmp_path, api_system("api", url)), ok=False)
    assert result.exit_code == 2 and "base_url" in result.stderr and "api_key_env" in result.stderr
    assert "s3cr3t" not in result.stderr
    with pytest.raises(ValueError, match="base_url must not hold"):
        JudgeConfig(backend="api", base_url=url, model="m")
    with pytest.raises(ConfigError, match="base_url must not hold") as err:
        ApiBackend(url, "m")
    assert "s3cr3t" not in err.value.format()
    assert ApiBackend("https://x.example.invalid/openai/v1?api-version=2024-06-01", "m").model == "m"


@pytest.mark.parametrize("opts, field", [({"concurrency": 0}, "concurrency"), ({"structured": "yes"}, "structured"),
                                         ({"price": "{input = 1}"}, "price"), ({"answer": "vote"}, "answer"),
                                         ({"budget_usd": 5}, "price"), ({"timeout": 0}, "timeout")])
def test_api_config_errors(tmp_path, opts, field):
    sys_text = api_system("api", "https://api.example.invalid/v1", **opts).replace('model = "tiny"',
                                                                                 'model = "no-such-model"')
    config = write_project(tmp_path, sys_text)
    result = invoke("check", config, ok=False)
    assert result.exit_code == 2 and field in result.stderr, result.stderr


# ------------------------------------------------------------------------------ log-probabilities
def lp(tokens: list[tuple[str, float, list[tuple[str, float]]]]) -> dict:
    return {"content": [{"token": t, "logprob": v, "top_logprobs": [{"token": a, "logprob": b} for a, b in top]}
                        for t, v, top in tokens]}


def test_option_probs_from_top_logprobs():
    opts = ("business", "politics", "sport", "tech")
    content = lp([(" Sport", math.log(0.6), [(" Sport", math.log(0.6)), ("Tech", math.log(0.2)),
                                             ("The", math.log(0.1)), (" bus", math.log(0.05))])])
    p, info = option_probs(content, opts)
    assert p == pytest.approx(np.array([0.05, 0, 0.6, 0.2]) / 0.85)
    assert info["coverage"] == pytest.approx(0.85)
    # leading whitespace tokens are skipped; nothing usable → None
    assert option_probs(lp([("\n", -0.1, [("\n", -0.1)]), ("\n", -0.1, [("\n", -0.1)])]), opts)[0] is None
    assert option_probs(None, opts)[0] is None


def test_option_probs_follows_the_path_for_shared_prefixes():
    opts = ("sport", "sport news", "tech")
    content = lp([("sport", math.log(0.8), [("sport", math.log(0.8)), ("tech", math.log(0.2))]),
                  (" news", math.log(0.75), [(" news", math.log(0.75)), (".", math.log(0.25))])])
    p, _ = option_probs(content, opts)
    assert p == pytest.approx([0.8 * 0.25, 0.8 * 0.75, 0.2])
    # generation stopped right after "sport": it is the complete answer
    p, _ = option_probs(lp([("sport", math.log(0.8), [("sport", math.log(0.8)), ("tech", math.log(0.2))])]), opts)
    assert p == pytest.approx([0.8, 0.0, 0.2])


def test_option_probs_structured_prefix():
    opts = ("yes", "no")
    content = lp([('{"', 0.0, []), ("answer", 0.0, []), ('":"', 0.0, []),
                  ("no", math.log(0.7), [("no", math.log(0.7)), ("yes", math.log(0.3))]), ('"}', 0.0, [])])
    p, _ = option_probs(content, opts, structured=True)
    assert p == pytest.approx([0.3, 0.7])


# ------------------------------------------------------------------------------ prices and cache keys
def test_price_table_lookup_and_cost(tmp_path):
    table = load_prices()
    assert lookup("gpt-4o-2024-08-06", table).model == "gpt-4o"
    assert lookup("gpt-4o-mini-2024-07-18", table).model == "gpt-4o-mini"
    assert lookup("openai/gpt-4-0613", table).model == "gpt-4"
    assert lookup("llama3", table) is None
    assert all(p.date for p in table.values())
    gpt4o = table["gpt-4o"]
    assert gpt4o.cost(1_000_000, 0) == pytest.approx(gpt4o.input)
    assert gpt4o.cost(1000, 100, cached_tokens=400) == pytest.approx(
        (600 * gpt4o.input + 400 * gpt4o.cached_input + 100 * gpt4o.output) / 1e6)
    assert gpt4o.cost(1000, 100, batch=True) == pytest.approx(gpt4o.cost(1000, 100) * (1 - gpt4o.batch_discount))
    own = tmp_path / "prices.toml"
    own.write_text('[models."my-model"]\ninput = 1\noutput = 2\ndate = "2025-02-02"\n')
    assert resolve_price("prices.toml", "my-model-v2", "https://x.example/v1", base_dir=tmp_path, file="c").input == 1
    assert resolve_price(None, "llama3", "http://127.0.0.1:8000/v1", base_dir=tmp_path, file="c").input == 0
    assert resolve_price(None, "llama3", "https://api.example.com/v1", base_dir=tmp_path, file="c") is None


def test_cache_key_covers_endpoint_model_prompt_and_decoding_only():
    body = {"model": "m", "messages": [{"role": "user", "content": "x"}], "temperature": 0, "max_tokens": 4}
    k = request_key("http://h:1/v1/", body)
    assert k == request_key("http://H:1/v1", dict(body))
    assert k != request_key("http://h:2/v1", body)
    assert k != request_key("http://h:1/v1", {**body, "model": "n"})
    assert k != request_key("http://h:1/v1", {**body, "max_tokens": 5})
    assert k != request_key("http://h:1/v1", {**body, "messages": [{"role": "user", "content": "y"}]})
    assert len(k) == 64


def test_definitions_false_sends_the_short_fine_tuned_prompt(tmp_path, server):
    """A served fine-tuned run was trained on the short prompt (label names only): `definitions = false`."""
    from annotune.backends.api import build_requests
    from annotune.experiments.compare import run_context, split_data
    from annotune.experiments.config import build_systems, load_config

    config = write_project(tmp_path, api_system("short", server.url, definitions=False)
                           + api_system("long", server.url))
    cfg = load_config(config)
    train, test = split_data(cfg, cfg.load_data())
    short, long = (build_requests(test.docs[:1], s.builder(train.docs), "generate", model="tiny",
                                  base_url=server.url)[0].body["messages"][0]["content"]
                   for s in build_systems(cfg, run_context(cfg)))
    assert "companies, markets" in long and "companies, markets" not in short
    assert "- business" in short
