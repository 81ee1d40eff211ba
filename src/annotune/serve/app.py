"""The `annotune serve` web app: `create_app` builds a FastAPI app around a local engine.

What every route shares lives here, once: the bearer-token check (a middleware in front of every path
but the health checks), the request size limit (413), OpenAI-style error bodies and the model gate
(`ModelGate`: a bounded number of model forwards at a time and a bounded queue; beyond it requests are
turned away with 503 and ``Retry-After``). The OpenAI routes are a router of their own
(`annotune.serve.openai`); other pages are mounted into the same kind of app: `base_app` is what every
annotune web app shares (error shapes, health routes, size limit), and `annotune review` builds its page on
it (`annotune.labelling.review_app`), with `BearerAuth` also taking the token from a cookie or ``?token=``.
"""

from __future__ import annotations

import hmac
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from fastapi import FastAPI
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from annotune.serve.errors import OpenAIError, install_error_handlers

DEFAULT_MAX_BODY_BYTES = 4 * 1024 * 1024
DEFAULT_MAX_QUEUE = 16
PUBLIC_PATHS = frozenset({"/health", "/v1/health"})  # answered without a token


class ModelGate:
    """At most ``max_concurrency`` model calls at once, at most ``max_queue`` more waiting; a request
    beyond that is answered 503 with ``Retry-After`` at once rather than queued without end."""

    def __init__(self, max_concurrency: int = 1, max_queue: int = DEFAULT_MAX_QUEUE, retry_after: float = 1.0):
        if max_concurrency < 1 or max_queue < 0:
            raise ValueError("max_concurrency must be >= 1 and max_queue >= 0")
        self.max_concurrency, self.max_queue, self.retry_after = max_concurrency, max_queue, retry_after
        self.slots = threading.BoundedSemaphore(max_concurrency)  # held during each model call
        self.pending = 0  # running + waiting; changed only on the event loop
        self.rejected = 0

    async def run(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Run blocking ``fn(*args)`` in a worker thread once a model slot is free."""
        import anyio

        if self.pending >= self.max_concurrency + self.max_queue:
            self.rejected += 1
            raise OpenAIError(503, "the server is busy: too many requests are waiting for the model",
                              code="server_busy", headers={"Retry-After": f"{self.retry_after:g}"})
        self.pending += 1
        try:
            return await anyio.to_thread.run_sync(self._call, fn, args)
        finally:
            self.pending -= 1

    def _call(self, fn: Callable[..., Any], args: tuple) -> Any:
        with self.slots:
            return fn(*args)


@dataclass
class Usage:
    """Requests answered and tokens counted since the app started."""

    requests: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, prompt_tokens: int, completion_tokens: int) -> None:
        with self.lock:
            self.requests += 1
            self.prompt_tokens += prompt_tokens
            self.completion_tokens += completion_tokens


@dataclass
class ServeState:
    """What the routes share, as ``app.state.serve``."""

    engine: Any
    model_name: str
    gate: ModelGate
    usage: Usage = field(default_factory=Usage)


class BearerAuth:
    """Every request but ``public_paths`` needs ``Authorization: Bearer <token>`` (401 otherwise). With
    ``cookie`` (a browser page), that cookie or a ``?token=`` query parameter may carry the token instead."""

    def __init__(self, app: ASGIApp, token: str, public_paths: frozenset[str] = PUBLIC_PATHS,
                 cookie: str | None = None):
        self.app, self.token, self.public_paths, self.cookie = app, token.encode(), public_paths, cookie

    def _given(self, scope: Scope) -> list[bytes]:
        headers = dict(scope["headers"])
        scheme, _, value = headers.get(b"authorization", b"").partition(b" ")
        given = [value.strip()] if scheme.lower() == b"bearer" else []
        if self.cookie:
            from urllib.parse import parse_qs

            from starlette.requests import cookie_parser

            cookies = cookie_parser(headers.get(b"cookie", b"").decode("latin-1"))
            given += [cookies[self.cookie].encode()] if self.cookie in cookies else []
            given += [v.encode() for v in parse_qs(scope.get("query_string", b"").decode("latin-1")).get("token", [])]
        return given

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"].rstrip("/") not in self.public_paths:
            if not any(hmac.compare_digest(value, self.token) for value in self._given(scope)):
                what = "access token (open the page with the ?token= URL it printed)" if self.cookie else "bearer token"
                err = OpenAIError(401, f"invalid or missing {what}", code="invalid_api_key",
                                  headers={"WWW-Authenticate": "Bearer"})
                await err.response()(scope, receive, send)
                return
        await self.app(scope, receive, send)


class BodyLimit:
    """Request bodies over ``max_bytes`` are answered 413 (by Content-Length, or while reading)."""

    def __init__(self, app: ASGIApp, max_bytes: int):
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > self.max_bytes):
            await self._too_large(scope, receive, send)
            return
        chunks, size = [], 0
        while True:  # read the body here, bounded, then hand it on
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            if size > self.max_bytes:
                await self._too_large(scope, receive, send)
                return
            if not message.get("more_body"):
                break
        body, handed = b"".join(chunks), False

        async def replay() -> Message:
            nonlocal handed
            if not handed:
                handed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    async def _too_large(self, scope: Scope, receive: Receive, send: Send) -> None:
        err = OpenAIError(413, f"the request body is over the limit of {self.max_bytes} bytes",
                          code="request_too_large")
        await err.response()(scope, receive, send)


def create_app(engine, *, model_name: str, token: str | None = None,
               max_body_bytes: int = DEFAULT_MAX_BODY_BYTES, max_concurrency: int = 1,
               max_queue: int = DEFAULT_MAX_QUEUE, retry_after: float = 1.0) -> FastAPI:
    """An OpenAI-compatible app over ``engine`` (a `LocalBackend`), serving it as ``model_name``.

    ``token``: required as ``Authorization: Bearer`` on every path but ``/health``; ``max_body_bytes``:
    larger requests get 413; ``max_concurrency`` model calls run at once with up to ``max_queue``
    waiting, beyond which requests get 503 with ``Retry-After: retry_after``. The shared state is
    ``app.state.serve`` (a `ServeState`: engine, name, gate, usage counts)."""
    from annotune.serve.openai import router

    app = base_app("annotune serve", max_body_bytes=max_body_bytes)
    app.state.serve = ServeState(engine, model_name, ModelGate(max_concurrency, max_queue, retry_after))
    app.include_router(router)
    if token:
        app.add_middleware(BearerAuth, token=token)  # added last: runs first
    return app


def base_app(title: str, *, max_body_bytes: int = DEFAULT_MAX_BODY_BYTES) -> FastAPI:
    """A FastAPI app with what every annotune web app shares: OpenAI-style error bodies, ``/health`` and
    ``/v1/health``, and the request size limit (add routers, then the auth middleware last)."""
    app = FastAPI(title=title, docs_url=None, redoc_url=None, openapi_url=None)
    install_error_handlers(app)

    @app.get("/health", include_in_schema=False)
    @app.get("/v1/health", include_in_schema=False)
    async def health() -> dict:
        return {"status": "ok"}

    app.add_middleware(BodyLimit, max_bytes=max_body_bytes)
    return app
