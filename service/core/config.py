"""Service settings, read from the environment (prefix `SPINE_`) or a `.env` file.

The only reader of the environment in `service/`: everything else receives its values from `Settings`.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BeforeValidator, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from service.analysis import AnalysisPolicy
from service.inference import DEFAULT_PROVIDERS, RuntimeTuning, default_threads

# The package sits at <repo>/service/core/config.py in a checkout (editable install), so the committed
# models are two levels up. Installed elsewhere (a wheel in a container) this path will not exist and
# SPINE_MODELS_DIR must be set; readiness then says the manifest is missing.
DEFAULT_MODELS_DIR = Path(__file__).resolve().parents[2] / "exported_models"


def _auto_is_none(value: object) -> object:
    """SPINE_INFERENCE_MAX_BATCH: blank or `auto` means automatic (None)."""
    if isinstance(value, str) and value.strip().lower() in ("", "auto"):
        return None
    return value


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SPINE_", env_file=".env", env_file_encoding="utf-8", extra="ignore")

    models_dir: Path = Field(DEFAULT_MODELS_DIR, description="Folder with manifest.json and <model>/<version>/model.onnx")
    host: str = "0.0.0.0"
    port: int = Field(8000, ge=1, le=65535)

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
        description="onnxruntime intra-op threads per session (default: CPUs / SPINE_INFERENCE_SLOTS, i.e. 1)",
    )
    inter_op_threads: int = Field(1, ge=1, description="onnxruntime inter-op threads per session (graphs run sequentially)")
    inference_concurrency: int = Field(
        2, ge=1, description="Requests computing at once (decode + inference); more wait, so threads are not oversubscribed"
    )
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

    max_upload_bytes: int = Field(256 * 1024 * 1024, ge=1, description="Largest request body (all files together)")
    max_image_pixels: int = Field(100_000_000, ge=1, description="Largest decoded image (width x height); larger is a 413")
    overlay_max_side: int = Field(2048, ge=64, description="Longest side of the overlay PNG (downscaled beyond)")
    max_batch_size: int = Field(32, ge=1, description="Largest batch accepted by the KServe v2 infer endpoint")

    # Overload protection, access control, browser access (docs/reliability.md).
    max_queue: int = Field(
        32,
        ge=0,
        description=(
            "Inference requests (POST /segment, /classify, /v2/.../infer) admitted to wait beyond SPINE_INFERENCE_CONCURRENCY; "
            "when that many already wait, 503 `overloaded` with Retry-After instead of queueing without limit"
        ),
    )
    retry_after_s: int = Field(1, ge=1, description="Retry-After (seconds) of an overload 503")
    body_timeout_s: float = Field(
        120.0, gt=0, description="A request body still incomplete this long after the request started is a 408"
    )
    api_keys: Annotated[list[SecretStr], NoDecode] = Field(
        default_factory=list,
        description="Accepted API keys (comma-separated); empty = no authentication. Header X-API-Key or Authorization: Bearer",
    )
    scoped_api_keys: Annotated[list[SecretStr], NoDecode] = Field(
        default_factory=list,
        description=(
            "API keys with extra scopes, comma-separated `scope:key` (a key may appear once per scope): `annotate` may "
            "POST /annotations, `admin` may POST /models/reload. Accepted everywhere a SPINE_API_KEYS key is"
        ),
    )
    auth_exempt_paths: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["/health/live", "/v2/health/live"],
        description=(
            "Paths served without an API key (comma-separated, exact); liveness by default. The viewer page and the API docs"
            " (GET /, /static/*, /docs, /redoc, /openapi.json) are always served without one (service/core/security.py)"
        ),
    )
    cors_allow_origins: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="Origins allowed by CORS (comma-separated); empty = no CORS headers (closed)"
    )
    max_form_fields: int = Field(16, ge=1, description="Most non-file fields in one multipart form (400 beyond)")
    max_form_files: int = Field(4, ge=1, description="Most files in one multipart form (400 beyond)")
    max_field_bytes: int = Field(64 * 1024, ge=1024, description="Largest non-file form field in bytes (400 beyond)")

    # DICOMweb (docs/deployment.md, "A PACS"): POST /dicomweb/studies/{uid}/analyze reads from and writes to it.
    dicomweb_url: str | None = Field(None, description="Base URL of a DICOMweb server (QIDO/WADO/STOW-RS); unset: analyze off")
    dicomweb_username: str | None = Field(None, description="HTTP basic-auth user for SPINE_DICOMWEB_URL (optional)")
    dicomweb_password: SecretStr | None = Field(None, description="HTTP basic-auth password for SPINE_DICOMWEB_URL (optional)")
    dicomweb_timeout_s: float = Field(30.0, gt=0, description="Timeout of each request to the DICOMweb server (504 beyond)")

    # Annotation (docs/annotation.md): POST /annotations writes studies in the course-dataset layout here.
    annotations_dir: Path | None = Field(
        None, description="Folder of annotated studies (<class>/<study id>/<AP|LAT>/...); unset: /annotations answers 404"
    )

    aggregation: Literal["mean", "max_score", "cobb"] = Field(
        "mean",
        description=(
            "Default rule that decides the label: mean (calibrated p_damaged of the deciding masks >= the manifest's "
            "decision_threshold), max_score (the course report's rule), cobb (measured largest Cobb angle >= 40 degrees)"
        ),
    )
    demonstration_models: bool = Field(
        False,
        description=(
            "Run a view's demonstration (unvalidated) U-Nets without being asked; a request may always name them in "
            "`structures`. Their masks are marked, and their scores never decide unless SPINE_DEMONSTRATION_MODELS_DECIDE"
        ),
    )
    demonstration_models_decide: bool = Field(
        False, description="Let demonstration models' scores enter the label (never by default: docs/trust.md)"
    )
    localisation: bool = Field(
        True,
        description=(
            "Full-body AP films: keep the vertebra chain and re-segment a window around it when the spine fills a small "
            "part of the film (docs/fov.md)"
        ),
    )
    spine_check: bool = Field(
        True, description="Refuse with 422 no_spine_found what is not a readable AP spine, rather than label it"
    )
    log_level: Literal["critical", "error", "warning", "info", "debug"] = "info"
    log_json: bool = Field(True, description="One JSON object per log line (False: plain text for a terminal)")

    @field_validator("providers", "api_keys", "scoped_api_keys", "auth_exempt_paths", "cors_allow_origins", mode="before")
    @classmethod
    def _split_csv(cls, value: object) -> object:
        # Comma-separated in the environment (`CUDAExecutionProvider,CPUExecutionProvider`; a JSON list
        # works too); blanks dropped.
        if isinstance(value, str):
            text = value.strip()
            if text.startswith("["):
                import json

                return json.loads(text)
            return [p.strip() for p in text.split(",") if p.strip()]
        return value

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
        )

    def tuning(self) -> RuntimeTuning:
        """What the model registry's scheduler needs from these settings."""
        return RuntimeTuning(
            inference_slots=self.inference_slots, max_batch=self.inference_max_batch, ort_spinning=self.ort_spinning
        )


@lru_cache
def get_settings() -> Settings:
    return Settings()
