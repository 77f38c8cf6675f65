"""Every error leaves as JSON with a stable code; nothing a client sends may produce a 500.

Our API answers `{"code": ..., "detail": ..., "request_id": ...}`; the KServe v2 routes answer
`{"error": message}` as that protocol (and tritonclient) expect.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from service.core.logging import request_id_var
from service.decoding import ImageDecodeError
from service.inference import (
    InferenceError,
    InvalidInputError,
    ModelUnavailableError,
    UnknownModelError,
    UnknownStructureError,
    UnknownViewError,
)
from service.kserve import ProtocolError

_STATUS_CODES = {
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


class ApiError(Exception):
    def __init__(self, status_code: int, code: str, detail: str, **extra: Any) -> None:
        super().__init__(detail)
        self.status_code, self.code, self.detail, self.extra = status_code, code, detail, extra


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


def error_response(request: Request, status_code: int, code: str, detail: str, **extra: Any) -> JSONResponse:
    metrics = getattr(request.app.state, "metrics", None)
    if metrics is not None:
        metrics.errors.labels(code).inc()
    # No log line of its own: the access log line of this request carries the code (one line per request).
    request.state.error_code = code
    return JSONResponse(
        jsonable_encoder(error_body(request.url.path, status_code, code, detail, **extra)), status_code=status_code
    )


def _inference_status(exc: InferenceError) -> tuple[int, str]:
    if isinstance(exc, ModelUnavailableError):
        return 503, "model_unavailable"
    if isinstance(exc, UnknownModelError):
        return 404, "unknown_model"
    if isinstance(exc, UnknownViewError):
        return 422, "unknown_view"
    if isinstance(exc, UnknownStructureError):
        return 422, "unknown_structure"
    if isinstance(exc, InvalidInputError):
        return 400, "invalid_input"
    return 422, "invalid_request"


def describe_error(exc: Exception) -> tuple[int, str, str] | None:
    """(HTTP status, code, message) the API answers for a decoding or inference error; None for any other.

    Public so that callers of the pipeline outside HTTP (spine-batch) report the same codes as the API.
    """
    if isinstance(exc, ImageDecodeError):
        return exc.status_code, exc.code, exc.message
    if isinstance(exc, InferenceError):
        status, code = _inference_status(exc)
        return status, code, str(exc)
    return None


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> JSONResponse:
        return error_response(request, exc.status_code, exc.code, exc.detail, **exc.extra)

    @app.exception_handler(ImageDecodeError)
    async def _decode_error(request: Request, exc: ImageDecodeError) -> JSONResponse:
        return error_response(request, exc.status_code, exc.code, exc.message)

    @app.exception_handler(InferenceError)
    async def _inference_error(request: Request, exc: InferenceError) -> JSONResponse:
        status, code = _inference_status(exc)
        extra = {"problems": exc.problems} if isinstance(exc, ModelUnavailableError) else {}
        return error_response(request, status, code, str(exc), **extra)

    @app.exception_handler(ProtocolError)
    async def _protocol_error(request: Request, exc: ProtocolError) -> JSONResponse:
        return error_response(request, 400, "invalid_v2_request", str(exc))

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = _STATUS_CODES.get(exc.status_code, f"http_{exc.status_code}")
        response = error_response(request, exc.status_code, code, str(exc.detail))
        if exc.headers:
            response.headers.update(exc.headers)
        return response

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        # One readable sentence ("view: Field required; mask_format: Input should be 'png' or 'rle'"),
        # plus FastAPI's structured list for programs.
        errors = exc.errors()
        parts = []
        for err in errors:
            loc = [str(p) for p in err.get("loc", ()) if p not in ("body", "query", "path", "header")]
            parts.append(f"{'.'.join(loc) or 'request'}: {err.get('msg', 'invalid')}")
        details = [{k: v for k, v in err.items() if k in ("type", "loc", "msg")} for err in errors]
        return error_response(request, 422, "validation_error", "; ".join(parts) or "invalid request", errors=details)
