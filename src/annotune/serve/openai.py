"""The OpenAI-compatible routes: ``GET /v1/models`` and ``POST /v1/chat/completions`` (no streaming,
n = 1). Answers are greedy (temperature is ignored: they are deterministic), with ``logprobs`` /
``top_logprobs`` per generated token and ``usage`` token counts; see `annotune.serve.completions`."""

from __future__ import annotations

import json

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from annotune.serve.completions import complete, parse_chat_request
from annotune.serve.errors import OpenAIError

router = APIRouter()


@router.get("/v1/models")
async def list_models(request: Request) -> dict:
    state = request.app.state.serve
    return {"object": "list", "data": [{"id": state.model_name, "object": "model", "created": 0,
                                        "owned_by": "annotune"}]}


@router.post("/v1/chat/completions")
@router.post("/chat/completions", include_in_schema=False)
async def chat_completions(request: Request) -> JSONResponse:
    state = request.app.state.serve
    try:
        body = json.loads(await request.body() or b"null")
    except ValueError:
        raise OpenAIError(400, "the request body is not valid JSON") from None
    req = parse_chat_request(body, state.model_name)
    try:
        done = await state.gate.run(complete, state.engine, req, state.model_name)
    except OpenAIError:
        raise
    except Exception as exc:  # noqa: BLE001 - a server answers 500, it does not die
        raise OpenAIError(500, f"{type(exc).__name__}: {exc}") from None
    state.usage.add(done.prompt_tokens, done.completion_tokens)
    return JSONResponse(done.body)
