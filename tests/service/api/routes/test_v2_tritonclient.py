"""KServe v2 / Open Inference Protocol, driven by NVIDIA's own `tritonclient.http` against a live uvicorn."""

from __future__ import annotations

import httpx
import numpy as np
import pytest
from spine_service_testlib import SEG_HW, decode_png_mask, encode, spine_image

from spine_core.preprocessing import preprocess_image, probabilities_to_source_mask, to_unet_batch
from spine_core.structures import CLASSIFIER_MODEL_NAME, STRUCTURES

httpclient = pytest.importorskip("tritonclient.http")
from tritonclient.utils import InferenceServerException  # noqa: E402


@pytest.fixture(scope="module")
def triton(live_server: str):
    client = httpclient.InferenceServerClient(url=live_server, connection_timeout=10, network_timeout=30)
    yield client
    client.close()


def test_server_health_and_metadata(triton) -> None:
    assert triton.is_server_live()
    assert triton.is_server_ready()
    meta = triton.get_server_metadata()
    assert meta["name"] == "spine-xray" and "binary_tensor_data" in meta["extensions"]


def test_every_model_has_metadata_readiness_and_config(triton) -> None:
    for name in [*STRUCTURES, CLASSIFIER_MODEL_NAME]:
        assert triton.is_model_ready(name)
        assert triton.is_model_ready(name, "1")
        meta = triton.get_model_metadata(name)
        assert meta["name"] == name and meta["versions"] == ["1"] and meta["platform"] == "onnxruntime_onnx"
        (inp,) = meta["inputs"]
        assert inp["datatype"] == "FP32" and inp["shape"][0] == -1 and inp["shape"][-1] == 1
        config = triton.get_model_config(name)
        assert config["input"][0]["dims"] == inp["shape"][1:]
    assert triton.get_model_metadata("Ap_Vertebra")["outputs"] == [
        {"name": "mask_prob", "datatype": "FP32", "shape": [-1, 64, 32, 1]}
    ]
    assert not triton.is_model_ready("No_Such_Model")
    with pytest.raises(InferenceServerException, match="unknown model"):
        triton.get_model_metadata("No_Such_Model")


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_infer_equals_segment(triton, live_server: str, binary: bool) -> None:
    image = spine_image(260, 110, seed=7)
    x, box = preprocess_image(image, SEG_HW)
    inp = httpclient.InferInput("input_image", [1, *SEG_HW, 1], "FP32")
    inp.set_data_from_numpy(to_unet_batch([x]), binary_data=binary)
    out = httpclient.InferRequestedOutput("mask_prob", binary_data=binary)
    result = triton.infer("Ap_Vertebra", [inp], outputs=[out], request_id="req-1")
    assert result.get_response()["id"] == "req-1"
    prob = result.as_numpy("mask_prob")
    assert prob.shape == (1, *SEG_HW, 1) and prob.dtype == np.float32

    r = httpx.post(
        f"http://{live_server}/segment",
        files={"file": ("a.png", encode(image), "image/png")},
        data={"view": "AP", "structures": "Ap_Vertebra"},
        timeout=30,
    )
    assert r.status_code == 200, r.text
    served = decode_png_mask(r.json()["masks"][0]["data"])
    np.testing.assert_array_equal(probabilities_to_source_mask(prob[0, :, :, 0], box, 0.5), served)


def test_batched_infer_without_requested_outputs_and_classifier(triton) -> None:
    x = np.random.default_rng(0).random((3, *SEG_HW, 1), dtype=np.float32)
    inp = httpclient.InferInput("input_image", list(x.shape), "FP32")
    inp.set_data_from_numpy(x)
    prob = triton.infer("Lat_Vertebra", [inp]).as_numpy("mask_prob")  # no outputs named: all, binary
    assert prob.shape == (3, *SEG_HW, 1)
    masks = np.zeros((2, 16, 8, 1), np.float32)
    masks[1] = 1.0
    clf = httpclient.InferInput("mask_input", list(masks.shape), "FP32")
    clf.set_data_from_numpy(masks)
    scores = triton.infer(CLASSIFIER_MODEL_NAME, [clf]).as_numpy("class_prob")
    assert scores.shape == (2, 2) and np.allclose(scores.sum(axis=1), 1) and scores[1, 1] > scores[0, 1]


def test_infer_errors_come_back_as_client_exceptions(triton) -> None:
    wrong = httpclient.InferInput("input_image", [1, 10, 10, 1], "FP32")
    wrong.set_data_from_numpy(np.zeros((1, 10, 10, 1), np.float32))
    with pytest.raises(InferenceServerException, match="shape"):
        triton.infer("Ap_Vertebra", [wrong])
    misnamed = httpclient.InferInput("pixels", [1, *SEG_HW, 1], "FP32")
    misnamed.set_data_from_numpy(np.zeros((1, *SEG_HW, 1), np.float32))
    with pytest.raises(InferenceServerException, match="takes inputs"):
        triton.infer("Ap_Vertebra", [misnamed])
    with pytest.raises(InferenceServerException, match="unknown model"):
        triton.infer("No_Such_Model", [misnamed])
    with pytest.raises(InferenceServerException, match="version"):
        triton.get_model_metadata("Ap_Vertebra", "7")
    assert triton.is_server_live()  # and the server goes on


def test_compressed_request(triton) -> None:
    x = np.zeros((1, *SEG_HW, 1), np.float32)
    inp = httpclient.InferInput("input_image", list(x.shape), "FP32")
    inp.set_data_from_numpy(x)
    prob = triton.infer("Ap_Vertebra", [inp], request_compression_algorithm="gzip").as_numpy("mask_prob")
    assert prob.shape == (1, *SEG_HW, 1)
