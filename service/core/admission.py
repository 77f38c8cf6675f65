"""Overload protection: a bounded number of inference requests in flight, 503 + Retry-After beyond.

Inference requests (POST /segment, /classify and the KServe v2 infer routes) are admitted here before a
byte of their body is read. At most `SPINE_INFERENCE_CONCURRENCY` compute at once (the routes' capacity
limiter); up to `SPINE_MAX_QUEUE` more may wait for a slot. Beyond that the answer is an immediate 503
`overloaded` with `Retry-After`, so a burst can neither grow an unbounded queue nor hold an unbounded
number of uploaded bodies in memory: at most (concurrency + queue) x SPINE_MAX_UPLOAD_BYTES.

Cheap requests (health, metrics, model metadata) are never queued here: a probe is answered under load.
"""

from __future__ import annotations

import re

from starlette.types import ASGIApp, Receive, Scope, Send

from service.core.errors import error_body
from service.core.metrics import Metrics
from service.core.middleware import send_json

# The routes that decode and infer; everything else is cheap and always admitted.
INFERENCE_PATH = re.compile(
    r"^/(?:segment|classify|dicom/(?:seg|sr)|dicomweb/studies/[^/]+/analyze|v2/models/[^/]+(?:/versions/[^/]+)?/infer)$"
)


class AdmissionMiddleware:
    """Counts inference requests from admission until their response is sent; refuses past `capacity`."""

    def __init__(self, app: ASGIApp, capacity: int, retry_after_s: int, metrics: Metrics) -> None:
        self.app = app
        self.capacity = capacity
        self.retry_after_s = retry_after_s
        self.metrics = metrics
        self.in_flight = 0  # one event loop: no lock needed

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("method") != "POST" or not INFERENCE_PATH.match(scope.get("path", "")):
            await self.app(scope, receive, send)
            return
        if self.in_flight >= self.capacity:
            detail = (
                f"the service is at capacity ({self.in_flight} inference requests in flight, SPINE_INFERENCE_CONCURRENCY "
                f"+ SPINE_MAX_QUEUE = {self.capacity}); retry after {self.retry_after_s} s"
            )
            self.metrics.errors.labels("overloaded").inc()
            scope.setdefault("state", {})["error_code"] = "overloaded"
            await send_json(
                send,
                503,
                error_body(scope.get("path", ""), 503, "overloaded", detail),
                {"retry-after": str(self.retry_after_s)},
            )
            return
        self.in_flight += 1
        self.metrics.in_flight.set(self.in_flight)
        try:
            await self.app(scope, receive, send)
        finally:
            self.in_flight -= 1
            self.metrics.in_flight.set(self.in_flight)
