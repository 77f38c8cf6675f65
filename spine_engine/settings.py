"""The one reader of the environment (prefix `SPINE_`, or a `.env` file): what loading and analysing need.

The service's `Settings` extends these with what HTTP needs; `spine-batch` and its Ray actors read these
(an actor's slot count is set on its copy of the object, never through the environment). The policy's
defaults come from `spine_engine.policy`, written once.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import BeforeValidator, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from spine_engine.models import DEFAULT_PROVIDERS
from spine_engine.policy import DEFAULT_POLICY, MAX_IMAGE_PIXELS, AnalysisPolicy
from spine_engine.scheduler import RuntimeTuning, default_threads

# The package sits at <repo>/spine_engine/settings.py in a checkout (editable install), so the committed
# models are one level up. Installed elsewhere (a wheel in a container) this path will not exist and
# SPINE_MODELS_DIR must be set; readiness then says the manifest is missing.
DEFAULT_MODELS_DIR = Path(__file__).resolve().parents[1] / "exported_models"


def _auto_is_none(value: object) -> object:
    """SPINE_INFERENCE_MAX_BATCH: blank or `auto` means automatic (None)."""
    if isinstance(value, str) and value.strip().lower() in ("", "auto"):
        return None
    return value


def split_csv(value: object) -> object:
    """Comma-separated in the environment (`CUDAExecutionProvider,CPUExecutionProvider`; a JSON list works too)."""
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            import json

            return json.loads(text)
        return [p.strip() for p in text.split(",") if p.strip()]
    return value


class EngineSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SPINE_", env_file=".env", env_file_encoding="utf-8", extra="ignore")

    models_dir: Path = Field(DEFAULT_MODELS_DIR, description="Folder with manifest.json and <model>/<version>/model.onnx")
    providers: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: list(DEFAULT_PROVIDERS),
        description="onnxruntime execution providers in order of preference (comma-separated in the environment)",
    )
    require_gpu: bool = Field(False, description="Not ready unless every session runs on CUDA")
    cudnn_conv_algo_search: Literal["EXHAUSTIVE", "HEURISTIC", "DEFAULT"] = Field(
        "EXHAUSTIVE",
        description=(
            "CUDA provider: how cuDNN picks convolution algorithms per input shape (onnxruntime's default, EXHAUSTIVE, "
            "finds the fastest; the warm-up runs every batch size the micro-batching can form, so no request pays for it)"
        ),
    )
    # Inference scheduling (docs/benchmarks.md measures the defaults); declared before intra_op_threads,
    # whose default depends on inference_slots.
    inference_slots: int = Field(
        default_factory=default_threads,
        ge=0,
        description=(
            "Session runs at once across all models (default: the CPUs this process may use, at most 8); "
            "0 = no scheduler, every request runs its own models"
        ),
    )
    inference_max_batch: Annotated[int | None, BeforeValidator(_auto_is_none)] = Field(
        None,
        ge=1,
        description=(
            "Most images of one model that queued requests share in one run (micro-batching); "
            "auto (default): 8 on a GPU, 1 (off) on the CPU"
        ),
    )
    ort_spinning: bool = Field(
        False, description="onnxruntime intra-op threads busy-wait between parallel sections (takes CPU from requests)"
    )
    intra_op_threads: int = Field(
        default_factory=lambda data: RuntimeTuning(inference_slots=data["inference_slots"]).intra_op_threads(),
        ge=1,
        description=(
            "onnxruntime intra-op threads per session (default: CPUs / SPINE_INFERENCE_SLOTS, i.e. 1); the classifier's "
            "session, which runs last and alone in a request, gets this times the slots"
        ),
    )
    inter_op_threads: int = Field(1, ge=1, description="onnxruntime inter-op threads per session (graphs run sequentially)")
    precision: Literal["fp32", "int8"] = Field(
        "fp32",
        description=(
            "fp32: the exported graphs. int8: each model's statically quantized variant where the manifest lists one "
            "(CPU lever: U-Nets 1.2-1.9x faster, docs/benchmarks.md; agreement with fp32 in GET /models); fp32 for the others"
        ),
    )
    refinement: bool = Field(
        False,
        description=(
            "Opt-in: serve a structure's mask from its refinement model (a second U-Net on a window around the "
            "first stage's mask, at a higher resolution) where the manifest has one. Ap_Vertebra: +0.007 validation "
            "Dice for 1.6x the CPU time of an AP+LAT /classify (docs/training.md, 'Second stage')"
        ),
    )
    verify_sha256: bool = Field(True, description="Check every model file against its manifest sha256 at start-up")
    warmup: bool = Field(True, description="Run every session once before reporting ready")
    max_image_pixels: int = Field(MAX_IMAGE_PIXELS, ge=1, description="Largest decoded image (width x height); larger is a 413")

    # DICOMweb (docs/deployment.md, "A PACS"): the service's analyze route and spine-batch's DICOMweb source.
    dicomweb_url: str | None = Field(None, description="Base URL of a DICOMweb server (QIDO/WADO/STOW-RS); unset: analyze off")
    dicomweb_username: str | None = Field(None, description="HTTP basic-auth user for the DICOMweb server (optional)")
    dicomweb_password: SecretStr | None = Field(None, description="HTTP basic-auth password for the DICOMweb server (optional)")
    dicomweb_timeout_s: float = Field(30.0, gt=0, description="Timeout of each request to the DICOMweb server (504 beyond)")

    aggregation: Literal["measured", "mean", "max_score", "cobb"] = Field(
        DEFAULT_POLICY.aggregation,  # type: ignore[arg-type]
        description=(
            "Default rule that decides the label: measured (measured largest Cobb angle >= 40 degrees, the labels' "
            "definition of Damaged; the mean rule on a film that was not measured), mean (calibrated p_damaged of the "
            "deciding masks >= the manifest's decision_threshold), max_score (the course report's rule), cobb (as "
            "measured, but only on a reliable main curve: else no label)"
        ),
    )
    demonstration_models: bool = Field(
        DEFAULT_POLICY.demonstration_models,
        description=(
            "Run a view's demonstration (unvalidated) U-Nets without being asked; a request may always name them in "
            "`structures`. Their masks are marked, and their scores never decide unless SPINE_DEMONSTRATION_MODELS_DECIDE"
        ),
    )
    demonstration_models_decide: bool = Field(
        DEFAULT_POLICY.demonstration_models_decide,
        description="Let demonstration models' scores enter the label (never by default: docs/trust.md)",
    )
    localisation: bool = Field(
        DEFAULT_POLICY.localisation,
        description=(
            "Full-body AP films: keep the vertebra chain and re-segment a window around it when the spine fills a small "
            "part of the film (docs/fov.md)"
        ),
    )
    spine_check: bool = Field(
        DEFAULT_POLICY.spine_check,
        description="Refuse with 422 no_spine_found what is not a readable AP spine, rather than label it",
    )
    measurement: Literal["landmarks", "mask"] = Field(
        DEFAULT_POLICY.measurement,  # type: ignore[arg-type]
        description=(
            "Where the vertebrae and Cobb angles come from: the landmark model (chosen by the validation figures, "
            "docs/measurement.md) or the Ap_Vertebra mask's geometry; without a landmark model the mask is used"
        ),
    )
    tilt_model: bool = Field(
        DEFAULT_POLICY.tilt_model,
        description=(
            "Turn each vertebra the landmark model found by the tilt model's reading of a crop of the film at its own "
            "resolution, when the manifest has a tilt model (docs/measurement.md); off: the landmark model's corners as read"
        ),
    )
    ends_model: bool = Field(
        DEFAULT_POLICY.ends_model,
        description=(
            "Let the ends model (which of the landmark model's vertebrae are C7, T1, T2, L4, L5, S1, read from crops of "
            "the film) vote in the placement of the 17 levels, when the manifest has one (docs/measurement.md)"
        ),
    )
    vertebra_mask: Literal["auto", "unet", "corners"] = Field(
        DEFAULT_POLICY.vertebra_mask,  # type: ignore[arg-type]
        description=(
            "The served Ap_Vertebra mask: the U-Net's, or filled from the landmark model's corners; auto = what the "
            "manifest's landmark model says (serves_mask)"
        ),
    )
    log_level: Literal["critical", "error", "warning", "info", "debug"] = "info"
    log_json: bool = Field(True, description="One JSON object per log line (False: plain text for a terminal)")

    @field_validator("providers", mode="before")
    @classmethod
    def _split_csv(cls, value: object) -> object:
        return split_csv(value)

    @field_validator("log_level", mode="before")
    @classmethod
    def _lower(cls, value: object) -> object:
        return value.lower() if isinstance(value, str) else value

    def policy(self) -> AnalysisPolicy:
        """What runs and what decides by default."""
        return AnalysisPolicy(
            demonstration_models=self.demonstration_models,
            demonstration_models_decide=self.demonstration_models_decide,
            aggregation=self.aggregation,
            localisation=self.localisation,
            spine_check=self.spine_check,
            measurement=self.measurement,
            tilt_model=self.tilt_model,
            ends_model=self.ends_model,
            vertebra_mask=self.vertebra_mask,
        )

    def tuning(self) -> RuntimeTuning:
        """What the model registry's scheduler needs from these settings."""
        return RuntimeTuning(
            inference_slots=self.inference_slots, max_batch=self.inference_max_batch, ort_spinning=self.ort_spinning
        )

    def with_slots(self, slots: int) -> EngineSettings:
        """A copy for a process that owns `slots` CPUs (a Ray actor): that many inference slots, one thread each."""
        return self.model_copy(update={"inference_slots": max(1, slots), "intra_op_threads": 1})
