"""Issue 6, failure modes and overload: each on a live server (uvicorn in a thread, or `spine-serve` as a
subprocess where the process itself is under test: SIGTERM, start-up with broken models, no CUDA)."""

from __future__ import annotations

import json
import logging
import re
import signal
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest
from onnxruntime.capi.onnxruntime_pybind11_state import Fail
from spine_reliability_testlib import CPU, encode, make_settings, serve_live, spine_image, spine_serve, write_models_dir

from service.core.logging import JsonFormatter
from spine_engine import LoadedModel, ModelRegistry

GOOD = encode(spine_image())


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_models_dir(tmp_path_factory.mktemp("models"))


def _segment(address: str, structures: str | None = None, timeout: float = 30) -> httpx.Response:
    data = {"view": "AP", **({"structures": structures} if structures else {})}
    return httpx.post(f"http://{address}/segment", files={"file": ("a.png", GOOD, "image/png")}, data=data, timeout=timeout)


def _metric(address: str, name: str) -> float:
    text = httpx.get(f"http://{address}/metrics", timeout=5).text
    values = [float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(name)]
    return sum(values)


# --------------------------------------------------------------------------- overload: bounded queue, 503 + Retry-After


class GatedRegistry(ModelRegistry):
    """Segmentation blocks until the test opens the gate: requests stay in flight as long as needed."""

    gate = threading.Event()
    entered = threading.Semaphore(0)

    def infer(self, work: list[tuple[LoadedModel, np.ndarray]]) -> list[np.ndarray]:
        self.entered.release()
        assert self.gate.wait(30)
        return super().infer(work)


def _gated(models_dir: Path) -> GatedRegistry:
    base = ModelRegistry.load(models_dir, providers=CPU, intra_op_threads=1)
    GatedRegistry.gate = threading.Event()
    GatedRegistry.entered = threading.Semaphore(0)
    return GatedRegistry(base.models_dir, base.manifest, base.models, base.problems, base.requested_providers)


def test_overload_answers_503_with_retry_after_and_never_queues_past_the_bound(models_dir: Path) -> None:
    registry = _gated(models_dir)
    settings = make_settings(models_dir, inference_concurrency=1, max_queue=2, retry_after_s=3)
    with serve_live(settings, registry) as address, ThreadPoolExecutor(8) as pool:
        admitted = [pool.submit(_segment, address) for _ in range(3)]  # 1 computing + 2 waiting = the bound
        assert registry.entered.acquire(timeout=10)  # the first one is computing
        deadline = time.monotonic() + 10
        while _metric(address, "spine_inference_requests_in_flight") < 3:
            assert time.monotonic() < deadline, "the 3 requests were not admitted"
            time.sleep(0.02)
        refused = [_segment(address) for _ in range(4)]
        infer = httpx.post(f"http://{address}/v2/models/Mask_Classifier/infer", json={"inputs": []}, timeout=5)
        for r in [*refused, infer]:
            assert r.status_code == 503, r.text
            assert r.headers["retry-after"] == "3"
        body = refused[0].json()
        assert body["code"] == "overloaded" and body["request_id"] == refused[0].headers["x-request-id"]
        assert "SPINE_MAX_QUEUE" in body["detail"] and "error" in infer.json()
        # Cheap requests are not queued behind inference: probes answer at once under overload.
        started = time.perf_counter()
        assert httpx.get(f"http://{address}/health/ready", timeout=5).status_code == 200
        assert time.perf_counter() - started < 0.5
        registry.gate.set()
        assert [f.result().status_code for f in admitted] == [200, 200, 200]
        assert _metric(address, 'spine_errors_total{kind="overloaded"}') == 5
        assert _metric(address, "spine_inference_requests_in_flight") == 0
        assert _segment(address).status_code == 200  # capacity is given back


def test_max_queue_zero_admits_only_what_computes(models_dir: Path) -> None:
    registry = _gated(models_dir)
    settings = make_settings(models_dir, inference_concurrency=2, max_queue=0)
    with serve_live(settings, registry) as address, ThreadPoolExecutor(2) as pool:
        running = [pool.submit(_segment, address) for _ in range(2)]
        assert registry.entered.acquire(timeout=10) and registry.entered.acquire(timeout=10)
        assert _segment(address).status_code == 503
        registry.gate.set()
        assert [f.result().status_code for f in running] == [200, 200]


# --------------------------------------------------------------------------- a crash in one request


class _FailingSession:
    """An onnxruntime session whose run raises what onnxruntime raises on a kernel failure."""

    def __init__(self, session: object) -> None:
        self._session = session

    def run(self, *args: object, **kwargs: object) -> object:
        raise Fail("[ONNXRuntimeError] : 1 : FAIL : injected kernel failure (test)")

    def __getattr__(self, name: str) -> object:
        return getattr(self._session, name)


def test_an_onnxruntime_error_is_a_500_for_that_request_only(models_dir: Path, caplog: pytest.LogCaptureFixture) -> None:
    registry = ModelRegistry.load(models_dir, providers=CPU, intra_op_threads=1)
    registry.models["Ap_Pedicle"].session = _FailingSession(registry.models["Ap_Pedicle"].session)  # type: ignore[assignment]
    settings = make_settings(models_dir, inference_concurrency=2, log_level="info")
    with serve_live(settings, registry) as address, ThreadPoolExecutor(8) as pool:
        calls = ["Ap_Pedicle" if i == 3 else "Ap_Vertebra" for i in range(8)]
        responses = list(pool.map(lambda s: _segment(address, s), calls))
        crashed, others = responses[3], responses[:3] + responses[4:]
        assert crashed.status_code == 500
        body = crashed.json()
        assert body["code"] == "internal_error" and body["request_id"] == crashed.headers["x-request-id"]
        assert "injected" not in crashed.text  # the cause is in the log, not in the answer
        assert [r.status_code for r in others] == [200] * 7
        # The service keeps serving, and stays ready: one failed run is not a broken model.
        assert httpx.get(f"http://{address}/health/ready", timeout=5).status_code == 200
        assert _segment(address, "Ap_Vertebra").status_code == 200
        assert _metric(address, 'spine_errors_total{kind="internal_error"}') == 1
    errors = [r for r in caplog.records if r.levelname == "ERROR" and r.exc_info]
    assert len(errors) == 1 and "injected kernel failure" in str(errors[0].exc_info[1])  # type: ignore[index]
    # The traceback's line carries the failed request's id (the middleware's context variable).
    assert json.loads(JsonFormatter().format(errors[0]))["request_id"] == body["request_id"]
    access = [r for r in caplog.records if r.name == "service.access" and getattr(r, "request_id", "") == body["request_id"]]
    assert len(access) == 1 and access[0].fields["status"] == 500  # type: ignore[attr-defined]


# --------------------------------------------------------------------------- spine-serve as a process


def _read_http_response(sock: socket.socket) -> bytes:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            return data
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = int(re.search(rb"content-length: *(\d+)", head, re.IGNORECASE).group(1))  # type: ignore[union-attr]
    while len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            break
        body += chunk
    return head + b"\r\n\r\n" + body


def _multipart_request(host: str) -> tuple[bytes, bytes]:
    boundary = "sigtermboundary"
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="view"\r\n\r\nAP\r\n'
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="a.png"\r\n'
            "Content-Type: image/png\r\n\r\n"
        ).encode()
        + GOOD
        + f"\r\n--{boundary}--\r\n".encode()
    )
    head = (
        f"POST /segment HTTP/1.1\r\nHost: {host}\r\nContent-Type: multipart/form-data; boundary={boundary}\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode()
    return head, body


def test_sigterm_lets_in_flight_requests_finish_then_exits(models_dir: Path, tmp_path: Path) -> None:
    with spine_serve(models_dir, tmp_path / "serve.log") as server:
        host, port = server.base_url.removeprefix("http://").split(":")
        head, body = _multipart_request(host)
        # Three requests in flight: headers and half of each body sent, the rest withheld until after SIGTERM.
        socks = [socket.create_connection((host, int(port)), timeout=20) for _ in range(3)]
        for s in socks:
            s.sendall(head + body[: len(body) // 2])
        time.sleep(0.5)
        server.process.send_signal(signal.SIGTERM)
        time.sleep(1.0)
        assert server.process.poll() is None, "exited with requests in flight"
        with pytest.raises(OSError):  # no new connections once shutting down
            socket.create_connection((host, int(port)), timeout=2).close()
        for s in socks:
            s.sendall(body[len(body) // 2 :])
        answers = [_read_http_response(s) for s in socks]
        for s in socks:
            s.close()
        for answer in answers:
            assert answer.startswith(b"HTTP/1.1 200"), answer[:300]
            assert json.loads(answer.partition(b"\r\n\r\n")[2])["view"] == "AP"
        # uvicorn shuts down gracefully, then re-raises the signal it caught: killed by SIGTERM (143 in a shell)
        assert server.process.wait(20) in (0, -signal.SIGTERM)
    entries = [json.loads(line) for line in (tmp_path / "serve.log").read_text().splitlines() if line.startswith("{")]
    messages = [e["message"] for e in entries]
    shutdown = messages.index("Shutting down")
    finished = [i for i, e in enumerate(entries) if e["logger"] == "service.access" and e["endpoint"] == "/segment"]
    assert len(finished) == 3 and all(shutdown < i for i in finished)  # answered after SIGTERM
    assert all(entries[i]["status"] == 200 for i in finished)
    assert any(m.startswith("Finished server process") for m in messages[max(finished) :])


def test_spine_serve_with_broken_models_starts_not_ready_and_names_them(models_dir: Path, tmp_path: Path) -> None:
    import shutil

    broken = Path(shutil.copytree(models_dir, tmp_path / "models"))
    (broken / "Lat_Vertebra/1/model.onnx").unlink()  # missing
    (broken / "Ap_Pedicle/1/model.onnx").write_bytes(b"not onnx")  # corrupt (sha mismatch first)
    manifest = json.loads((broken / "manifest.json").read_text())
    for m in manifest["models"]:
        if m["name"] == "Ap_Vertebra":
            m["sha256"] = "0" * 64  # mismatch
    (broken / "manifest.json").write_text(json.dumps(manifest))
    with spine_serve(broken, tmp_path / "serve.log", until="loaded") as server:
        base = server.base_url
        r = httpx.get(f"{base}/health/ready", timeout=5)
        assert r.status_code == 503
        reasons = r.json()["reasons"]
        assert set(reasons) == {"Lat_Vertebra", "Ap_Pedicle", "Ap_Vertebra"}
        assert "missing" in reasons["Lat_Vertebra"] and "sha256" in reasons["Ap_Pedicle"] and "sha256" in reasons["Ap_Vertebra"]
        r = httpx.post(f"{base}/segment", files={"file": ("a.png", GOOD)}, data={"view": "AP"}, timeout=10)
        assert r.status_code == 503 and r.json()["code"] == "model_unavailable"
        assert set(r.json()["problems"]) == {"Ap_Pedicle", "Ap_Vertebra"}
        ok = httpx.post(f"{base}/segment", files={"file": ("a.png", GOOD)}, data={"view": "LAT", "structures": "Lat_Disk_Height"})
        assert ok.status_code == 200  # what is servable is served


def _cuda_usable(models_dir: Path) -> bool:
    registry = ModelRegistry.load(models_dir, providers=["CUDAExecutionProvider", "CPUExecutionProvider"], intra_op_threads=1)
    return "CUDAExecutionProvider" in registry.execution_provider


def test_cuda_requested_but_unavailable(models_dir: Path, tmp_path: Path) -> None:
    if _cuda_usable(models_dir):
        pytest.skip("CUDA works here: the fallback cannot be observed")
    gpu = "CUDAExecutionProvider,CPUExecutionProvider"
    with spine_serve(models_dir, tmp_path / "gpu.log", until="loaded", providers=gpu, require_gpu="true") as server:
        base = server.base_url
        r = httpx.get(f"{base}/health/ready", timeout=5)
        assert r.status_code == 503 and r.json()["require_gpu"] is True
        assert len(r.json()["reasons"]) == 9 and all("require_gpu" in why for why in r.json()["reasons"].values())
        assert httpx.post(f"{base}/segment", files={"file": ("a.png", GOOD)}, data={"view": "AP"}).status_code == 503
    with spine_serve(models_dir, tmp_path / "fallback.log", providers=gpu, require_gpu="false") as server:
        base = server.base_url
        ready = httpx.get(f"{base}/health/ready", timeout=5).json()
        assert ready["ready"] is True and ready["execution_provider"] == "CPUExecutionProvider"
        assert ready["requested_providers"][0] == "CUDAExecutionProvider"
        body = httpx.post(f"{base}/segment", files={"file": ("a.png", GOOD)}, data={"view": "AP"}, timeout=10).json()
        assert body["execution_provider"] == "CPUExecutionProvider"
        # The provider is a field of every answer and one start-up log line, never a warning: a CPU machine is no fault.
        assert not any("ExecutionProvider" in w for w in body["warnings"]), body["warnings"]
        metrics = httpx.get(f"{base}/metrics", timeout=5).text
        assert 'execution_provider="CPUExecutionProvider"' in metrics
    log = (tmp_path / "fallback.log").read_text()
    assert "CUDA is not usable here" in log and "inference runs on CPUExecutionProvider" in log  # one clear line


def test_a_slow_body_times_out_and_gives_its_place_back(models_dir: Path) -> None:
    # Slowloris against the bounded queue: a client that never finishes its body is cut at SPINE_BODY_TIMEOUT_S.
    settings = make_settings(models_dir, inference_concurrency=1, max_queue=0, body_timeout_s=1.0)
    with serve_live(settings) as address:
        host, port = address.split(":")
        head, body = _multipart_request(host)
        with socket.create_connection((host, int(port)), timeout=10) as sock:
            sock.sendall(head + body[:100])
            time.sleep(0.3)
            assert _segment(address).status_code == 503  # the slow client holds the only place...
            started = time.perf_counter()
            answer = _read_http_response(sock)
            assert answer.startswith(b"HTTP/1.1 408"), answer[:300]
            assert time.perf_counter() - started < 3
            assert b"body_timeout" in answer and b"connection: close" in answer.lower()
        assert _segment(address).status_code == 200  # ...until the timeout gives it back
        assert _metric(address, 'spine_errors_total{kind="body_timeout"}') == 1


def test_spine_serve_caps_malloc_arenas(monkeypatch: pytest.MonkeyPatch) -> None:
    import service.__main__ as entry

    monkeypatch.delenv("MALLOC_ARENA_MAX", raising=False)
    assert entry.limit_malloc_arenas() is True  # glibc (this suite runs on Linux)
    monkeypatch.setenv("MALLOC_ARENA_MAX", "4")
    assert entry.limit_malloc_arenas() is False  # the operator's value wins


def test_a_client_vanishing_mid_upload_is_no_server_error(models_dir: Path, caplog: pytest.LogCaptureFixture) -> None:
    with serve_live(make_settings(models_dir, log_level="info")) as address:
        host, port = address.split(":")
        head, body = _multipart_request(host)
        with socket.create_connection((host, int(port)), timeout=10) as sock:
            sock.sendall(head + body[:100])
            time.sleep(0.3)
        deadline = time.monotonic() + 5
        while not [r for r in caplog.records if r.name == "service.access" and r.fields["path"] == "/segment"]:  # type: ignore[attr-defined]
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert _segment(address).status_code == 200
        assert _metric(address, 'spine_errors_total{kind="internal_error"}') == 0
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    statuses = [r.fields["status"] for r in caplog.records if r.name == "service.access" and r.fields["path"] == "/segment"]  # type: ignore[attr-defined]
    assert statuses[0] == 400  # FastAPI's answer to a ClientDisconnect, logged as one line
