"""Prometheus metrics, in a registry of the app's own (several apps in one process do not collide)."""

from __future__ import annotations

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Info,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        r = self.registry
        self.requests = Counter(
            "spine_http_requests",
            "HTTP requests by endpoint (route template) and status",
            ["method", "endpoint", "status"],
            registry=r,
        )
        self.request_seconds = Histogram(
            "spine_http_request_duration_seconds",
            "HTTP request latency by endpoint and status",
            ["method", "endpoint", "status"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.inference_seconds = Histogram(
            "spine_inference_duration_seconds",
            "onnxruntime session.run time per model",
            ["model"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.inference_items = Counter(
            "spine_inference_items", "Tensors (batch items) run through each model", ["model"], registry=r
        )
        self.images = Counter("spine_images_processed", "Radiographs decoded and segmented", ["endpoint", "view"], registry=r)
        self.errors = Counter("spine_errors", "Requests answered with an error, by kind", ["kind"], registry=r)
        self.in_flight = Gauge(
            "spine_inference_requests_in_flight",
            "Inference requests admitted (computing or waiting for a compute slot); bounded by concurrency + SPINE_MAX_QUEUE",
            registry=r,
        )
        self.ready = Gauge("spine_ready", "1 when every model is loaded and warm", registry=r)
        self.model_ready = Gauge(
            "spine_model_ready", "1 when the model is servable", ["model", "version", "provider"], registry=r
        )
        self.info = Info("spine_service", "Service version and the execution provider the sessions run on", registry=r)

    def observe_inference(self, model: str, seconds: float, batch: int) -> None:
        self.inference_seconds.labels(model).observe(seconds)
        self.inference_items.labels(model).inc(batch)

    def render(self) -> tuple[bytes, str]:
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
