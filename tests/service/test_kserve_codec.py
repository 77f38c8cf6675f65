"""The v2 codec on its own: JSON tensors, the binary extension, and every malformed request."""

from __future__ import annotations

import json

import numpy as np
import pytest

from service.kserve import ProtocolError, encode_infer_response, parse_infer_request


def _binary(inputs: list[tuple[str, np.ndarray, str]], outputs: list[dict] | None = None) -> tuple[bytes, str]:
    head = {
        "inputs": [
            {"name": n, "shape": list(a.shape), "datatype": dt, "parameters": {"binary_data_size": a.nbytes}}
            for n, a, dt in inputs
        ]
    }
    if outputs is not None:
        head["outputs"] = outputs
    text = json.dumps(head).encode()
    return text + b"".join(a.tobytes() for _, a, _ in inputs), str(len(text))


def test_json_and_binary_inputs_decode_to_the_same_array() -> None:
    x = np.arange(24, dtype=np.float32).reshape(2, 3, 4, 1)
    as_json = json.dumps(
        {"id": "r1", "inputs": [{"name": "x", "shape": [2, 3, 4, 1], "datatype": "FP32", "data": x.ravel().tolist()}]}
    )
    a = parse_infer_request(as_json.encode(), None)
    body, length = _binary([("x", x, "FP32")])
    b = parse_infer_request(body, length)
    np.testing.assert_array_equal(a.inputs["x"], x)
    np.testing.assert_array_equal(b.inputs["x"], x)
    assert a.id == "r1" and b.id is None


def test_nested_json_data_and_other_types() -> None:
    req = parse_infer_request(
        json.dumps({"inputs": [{"name": "m", "shape": [2, 2], "datatype": "INT64", "data": [[1, 2], [3, 4]]}]}).encode(), None
    )
    assert req.inputs["m"].dtype == np.int64 and req.inputs["m"].tolist() == [[1, 2], [3, 4]]


@pytest.mark.parametrize(
    ("body", "header", "message"),
    [
        (b"not json", None, "not valid JSON"),
        (b"{}", None, "non-empty 'inputs'"),
        (b'{"inputs": [{"name": "x", "shape": [2], "datatype": "BYTES", "data": ["a", "b"]}]}', None, "not supported"),
        (b'{"inputs": [{"name": "x", "shape": [3], "datatype": "FP32", "data": [1, 2]}]}', None, "2 values for shape"),
        (b'{"inputs": [{"name": "x", "shape": [-1], "datatype": "FP32", "data": [1]}]}', None, "non-negative"),
        (b'{"inputs": [{"name": "x", "shape": [1], "datatype": "FP32"}]}', None, "neither 'data'"),
        (b'{"inputs": [{"name": "x", "shape": [1], "datatype": "FP32", "data": ["a"]}]}', None, "not FP32"),
        (b'{"inputs": [{"name": "x", "shape": [99, 1], "datatype": "FP32", "data": []}]}', None, "over the limit"),
        (b'{"inputs": []}', "999", "does not fit"),
        (b'{"inputs": []}', "abc", "must be an integer"),
    ],
)
def test_malformed_requests(body: bytes, header: str | None, message: str) -> None:
    with pytest.raises(ProtocolError, match=message):
        parse_infer_request(body, header, max_batch=32)


def test_binary_size_mismatches() -> None:
    x = np.zeros((2, 2), np.float32)
    body, length = _binary([("x", x, "FP32")])
    with pytest.raises(ProtocolError, match="fewer binary bytes"):
        parse_infer_request(body[:-4], length)
    with pytest.raises(ProtocolError, match="no input declares"):
        parse_infer_request(body + b"\x00" * 4, length)
    head = json.dumps(
        {"inputs": [{"name": "x", "shape": [2, 2], "datatype": "FP32", "parameters": {"binary_data_size": 4}}]}
    ).encode()
    with pytest.raises(ProtocolError, match="binary_data_size 4 != 16"):
        parse_infer_request(head + b"\x00" * 4, str(len(head)))


def test_response_binary_and_json() -> None:
    y = np.linspace(0, 1, 6, dtype=np.float32).reshape(1, 6)
    z = np.array([[1, 2]], np.int32)
    body, length = _binary([("x", y, "FP32")], outputs=[{"name": "y", "parameters": {"binary_data": True}}, {"name": "z"}])
    req = parse_infer_request(body, length)
    out, header = encode_infer_response("m", "1", req, {"y": y, "z": z})
    assert header is not None
    meta = json.loads(out[:header])
    assert meta["model_name"] == "m" and meta["model_version"] == "1"
    y_meta, z_meta = meta["outputs"]
    assert y_meta == {"name": "y", "datatype": "FP32", "shape": [1, 6], "parameters": {"binary_data_size": 24}}
    np.testing.assert_array_equal(np.frombuffer(out[header:], np.float32).reshape(1, 6), y)
    assert z_meta == {"name": "z", "datatype": "INT32", "shape": [1, 2], "data": [1, 2]}
    req.outputs = {}
    out, header = encode_infer_response("m", "1", req, {"z": z})
    assert header is None and json.loads(out)["outputs"][0]["data"] == [1, 2]


@pytest.mark.parametrize("datatype", [{}, [], ["FP32"], 32, None, True])
def test_a_datatype_that_is_not_a_name_is_a_protocol_error(datatype: object) -> None:
    # Found by fuzzing: {"datatype": {}} raised TypeError (unhashable) -> HTTP 500.
    body = json.dumps({"inputs": [{"name": "", "datatype": datatype, "shape": [], "data": None}]}).encode()
    with pytest.raises(ProtocolError, match=r"datatype .* is not supported"):
        parse_infer_request(body, None)


def test_the_fuzzed_request_is_a_400_over_http(client) -> None:
    body = {"inputs": [{"name": "", "datatype": {}, "shape": [], "data": None}]}
    r = client.post("/v2/models/Ap_Vertebra/infer", json=body)
    assert r.status_code == 400, r.text
    assert "datatype {} is not supported" in r.json()["error"]
