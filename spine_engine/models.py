"""One served model: its onnxruntime session, tensor specs, and the checks and warm-up that make it servable."""

from __future__ import annotations

import ctypes
import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnxruntime as ort

from spine_core.landmarks import ACCEPTED_CHANNELS as LANDMARK_CHANNELS
from spine_core.manifest import ModelEntry, sha256_file
from spine_core.preprocessing import MASK_THRESHOLD
from spine_core.structures import CLASSES
from spine_core.vertebra_ends import ENDS_CLASSES

log = logging.getLogger(__name__)

DEFAULT_PROVIDERS = ["CUDAExecutionProvider", "CPUExecutionProvider"]
GPU_PROVIDERS = ("CUDAExecutionProvider", "TensorrtExecutionProvider")
ProviderSpec = str | tuple[str, dict[str, str]]

# ONNX tensor element types -> numpy: the one table (the KServe v2 codec derives its names from it).
ORT_DTYPES: dict[str, np.dtype] = {
    "tensor(float)": np.dtype(np.float32),
    "tensor(float16)": np.dtype(np.float16),
    "tensor(double)": np.dtype(np.float64),
    "tensor(int8)": np.dtype(np.int8),
    "tensor(int16)": np.dtype(np.int16),
    "tensor(int32)": np.dtype(np.int32),
    "tensor(int64)": np.dtype(np.int64),
    "tensor(uint8)": np.dtype(np.uint8),
    "tensor(uint16)": np.dtype(np.uint16),
    "tensor(uint32)": np.dtype(np.uint32),
    "tensor(uint64)": np.dtype(np.uint64),
    "tensor(bool)": np.dtype(np.bool_),
}


@dataclass
class TensorSpec:
    name: str
    datatype: str  # onnxruntime type string, e.g. tensor(float)
    shape: list[int | None]  # None for a dynamic dimension

    @property
    def dtype(self) -> np.dtype:
        return ORT_DTYPES.get(self.datatype, np.dtype(np.float32))


@dataclass
class LoadedModel:
    entry: ModelEntry
    path: Path
    session: ort.InferenceSession | None = None
    provider: str | None = None
    problem: str | None = None
    warm: bool = False
    load_ms: float = 0.0
    inputs: list[TensorSpec] = field(default_factory=list)
    outputs: list[TensorSpec] = field(default_factory=list)
    precision: str = "fp32"  # of the file this session runs: the entry's, or one of its variants'

    @property
    def name(self) -> str:
        return self.entry.name

    @property
    def sha256(self) -> str:
        """sha256 of the file served (the variant's when a variant is served)."""
        variant = self.entry.variants.get(self.precision)
        return variant.sha256 if variant else self.entry.sha256

    @property
    def servable(self) -> bool:
        return self.session is not None and self.problem is None

    @property
    def input_hw(self) -> tuple[int, int]:
        shape = self.entry.input_shape
        return int(shape[1]), int(shape[2])  # type: ignore[arg-type]  # validated at load

    @property
    def threshold(self) -> float:
        return MASK_THRESHOLD if self.entry.threshold is None else float(self.entry.threshold)

    def run_batch(self, batch: np.ndarray) -> np.ndarray:
        """The manifest output for an NHWC batch; a graph exported with a fixed batch is fed in padded slices."""
        session, name, output = self.session, self.entry.input_name, self.entry.output_name
        assert session is not None
        fixed = next((s.shape[0] for s in self.inputs if s.name == name), None)
        if fixed is None or fixed == batch.shape[0]:
            return session.run([output], {name: batch})[0]
        parts = []
        for i in range(0, len(batch), fixed):
            part = batch[i : i + fixed]
            padded = np.concatenate([part, np.zeros((fixed - len(part), *part.shape[1:]), part.dtype)])
            parts.append(session.run([output], {name: padded})[0][: len(part)])
        return np.concatenate(parts)


def session_options(intra_op_threads: int, inter_op_threads: int, spinning: bool) -> ort.SessionOptions:
    options = ort.SessionOptions()
    options.intra_op_num_threads = intra_op_threads
    options.inter_op_num_threads = inter_op_threads
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
    return options


def validate_entry(entry: ModelEntry) -> str | None:
    shape = entry.input_shape
    if len(shape) != 4 or not all(isinstance(d, int) and d > 0 for d in shape[1:]) or shape[3] != 1:
        return f"manifest input_shape {shape} is not [None, H, W, 1]"
    located = ("segmentation", "refinement", "landmarks", "tilt", "ends")
    if entry.kind in located and (entry.structure is None or entry.view is None):
        return f"manifest entry of a {entry.kind} model lacks structure or view"
    if entry.kind == "refinement" and not entry.refines:
        return "manifest entry of a refinement model does not say which model it refines (refines)"
    if entry.kind == "classification" and entry.classes and sorted(entry.classes) != sorted(CLASSES):
        return f"manifest classes {entry.classes} are not {list(CLASSES)}"
    return None


def _specs(args: Iterable[ort.NodeArg]) -> list[TensorSpec]:
    return [TensorSpec(a.name, a.type, [d if isinstance(d, int) else None for d in a.shape]) for a in args]


def check_session_matches(model: LoadedModel) -> str | None:
    """The manifest and the ONNX graph must agree, or we would feed the wrong tensor."""
    entry = model.entry
    by_name = {s.name: s for s in model.inputs}
    if entry.input_name not in by_name:
        return f"ONNX graph has no input {entry.input_name!r} (has {sorted(by_name)})"
    if entry.output_name not in {s.name for s in model.outputs}:
        return f"ONNX graph has no output {entry.output_name!r}"
    graph_shape = by_name[entry.input_name].shape
    if len(graph_shape) != 4:
        return f"ONNX input {entry.input_name!r} has rank {len(graph_shape)}, expected 4 (NHWC)"
    for want, have in zip(entry.input_shape[1:], graph_shape[1:], strict=True):
        if have is not None and have != want:
            return f"ONNX input shape {graph_shape} does not match the manifest's {entry.input_shape}"
    return None


def load_model(
    models_dir: Path,
    entry: ModelEntry,
    providers: list[ProviderSpec],
    options: ort.SessionOptions,
    warmup: bool,
    verify_sha256: bool,
    precision: str = "fp32",
) -> LoadedModel:
    """One manifest entry's session, checked against the manifest and run once; never raises (see `problem`)."""
    variant = entry.variants.get(precision) if precision != "fp32" else None
    file, expected_sha = (variant.file, variant.sha256) if variant else (entry.file, entry.sha256)
    path = models_dir / file
    model = LoadedModel(entry=entry, path=path, precision=variant.precision if variant else "fp32")
    started = time.perf_counter()
    if problem := validate_entry(entry):
        model.problem = problem
        return model
    if not path.is_file():
        model.problem = f"model file {file} is missing"
        return model
    if verify_sha256:
        digest = sha256_file(path)
        if digest != expected_sha:
            model.problem = f"model file {file} has sha256 {digest[:12]}…, the manifest says {expected_sha[:12]}…"
            return model
    try:
        session = ort.InferenceSession(str(path), sess_options=options, providers=providers)
    except Exception as exc:  # corrupt or unsupported graph
        model.problem = f"model file {file} cannot be loaded by onnxruntime: {str(exc).strip()[:300]}"
        return model
    model.session = session
    # The truth is what the session runs on, not what the build says is available.
    model.provider = session.get_providers()[0]
    model.inputs = _specs(session.get_inputs())
    model.outputs = _specs(session.get_outputs())
    if problem := check_session_matches(model):
        model.problem = problem
        return model
    if warmup:
        try:
            h, w = model.input_hw
            out = session.run([entry.output_name], {entry.input_name: np.zeros((1, h, w, 1), np.float32)})[0]
            channels = LANDMARK_CHANNELS if entry.kind == "landmarks" else (1,)
            per_image = {"classification": [(1, 2)], "tilt": [(1, 1)], "ends": [(1, len(ENDS_CLASSES))]}
            allowed = per_image.get(entry.kind, [(1, h, w, c) for c in channels])
            if tuple(out.shape) not in allowed:
                expected = " or ".join(str(list(shape)) for shape in allowed)
                model.problem = f"output shape {list(out.shape)} for one image, expected {expected}"
                return model
            model.warm = True
        except Exception as exc:
            model.problem = f"warm-up inference failed: {str(exc).strip()[:300]}"
            return model
    model.load_ms = (time.perf_counter() - started) * 1000
    return model


def _cuda_unusable_reason() -> str | None:
    """Why onnxruntime's CUDA provider cannot load here: a library it needs is missing (None: let onnxruntime try).

    Asking onnxruntime for CUDA where its libraries are missing makes it log a red
    `Failed to load library libonnxruntime_providers_cuda.so` error per session before it falls back to
    the CPU; loading the provider library ourselves first gives the same answer without that noise.
    Only a missing library counts: any other failure is left to onnxruntime, which reports it as before.
    """
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        return "this onnxruntime build has no CUDA provider"
    capi = Path(ort.__file__).parent / "capi"
    shared, cuda = capi / "libonnxruntime_providers_shared.so", capi / "libonnxruntime_providers_cuda.so"
    if not (shared.is_file() and cuda.is_file()):  # another platform's layout: let onnxruntime try
        return None
    try:
        # As onnxruntime does: the shared provider library first, global (the CUDA one resolves Provider_GetHost in it).
        ctypes.CDLL(str(shared), mode=ctypes.RTLD_GLOBAL)
        ctypes.CDLL(str(cuda))
    except OSError as exc:
        return str(exc) if "cannot open shared object file" in str(exc) else None
    return None


def usable_providers(requested: list[str]) -> list[str]:
    """`requested` without the GPU providers when CUDA cannot load here; says so in one log line."""
    gpu = [p for p in requested if p in GPU_PROVIDERS]
    if not gpu or (why := _cuda_unusable_reason()) is None:
        return list(requested)
    rest = [p for p in requested if p not in GPU_PROVIDERS] or ["CPUExecutionProvider"]
    # Expected on a machine without a GPU: said once, at start-up (answers carry `execution_provider`, no warning).
    log.info("CUDA is not usable here (%s): inference runs on %s", why, ", ".join(rest))
    return rest
