"""Every model of the manifest in one onnxruntime session each: loading, lookups, readiness.

The registry only loads and looks up; every session run goes through its scheduler (`infer` for the
manifest's input, `run` for a raw KServe v2 request). Segmentation and mask scoring are the `Segmenter`'s
(`segmentation.py`), which takes a registry: nothing here imports it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import TypeVar

import numpy as np

from spine_core.manifest import MANIFEST_FILE, PRECISIONS, Manifest, load_manifest
from spine_core.structures import STRUCTURES
from spine_engine.errors import InvalidInputError, ModelUnavailableError, UnknownModelError
from spine_engine.models import (
    DEFAULT_PROVIDERS,
    GPU_PROVIDERS,
    LoadedModel,
    ProviderSpec,
    load_model,
    session_options,
    usable_providers,
)
from spine_engine.scheduler import RuntimeTuning, Scheduler

log = logging.getLogger(__name__)

MANIFEST_KEY = "manifest"  # key in `problems` for a manifest that cannot be read
T = TypeVar("T")
R = TypeVar("R")


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
        self.scheduler = Scheduler(self.tuning.inference_slots, self.max_batch, self._run)
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

        `tuning` (slots, micro-batching, spinning) defaults to `RuntimeTuning()`; the service passes its
        settings. `precision` "int8" serves each model's int8 variant where the manifest lists one, the
        fp32 file otherwise. `provider_options` maps a provider name to its onnxruntime options (e.g.
        CUDA's `cudnn_conv_algo_search`). On a GPU with `warmup`, every batch size the micro-batching can
        form is run once before ready, so no request pays for cuDNN's algorithm search on a new shape.
        `use_refinement` serves a structure's mask from its refinement model where the manifest has one
        (SPINE_REFINEMENT; off by default, as in the service: 1.6x a study's CPU time, docs/training.md).
        """
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, not {precision!r}")
        models_dir = Path(models_dir)
        providers = list(providers or DEFAULT_PROVIDERS)
        tuning = tuning or RuntimeTuning()
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

        threads = intra_op_threads or tuning.intra_op_threads()
        options = session_options(threads, inter_op_threads or 1, tuning.ort_spinning)
        # The classifier runs last in a request, alone (its input is the other models' masks), and on one image:
        # its session takes the threads of every slot rather than leave the other cores idle (19 -> 12 ms in the benchmark).
        last_options = session_options(threads * max(1, tuning.inference_slots), inter_op_threads or 1, tuning.ort_spinning)
        models: dict[str, LoadedModel] = {}
        usable = usable_providers(providers)  # logs once when CUDA cannot load here
        said = usable != providers
        for entry in manifest.models:
            with_options: list[ProviderSpec] = [
                (p, dict(provider_options[p])) if provider_options and p in provider_options else p for p in usable
            ]
            own_options = last_options if entry.kind == "classification" else options
            model = load_model(models_dir, entry, with_options, own_options, warmup, verify_sha256, precision)
            if model.session is not None:
                # A provider that failed to start for one session fails for all (no device): stop asking,
                # so the failure is logged once rather than once per model.
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
        if used and used != [providers[0]] and not said:
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

    # ------------------------------------------------------------------ state and lookups

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

    def landmark_model(self) -> LoadedModel | None:
        """The servable landmark model (vertebra corners for the measurement), if the manifest has one."""
        return next((m for m in self.models.values() if m.entry.kind == "landmarks" and m.servable), None)

    def tilt_model(self) -> LoadedModel | None:
        """The servable tilt model (a second look at each vertebra's tilt), if the manifest has one."""
        return next((m for m in self.models.values() if m.entry.kind == "tilt" and m.servable), None)

    def ends_model(self) -> LoadedModel | None:
        """The servable ends model (which chain vertebrae are C7, T1, T2, L4, L5, S1), if the manifest has one."""
        return next((m for m in self.models.values() if m.entry.kind == "ends" and m.servable), None)

    def classifier(self) -> LoadedModel | None:
        return next((m for m in self.models.values() if m.entry.kind == "classification"), None)

    def get(self, name: str) -> LoadedModel:
        """A model by name, servable; raises UnknownModelError or ModelUnavailableError."""
        if name not in self.models:
            raise UnknownModelError(f"no model named {name!r}")
        model = self.models[name]
        self.require([model])
        return model

    def require(self, models: Iterable[LoadedModel]) -> None:
        """Raise ModelUnavailableError unless the manifest loaded and every one of `models` is servable."""
        if self.manifest is None:
            raise ModelUnavailableError(self.problems)
        bad = {m.name: m.problem or "not loaded" for m in models if not m.servable}
        if bad:
            raise ModelUnavailableError(bad)

    # ------------------------------------------------------------------ running

    def _run(self, model: LoadedModel, batch: np.ndarray) -> np.ndarray:
        started = time.perf_counter()
        out = model.run_batch(batch)
        if self.on_inference is not None:
            self.on_inference(model.name, time.perf_counter() - started, int(batch.shape[0]))
        return out

    def infer(self, work: list[tuple[LoadedModel, np.ndarray]]) -> list[np.ndarray]:
        """Run each (model, NHWC batch) through the scheduler (batched with other callers' inputs); outputs in order."""
        return self.scheduler.run_all(work)

    def infer_across_slots(self, model: LoadedModel, batch: np.ndarray) -> np.ndarray:
        """One model's batch split into one part per inference slot and run side by side: a small model that runs
        alone after the large ones (the crop models) uses every core rather than one. The same answers as one run.
        On a GPU the batch runs whole (one launch is cheaper than several)."""
        slots = 1 if self.on_gpu else max(1, self.tuning.inference_slots)
        parts = [part for part in np.array_split(batch, slots) if len(part)]
        return np.concatenate(self.infer([(model, part) for part in parts]))

    def parallel_map(self, fn: Callable[[T], R], items: list[T]) -> list[R]:
        """`[fn(x) for x in items]` on the inference slots' threads, in order (see `Scheduler.map`)."""
        return self.scheduler.map(fn, items)

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

        def run() -> list[np.ndarray]:
            started = time.perf_counter()
            try:
                results = model.session.run(wanted, feed)  # type: ignore[union-attr]
            except Exception as exc:  # e.g. a spatial size the graph cannot take
                raise InvalidInputError(f"onnxruntime rejected the input: {str(exc).strip()[:300]}") from exc
            if self.on_inference is not None:
                batch = next(iter(feed.values())).shape[0] if feed else 1
                self.on_inference(name, time.perf_counter() - started, int(batch))
            return results

        # On an inference slot like every other session run (its own inputs and outputs: never micro-batched).
        return dict(zip(wanted, self.scheduler.call(run), strict=True))
