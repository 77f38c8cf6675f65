"""Optional API keys (SPINE_API_KEYS) and their description in the OpenAPI document.

With no key configured the service is open (as before). With keys, every request except the exempt paths
(liveness by default: /health/live, /v2/health/live; exact matches, SPINE_AUTH_EXEMPT_PATHS) and the page
assets (below) must carry one, as `X-API-Key: <key>` or
`Authorization: Bearer <key>`; otherwise 401 `unauthorized` with `WWW-Authenticate: Bearer`, before the
body is read and before the request takes a place in the inference queue.

Keys are compared in constant time: the SHA-256 of what was sent against the SHA-256 of every configured
key with `hmac.compare_digest`, all of them, every time (fixed-length digests, so not even the key's
length shows in the timing). Keys never appear in logs, metrics or the OpenAPI document.

Scopes: a key listed in SPINE_SCOPED_API_KEYS as `scope:key` also carries that scope (`annotate`: write
annotations; `admin`: reload the models). The middleware records the scopes of the key a request presented in
`request.state.api_scopes`; `require_scope` (a route dependency) answers 403 `forbidden` without the scope. With
no key configured at all the service is open, scoped operations included, as everything else.

Page assets are public: GET/HEAD of the viewer's shell `/`, its `/static/...` files and the API documentation
(`/docs`, its OAuth2 redirect, `/redoc`, `/openapi.json`). They carry no data (the viewer asks for the key when
an API call answers 401 and sends it itself), and without them a browser could not even show the key prompt.
A fixed set here rather than a prefix form in SPINE_AUTH_EXEMPT_PATHS: these paths belong to the code, not to a
deployment, and an operator's prefix (`/v2/*`) could silently open API operations. None of them is an operation
of the OpenAPI document, so its security description stays true.
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
# The page shell and documentation (service/api/routes/ui.py, FastAPI's openapi_url): served without a key.
PUBLIC_PAGE_PATHS = frozenset({"/", "/docs", "/docs/oauth2-redirect", "/redoc", "/openapi.json"})
PUBLIC_PAGE_PREFIX = "/static/"
_PUBLIC_METHODS = frozenset({"GET", "HEAD"})
SCOPES = {"annotate": "POST /annotations (write annotated studies)", "admin": "POST /models/reload"}
UNAUTHORIZED_DETAIL = f"missing or invalid API key: send it as `{API_KEY_HEADER}: <key>` or `Authorization: Bearer <key>`"


def is_public_page_asset(method: str, path: str) -> bool:
    """A read of the viewer's shell, its static files or the API documentation (no operation, no data)."""
    if method not in _PUBLIC_METHODS:
        return False
    return path in PUBLIC_PAGE_PATHS or path.startswith(PUBLIC_PAGE_PREFIX)


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


def parse_scoped_keys(entries: Iterable[str]) -> list[tuple[str, str]]:
    """`scope:key` entries (SPINE_SCOPED_API_KEYS) -> (scope, key); an unknown scope or an empty key is a ValueError."""
    pairs = []
    for entry in entries:
        scope, sep, key = entry.partition(":")
        if not sep or not key or scope not in SCOPES:
            known = ", ".join(sorted(SCOPES))
            raise ValueError(f"SPINE_SCOPED_API_KEYS entries are `scope:key` with a scope among {known} (an entry is not)")
        pairs.append((scope, key))
    return pairs


class ApiKeyChecker:
    def __init__(self, keys: Iterable[str], scoped: Iterable[tuple[str, str]] = ()) -> None:
        scoped = list(scoped)
        self._digests = [_digest(k.encode("utf-8")) for k in [*keys, *(key for _, key in scoped)] if k]
        self._scoped = [(scope, _digest(key.encode("utf-8"))) for scope, key in scoped]

    @property
    def enabled(self) -> bool:
        return bool(self._digests)

    def scopes(self, presented: Iterable[bytes]) -> frozenset[str]:
        """The scopes of the presented credentials; every pair is compared, in constant time, like `check`."""
        found: set[str] = set()
        for credential in presented:
            digest = _digest(credential)
            for scope, key in self._scoped:
                if hmac.compare_digest(digest, key):
                    found.add(scope)
        return frozenset(found)

    def check(self, presented: Iterable[bytes]) -> bool:
        """True when any presented credential equals any key; every pair is compared, in constant time."""
        ok = False
        for credential in presented:
            digest = _digest(credential)
            for key in self._digests:
                ok |= hmac.compare_digest(digest, key)
        return ok


class ApiKeyMiddleware:
    """401 for a request without a valid key, unless its path is exempt (exact match) or a public page asset."""

    def __init__(
        self,
        app: ASGIApp,
        keys: Iterable[str],
        exempt_paths: Iterable[str],
        metrics: Metrics,
        scoped: Iterable[tuple[str, str]] = (),
    ) -> None:
        self.app = app
        self.checker = ApiKeyChecker(keys, scoped)
        self.exempt = frozenset(exempt_paths)
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if scope["type"] != "http" or path in self.exempt or is_public_page_asset(scope.get("method", ""), path):
            await self.app(scope, receive, send)
            return
        presented = presented_keys(scope.get("headers", ()))
        if self.checker.check(presented):
            scope.setdefault("state", {})["api_scopes"] = self.checker.scopes(presented)
            await self.app(scope, receive, send)
            return
        self.metrics.errors.labels("unauthorized").inc()
        scope.setdefault("state", {})["error_code"] = "unauthorized"
        body = error_body(path, 401, "unauthorized", UNAUTHORIZED_DETAIL)
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
