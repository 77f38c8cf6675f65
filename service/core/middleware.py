"""Pure ASGI middleware (no BaseHTTPMiddleware: it buffers and breaks streaming): request id, access
log line, request metrics, and the request-body limit enforced while the body streams in."""

from __future__ import annotations

import json
import logging
import re
import time
import uuid
from typing import Any

import anyio
from starlette.datastructures import Headers, MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.core.errors import BodyTimeoutError, BodyTooLargeError, error_body
from service.core.logging import request_id_var
from service.core.metrics import Metrics

access_log = logging.getLogger("service.access")
log = logging.getLogger(__name__)

REQUEST_ID_HEADER = "X-Request-ID"
_VALID_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")


async def send_json(send: Send, status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> None:
    payload = json.dumps(body).encode()
    raw_headers = [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())]
    raw_headers += [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": raw_headers})
    await send({"type": "http.response.body", "body": payload})


class RequestContextMiddleware:
    """Outermost: names the request, times it, logs one line, counts it, and turns a crash into a JSON 500."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        incoming = Headers(scope=scope).get(REQUEST_ID_HEADER)
        # Reuse a caller's id (a gateway's trace) when it is sane, else mint one.
        request_id = incoming if incoming and _VALID_REQUEST_ID.match(incoming) else uuid.uuid4().hex
        token = request_id_var.set(request_id)
        scope.setdefault("state", {})["request_id"] = request_id
        started = time.perf_counter()
        status = 500
        response_started = False
        bytes_in = 0

        async def receive_counting() -> Message:
            nonlocal bytes_in
            message = await receive()
            if message["type"] == "http.request":
                bytes_in += len(message.get("body", b""))
            return message

        async def send_with_id(message: Message) -> None:
            nonlocal status, response_started
            if message["type"] == "http.response.start":
                status = message["status"]
                response_started = True
                MutableHeaders(scope=message)[REQUEST_ID_HEADER] = request_id
            await send(message)

        try:
            await self.app(scope, receive_counting, send_with_id)
        except Exception:
            log.exception("unhandled error", extra={"request_id": request_id})  # on the record: formatted anywhere
            self.metrics.errors.labels("internal_error").inc()
            scope["state"]["error_code"] = "internal_error"
            if response_started:
                raise
            status = 500
            body = error_body(
                scope.get("path", ""), 500, "internal_error", "internal error; the request id identifies it in the logs"
            )
            await send_json(send, 500, body, {REQUEST_ID_HEADER: request_id})
        finally:
            seconds = time.perf_counter() - started
            route = scope.get("route")
            endpoint = getattr(route, "path", None) or "unmatched"  # the template keeps label cardinality bounded
            method = scope.get("method", "")
            self.metrics.requests.labels(method, endpoint, str(status)).inc()
            self.metrics.request_seconds.labels(method, endpoint, str(status)).observe(seconds)
            client = scope.get("client")
            access_log.info(
                "request",
                extra={
                    "request_id": request_id,
                    "fields": {
                        "method": method,
                        "path": scope.get("path", ""),
                        "endpoint": endpoint,
                        "status": status,
                        "duration_ms": round(seconds * 1000, 2),
                        "bytes_in": bytes_in,
                        "client": f"{client[0]}:{client[1]}" if client else None,
                        "user_agent": Headers(scope=scope).get("user-agent"),
                        "error": scope.get("state", {}).get("error_code"),
                    },
                },
            )
            request_id_var.reset(token)


class BodyLimitMiddleware:
    """413 for a body over the limit: at once from Content-Length, else as soon as the streamed bytes pass it.
    408 when the body has not arrived `timeout_s` after the request started (a slow client cannot hold an
    inference slot for ever)."""

    def __init__(self, app: ASGIApp, max_bytes: int, metrics: Metrics, timeout_s: float | None = None) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.metrics = metrics
        self.timeout_s = timeout_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = Headers(scope=scope).get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            # Answer before reading a byte of the body.
            detail = f"request body of {int(declared):,} bytes is over the limit of {self.max_bytes:,} (SPINE_MAX_UPLOAD_BYTES)"
            self.metrics.errors.labels("body_too_large").inc()
            scope.setdefault("state", {})["error_code"] = "body_too_large"
            await send_json(send, 413, error_body(scope.get("path", ""), 413, "body_too_large", detail), {"connection": "close"})
            return
        received = 0
        deadline = None if self.timeout_s is None else anyio.current_time() + self.timeout_s

        body_complete = False

        async def receive_limited() -> Message:
            nonlocal received, body_complete
            if deadline is None or body_complete:  # afterwards (e.g. waiting for a disconnect): no deadline
                message = await receive()
            else:
                arrived: Message | None = None
                with anyio.move_on_after(deadline - anyio.current_time()):
                    arrived = await receive()
                if arrived is None:
                    raise BodyTimeoutError(self.timeout_s)
                message = arrived
            if message["type"] == "http.request":
                body_complete = not message.get("more_body", False)
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise BodyTooLargeError(self.max_bytes)
            return message

        await self.app(scope, receive_limited, send)
