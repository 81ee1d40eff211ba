"""Test helper: deterministic failures in front of the real `annotune serve` app.

`FaultInjector` is an ASGI wrapper around the real app. Chat requests (``POST /v1/chat/completions``)
follow a plan by request count, applied cyclically: ``ok`` (passed to the real app), ``429`` (with
``Retry-After``), ``500``, ``stall`` (holds the request, then hangs up without an answer: headers and
no body) and ``malformed`` (a 200 with broken JSON). A plan is a list or a string such as
``"ok*3,429,ok,500"``. It also records each chat request and (as sha256 of the JSON body) each one the
real app answered, so tests can count paid calls. `serve_with_faults` runs it on a uvicorn thread.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import threading

from starlette.responses import JSONResponse, Response

from annotune.serve import ServerThread

FAULT_KINDS = ("ok", "429", "500", "stall", "malformed")
CHAT_PATHS = ("/v1/chat/completions", "/chat/completions")
MALFORMED_BODY = '{"id": "chatcmpl-broken", "object": "chat.completion", "choices": [{"index": 0, "message": {"ro'


def parse_faults(spec: str | list[str] | None) -> list[str]:
    """``"ok*3,429,stall"`` → ``["ok", "ok", "ok", "429", "stall"]`` (ValueError if malformed)."""
    if isinstance(spec, list):
        parts = spec
    else:
        parts = (spec or "").split(",")
    plan: list[str] = []
    for part in parts:
        part = part.strip().lower()
        if not part:
            continue
        kind, _, times = part.partition("*")
        kind = kind.strip()
        if kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault {kind!r} (expected {', '.join(FAULT_KINDS)}, optionally *N)")
        n = int(times) if times.strip().isdigit() else (1 if not times else 0)
        if n < 1:
            raise ValueError(f"bad repeat count in {part!r}")
        plan += [kind] * n
    return plan


def _error(status: int, message: str, type_: str, code: str | None = None, headers=None) -> JSONResponse:
    return JSONResponse({"error": {"message": message, "type": type_, "param": None, "code": code}},
                        status_code=status, headers=headers)


class FaultInjector:
    """The real ``app`` behind a fault plan (see the module docstring); ``plan`` may be changed live."""

    def __init__(self, app, faults: str | list[str] | None = None, *, retry_after: float = 1.0,
                 stall_seconds: float = 30.0):
        self.app = app
        self.plan = parse_faults(faults)
        self.retry_after, self.stall_seconds = retry_after, stall_seconds
        self.chat_requests = 0
        self.injected: dict[str, int] = {}
        self.served: list[str] = []  # sha256 of each request body the real app answered with 200
        self._release = threading.Event()

    def release(self) -> None:
        """End every stall now (and any later one at once)."""
        self._release.set()

    def _next_fault(self) -> str:
        n, self.chat_requests = self.chat_requests, self.chat_requests + 1
        kind = self.plan[n % len(self.plan)] if self.plan else "ok"
        if kind != "ok":
            self.injected[kind] = self.injected.get(kind, 0) + 1
        return kind

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST" or scope["path"].rstrip("/") not in CHAT_PATHS:
            await self.app(scope, receive, send)
            return
        kind = self._next_fault()
        if kind == "429":
            await _error(429, "rate limit reached (injected)", "rate_limit_error", "rate_limit_exceeded",
                         {"Retry-After": f"{self.retry_after:g}"})(scope, receive, send)
        elif kind == "500":
            await _error(500, "internal error (injected)", "server_error")(scope, receive, send)
        elif kind == "malformed":
            await Response(MALFORMED_BODY, media_type="application/json")(scope, receive, send)
        elif kind == "stall":
            waited = 0.0
            while waited < self.stall_seconds and not self._release.is_set():
                await asyncio.sleep(0.02)
                waited += 0.02
            # promise a body, send none and return: the server closes the connection mid-answer
            await send({"type": "http.response.start", "status": 200,
                        "headers": [(b"content-type", b"application/json"), (b"content-length", b"64")]})
        else:
            await self._passed_on(scope, receive, send)

    async def _passed_on(self, scope, receive, send) -> None:
        chunks, more = [], True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunks.append(message.get("body", b""))
            more = message.get("more_body", False)
        raw, handed, status = b"".join(chunks), False, []

        async def replay():
            nonlocal handed
            if not handed:
                handed = True
                return {"type": "http.request", "body": raw, "more_body": False}
            return await receive()

        async def watch(message):
            if message["type"] == "http.response.start":
                status.append(message["status"])
            await send(message)

        await self.app(scope, replay, watch)
        if status == [200]:
            body = json.loads(raw)
            self.served.append(hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest())


class FaultyServer(ServerThread):
    """A `ServerThread` serving a `FaultInjector`; `stop` releases stalls first."""

    def __init__(self, app, faults=None, *, retry_after: float = 1.0, stall_seconds: float = 30.0, **kw):
        self.faults = FaultInjector(app, faults, retry_after=retry_after, stall_seconds=stall_seconds)
        self.real_app = app
        super().__init__(self.faults, **kw)

    @property
    def usage(self):
        """The real app's request and token counts."""
        return self.real_app.state.serve.usage

    def stop(self, timeout: float = 30.0) -> None:
        self.faults.release()
        super().stop(timeout)


def serve_with_faults(app, faults=None, **kw) -> FaultyServer:
    """Serve ``app`` behind a fault plan on 127.0.0.1 (a free port), started."""
    server = FaultyServer(app, faults, **kw)
    server.start()
    return server
