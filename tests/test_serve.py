"""`annotune serve`: an OpenAI-compatible server (FastAPI on uvicorn) over the local backend, checked
over real HTTP on 127.0.0.1 with the official openai SDK and with raw HTTP.

The served model is the tiny random Llama with the real SmolLM2 tokenizer and chat template: answers
are random, but prompts, token counts, greedy decoding, log-probabilities and the constrained scorer
are the real code paths.
"""

from __future__ import annotations

import http.client
import json
import math
import os
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

import numpy as np
import openai
import pytest

from annotune.backends.local import LocalBackend, encode_chat
from annotune.data.dataset import Doc
from annotune.serve import ServerThread, create_app, start_server
from annotune.tasks.prompts import PromptBuilder, constrained_questions

from conftest import REPO, make_codebook
from fault_injection import MALFORMED_BODY, parse_faults, serve_with_faults

TEXTS = [
    "The striker scored twice as the team won the cup final.",
    "Shares in the chip maker fell after profits missed forecasts.",
    "The minister said the election will be held in spring.",
]

@pytest.fixture(scope="module")
def backend(tiny_model_dir):
    be = LocalBackend(str(tiny_model_dir), dtype="fp32")
    be.max_new_tokens = 6
    return be


@pytest.fixture(scope="module")
def server(backend):
    srv = start_server(create_app(backend, model_name="tiny"))
    yield srv
    srv.stop()


def client(srv, key: str = "unused", **kw) -> openai.OpenAI:
    return openai.OpenAI(base_url=srv.url, api_key=key, max_retries=0, timeout=kw.pop("timeout", 30), **kw)


def docs() -> list[Doc]:
    return [Doc(id=f"d{i}", text=t, label=None) for i, t in enumerate(TEXTS)]


def raw_http(srv, method: str, path: str, body=None, headers: dict | None = None, **kw):
    conn = http.client.HTTPConnection(srv.host, srv.port, timeout=10)
    try:
        conn.request(method, path, body=body, headers={"Content-Type": "application/json", **(headers or {})},
                     **kw)
        resp = conn.getresponse()
        return resp.status, resp.headers, resp.read().decode()  # headers: case-insensitive
    finally:
        conn.close()


# ------------------------------------------------------------------------------ protocol
def test_models_and_health(server):
    models = client(server).models.list()
    assert [m.id for m in models.data] == ["tiny"]
    status, _, body = raw_http(server, "GET", "/health")
    assert status == 200 and json.loads(body)["status"] == "ok"


def test_chat_completion_is_the_local_backend_over_http(server, backend):
    """The served answer is the local backend's greedy answer to the same chat; usage counts the
    prompt as rendered with the chat template."""
    cb = make_codebook("single")
    builder = PromptBuilder(cb)
    local, _ = backend.label(docs(), builder, "generate", progress=False)
    c = client(server)
    for doc, pred in zip(docs(), local):
        messages = builder.messages(doc.text)
        out = c.chat.completions.create(model="tiny", messages=messages, temperature=0, max_tokens=6)
        assert out.choices[0].message.content == pred.raw
        assert out.usage.prompt_tokens == len(encode_chat(backend.tokenizer, messages))
        assert out.usage.completion_tokens <= 6
        assert out.usage.total_tokens == out.usage.prompt_tokens + out.usage.completion_tokens
        assert out.choices[0].finish_reason in ("stop", "length")


def test_logprobs_are_greedy_and_sorted(server):
    builder = PromptBuilder(make_codebook("single"))
    out = client(server).chat.completions.create(model="tiny", messages=builder.messages(TEXTS[0]), max_tokens=5,
                                                 logprobs=True, top_logprobs=4)
    content = out.choices[0].logprobs.content
    assert len(content) == out.usage.completion_tokens
    assert "".join(t.token for t in content) == out.choices[0].message.content
    for tok in content:
        assert len(tok.top_logprobs) == 4
        lps = [t.logprob for t in tok.top_logprobs]
        assert lps == sorted(lps, reverse=True) and all(lp <= 0 for lp in lps)
        assert tok.top_logprobs[0].token == tok.token  # greedy: the chosen token is the most likely one
        assert tok.logprob == pytest.approx(lps[0])
        assert sum(math.exp(lp) for lp in lps) <= 1 + 1e-6


@pytest.mark.parametrize("wrapped", [False, True])
def test_label_enum_constraint_is_the_constrained_scorer(server, backend, wrapped):
    """A json_schema enum is answered by the same scorer as local `constrained` answering: the options'
    normalised probabilities come back as the answer token's top logprobs."""
    cb = make_codebook("single")
    builder = PromptBuilder(cb)
    question = constrained_questions(cb)[0]
    local, _ = backend.label(docs(), builder, "constrained", progress=False)
    enum = {"type": "string", "enum": list(question.options)}
    schema = {"type": "object", "properties": {"label": enum}, "required": ["label"],
              "additionalProperties": False} if wrapped else enum
    c = client(server)
    for doc, pred in zip(docs(), local):
        out = c.chat.completions.create(
            model="tiny", messages=builder.messages(doc.text, question.text), max_tokens=8, logprobs=True,
            top_logprobs=20,
            response_format={"type": "json_schema", "json_schema": {"name": "a", "strict": True, "schema": schema}})
        content = out.choices[0].message.content
        answer = json.loads(content)["label"] if wrapped else content
        assert answer in question.options
        lp = out.choices[0].logprobs.content
        pos = lp[1] if wrapped else lp[0]
        if wrapped:
            assert "".join(t.token for t in lp) == content
        probs = {t.token: math.exp(t.logprob) for t in pos.top_logprobs}
        assert set(probs) == set(question.options)
        assert sum(probs.values()) == pytest.approx(1.0, abs=1e-6)
        assert answer == max(probs, key=probs.get)
        # the local backend encodes prefix / document / question separately: token seams may differ
        for name, p in pred.probs.items():
            assert probs[name] == pytest.approx(p, abs=0.02)


def test_bearer_token(backend):
    with ServerThread(create_app(backend, model_name="tiny", token="s3cret-token-123")) as srv:
        with pytest.raises(openai.AuthenticationError) as exc:
            client(srv, key="wrong-key-abcdef").models.list()
        assert "wrong-key-abcdef" not in str(exc.value)
        status, headers, body = raw_http(srv, "POST", "/v1/chat/completions", b"{}")
        assert status == 401 and "Bearer" in headers.get("WWW-Authenticate", "")
        assert json.loads(body)["error"]["code"] == "invalid_api_key"
        # checked before routing: unknown paths do not tell an outsider what exists
        assert raw_http(srv, "GET", "/v1/nothing")[0] == 401
        assert raw_http(srv, "GET", "/v1/models", headers={"Authorization": "Basic s3cret-token-123"})[0] == 401
        assert raw_http(srv, "GET", "/health")[0] == 200  # health checks need no token
        assert [m.id for m in client(srv, key="s3cret-token-123").models.list().data] == ["tiny"]
        out = client(srv, key="s3cret-token-123").chat.completions.create(
            model="tiny", messages=[{"role": "user", "content": "hi"}], max_tokens=2)
        assert out.usage.completion_tokens <= 2
        assert srv.app.state.serve.usage.requests == 1


def test_request_errors_are_openai_shaped(server):
    c = client(server)
    msgs = [{"role": "user", "content": "hi"}]
    with pytest.raises(openai.NotFoundError):
        c.chat.completions.create(model="gpt-4o", messages=msgs)
    with pytest.raises(openai.BadRequestError):
        c.chat.completions.create(model="tiny", messages=msgs, logprobs=True, top_logprobs=21)
    with pytest.raises(openai.BadRequestError):
        c.chat.completions.create(model="tiny", messages=[])
    status, _, body = raw_http(server, "POST", "/v1/chat/completions", json.dumps(
        {"model": "tiny", "messages": msgs, "stream": True}).encode())
    assert status == 400 and "stream" in json.loads(body)["error"]["message"]
    status, _, body = raw_http(server, "POST", "/v1/chat/completions", b"{not json")
    assert status == 400 and json.loads(body)["error"]["type"] == "invalid_request_error"
    status, _, body = raw_http(server, "GET", "/v1/nothing")
    assert status == 404 and json.loads(body)["error"]["code"] == "not_found"
    status, _, body = raw_http(server, "GET", "/v1/chat/completions")
    assert status == 405 and json.loads(body)["error"]["type"] == "invalid_request_error"


# ------------------------------------------------------------------------------ limits
def test_request_size_limit(backend):
    """Bodies over the limit get 413 with an OpenAI error, whether announced by Content-Length or
    streamed in chunks; bodies under it are answered."""
    msgs = [{"role": "user", "content": "hi"}]
    small = json.dumps({"model": "tiny", "messages": msgs, "max_tokens": 1}).encode()
    big = json.dumps({"model": "tiny", "messages": [{"role": "user", "content": "x" * 3000}]}).encode()
    with ServerThread(create_app(backend, model_name="tiny", max_body_bytes=2000)) as srv:
        status, _, body = raw_http(srv, "POST", "/v1/chat/completions", big)
        assert status == 413 and json.loads(body)["error"]["code"] == "request_too_large"
        status, _, body = raw_http(srv, "POST", "/v1/chat/completions", iter([big[:1500], big[1500:]]),
                                   headers={"Transfer-Encoding": "chunked"}, encode_chunked=True)
        assert status == 413 and json.loads(body)["error"]["type"] == "invalid_request_error"
        assert raw_http(srv, "POST", "/v1/chat/completions", small)[0] == 200
        assert srv.app.state.serve.usage.requests == 1


def test_busy_model_turns_requests_away_with_retry_after(backend):
    """One model call at a time, a bounded queue; beyond it a 503 with Retry-After at once."""
    app = create_app(backend, model_name="tiny", max_concurrency=1, max_queue=1, retry_after=2)
    gate = app.state.serve.gate
    body = json.dumps({"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}).encode()
    with ServerThread(app) as srv:
        answers: list[int] = []
        with gate.slots:  # the model is busy (as with another request's forward)
            waiting = [threading.Thread(target=lambda: answers.append(
                raw_http(srv, "POST", "/v1/chat/completions", body)[0])) for _ in range(2)]
            for n, t in enumerate(waiting, 1):  # one takes the model slot when free, one waits in the queue
                t.start()
                deadline = time.monotonic() + 10
                while gate.pending < n and time.monotonic() < deadline:
                    time.sleep(0.01)
            assert gate.pending == 2
            started = time.perf_counter()
            status, headers, text = raw_http(srv, "POST", "/v1/chat/completions", body)
            assert time.perf_counter() - started < 5  # turned away at once, not queued
            assert status == 503 and headers["Retry-After"] == "2"
            assert json.loads(text)["error"] == {"message": json.loads(text)["error"]["message"],
                                                 "type": "server_error", "param": None, "code": "server_busy"}
            assert raw_http(srv, "GET", "/v1/models")[0] == 200  # only model calls queue
            assert answers == []
        for t in waiting:
            t.join(30)
        assert answers == [200, 200] and gate.pending == 0 and gate.rejected == 1
        assert srv.app.state.serve.usage.requests == 2


# ------------------------------------------------------------------------------ fault injection
def test_parse_faults():
    assert parse_faults("ok*2, 429 ,stall,malformed,500") == ["ok", "ok", "429", "stall", "malformed", "500"]
    assert parse_faults(None) == []
    for bad in ("teapot", "ok*0", "ok*x"):
        with pytest.raises(ValueError):
            parse_faults(bad)


def test_faults_by_request_count(backend):
    """The tests' fault injector in front of the real app: 429 with Retry-After, 500, a malformed 200
    and a stall that hangs up, in request order, cyclic."""
    srv = serve_with_faults(create_app(backend, model_name="tiny"), "429,500,malformed,stall,ok",
                            retry_after=0.25, stall_seconds=0.3)
    body = json.dumps({"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}).encode()
    try:
        status, headers, text = raw_http(srv, "POST", "/v1/chat/completions", body)
        assert status == 429 and headers["Retry-After"] == "0.25"
        assert json.loads(text)["error"]["type"] == "rate_limit_error"
        assert raw_http(srv, "POST", "/v1/chat/completions", body)[0] == 500
        status, _, text = raw_http(srv, "POST", "/v1/chat/completions", body)
        assert status == 200 and text == MALFORMED_BODY
        with pytest.raises(ValueError):
            json.loads(text)
        started = time.perf_counter()
        with pytest.raises((http.client.IncompleteRead, http.client.RemoteDisconnected, ConnectionError)):
            raw_http(srv, "POST", "/v1/chat/completions", body)
        assert time.perf_counter() - started >= 0.25
        status, _, text = raw_http(srv, "POST", "/v1/chat/completions", body)
        assert status == 200 and json.loads(text)["usage"]["completion_tokens"] <= 2
        assert raw_http(srv, "POST", "/v1/chat/completions", body)[0] == 429  # the plan repeats
        assert srv.faults.injected == {"429": 2, "500": 1, "malformed": 1, "stall": 1}
        assert srv.faults.chat_requests == 6 and len(srv.faults.served) == 1
        assert srv.usage.requests == 1
    finally:
        srv.stop()


# ------------------------------------------------------------------------------ the CLI
def test_cli_serve_subprocess(tiny_model_dir):
    """`annotune serve` in its own process: binds 127.0.0.1 on a free port, requires the bearer token
    from the named environment variable, answers the openai SDK."""
    env = {**os.environ, "ANNOTUNE_SERVE_TOKEN": "tok-9876543210", "OMP_NUM_THREADS": "1",
           "PYTHONPATH": str(REPO / "src")}
    proc = subprocess.Popen([sys.executable, "-m", "annotune.cli", "serve", str(tiny_model_dir), "--port", "0",
                             "--name", "tiny", "--token-env", "ANNOTUNE_SERVE_TOKEN", "--dtype", "fp32"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        line = proc.stdout.readline()
        assert "serving 'tiny' on http://127.0.0.1:" in line, (line, proc.stderr.read() if proc.poll() else "")
        url = line.split(" on ", 1)[1].strip()
        assert url.startswith("http://127.0.0.1:") and url.endswith("/v1")
        with pytest.raises(urllib.error.HTTPError) as exc:
            urllib.request.urlopen(url + "/models", timeout=10)
        assert exc.value.code == 401
        c = openai.OpenAI(base_url=url, api_key="tok-9876543210", max_retries=0, timeout=30)
        assert [m.id for m in c.models.list().data] == ["tiny"]
        out = c.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "Hello"}], max_tokens=3)
        assert out.usage.prompt_tokens > 0
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    assert "tok-9876543210" not in proc.stderr.read()


def test_cli_serve_token_env_missing(tiny_model_dir):
    from typer.testing import CliRunner

    from annotune.cli import app

    result = CliRunner().invoke(app, ["serve", str(tiny_model_dir), "--token-env", "ANNOTUNE_NOT_SET_ANYWHERE"])
    assert result.exit_code == 2
    assert "ANNOTUNE_NOT_SET_ANYWHERE" in result.stderr and "Traceback" not in result.stderr
    # fault injection is a test helper, not a product option
    result = CliRunner().invoke(app, ["serve", str(tiny_model_dir), "--faults", "ok"])
    assert result.exit_code == 2 and "--faults" in result.stderr


def test_cli_serve_port_in_use(tiny_model_dir, server):
    from typer.testing import CliRunner

    from annotune.cli import app

    result = CliRunner().invoke(app, ["serve", str(tiny_model_dir), "--port", str(server.port)])
    assert result.exit_code == 2 and "cannot listen" in result.stderr and "Traceback" not in result.stderr


def test_constrained_probabilities_match_numpy(server, backend):
    """The served enum answer is the argmax of the option probabilities (also with a multi-token,
    prefix-sharing option set)."""
    options = ["sport", "sport news", "politics"]
    msgs = [{"role": "user", "content": "Which topic? " + TEXTS[0]}]
    out = client(server).chat.completions.create(
        model="tiny", messages=msgs, logprobs=True, top_logprobs=3,
        response_format={"type": "json_schema", "json_schema": {"name": "a", "schema": {"enum": options}}})
    probs = backend.score_options(encode_chat(backend.tokenizer, msgs), options).probs
    assert out.choices[0].message.content == options[int(np.argmax(probs))]
    got = {t.token: math.exp(t.logprob) for t in out.choices[0].logprobs.content[0].top_logprobs}
    assert got == pytest.approx(dict(zip(options, probs.tolist())), abs=1e-9)
