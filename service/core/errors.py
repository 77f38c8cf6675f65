"""The errors the middleware and routes raise, and the one error body they all answer with.

Our API answers `{"code": ..., "detail": ..., "request_id": ...}`; the KServe v2 routes answer
`{"error": message}` as that protocol (and tritonclient) expect. The exception handlers that turn these
(every `spine_engine.errors.SpineError`, and Starlette's own) into responses are in `service.api.errors`.
"""

from __future__ import annotations

from typing import Any

from starlette.exceptions import HTTPException as StarletteHTTPException

from service.core.logging import request_id_var
from spine_engine.errors import SpineError, describe_error

STATUS_CODES = {  # status -> the code of an error that has none of its own
    400: "bad_request",
    404: "not_found",
    405: "method_not_allowed",
    408: "body_timeout",
    411: "length_required",
    413: "body_too_large",
    415: "unsupported_media_type",
    422: "validation_error",
    503: "not_ready",
}


class ApiError(SpineError):
    """A refusal of the HTTP layer itself (no file sent, models still loading, an unknown model version)."""

    def __init__(self, status_code: int, code: str, detail: str, **extra: Any) -> None:
        super().__init__(detail, status_code=status_code, code=code, **extra)

    @property
    def detail(self) -> str:
        return self.message


class BodyTooLargeError(StarletteHTTPException):
    """Raised from `receive` while streaming; an HTTPException so FastAPI's body parsing re-raises it as is."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"request body over the limit of {limit:,} bytes (SPINE_MAX_UPLOAD_BYTES)")


class BodyTimeoutError(StarletteHTTPException):
    """Raised from `receive` when the body is still incomplete at the deadline (SPINE_BODY_TIMEOUT_S)."""

    def __init__(self, seconds: float) -> None:
        super().__init__(
            408, f"the request body did not arrive within {seconds:g} s (SPINE_BODY_TIMEOUT_S)", headers={"Connection": "close"}
        )


def error_body(path: str, status_code: int, code: str, detail: str, **extra: Any) -> dict[str, Any]:
    if path.startswith("/v2"):
        return {"error": detail}
    return {"code": code, "detail": detail, "request_id": request_id_var.get(), **extra}


__all__ = ["STATUS_CODES", "ApiError", "BodyTimeoutError", "BodyTooLargeError", "describe_error", "error_body"]
