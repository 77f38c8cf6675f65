"""The KServe v2 request codec under hypothesis: whatever the body, a ProtocolError (400) or a parsed request.

Schemathesis reaches the codec through the OpenAPI document but rarely builds the shapes that broke it; these
properties aim at them: integers past int64 and int32, shapes whose product wraps in int64, nested and ragged
data, binary tails of the wrong length, and any Inference-Header-Content-Length. The three bugs it found are pinned
as HTTP regressions below (they were 500s).
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from spine_reliability_testlib import make_settings, start_client, write_models_dir

from service.kserve import V2_DTYPES, ProtocolError, parse_infer_request

EXAMPLES = 400
pytestmark = pytest.mark.filterwarnings("ignore:overflow encountered in cast:RuntimeWarning")  # 1e300 as FP16 is inf

EXTREMES = [2**31, 2**32, 2**40, 2**63, 2**64, 2**70, -(2**31) - 1, -(2**63) - 1, -(2**70)]
big_ints = st.one_of(st.sampled_from(EXTREMES), st.sampled_from(EXTREMES), st.integers(-(2**80), 2**80))
scalars = st.one_of(st.none(), st.booleans(), big_ints, st.floats(allow_nan=False), st.text(max_size=5))
json_values = st.recursive(
    scalars, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
)
data = st.recursive(st.one_of(big_ints, big_ints, scalars), lambda inner: st.lists(inner, max_size=4), max_leaves=12)
dims = st.one_of(st.integers(0, 4), st.integers(0, 4), st.sampled_from([0, 1, 2**31, 2**32, 2**40, 2**63, 2**64]))
# Well-formed structure with hostile values (wrong types everywhere: test_parse_of_any_json_object).
shapes = st.lists(dims, max_size=4)
# Mostly real names; sometimes any JSON value (an object as datatype was a 500: unhashable, found by schemathesis).
datatypes = st.one_of(st.sampled_from(sorted(V2_DTYPES)), st.sampled_from(sorted(V2_DTYPES)), json_values)
names = st.one_of(st.sampled_from(["x", "mask_input"]), st.text(max_size=4))
json_tensors = st.fixed_dictionaries({"name": names, "datatype": datatypes, "shape": shapes, "data": data})
binary_size = st.one_of(big_ints, dims, scalars)
binary_tensors = st.fixed_dictionaries(
    {
        "name": names,
        "datatype": datatypes,
        "shape": shapes,
        "parameters": st.fixed_dictionaries({"binary_data_size": binary_size}),
    }
)
tensors = st.one_of(json_tensors, json_tensors, binary_tensors)
# Well-formed structure, hostile values (the structure itself is fuzzed by the next two tests).
requests = st.fixed_dictionaries(
    {"inputs": st.lists(tensors, min_size=1, max_size=2)},
    optional={
        "id": scalars,
        "outputs": st.lists(st.one_of(scalars, st.fixed_dictionaries({"name": st.text(max_size=5)}))),
        "parameters": st.fixed_dictionaries({}, optional={"binary_data_output": scalars}),
    },
)
noisy_requests = st.dictionaries(st.sampled_from(["inputs", "outputs", "id", "parameters"]), json_values)


def _parse_or_protocol_error(body: bytes, header: str | None) -> None:
    try:
        parsed = parse_infer_request(body, header, max_batch=32)
    except ProtocolError:
        return
    for name, array in parsed.inputs.items():
        assert isinstance(name, str) and isinstance(array, np.ndarray)


@settings(max_examples=EXAMPLES, deadline=None, database=None, suppress_health_check=list(HealthCheck))
@given(request=requests)
def test_json_tensors_raise_only_protocol_errors(request: dict) -> None:
    _parse_or_protocol_error(json.dumps(request).encode(), None)


@settings(max_examples=EXAMPLES, deadline=None, database=None, suppress_health_check=list(HealthCheck))
@given(request=requests, tail=st.binary(max_size=64), header=st.one_of(st.integers(-5, 400), st.text(max_size=4)))
def test_binary_tensors_raise_only_protocol_errors(request: dict, tail: bytes, header: int | str) -> None:
    head = json.dumps(request).encode()
    header_value = str(len(head)) if isinstance(header, int) and header % 2 else str(header)  # often exactly right
    _parse_or_protocol_error(head + tail, header_value)


@settings(max_examples=EXAMPLES, deadline=None, database=None, suppress_health_check=list(HealthCheck))
@given(request=noisy_requests)
def test_parse_of_any_json_object(request: dict) -> None:
    with contextlib.suppress(ProtocolError):
        parse_infer_request(json.dumps(request).encode(), None, max_batch=32)


@settings(max_examples=EXAMPLES, deadline=None, database=None)
@given(body=st.binary(max_size=200), header=st.one_of(st.none(), st.integers(-5, 250).map(str)))
def test_parse_of_arbitrary_bytes(body: bytes, header: str | None) -> None:
    with contextlib.suppress(ProtocolError):
        parse_infer_request(body, header, max_batch=32)


# --------------------------------------------------------------------------- the 500s it found, over HTTP


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    c = start_client(make_settings(write_models_dir(Path(tmp_path_factory.mktemp("models")))))
    try:
        yield c
    finally:
        c.__exit__(None, None, None)


@pytest.mark.parametrize(
    "tensor",
    [
        {"name": "mask_input", "datatype": "INT32", "shape": [1], "data": [2**70]},  # OverflowError in np.asarray
        {"name": "mask_input", "datatype": "FP32", "shape": [1, 2**40, 2**40], "data": []},  # int64 product wraps to 0
        {"name": "mask_input", "datatype": "FP32", "shape": [1, 2**40, 2**40], "parameters": {"binary_data_size": 0}},
        {"name": "mask_input", "datatype": "BOOL", "shape": [0, 2**63], "data": []},  # numpy: maximum dimension exceeded
    ],
    ids=["int-overflow", "shape-product-wraps", "shape-product-wraps-binary", "dimension-past-int64"],
)
def test_former_500s_are_400s(client: TestClient, tensor: dict) -> None:
    r = client.post("/v2/models/Mask_Classifier/infer", json={"inputs": [tensor]})
    assert r.status_code == 400, r.text
    assert "error" in r.json()
    assert client.get("/v2/health/live").status_code == 200
