"""Optional API keys (SPINE_API_KEYS) and their description in the OpenAPI document.

With no key configured the service is open (as before). With keys, every request except the exempt paths
(liveness by default: /health/live, /v2/health/live) must carry one, as `X-API-Key: <key>` or
`Authorization: Bearer <key>`; otherwise 401 `unauthorized` with `WWW-Authenticate: Bearer`, before the
body is read and before the request takes a place in the inference queue.

Keys are compared in constant time: the SHA-256 of what was sent against the SHA-256 of every configured
key with `hmac.compare_digest`, all of them, every time (fixed-length digests, so not even the key's
length shows in the timing). Keys never appear in logs, metrics or the OpenAPI document.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable, Iterable
from typing import Any

from fastapi import FastAPI
from starlette.types import ASGIApp, Receive, Scope, Send

from service.core.errors import error_body
from service.core.metrics import Metrics
from service.core.middleware import send_json
from service.kserve import V2Error

API_KEY_HEADER = "X-API-Key"
_API_KEY_HEADER = API_KEY_HEADER.lower().encode()
_AUTHORIZATION = b"authorization"
UNAUTHORIZED_DETAIL = f"missing or invalid API key: send it as `{API_KEY_HEADER}: <key>` or `Authorization: Bearer <key>`"


def _digest(value: bytes) -> bytes:
    return hashlib.sha256(value).digest()


def presented_keys(headers: Iterable[tuple[bytes, bytes]]) -> list[bytes]:
    """The credentials a request carries: every X-API-Key value and every Bearer token (raw bytes)."""
    found: list[bytes] = []
    for name, value in headers:
        if name == _API_KEY_HEADER:
            found.append(value.strip())
        elif name == _AUTHORIZATION:
            scheme, _, token = value.strip().partition(b" ")
            if scheme.lower() == b"bearer" and token.strip():
                found.append(token.strip())
    return found


class ApiKeyChecker:
    def __init__(self, keys: Iterable[str]) -> None:
        self._digests = [_digest(k.encode("utf-8")) for k in keys if k]

    @property
    def enabled(self) -> bool:
        return bool(self._digests)

    def check(self, presented: Iterable[bytes]) -> bool:
        """True when any presented credential equals any key; every pair is compared, in constant time."""
        ok = False
        for credential in presented:
            digest = _digest(credential)
            for key in self._digests:
                ok |= hmac.compare_digest(digest, key)
        return ok


class ApiKeyMiddleware:
    """401 for a request without a valid key, unless its path is exempt (exact match)."""

    def __init__(self, app: ASGIApp, keys: Iterable[str], exempt_paths: Iterable[str], metrics: Metrics) -> None:
        self.app = app
        self.checker = ApiKeyChecker(keys)
        self.exempt = frozenset(exempt_paths)
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("path", "") in self.exempt:
            await self.app(scope, receive, send)
            return
        if self.checker.check(presented_keys(scope.get("headers", ()))):
            await self.app(scope, receive, send)
            return
        self.metrics.errors.labels("unauthorized").inc()
        scope.setdefault("state", {})["error_code"] = "unauthorized"
        body = error_body(scope.get("path", ""), 401, "unauthorized", UNAUTHORIZED_DETAIL)
        await send_json(send, 401, body, {"www-authenticate": 'Bearer realm="spine-xray"'})


# --------------------------------------------------------------------------- OpenAPI

_ERROR_SCHEMA = {"$ref": "#/components/schemas/ErrorBody"}
_V2_ERROR_SCHEMA = V2Error.model_json_schema()  # the protocol's error body, as the v2 routes document it


def _error_response(description: str, path: str) -> dict[str, Any]:
    schema = _V2_ERROR_SCHEMA if path.startswith("/v2") else _ERROR_SCHEMA
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def describe_in_openapi(app: FastAPI, *, auth: bool, exempt_paths: Iterable[str], is_inference: Callable[[str], bool]) -> None:
    """Post-process the generated document: the 401 and security schemes when keys are on, the overload 503."""
    generate = app.openapi
    exempt = frozenset(exempt_paths)

    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        schema = generate()
        if auth:
            schemes = schema.setdefault("components", {}).setdefault("securitySchemes", {})
            schemes["ApiKeyHeader"] = {"type": "apiKey", "in": "header", "name": API_KEY_HEADER}
            schemes["BearerKey"] = {"type": "http", "scheme": "bearer", "description": "the API key as a Bearer token"}
        for path, operations in schema.get("paths", {}).items():
            for method, operation in operations.items():
                responses = operation.setdefault("responses", {})
                if is_inference(path) and method == "post":
                    overloaded = "Overloaded (Retry-After), or a model the request needs is not servable / still loading"
                    responses.setdefault("503", _error_response(overloaded, path))
                if auth and path not in exempt:
                    operation["security"] = [{"ApiKeyHeader": []}, {"BearerKey": []}]
                    responses.setdefault("401", _error_response("Missing or invalid API key", path))
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
