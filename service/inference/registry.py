"""Every model of the manifest in one onnxruntime session each, and the inference built on them.

No web framework here: the HTTP layer and the evaluation CLI both call this module.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
from PIL import Image

from spine_core.manifest import MANIFEST_FILE, PRECISIONS, Manifest, ModelEntry, load_manifest, sha256_file
from spine_core.preprocessing import (
    MASK_THRESHOLD,
    CropBox,
    Letterbox,
    crop_probabilities_to_letterbox,
    crop_probabilities_to_source,
    letterbox_probabilities_to_crop,
    mask_to_classifier_input,
    preprocess_crop,
    preprocess_image,
    probabilities_to_source_mask,
    to_unet_batch,
)
from spine_core.structures import CLASSES, STRUCTURES, VIEWS

log = logging.getLogger(__name__)

DEFAULT_PROVIDERS = ["CUDAExecutionProvider", "CPUExecutionProvider"]
GPU_PROVIDERS = ("CUDAExecutionProvider", "TensorrtExecutionProvider")
MANIFEST_KEY = "manifest"  # key in `problems` for a manifest that cannot be read

# ONNX tensor element types -> numpy, for checking what a caller hands to `run`.
_ORT_TYPES: dict[str, np.dtype] = {
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


def default_threads() -> int:
    """Intra-op threads when none are given: the CPUs this process may use (capped).

    onnxruntime sizes its pool to every core of the host, which oversubscribes a container limited by
    cpuset; the affinity mask is what this process may actually use.
    """
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1
    return max(1, min(cores, 8))


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name, "").strip()
    try:
        return int(value) if value else default
    except ValueError:
        log.warning("ignoring %s=%r (not an integer)", name, value)
        return default


def _env_bool(name: str, default: bool) -> bool:
    value = os.environ.get(name, "").strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    return default


@dataclass(frozen=True)
class RuntimeTuning:
    """How inference is scheduled (benchmarks/ and docs/benchmarks.md justify the defaults with measurements).

    `inference_slots`: session runs at once across all models (default: one per CPU this process may
    use, each session with CPUs / slots intra-op threads, i.e. 1): a request's U-Nets run side by side.
    0 = no scheduler: every caller runs its own inputs directly (the behaviour before it).
    `max_batch`: inputs of one model queued by different requests while the slots are busy run as one
    batch of at most this many images (dynamic micro-batching). None = automatic: 8 when the sessions
    run on a GPU, 1 (off) on the CPU, where a U-Net's cost per image does not drop with the batch.
    `ort_spinning`: onnxruntime's intra-op threads busy-wait between parallel sections (only matters
    with more than one intra-op thread; it takes CPU from the request threads).
    Read from SPINE_INFERENCE_SLOTS, SPINE_INFERENCE_MAX_BATCH and SPINE_ORT_SPINNING (environment only).
    """

    inference_slots: int = field(default_factory=default_threads)
    max_batch: int | None = None
    ort_spinning: bool = False

    @classmethod
    def from_env(cls) -> RuntimeTuning:
        d = cls()
        batch = os.environ.get("SPINE_INFERENCE_MAX_BATCH", "").strip()
        return cls(
            inference_slots=max(0, _env_int("SPINE_INFERENCE_SLOTS", d.inference_slots)),
            max_batch=max(1, _env_int("SPINE_INFERENCE_MAX_BATCH", 1)) if batch and batch.lower() != "auto" else None,
            ort_spinning=_env_bool("SPINE_ORT_SPINNING", d.ort_spinning),
        )


def default_intra_op_threads() -> int:
    """Intra-op threads per session when none are given: the CPUs shared among the inference slots."""
    return max(1, default_threads() // max(1, RuntimeTuning.from_env().inference_slots))


class _Job:
    __slots__ = ("done", "error", "group", "inputs", "model", "result")

    def __init__(self, model: LoadedModel, inputs: np.ndarray) -> None:
        self.model, self.inputs = model, inputs
        self.group = 0  # the run_all call that queued it
        self.result: np.ndarray | None = None
        self.error: BaseException | None = None
        self.done = False


class _Scheduler:
    """`slots` threads run the queued jobs; queued inputs of one model are batched into one run.

    A caller queues its jobs (one request's U-Nets together, largest first) and waits. A slot takes the
    oldest job, preferring a model that is not running already, plus queued inputs of the same model
    from other callers (never two jobs of one call: those were split to run side by side), up to
    `max_batch` images: at low load a request's models run side by side on the slots; under load,
    inputs wait while the slots are busy and may run in batches.
    The threads belong to a ThreadPoolExecutor, which lets them go when the registry is dropped.
    """

    def __init__(self, slots: int, max_batch: int, run: Callable[[LoadedModel, np.ndarray], np.ndarray]) -> None:
        from concurrent.futures import ThreadPoolExecutor

        self.slots, self.max_batch, self._run = slots, max_batch, run
        self._cond = threading.Condition()
        self._queue: list[_Job] = []
        self._running: dict[str, int] = {}
        self._calls = 0
        self.pool = ThreadPoolExecutor(max_workers=slots, thread_name_prefix="inference")

    def _take(self) -> list[_Job] | None:
        """Under the lock: the next batch to run, or None when the queue is empty."""
        if not self._queue:
            return None
        first = next((j for j in self._queue if not self._running.get(j.model.name)), self._queue[0])
        batch, images, groups = [first], len(first.inputs), {first.group}
        for job in self._queue:
            if job.model is first.model and job.group not in groups and images + len(job.inputs) <= self.max_batch:
                batch.append(job)
                images += len(job.inputs)
                groups.add(job.group)
        for job in batch:
            self._queue.remove(job)
        self._running[first.model.name] = self._running.get(first.model.name, 0) + 1
        return batch

    def _drain_one(self) -> None:
        with self._cond:
            batch = self._take()
        if batch is None:  # its job went into an earlier batch
            return
        try:
            inputs = batch[0].inputs if len(batch) == 1 else np.concatenate([j.inputs for j in batch])
            out = self._run(batch[0].model, inputs)
            start = 0
            for job in batch:
                job.result = out[start : start + len(job.inputs)]
                start += len(job.inputs)
        except BaseException as exc:  # handed to every caller of the batch
            for job in batch:
                job.error = exc
        finally:
            with self._cond:
                for job in batch:
                    job.done = True
                self._running[batch[0].model.name] -= 1
                self._cond.notify_all()

    def run_all(self, jobs: list[_Job]) -> list[np.ndarray]:
        """Queue the jobs, wait until they are done; their outputs in order (raises a job's error)."""
        with self._cond:
            self._calls += 1
            for job in jobs:
                job.group = self._calls
            self._queue.extend(jobs)
        for _ in jobs:  # one drain per job: every job is taken by some drain, alone or in a batch
            self.pool.submit(self._drain_one)
        with self._cond:
            while not all(j.done for j in jobs):
                self._cond.wait()
        for job in jobs:
            if job.error is not None:
                raise job.error
        return [job.result for job in jobs]  # type: ignore[misc]


_THRESHOLD_BAND = 5e-7  # > the largest difference two float32 bilinear passes can make (~2 ulp of 1.0)


def _source_mask(probabilities: np.ndarray, box: Letterbox, threshold: float) -> np.ndarray:
    """`probabilities_to_source_mask`, resizing only the rows and columns a True pixel can reach.

    Bilinear resampling is a convex combination of the input pixels under its support, so an output
    pixel can reach the threshold only if one of those inputs does: outside the (widened) bounding box of
    the thresholded content, the result is False without computing it. Inside, Pillow resamples with the
    same scale and sample positions as the full resize (its `box` argument).
    """
    content = probabilities[box.top : box.top + box.content_h, box.left : box.left + box.content_w]
    out = np.zeros((box.src_h, box.src_w), dtype=bool)
    hot = content >= threshold
    rows = np.flatnonzero(hot.any(axis=1))
    if rows.size == 0:
        return out
    cols = np.flatnonzero(hot[rows[0] : rows[-1] + 1].any(axis=0))

    def span(lo: int, hi: int, n_in: int, n_out: int) -> tuple[int, int]:
        scale = n_in / n_out
        support = max(scale, 1.0)  # the bilinear filter's support in input pixels (antialiased when shrinking)
        first = int(np.floor((lo - 0.5 - support) / scale - 0.5)) - 1
        last = int(np.ceil((hi + 0.5 + support) / scale - 0.5)) + 1
        return max(first, 0), min(last + 1, n_out)

    y0, y1 = span(int(rows[0]), int(rows[-1]), box.content_h, box.src_h)
    x0, x1 = span(int(cols[0]), int(cols[-1]), box.content_w, box.src_w)
    if (y1 - y0) * (x1 - x0) >= 0.7 * box.src_h * box.src_w:  # nearly everything: the plain resize
        return probabilities_to_source_mask(probabilities, box, threshold)
    sy, sx = box.content_h / box.src_h, box.content_w / box.src_w
    img = Image.fromarray(np.ascontiguousarray(content, dtype=np.float32), mode="F")
    crop = np.asarray(img.resize((x1 - x0, y1 - y0), Image.Resampling.BILINEAR, box=(x0 * sx, y0 * sy, x1 * sx, y1 * sy)))
    # The crop's sample positions equal the full resize's up to the last bits of a double, so a value can
    # differ by a couple of float32 ulps: where one is that close to the threshold, take the full resize.
    if np.any(np.abs(crop - np.float32(threshold)) <= _THRESHOLD_BAND):
        return probabilities_to_source_mask(probabilities, box, threshold)
    out[y0:y1, x0:x1] = crop >= threshold
    return out


class InferenceError(Exception):
    """Base class of the errors a caller can act on (the HTTP layer maps them to 4xx/503)."""


class UnknownViewError(InferenceError, ValueError):
    pass


class UnknownStructureError(InferenceError, ValueError):
    pass


class UnknownModelError(InferenceError, KeyError):
    def __str__(self) -> str:  # KeyError quotes its message otherwise
        return str(self.args[0]) if self.args else "unknown model"


class InvalidInputError(InferenceError, ValueError):
    pass


class ModelUnavailableError(InferenceError):
    """A model the request needs is listed but not servable (missing, corrupt, sha mismatch, no GPU...)."""

    def __init__(self, problems: Mapping[str, str]):
        self.problems = dict(problems)
        super().__init__("; ".join(f"{name}: {why}" for name, why in self.problems.items()))


@dataclass
class TensorSpec:
    name: str
    datatype: str  # onnxruntime type string, e.g. tensor(float)
    shape: list[int | None]  # None for a dynamic dimension

    @property
    def dtype(self) -> np.dtype:
        return _ORT_TYPES.get(self.datatype, np.dtype(np.float32))


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


@dataclass
class SegmentationResult:
    view: str
    masks: dict[str, np.ndarray]  # structure -> bool mask at the ORIGINAL image size
    model_frame_masks: dict[str, np.ndarray]  # structure -> bool mask in the letterboxed model frame
    letterbox: Letterbox  # of the first model; see `letterboxes` if a view mixes input sizes
    letterboxes: dict[str, Letterbox]
    timings_ms: dict[str, float]  # preprocess, inference, postprocess (+ refinement when a model refined a mask)
    models_used: list[str]  # model names: the U-Nets in the order of `masks`, then any refinement models that ran
    refined: list[str] = field(default_factory=list)  # structures whose mask came from a refinement model


def _validate_entry(entry: ModelEntry) -> str | None:
    shape = entry.input_shape
    if len(shape) != 4 or not all(isinstance(d, int) and d > 0 for d in shape[1:]) or shape[3] != 1:
        return f"manifest input_shape {shape} is not [None, H, W, 1]"
    if entry.kind in ("segmentation", "refinement") and (entry.structure is None or entry.view is None):
        return f"manifest entry of a {entry.kind} model lacks structure or view"
    if entry.kind == "refinement" and not entry.refines:
        return "manifest entry of a refinement model does not say which model it refines (refines)"
    if entry.kind == "classification" and entry.classes and sorted(entry.classes) != sorted(CLASSES):
        return f"manifest classes {entry.classes} are not {list(CLASSES)}"
    return None


def _specs(args: Iterable[ort.NodeArg]) -> list[TensorSpec]:
    return [TensorSpec(a.name, a.type, [d if isinstance(d, int) else None for d in a.shape]) for a in args]


def _check_session_matches(model: LoadedModel) -> str | None:
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


class ModelRegistry:
    """The served models. Build with `ModelRegistry.load`; immutable afterwards, safe to share between threads."""

    def __init__(
        self,
        models_dir: Path,
        manifest: Manifest | None,
        models: dict[str, LoadedModel],
        problems: dict[str, str],
        requested_providers: list[str],
        tuning: RuntimeTuning | None = None,
        precision: str = "fp32",
        use_refinement: bool = False,
    ) -> None:
        self.models_dir = models_dir
        self.use_refinement = use_refinement
        self.precision = precision  # requested; each LoadedModel says what it runs
        self.manifest = manifest
        self.models = models
        self.problems = problems
        self.requested_providers = requested_providers
        self.tuning = tuning or RuntimeTuning()
        self.on_gpu = any(m.provider in GPU_PROVIDERS for m in models.values())
        self.max_batch = self.tuning.max_batch or (8 if self.on_gpu else 1)
        self._scheduler = (
            _Scheduler(self.tuning.inference_slots, self.max_batch, self._run) if self.tuning.inference_slots > 0 else None
        )
        # Set by the service to feed its metrics: (model name, seconds, batch size).
        self.on_inference: Callable[[str, float, int], None] | None = None

    # ------------------------------------------------------------------ loading

    @classmethod
    def load(
        cls,
        models_dir: Path,
        providers: list[str] | None = None,
        intra_op_threads: int | None = None,
        warmup: bool = True,
        *,
        inter_op_threads: int | None = 1,
        require_gpu: bool = False,
        verify_sha256: bool = True,
        tuning: RuntimeTuning | None = None,
        precision: str = "fp32",
        provider_options: Mapping[str, Mapping[str, str]] | None = None,
        use_refinement: bool = False,
    ) -> ModelRegistry:
        """Load every manifest model. Never raises for a bad model: the problem is recorded under its name.

        `tuning` defaults to `RuntimeTuning.from_env()` (SPINE_INFERENCE_SLOTS, ...). `precision` "int8"
        serves each model's int8 variant where the manifest lists one, the fp32 file otherwise.
        `provider_options` maps a provider name to its onnxruntime options (e.g. CUDA's
        `cudnn_conv_algo_search`). On a GPU with `warmup`, every batch size the micro-batching can form is
        run once before ready, so no request pays for cuDNN's algorithm search on a new shape.
        `use_refinement` serves a structure's mask from its refinement model where the manifest has one
        (SPINE_REFINEMENT; off by default, as in the service: 1.6x a study's CPU time, docs/training.md).
        """
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, not {precision!r}")
        models_dir = Path(models_dir)
        providers = list(providers or DEFAULT_PROVIDERS)
        tuning = tuning or RuntimeTuning.from_env()
        problems: dict[str, str] = {}
        try:
            manifest = load_manifest(models_dir)
        except FileNotFoundError:
            problems[MANIFEST_KEY] = f"{models_dir / MANIFEST_FILE} not found (set SPINE_MODELS_DIR?)"
            return cls(models_dir, None, {}, problems, providers, tuning, precision, use_refinement)
        except Exception as exc:  # invalid JSON or schema: report, do not crash the service
            problems[MANIFEST_KEY] = f"{models_dir / MANIFEST_FILE} is invalid: {exc}"
            return cls(models_dir, None, {}, problems, providers, tuning, precision, use_refinement)
        if not manifest.models:
            problems[MANIFEST_KEY] = "the manifest lists no models"

        options = ort.SessionOptions()
        options.intra_op_num_threads = intra_op_threads or max(1, default_threads() // max(1, tuning.inference_slots))
        options.inter_op_num_threads = inter_op_threads or 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.add_session_config_entry("session.intra_op.allow_spinning", "1" if tuning.ort_spinning else "0")

        models: dict[str, LoadedModel] = {}
        usable = list(providers)
        for entry in manifest.models:
            with_options = [(p, dict(provider_options[p])) if provider_options and p in provider_options else p for p in usable]
            model = cls._load_one(models_dir, entry, with_options, options, warmup, verify_sha256, precision)
            if model.session is not None:
                # A provider that failed to start for one session fails for all (missing CUDA libraries, no
                # device): stop asking, so the failure is logged once rather than once per model.
                registered = model.session.get_providers()
                usable = [p for p in usable if p in registered] or registered
            if model.servable and require_gpu and model.provider not in GPU_PROVIDERS:
                model.problem = f"require_gpu is set but the session runs on {model.provider} (CUDA is not usable here)"
            if model.problem:
                problems[entry.name] = model.problem
                log.error("model %s not servable: %s", entry.name, model.problem)
            models[entry.name] = model
        first_stage = {m.name for m in manifest.segmentation_models()}
        for entry in manifest.refinement_models():
            if entry.refines not in first_stage and entry.name not in problems:
                models[entry.name].problem = problems[entry.name] = (
                    f"refines {entry.refines!r}, which is not a segmentation model of the manifest"
                )
        used = sorted({m.provider for m in models.values() if m.provider})
        if used and used != [providers[0]]:
            # Not an error (the service still works), but never silent.
            log.warning("sessions run on %s although %s was requested first", ", ".join(used), providers[0])
        served = {m.precision for m in models.values() if m.session is not None}
        if precision != "fp32" and served != {precision}:
            fp32_only = sorted(m.name for m in models.values() if m.session is not None and m.precision == "fp32")
            log.warning("precision %s requested; no such variant for %s: those run fp32", precision, ", ".join(fp32_only))
        registry = cls(models_dir, manifest, models, problems, providers, tuning, precision, use_refinement)
        if warmup and registry.on_gpu:
            registry.warm_up_batches()
        return registry

    @staticmethod
    def _load_one(
        models_dir: Path,
        entry: ModelEntry,
        providers: list[str | tuple[str, dict[str, str]]],
        options: ort.SessionOptions,
        warmup: bool,
        verify_sha256: bool,
        precision: str = "fp32",
    ) -> LoadedModel:
        variant = entry.variants.get(precision) if precision != "fp32" else None
        file, expected_sha = (variant.file, variant.sha256) if variant else (entry.file, entry.sha256)
        path = models_dir / file
        model = LoadedModel(entry=entry, path=path, precision=variant.precision if variant else "fp32")
        started = time.perf_counter()
        if problem := _validate_entry(entry):
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
        if problem := _check_session_matches(model):
            model.problem = problem
            return model
        if warmup:
            try:
                h, w = model.input_hw
                out = session.run([entry.output_name], {entry.input_name: np.zeros((1, h, w, 1), np.float32)})[0]
                expected = (1, 2) if entry.kind == "classification" else (1, h, w, 1)
                if tuple(out.shape) != expected:
                    model.problem = f"output shape {list(out.shape)} for one image, expected {list(expected)}"
                    return model
                model.warm = True
            except Exception as exc:
                model.problem = f"warm-up inference failed: {str(exc).strip()[:300]}"
                return model
        model.load_ms = (time.perf_counter() - started) * 1000
        return model

    def warm_up_batches(self) -> None:
        """Run every servable model once at each batch size 2..max_batch (batch 1 ran at load).

        cuDNN picks its convolution algorithms per input shape on the first run (an exhaustive search by
        default): doing it here keeps that cost out of the first micro-batched requests.
        """
        for model in self.models.values():
            if not model.servable:
                continue
            h, w = model.input_hw
            for batch in range(2, self.max_batch + 1):
                try:
                    self._run(model, np.zeros((batch, h, w, 1), np.float32))
                except Exception as exc:  # a model that cannot batch is reported, not served half-warm
                    model.problem = f"warm-up at batch {batch} failed: {str(exc).strip()[:300]}"
                    self.problems[model.name] = model.problem
                    break

    # ------------------------------------------------------------------ state

    @property
    def ready(self) -> bool:
        return self.manifest is not None and not self.problems and all(m.servable for m in self.models.values())

    @property
    def execution_provider(self) -> str:
        """The provider the sessions actually run on ("none" before any loaded, comma-joined if they differ)."""
        used = sorted({m.provider for m in self.models.values() if m.provider})
        return ", ".join(used) if used else "none"

    def structures_for(self, view: str) -> list[str]:
        """Structures of one view that the manifest has a model for, in the canonical order."""
        if self.manifest is None:
            return []
        available = {m.structure for m in self.manifest.segmentation_models() if m.view == view}
        ordered = [s for s in STRUCTURES if s in available]
        return ordered + sorted(s for s in available if s not in STRUCTURES and s is not None)

    def segmentation_model(self, structure: str) -> LoadedModel | None:
        return next((m for m in self.models.values() if m.entry.kind == "segmentation" and m.entry.structure == structure), None)

    def refinement_model(self, structure: str) -> LoadedModel | None:
        """The servable model that refines `structure`'s first-stage mask, if refinement is on and one is loaded."""
        if not self.use_refinement:
            return None
        return next(
            (m for m in self.models.values() if m.entry.kind == "refinement" and m.entry.structure == structure and m.servable),
            None,
        )

    def classifier(self) -> LoadedModel | None:
        return next((m for m in self.models.values() if m.entry.kind == "classification"), None)

    def get(self, name: str) -> LoadedModel:
        """A model by name, servable; raises UnknownModelError or ModelUnavailableError."""
        if name not in self.models:
            raise UnknownModelError(f"no model named {name!r}")
        model = self.models[name]
        self._require([model])
        return model

    def _require(self, models: Iterable[LoadedModel]) -> None:
        if self.manifest is None:
            raise ModelUnavailableError(self.problems)
        bad = {m.name: m.problem or "not loaded" for m in models if not m.servable}
        if bad:
            raise ModelUnavailableError(bad)

    # ------------------------------------------------------------------ inference

    def _run(self, model: LoadedModel, batch: np.ndarray) -> np.ndarray:
        started = time.perf_counter()
        session, name = model.session, model.entry.input_name
        fixed = next((s.shape[0] for s in model.inputs if s.name == name), None)
        if fixed is not None and fixed != batch.shape[0]:
            # A graph exported with a fixed batch (despite the manifest's None): feed it in slices.
            parts = []
            for i in range(0, len(batch), fixed):
                part = batch[i : i + fixed]
                padded = np.concatenate([part, np.zeros((fixed - len(part), *part.shape[1:]), part.dtype)])
                parts.append(session.run([model.entry.output_name], {name: padded})[0][: len(part)])  # type: ignore[union-attr]
            out = np.concatenate(parts)
        else:
            out = session.run([model.entry.output_name], {name: batch})[0]  # type: ignore[union-attr]
        if self.on_inference is not None:
            self.on_inference(model.name, time.perf_counter() - started, int(batch.shape[0]))
        return out

    def _infer(self, work: list[tuple[LoadedModel, np.ndarray]]) -> list[np.ndarray]:
        """Run each (model, batch): through the scheduler (batched with other callers' inputs) or directly."""
        if self._scheduler is None:
            return [self._run(model, batch) for model, batch in work]
        return self._scheduler.run_all([_Job(model, batch) for model, batch in work])

    def run(self, name: str, inputs: Mapping[str, np.ndarray], outputs: list[str] | None = None) -> dict[str, np.ndarray]:
        """Raw inference on one model (the KServe v2 endpoint): checked names, dtypes and shapes."""
        model = self.get(name)
        specs = {s.name: s for s in model.inputs}
        unknown = set(inputs) - set(specs)
        missing = set(specs) - set(inputs)
        if unknown or missing:
            raise InvalidInputError(f"model {name} takes inputs {sorted(specs)}; got {sorted(inputs)}")
        feed = {}
        for key, array in inputs.items():
            spec = specs[key]
            if array.dtype != spec.dtype:
                raise InvalidInputError(f"input {key!r} must be {spec.dtype}, got {array.dtype}")
            same_rank = array.ndim == len(spec.shape)
            fits = same_rank and all(d is None or d == a for d, a in zip(spec.shape, array.shape, strict=False))
            if not fits:
                raise InvalidInputError(f"input {key!r} must have shape {spec.shape} (None = any), got {list(array.shape)}")
            feed[key] = array
        output_names = [s.name for s in model.outputs]
        wanted = outputs or output_names
        if unknown_out := set(wanted) - set(output_names):
            raise InvalidInputError(f"model {name} has no output(s) {sorted(unknown_out)}; it has {output_names}")
        started = time.perf_counter()
        try:
            results = model.session.run(wanted, feed)  # type: ignore[union-attr]
        except Exception as exc:  # e.g. a spatial size the graph cannot take
            raise InvalidInputError(f"onnxruntime rejected the input: {str(exc).strip()[:300]}") from exc
        if self.on_inference is not None:
            batch = next(iter(feed.values())).shape[0] if feed else 1
            self.on_inference(name, time.perf_counter() - started, int(batch))
        return dict(zip(wanted, results, strict=True))

    def _segmentation_models(self, view: str, structures: list[str] | None) -> list[LoadedModel]:
        if view not in VIEWS:
            raise UnknownViewError(f"unknown view {view!r}; expected one of {', '.join(VIEWS)}")
        if self.manifest is None:
            raise ModelUnavailableError(self.problems)
        available = self.structures_for(view)
        if structures is None:
            if not available:
                raise UnknownStructureError(f"the manifest has no segmentation models for view {view}")
            structures = available
        if not structures:
            raise UnknownStructureError("no structures requested")
        chosen: list[LoadedModel] = []
        for structure in dict.fromkeys(structures):  # de-duplicated, order kept
            if structure not in available:
                other = STRUCTURES.get(structure)
                if other is not None and other != view:
                    why = f"structure {structure!r} belongs to view {other}, not {view}"
                elif other is not None:
                    why = f"the manifest has no model for structure {structure!r}"
                else:
                    why = f"unknown structure {structure!r}"
                raise UnknownStructureError(f"{why}; {view} structures: {', '.join(available) or 'none'}")
            chosen.append(self.segmentation_model(structure))  # type: ignore[arg-type]
        self._require(chosen)
        return chosen

    def resolve_structures(self, view: str, structures: list[str] | None = None) -> list[str]:
        """Check a request before the expensive work: the structures `segment` would run, or the error it would raise."""
        return [m.entry.structure for m in self._segmentation_models(view, structures)]  # type: ignore[misc]

    def segment(self, image: np.ndarray, view: str, structures: list[str] | None = None) -> SegmentationResult:
        """Segment one decoded radiograph (any dtype, gray or colour) with the U-Nets of its view."""
        return self.segment_many([(image, view, structures)])[0]

    def parallel_map(self, fn: Callable[[Any], Any], items: list[Any]) -> list[Any]:
        """`[fn(x) for x in items]` on the inference slots' threads (in order; sequential without a scheduler).

        For the CPU work around inference (decoding, preprocessing, resizing, encoding): one request's
        pieces use every core, and under load all of it queues on the same threads instead of piling up
        more runnable threads than cores. `fn` must not wait for other work on these threads.
        """
        if self._scheduler is None or len(items) <= 1:
            return [fn(x) for x in items]
        return [f.result() for f in [self._scheduler.pool.submit(fn, x) for x in items]]

    def segment_many(
        self, work: list[tuple[np.ndarray, str, list[str] | None]], source_masks: bool = True
    ) -> list[SegmentationResult]:
        """Segment several radiographs (e.g. a study's AP and LAT) with all their U-Nets queued at once.

        Each step runs for all images together, so every result's `timings_ms` holds the wall time of the
        shared preprocess, inference and postprocess steps. `source_masks=False` skips resizing the masks
        back to the original size (`masks` stays empty; `model_frame_masks` is all the classifier needs).
        """
        chosen = [self._segmentation_models(view, structures) for _, view, structures in work]

        def prepare(i: int) -> dict[tuple[int, int], tuple[np.ndarray, Letterbox]]:
            # Preprocess once per distinct input size (normally one for the whole view).
            per_size: dict[tuple[int, int], tuple[np.ndarray, Letterbox]] = {}
            for model in chosen[i]:
                if model.input_hw not in per_size:
                    x, box = preprocess_image(work[i][0], model.input_hw)
                    per_size[model.input_hw] = (to_unet_batch([x]), box)
            return per_size

        t0 = time.perf_counter()
        prepared = self.parallel_map(prepare, list(range(len(work))))
        # Largest models first, so the slots finish together.
        jobs = [(i, model) for i, models in enumerate(chosen) for model in models]
        order = sorted(range(len(jobs)), key=lambda k: -jobs[k][1].entry.parameters)
        t1 = time.perf_counter()
        outputs = self._infer([(jobs[k][1], prepared[jobs[k][0]][jobs[k][1].input_hw][0]) for k in order])
        by_job = dict(zip(order, outputs, strict=True))
        t2 = time.perf_counter()

        def to_source(k: int) -> np.ndarray:
            i, model = jobs[k]
            return _source_mask(by_job[k][0, :, :, 0], prepared[i][model.input_hw][1], model.threshold)

        # A refinement model's window is placed from the first stage's source-size mask, so those are needed anyway.
        refiners = {k: r for k, (_, model) in enumerate(jobs) if (r := self.refinement_model(model.entry.structure or ""))}
        needed = list(range(len(jobs))) if source_masks else sorted(refiners)
        source = dict(zip(needed, self.parallel_map(to_source, needed), strict=True))
        frame_probabilities = {k: by_job[k][0, :, :, 0] for k in range(len(jobs))}
        t3 = time.perf_counter()
        refined = self._refine(work, jobs, refiners, source, frame_probabilities, prepared, source_masks) if refiners else set()
        t4 = time.perf_counter()
        timings = {"preprocess": (t1 - t0) * 1000, "inference": (t2 - t1) * 1000, "postprocess": (t3 - t2) * 1000}
        if refiners:
            timings["refinement"] = (t4 - t3) * 1000
        results = []
        k = 0
        for i, ((_, view, _), models) in enumerate(zip(work, chosen, strict=True)):
            masks: dict[str, np.ndarray] = {}
            frame_masks: dict[str, np.ndarray] = {}
            boxes: dict[str, Letterbox] = {}
            used = [m.name for m in models]
            refined_here: list[str] = []
            for model in models:
                structure = model.entry.structure
                assert structure is not None
                threshold = refiners[k].threshold if k in refined else model.threshold
                frame_masks[structure] = frame_probabilities[k] >= threshold
                if source_masks:
                    masks[structure] = source[k]
                boxes[structure] = prepared[i][model.input_hw][1]
                if k in refined:
                    used.append(refiners[k].name)
                    refined_here.append(structure)
                k += 1
            results.append(
                SegmentationResult(
                    view=view,
                    masks=masks,
                    model_frame_masks=frame_masks,
                    letterbox=next(iter(boxes.values())),
                    letterboxes=boxes,
                    timings_ms=dict(timings),
                    models_used=used,
                    refined=refined_here,
                )
            )
        return results

    def _refine(
        self,
        work: list[tuple[np.ndarray, str, list[str] | None]],
        jobs: list[tuple[int, LoadedModel]],
        refiners: dict[int, LoadedModel],
        source: dict[int, np.ndarray],
        frame_probabilities: dict[int, np.ndarray],
        prepared: list[dict[tuple[int, int], tuple[np.ndarray, Letterbox]]],
        source_masks: bool,
    ) -> set[int]:
        """Second stage: re-segment a window around each first-stage mask at the refinement model's resolution.

        The window's probabilities are the refinement model's, or (manifest `combine: mean`) their average
        with the first stage's resampled into the window. Replaces `source[k]` (when source masks are
        wanted) and `frame_probabilities[k]` of each job it refines and returns those jobs.
        A first-stage mask that is empty gives no window: it stays as it is.
        """

        def window(k: int) -> tuple[CropBox, np.ndarray] | None:
            box = CropBox.around_mask(source[k], refiners[k].input_hw)
            if box is None:
                return None
            return box, to_unet_batch([preprocess_crop(work[jobs[k][0]][0], box)])

        placed = {k: w for k, w in zip(refiners, self.parallel_map(window, list(refiners)), strict=True) if w is not None}
        outputs = self._infer([(refiners[k], batch) for k, (_, batch) in placed.items()])

        def back(item: tuple[int, np.ndarray]) -> tuple[int, np.ndarray | None, np.ndarray]:
            k, probabilities = item
            i, model = jobs[k]
            box, refiner, frame = placed[k][0], refiners[k], prepared[i][model.input_hw][1]
            if refiner.entry.combine == "mean":
                probabilities = (probabilities + letterbox_probabilities_to_crop(frame_probabilities[k], frame, box)) / 2
            in_source = crop_probabilities_to_source(probabilities, box) >= refiner.threshold if source_masks else None
            return k, in_source, crop_probabilities_to_letterbox(probabilities, box, frame)

        for k, in_source, in_frame in self.parallel_map(
            back, [(k, out[0, :, :, 0]) for k, out in zip(placed, outputs, strict=True)]
        ):
            if in_source is not None:
                source[k] = in_source
            frame_probabilities[k] = in_frame
        return set(placed)

    def classify_masks(self, model_frame_masks: Mapping[str, np.ndarray]) -> dict[str, tuple[float, float]]:
        """Score masks (in the U-Net's letterboxed frame) Normal/Damaged: one batch per inference slot."""
        model = self.classifier()
        if model is None:
            raise ModelUnavailableError({"classifier": "the manifest has no classification model"})
        self._require([model])
        names = list(model_frame_masks)
        if not names:
            return {}
        batch = np.stack([mask_to_classifier_input(model_frame_masks[n], model.input_hw) for n in names])
        batch = batch[..., np.newaxis].astype(np.float32, copy=False)
        # On the CPU each slot's session has one thread: a study's masks split over the slots run side by
        # side (docs/benchmarks.md: classification stage); a GPU takes the whole batch at once.
        parts = 1
        if self._scheduler is not None and model.provider not in GPU_PROVIDERS:
            parts = min(self._scheduler.slots, len(names))
        out = np.concatenate(self._infer([(model, chunk) for chunk in np.array_split(batch, parts)]))
        classes = model.entry.classes or list(CLASSES)
        i_normal, i_damaged = classes.index(CLASSES[0]), classes.index(CLASSES[1])
        return {n: (float(out[i, i_normal]), float(out[i, i_damaged])) for i, n in enumerate(names)}
