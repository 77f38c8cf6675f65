"""KServe v2 / Open Inference Protocol: everything but the routes (those are in `service.api.routes.v2`).

The codec (JSON tensors and Triton's binary tensor data extension, bytes <-> numpy), request decompression,
tensor metadata, and the protocol's error body and OpenAPI description.
Spec: https://github.com/kserve/open-inference-protocol (REST) and Triton's binary_data extension.
"""

from __future__ import annotations

import json
import math
import zlib
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict

from spine_engine import ORT_DTYPES, LoadedModel
from spine_engine.errors import SpineError

HEADER_LENGTH = "Inference-Header-Content-Length"
EXTENSIONS = ["binary_tensor_data"]

V2_DTYPES: dict[str, np.dtype] = {
    "BOOL": np.dtype(np.bool_),
    "UINT8": np.dtype(np.uint8),
    "UINT16": np.dtype(np.uint16),
    "UINT32": np.dtype(np.uint32),
    "UINT64": np.dtype(np.uint64),
    "INT8": np.dtype(np.int8),
    "INT16": np.dtype(np.int16),
    "INT32": np.dtype(np.int32),
    "INT64": np.dtype(np.int64),
    "FP16": np.dtype(np.float16),
    "FP32": np.dtype(np.float32),
    "FP64": np.dtype(np.float64),
}
_NUMPY_TO_V2 = {dtype: name for name, dtype in V2_DTYPES.items()}
try:
    SERVER_VERSION = version("spine-xray")
except PackageNotFoundError:  # running from a source tree that is not installed
    SERVER_VERSION = "0.0.0"


class ProtocolError(SpineError, ValueError):
    """The request does not follow the protocol (HTTP 400 with {"error": message})."""

    status_code = 400
    code = "invalid_v2_request"


class UnsupportedEncodingError(ProtocolError):
    status_code = 415
    code = "unsupported_media_type"


class DecompressedTooLargeError(ProtocolError):
    status_code = 413
    code = "body_too_large"


def ort_to_v2(ort_type: str) -> str:
    """onnxruntime's type string -> the protocol's datatype (derived from the one ORT table)."""
    if ort_type == "tensor(string)":
        return "BYTES"
    dtype = ORT_DTYPES.get(ort_type)
    return _NUMPY_TO_V2.get(dtype, ort_type) if dtype is not None else ort_type


def numpy_to_v2(dtype: np.dtype) -> str:
    try:
        return _NUMPY_TO_V2[np.dtype(dtype)]
    except KeyError:
        raise ProtocolError(f"numpy dtype {dtype} has no v2 datatype") from None


@dataclass
class InferRequest:
    id: str | None
    inputs: dict[str, np.ndarray]
    outputs: dict[str, bool] = field(default_factory=dict)  # requested output -> binary?; empty = all
    binary_default: bool = False
    parameters: dict[str, Any] = field(default_factory=dict)


def _as_int_shape(shape: object, name: str) -> tuple[int, ...]:
    if not isinstance(shape, list) or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape):
        raise ProtocolError(f"input {name!r}: shape must be a list of non-negative integers")
    return tuple(shape)


def parse_infer_request(body: bytes, header_length: str | None, max_batch: int | None = None) -> InferRequest:
    """Decode a v2 infer request body, JSON only or JSON header + binary tensors."""
    if header_length is not None:
        try:
            json_len = int(header_length)
        except ValueError:
            raise ProtocolError(f"{HEADER_LENGTH} must be an integer, got {header_length!r}") from None
        if not 0 < json_len <= len(body):
            raise ProtocolError(f"{HEADER_LENGTH} {json_len} does not fit a body of {len(body)} bytes")
        head, binary = body[:json_len], memoryview(body)[json_len:]
    else:
        head, binary = body, memoryview(b"")
    try:
        request = json.loads(head)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ProtocolError(f"the request header is not valid JSON: {exc}") from None
    if not isinstance(request, dict) or not isinstance(request.get("inputs"), list) or not request["inputs"]:
        raise ProtocolError("the request must be a JSON object with a non-empty 'inputs' list")

    inputs: dict[str, np.ndarray] = {}
    offset = 0
    for tensor in request["inputs"]:
        if not isinstance(tensor, dict) or not isinstance(tensor.get("name"), str):
            raise ProtocolError("every input needs a 'name'")
        name = tensor["name"]
        datatype = tensor.get("datatype")
        if not isinstance(datatype, str) or datatype not in V2_DTYPES:  # a JSON object or list is no name (and unhashable)
            raise ProtocolError(f"input {name!r}: datatype {datatype!r} is not supported (use one of {', '.join(V2_DTYPES)})")
        dtype = V2_DTYPES[datatype]
        shape = _as_int_shape(tensor.get("shape"), name)
        if max_batch is not None and shape and shape[0] > max_batch:
            raise ProtocolError(f"input {name!r}: batch {shape[0]} is over the limit of {max_batch} (SPINE_MAX_BATCH_SIZE)")
        count = math.prod(shape)  # exact: np.prod in int64 wraps (2**40 x 2**40 x ... == 0) and reshape then fails
        params = tensor.get("parameters") or {}
        size = params.get("binary_data_size") if isinstance(params, dict) else None
        if size is not None:
            expected = count * dtype.itemsize
            if not isinstance(size, int) or size != expected:
                raise ProtocolError(f"input {name!r}: binary_data_size {size} != {expected} bytes for {datatype}{list(shape)}")
            if offset + size > len(binary):
                raise ProtocolError(f"input {name!r}: the body holds fewer binary bytes than declared")
            array = np.frombuffer(binary[offset : offset + size], dtype=dtype.newbyteorder("<")).astype(dtype, copy=True)
            offset += size
        else:
            if "data" not in tensor:
                raise ProtocolError(f"input {name!r} has neither 'data' nor parameters.binary_data_size")
            try:
                array = np.asarray(tensor["data"], dtype=dtype)
            except (ValueError, TypeError, OverflowError) as exc:  # OverflowError: 2**70 as INT32
                raise ProtocolError(f"input {name!r}: data is not {datatype}: {exc}") from None
            if array.size != count:
                raise ProtocolError(f"input {name!r}: {array.size} values for shape {list(shape)} ({count} values)")
        try:
            inputs[name] = array.reshape(shape)
        except ValueError as exc:  # e.g. [0, 2**63]: zero values, but a dimension numpy cannot represent
            raise ProtocolError(f"input {name!r}: shape {list(shape)} is not representable: {exc}") from None
    if offset != len(binary):
        raise ProtocolError(f"the body holds {len(binary) - offset} binary bytes that no input declares")

    outputs: dict[str, bool] = {}
    for tensor in request.get("outputs") or []:
        if not isinstance(tensor, dict) or not isinstance(tensor.get("name"), str):
            raise ProtocolError("every requested output needs a 'name'")
        params = tensor.get("parameters") or {}
        outputs[tensor["name"]] = bool(params.get("binary_data", False)) if isinstance(params, dict) else False
    parameters = request.get("parameters") or {}
    if not isinstance(parameters, dict):
        raise ProtocolError("'parameters' must be an object")
    request_id = request.get("id")
    return InferRequest(
        id=str(request_id) if request_id is not None else None,
        inputs=inputs,
        outputs=outputs,
        binary_default=bool(parameters.get("binary_data_output", False)),
        parameters=parameters,
    )


def encode_infer_response(
    model_name: str, model_version: str, request: InferRequest, results: dict[str, np.ndarray]
) -> tuple[bytes, int | None]:
    """(body, JSON header length or None when the whole body is JSON)."""
    outputs: list[dict[str, Any]] = []
    blobs: list[bytes] = []
    for name, array in results.items():
        binary = request.outputs.get(name, request.binary_default)
        array = np.ascontiguousarray(array)
        out: dict[str, Any] = {"name": name, "datatype": numpy_to_v2(array.dtype), "shape": list(array.shape)}
        if binary:
            blob = array.astype(array.dtype.newbyteorder("<"), copy=False).tobytes()
            out["parameters"] = {"binary_data_size": len(blob)}
            blobs.append(blob)
        else:
            out["data"] = array.ravel().tolist()
        outputs.append(out)
    response: dict[str, Any] = {"model_name": model_name, "model_version": model_version, "outputs": outputs}
    if request.id is not None:
        response["id"] = request.id
    head = json.dumps(response, separators=(",", ":")).encode()
    if not blobs:
        return head, None
    return head + b"".join(blobs), len(head)


def decompress(body: bytes, encoding: str | None, limit: int) -> bytes:
    """The body as sent (Content-Encoding gzip or deflate), never expanded past `limit` bytes."""
    if not encoding or encoding == "identity":
        return body
    if encoding not in ("gzip", "deflate"):
        raise UnsupportedEncodingError(f"Content-Encoding {encoding!r} is not supported (gzip, deflate)")
    # Bounded: a small compressed body must not expand past the upload limit.
    decompressor = zlib.decompressobj(wbits=31 if encoding == "gzip" else 15)
    try:
        out = decompressor.decompress(body, limit + 1)
    except zlib.error as exc:
        raise ProtocolError(f"the {encoding} body cannot be decompressed: {exc}") from None
    if len(out) > limit:
        raise DecompressedTooLargeError(f"the decompressed body is over the limit of {limit:,} bytes")
    return out


def tensor_metadata(model: LoadedModel) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(inputs, outputs) as the protocol describes tensors: from the session, or the manifest if it did not load."""

    def shape(dims: list[int | None]) -> list[int]:
        return [-1 if d is None else d for d in dims]

    if model.inputs:  # from the session: the truth
        inputs = [{"name": s.name, "datatype": ort_to_v2(s.datatype), "shape": shape(s.shape)} for s in model.inputs]
        outputs = [{"name": s.name, "datatype": ort_to_v2(s.datatype), "shape": shape(s.shape)} for s in model.outputs]
    else:  # not loadable: what the manifest promises
        e = model.entry
        inputs = [{"name": e.input_name, "datatype": "FP32", "shape": shape(e.input_shape)}]
        outputs = [{"name": e.output_name, "datatype": "FP32", "shape": shape(e.output_shape)}]
    return inputs, outputs


def triton_config(model: LoadedModel, max_batch_size: int) -> dict[str, Any]:
    """Triton's JSON model configuration (batch dimension implicit, as in config.pbtxt)."""
    inputs, outputs = tensor_metadata(model)

    def triton(t: dict[str, Any]) -> dict[str, Any]:
        return {"name": t["name"], "data_type": f"TYPE_{t['datatype']}", "dims": t["shape"][1:]}

    return {
        "name": model.name,
        "platform": "onnxruntime_onnx",
        "backend": "onnxruntime",
        "max_batch_size": max_batch_size,
        "input": [triton(t) for t in inputs],
        "output": [triton(t) for t in outputs],
    }


# --------------------------------------------------------------------------- OpenAPI description


class V2Error(BaseModel):
    """The protocol's error body (what Triton answers and tritonclient reads)."""

    model_config = ConfigDict(extra="allow", json_schema_extra={"examples": [{"error": "unknown model 'Ap_Rib'"}]})

    error: str


V2_ERROR_TEXT = {
    400: "Malformed request, or not ready (readiness endpoints)",
    404: "Unknown model or version",
    413: "Body (or its decompressed form) over SPINE_MAX_UPLOAD_BYTES",
    415: "Content-Encoding other than gzip/deflate",
    503: "Models loading, the model is not servable, or overloaded (Retry-After)",
}


def v2_errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    return {status: {"model": V2Error, "description": V2_ERROR_TEXT[status]} for status in statuses}


_TENSOR_SCHEMA = {
    "type": "object",
    "required": ["name", "datatype", "shape"],
    "properties": {
        "name": {"type": "string"},
        "datatype": {"type": "string", "enum": sorted(V2_DTYPES)},
        "shape": {"type": "array", "items": {"type": "integer", "minimum": 0}},
        "data": {"description": "Row-major values (nested or flat), unless parameters.binary_data_size is given"},
        "parameters": {"type": "object", "properties": {"binary_data_size": {"type": "integer", "minimum": 0}}},
    },
}
INFER_REQUEST_SCHEMA = {
    "type": "object",
    "required": ["inputs"],
    "properties": {
        "id": {"type": "string"},
        "inputs": {"type": "array", "minItems": 1, "items": _TENSOR_SCHEMA},
        "outputs": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["name"],
                "properties": {
                    "name": {"type": "string"},
                    "parameters": {"type": "object", "properties": {"binary_data": {"type": "boolean"}}},
                },
            },
        },
        "parameters": {"type": "object", "properties": {"binary_data_output": {"type": "boolean"}}},
    },
}
INFER_OPENAPI = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "schema": INFER_REQUEST_SCHEMA,
                "example": {
                    "inputs": [{"name": "input_image", "datatype": "FP32", "shape": [1, 512, 256, 1], "data": [0.0, "…"]}]
                },
            },
            "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
        },
    }
}
