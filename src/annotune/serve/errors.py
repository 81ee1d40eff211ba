"""OpenAI-style errors: ``{"error": {"message", "type", "param", "code"}}`` with an HTTP status, for the
routes, the middlewares and Starlette's own 404/405 answers."""

from __future__ import annotations

from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse

_TYPES = {401: "invalid_request_error", 413: "invalid_request_error", 429: "rate_limit_error"}


class OpenAIError(Exception):
    """An error answer in OpenAI's shape; raise it from a route, or send `response()` from middleware."""

    def __init__(self, status: int, message: str, type_: str | None = None, code: str | None = None,
                 headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.message, self.code = status, message, code
        self.type = type_ or ("server_error" if status >= 500 else _TYPES.get(status, "invalid_request_error"))
        self.headers = headers or {}

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.type, "param": None, "code": self.code}}

    def response(self) -> JSONResponse:
        return JSONResponse(self.body(), status_code=self.status, headers=self.headers)


async def _openai_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, OpenAIError)
    return exc.response()


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    if exc.status_code == 404:
        err = OpenAIError(404, f"no route {request.url.path}", code="not_found")
    elif exc.status_code == 405:
        err = OpenAIError(405, f"{request.method} is not allowed on {request.url.path}", code="method_not_allowed")
    else:
        err = OpenAIError(exc.status_code, str(exc.detail))
    err.headers.update(exc.headers or {})
    return err.response()


def install_error_handlers(app) -> None:
    """Answer every error the app raises (its own and Starlette's routing errors) in OpenAI's shape."""
    app.add_exception_handler(OpenAIError, _openai_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
