"""Exception handlers: every error leaves as JSON with a stable code; nothing a client sends may produce a 500."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from service.core.errors import STATUS_CODES, error_body
from spine_engine.errors import SpineError


def error_response(request: Request, status_code: int, code: str, detail: str, **extra: Any) -> JSONResponse:
    metrics = getattr(request.app.state, "metrics", None)
    if metrics is not None:
        metrics.errors.labels(code).inc()
    # No log line of its own: the access log line of this request carries the code (one line per request).
    request.state.error_code = code
    return JSONResponse(
        jsonable_encoder(error_body(request.url.path, status_code, code, detail, **extra)), status_code=status_code
    )


def _allowed_methods(request: Request) -> str:
    """Every method some route serves at this path (the Allow header of a 405)."""
    methods: set[str] = set()
    for route in request.app.routes:
        match, _ = route.matches({**request.scope, "method": "GET"})
        if match != Match.NONE and getattr(route, "methods", None):
            methods |= set(route.methods)
    return ", ".join(sorted(methods))


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(SpineError)
    async def _spine_error(request: Request, exc: SpineError) -> JSONResponse:
        # Every refusal of ours (decoding, models, DICOM, KServe codec, routes): one root, one handler.
        return error_response(request, exc.status_code, exc.code, exc.message, **exc.details)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = STATUS_CODES.get(exc.status_code, f"http_{exc.status_code}")
        response = error_response(request, exc.status_code, code, str(exc.detail))
        if exc.headers:
            response.headers.update(exc.headers)
        if exc.status_code == 405:  # Starlette lists the first matching route's methods only (GET and POST /annotations)
            response.headers["Allow"] = _allowed_methods(request)
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
