"""`annotune serve`: an OpenAI-compatible HTTP server over the local backend.

Any OpenAI client (the ``openai`` SDK, LangChain, curl, annotune's own API backend) can then use a
local or fine-tuned model::

    annotune serve runs/bbc/finetuned/all-1234 --port 8000
    curl http://127.0.0.1:8000/v1/chat/completions -d '{"model": "all-1234", "messages": [...]}'

Endpoints: ``GET /v1/models`` and ``POST /v1/chat/completions`` (no streaming, n = 1). The messages are
rendered with the model's chat template exactly as `LocalBackend` renders a `PromptBuilder` chat, then
answered by greedy decoding (temperature is ignored: answers are deterministic), with ``logprobs`` /
``top_logprobs`` per generated token and ``usage`` token counts.

A label-enum constraint is answered by the local backend's constrained scorer (the probability of each
allowed answer's full token sequence, normalised): a ``response_format`` of type ``json_schema`` whose
schema is ``{"enum": [...]}`` (the content is the chosen answer) or an object with one property that is
an enum (the content is ``{"<property>":"<answer>"}``). With ``logprobs`` the answer's position carries
every option as a top-logprob "token" with its normalised log-probability. Other schemas are not
enforced (free generation).

It binds to 127.0.0.1 by default; ``--token-env NAME`` requires ``Authorization: Bearer <$NAME>``.
``--faults`` is a test mode that injects failures by request count, deterministically: a comma list of
``ok``, ``429`` (with ``Retry-After``), ``500``, ``stall`` (holds the request, then closes the
connection without an answer) and ``malformed`` (a 200 with broken JSON), each optionally ``*N``,
applied cyclically to chat requests (``"ok*3,429,ok,500"``).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from annotune.errors import ConfigError

FAULT_KINDS = ("ok", "429", "500", "stall", "malformed")
MAX_TOKENS_LIMIT = 4096
MALFORMED_BODY = '{"id": "chatcmpl-broken", "object": "chat.completion", "choices": [{"index": 0, "message": {"ro'


def encode_chat(tokenizer, messages: list[dict]) -> list[int]:
    """Token ids of a chat rendered for answering, as `LocalBackend` encodes a prompt (the model's chat
    template, or a plain layout with BOS for base models)."""
    from annotune.tasks.prompts import render_chat

    ids = tokenizer(render_chat(tokenizer, messages, generation_prompt=True), add_special_tokens=False)["input_ids"]
    if getattr(tokenizer, "chat_template", None) is None and tokenizer.bos_token_id is not None:
        ids = [tokenizer.bos_token_id] + ids
    return ids


def parse_faults(spec: str | None) -> list[str]:
    """``"ok*3,429,stall"`` → ``["ok", "ok", "ok", "429", "stall"]``."""
    plan: list[str] = []
    for part in (spec or "").split(","):
        part = part.strip().lower()
        if not part:
            continue
        kind, _, times = part.partition("*")
        kind = kind.strip()
        if kind not in FAULT_KINDS:
            raise ConfigError(f"unknown fault {kind!r} (expected {', '.join(FAULT_KINDS)}, optionally *N)",
                              field="faults")
        try:
            n = int(times) if times else 1
        except ValueError:
            raise ConfigError(f"bad repeat count in {part!r}", field="faults") from None
        if n < 1:
            raise ConfigError(f"bad repeat count in {part!r}", field="faults")
        plan += [kind] * n
    return plan


class HttpError(Exception):
    def __init__(self, status: int, message: str, type_: str = "invalid_request_error", code: str | None = None):
        super().__init__(message)
        self.status, self.message, self.type, self.code = status, message, type_, code

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.type, "param": None, "code": self.code}}


def _enum_constraint(response_format: Any) -> tuple[list[str], str | None] | None:
    """(options, property) of a label-enum ``response_format``; property None: the bare answer."""
    if not isinstance(response_format, dict) or response_format.get("type") != "json_schema":
        return None
    spec = response_format.get("json_schema") or {}
    schema = spec.get("schema") if isinstance(spec, dict) else None
    if not isinstance(schema, dict):
        return None
    if isinstance(schema.get("enum"), list):
        options, prop = schema["enum"], None
    else:
        props = schema.get("properties")
        if schema.get("type") != "object" or not isinstance(props, dict) or len(props) != 1:
            return None
        prop, inner = next(iter(props.items()))
        if not isinstance(inner, dict) or not isinstance(inner.get("enum"), list):
            return None
        options = inner["enum"]
    if not options or not all(isinstance(o, str) and o for o in options) or len(set(options)) != len(options):
        raise HttpError(400, "an enum constraint needs distinct non-empty string options", code="invalid_schema")
    return list(options), prop


def _text_content(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # [{"type": "text", "text": ...}]
        parts = []
        for part in content:
            if not isinstance(part, dict) or part.get("type") != "text" or not isinstance(part.get("text"), str):
                raise HttpError(400, "only text content parts are supported")
            parts.append(part["text"])
        return "".join(parts)
    raise HttpError(400, "message content must be a string or a list of text parts")


@dataclass
class ServerState:
    """What the handler threads share: the model, the token, the fault plan and counters."""

    backend: Any
    model_name: str
    token: str | None = None
    faults: list[str] = field(default_factory=list)
    retry_after: float = 1.0
    stall_seconds: float = 30.0
    verbose: bool = False
    lock: threading.Lock = field(default_factory=threading.Lock)
    model_lock: threading.Lock = field(default_factory=threading.Lock)
    release: threading.Event = field(default_factory=threading.Event)
    chat_requests: int = 0
    served: list[str] = field(default_factory=list)  # sha256 of each answered request body
    injected: dict[str, int] = field(default_factory=dict)
    prompt_tokens: int = 0
    completion_tokens: int = 0

    def next_fault(self) -> str:
        with self.lock:
            n = self.chat_requests
            self.chat_requests += 1
            kind = self.faults[n % len(self.faults)] if self.faults else "ok"
            if kind != "ok":
                self.injected[kind] = self.injected.get(kind, 0) + 1
            return kind

    # ------------------------------------------------------------------ model
    def _stop_ids(self) -> set[int]:
        from annotune.tasks.prompts import end_of_turn

        tok = self.backend.tokenizer
        stop = set()
        eot = end_of_turn(tok)
        if eot:
            ids = tok(eot, add_special_tokens=False)["input_ids"]
            if len(ids) == 1:
                stop.add(ids[0])
        if tok.eos_token_id is not None:
            stop.add(tok.eos_token_id)
        return stop

    def _greedy(self, ids: list[int], max_tokens: int, top_k: int | None):
        """Greedy decoding; per step (token id, logprob, [(id, logprob)] top-k)."""
        import torch
        from transformers import DynamicCache

        be = self.backend
        model = be.model
        stop = self._stop_ids()
        steps: list[tuple[int, float, list[tuple[int, float]]]] = []
        finish = "length"
        with torch.inference_mode():
            cache = DynamicCache(config=model.config)
            out = model(input_ids=torch.tensor([ids], device=be.device), past_key_values=cache, use_cache=True,
                        logits_to_keep=1)
            for _ in range(max_tokens):
                logp = torch.log_softmax(out.logits[0, -1].float(), dim=-1)
                tok = int(logp.argmax())
                if tok in stop:
                    finish = "stop"
                    break
                top: list[tuple[int, float]] = []
                if top_k:
                    vals, idx = torch.topk(logp, top_k)
                    top = list(zip(idx.tolist(), vals.tolist()))
                steps.append((tok, float(logp[tok]), top))
                out = model(input_ids=torch.tensor([[tok]], device=be.device), past_key_values=cache,
                            use_cache=True)
        return steps, finish

    def _score(self, ids: list[int], options: list[str]):
        """Normalised probabilities of ``options`` after the prompt (the local constrained scorer)."""
        import numpy as np
        import torch

        from annotune.tasks.prompts import end_of_turn

        be = self.backend
        opt_ids = be._option_ids(tuple(options), end_of_turn(be.tokenizer))
        with torch.inference_mode():
            logps = be._score(None, 0, [ids], [[]], [opt_ids])[0][0]
        p = np.exp(logps - logps.max())
        return p / p.sum(), opt_ids

    def chat(self, body: Any) -> dict:
        if not isinstance(body, dict):
            raise HttpError(400, "the request body must be a JSON object")
        if body.get("stream"):
            raise HttpError(400, "streaming is not supported by annotune serve", code="unsupported")
        if body.get("n", 1) != 1:
            raise HttpError(400, "only n = 1 is supported", code="unsupported")
        model = body.get("model")
        if model != self.model_name:
            raise HttpError(404, f"the model {model!r} does not exist; this server serves {self.model_name!r}",
                            code="model_not_found")
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            raise HttpError(400, "messages must be a non-empty list")
        chat = []
        for m in messages:
            if not isinstance(m, dict) or m.get("role") not in ("system", "user", "assistant", "developer"):
                raise HttpError(400, "each message needs a role (system, user, assistant) and content")
            role = "system" if m["role"] == "developer" else m["role"]
            chat.append({"role": role, "content": _text_content(m.get("content"))})
        max_tokens = body.get("max_completion_tokens") or body.get("max_tokens") or 256
        if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1:
            raise HttpError(400, "max_tokens must be a positive integer")
        max_tokens = min(max_tokens, MAX_TOKENS_LIMIT)
        want_lp = bool(body.get("logprobs"))
        top_k = body.get("top_logprobs") or 0
        if isinstance(top_k, bool) or not isinstance(top_k, int) or not 0 <= top_k <= 20:
            raise HttpError(400, "top_logprobs must be an integer between 0 and 20")
        if top_k and not want_lp:
            raise HttpError(400, "top_logprobs needs logprobs = true")
        stop = body.get("stop")
        stops = [stop] if isinstance(stop, str) else [s for s in (stop or []) if isinstance(s, str) and s]
        constraint = _enum_constraint(body.get("response_format"))
        tok = self.backend.tokenizer
        ids = encode_chat(tok, chat)
        limit = getattr(self.backend.model.config, "max_position_embeddings", None)
        if limit and len(ids) + (1 if constraint else max_tokens) > limit:
            raise HttpError(400, f"the prompt has {len(ids)} tokens; this model's context is {limit}",
                            code="context_length_exceeded")
        with self.model_lock:
            if constraint:
                content, n_gen, lp_content, finish = self._constrained(ids, *constraint, want_lp)
            else:
                content, n_gen, lp_content, finish = self._generate(ids, max_tokens, want_lp, top_k, stops)
        with self.lock:
            self.prompt_tokens += len(ids)
            self.completion_tokens += n_gen
        return {
            "id": f"chatcmpl-{uuid.uuid4().hex[:24]}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": self.model_name,
            "system_fingerprint": "annotune-serve",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": content},
                         "logprobs": {"content": lp_content} if want_lp else None, "finish_reason": finish}],
            "usage": {"prompt_tokens": len(ids), "completion_tokens": n_gen, "total_tokens": len(ids) + n_gen},
        }

    def _generate(self, ids, max_tokens, want_lp, top_k, stops):
        tok = self.backend.tokenizer
        steps, finish = self._greedy(ids, max_tokens, (top_k or 1) if want_lp else None)
        content = tok.decode([s[0] for s in steps], skip_special_tokens=False)
        for s in stops:
            if s in content:
                content, finish = content.split(s, 1)[0], "stop"
        lp_content = None
        if want_lp:
            def entry(token_id: int, lp: float) -> dict:
                text = tok.decode([token_id], skip_special_tokens=False)
                return {"token": text, "logprob": lp, "bytes": list(text.encode("utf-8"))}

            lp_content = [{**entry(t, lp), "top_logprobs": [entry(i, v) for i, v in top[:top_k]] if top_k else []}
                          for t, lp, top in steps]
        return content, len(steps), lp_content, finish

    def _constrained(self, ids, options, prop, want_lp):
        import math

        probs, opt_ids = self._score(ids, options)
        best = int(probs.argmax())
        answer = options[best]
        content = answer if prop is None else json.dumps({prop: answer}, ensure_ascii=False, separators=(",", ":"))
        lp_content = None
        if want_lp:
            def entry(text: str, lp: float) -> dict:
                return {"token": text, "logprob": lp, "bytes": list(text.encode("utf-8"))}

            tops = sorted(((o, math.log(max(float(p), 1e-300))) for o, p in zip(options, probs)), key=lambda x: -x[1])
            mid = {**entry(answer, math.log(max(float(probs[best]), 1e-300))),
                   "top_logprobs": [entry(o, lp) for o, lp in tops[:20]]}
            if prop is None:
                lp_content = [mid]
            else:
                head = '{' + json.dumps(prop, ensure_ascii=False) + ':"'
                lp_content = [{**entry(head, 0.0), "top_logprobs": []}, mid, {**entry('"}', 0.0), "top_logprobs": []}]
        return content, len(opt_ids[best]), lp_content, "stop"


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "annotune-serve"
    sys_version = ""

    @property
    def state(self) -> ServerState:
        return self.server.state  # type: ignore[attr-defined]

    def setup(self) -> None:
        super().setup()
        self.server.track(self.connection, True)  # type: ignore[attr-defined]

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.track(self.connection, False)  # type: ignore[attr-defined]

    def log_message(self, format: str, *args) -> None:  # noqa: A002 - BaseHTTPRequestHandler's name
        if self.state.verbose:  # the request line and status only: never headers
            super().log_message(format, *args)

    def _send_json(self, status: int, payload: Any, headers: dict | None = None) -> None:
        data = (payload if isinstance(payload, str) else json.dumps(payload, ensure_ascii=False)).encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        try:
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True

    def _authorised(self) -> bool:
        token = self.state.token
        if not token:
            return True
        given = self.headers.get("Authorization", "")
        scheme, _, value = given.partition(" ")
        if scheme.lower() == "bearer" and hmac.compare_digest(value.strip().encode(), token.encode()):
            return True
        err = HttpError(401, "invalid or missing bearer token", code="invalid_api_key")
        self._send_json(401, err.body(), {"WWW-Authenticate": "Bearer"})
        return False

    def _read_body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length > 0 else b""

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        if self.path.rstrip("/") in ("/health", "/v1/health"):
            self._send_json(200, {"status": "ok"})
            return
        if not self._authorised():
            return
        if self.path.rstrip("/") == "/v1/models":
            self._send_json(200, {"object": "list", "data": [
                {"id": self.state.model_name, "object": "model", "created": 0, "owned_by": "annotune"}]})
            return
        self._send_json(404, HttpError(404, f"no route {self.path}", code="not_found").body())

    def do_POST(self) -> None:  # noqa: N802
        raw = self._read_body()
        if not self._authorised():
            return
        if self.path.rstrip("/") not in ("/v1/chat/completions", "/chat/completions"):
            self._send_json(404, HttpError(404, f"no route {self.path}", code="not_found").body())
            return
        state = self.state
        fault = state.next_fault()
        if fault == "429":
            self._send_json(429, HttpError(429, "rate limit reached (injected)", "rate_limit_error",
                                           "rate_limit_exceeded").body(), {"Retry-After": f"{state.retry_after:g}"})
            return
        if fault == "500":
            self._send_json(500, HttpError(500, "internal error (injected)", "server_error").body())
            return
        if fault == "stall":
            state.release.wait(state.stall_seconds)
            self.close_connection = True  # hang up without an answer
            return
        if fault == "malformed":
            self._send_json(200, MALFORMED_BODY)
            return
        try:
            body = json.loads(raw or b"null")
        except ValueError:
            self._send_json(400, HttpError(400, "the request body is not valid JSON").body())
            return
        try:
            response = state.chat(body)
        except HttpError as exc:
            self._send_json(exc.status, exc.body())
            return
        except Exception as exc:  # noqa: BLE001 - a server answers 500, it does not die
            self._send_json(500, HttpError(500, f"{type(exc).__name__}: {exc}", "server_error").body())
            return
        self._send_json(200, response)
        with state.lock:
            state.served.append(hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest())


class AnnotuneServer(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = True  # stop() ends every handler thread (a model call must not outlive the server)

    def __init__(self, address: tuple[str, int], state: ServerState):
        super().__init__(address, _Handler)
        self.state = state
        self._conns: set = set()
        self._conns_lock = threading.Lock()

    def track(self, conn, open_: bool) -> None:
        with self._conns_lock:
            (self._conns.add if open_ else self._conns.discard)(conn)

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host}:{port}/v1"

    def stop(self) -> None:
        """Stop serving: release stalls, hang up idle keep-alive connections, wait for handler threads."""
        import socket

        self.state.release.set()
        self.shutdown()
        with self._conns_lock:
            conns = list(self._conns)
        for conn in conns:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self.server_close()


def make_server(model: str | None = None, *, backend=None, name: str | None = None, host: str = "127.0.0.1",
                port: int = 8000, token: str | None = None, faults: str | list[str] | None = None,
                retry_after: float = 1.0, stall_seconds: float = 30.0, dtype: str = "auto",
                verbose: bool = False) -> AnnotuneServer:
    """A server (not yet started) for ``model`` (any model spec or fine-tuned run folder) or a loaded
    ``backend``; ``port=0`` picks a free port."""
    from pathlib import Path

    if backend is None:
        from annotune.backends.local import LocalBackend

        backend = LocalBackend(model, dtype=dtype)
    name = name or (Path(str(model)).name if model else backend.name) or "annotune"
    plan = parse_faults(faults) if isinstance(faults, str) or faults is None else list(faults)
    state = ServerState(backend, name, token=token or None, faults=plan, retry_after=retry_after,
                        stall_seconds=stall_seconds, verbose=verbose)
    try:
        return AnnotuneServer((host, port), state)
    except OSError as exc:
        raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None


def serve_in_thread(server: AnnotuneServer) -> threading.Thread:
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True,
                              name="annotune-serve")
    thread.start()
    return thread
