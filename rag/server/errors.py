"""The server's one error shape: `ServeError` (an HTTP status and a one-line message), rendered as OpenAI's
{"error": {"message", "type", "code"}}."""

from __future__ import annotations

from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    409: "conflict_error",
    413: "request_too_large",
    415: "invalid_request_error",
    499: "client_closed_request",
    500: "server_error",
}


class ServeError(HTTPException):
    """An HTTP error with a one-line message; rendered as OpenAI's {"error": {"message", "type"}}."""


def error_response(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    body = {"error": {"message": message, "type": ERROR_TYPES.get(status, "invalid_request_error"), "code": status}}
    return JSONResponse(body, status_code=status, headers=headers)


def one_line(exc: BaseException) -> str:
    """`Type: first line of the message`, at most 300 characters: what a client is told of an unexpected error."""
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"[:300]
