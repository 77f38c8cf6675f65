"""GET /metrics: Prometheus text with requests, latency, inference time per model, images, errors, provider."""

from __future__ import annotations

from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families
from spine_service_testlib import encode, post_segment, spine_image


def _samples(client: TestClient) -> list:
    r = client.get("/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    return [s for family in text_string_to_metric_families(r.text) for s in family.samples]


def _value(samples: list, name: str, **labels: str) -> float:
    return sum(s.value for s in samples if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()))


def test_metrics(client: TestClient) -> None:
    before = _samples(client)
    assert post_segment(client, encode(spine_image()), view="AP").status_code == 200
    assert post_segment(client, b"", view="AP").status_code == 422
    after = _samples(client)

    def delta(name: str, **labels: str) -> float:
        return _value(after, name, **labels) - _value(before, name, **labels)

    assert delta("spine_http_requests_total", method="POST", endpoint="/segment", status="200") == 1
    assert delta("spine_http_requests_total", method="POST", endpoint="/segment", status="422") == 1
    assert delta("spine_http_request_duration_seconds_count", endpoint="/segment", status="200") == 1
    assert delta("spine_inference_duration_seconds_count", model="Ap_Vertebra") == 1
    assert delta("spine_inference_items_total", model="Ap_Pedicle") == 1
    assert delta("spine_images_processed_total", endpoint="segment", view="AP") == 1
    assert delta("spine_errors_total", kind="empty_file") == 1
    assert _value(after, "spine_ready") == 1
    info = [s for s in after if s.name == "spine_service_info"]
    assert info and info[0].labels["execution_provider"] == "CPUExecutionProvider"
    ready = [s for s in after if s.name == "spine_model_ready" and s.labels["model"] == "Ap_Vertebra"]
    assert ready[0].labels["provider"] == "CPUExecutionProvider" and ready[0].value == 1
    # Route templates, not raw paths, so label cardinality stays bounded.
    assert not any(s.labels.get("endpoint") == "/v2/models/Ap_Vertebra" for s in after)
