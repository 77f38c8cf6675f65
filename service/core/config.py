"""Service settings: the engine's (`spine_engine.settings.EngineSettings`, prefix `SPINE_`) plus what HTTP needs.

The only reader of the environment in `service/`: everything else receives its values from `Settings`.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Annotated

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import NoDecode

from spine_engine.settings import DEFAULT_MODELS_DIR, EngineSettings, split_csv

__all__ = ["DEFAULT_MODELS_DIR", "Settings", "get_settings"]


class Settings(EngineSettings):
    host: str = "0.0.0.0"
    port: int = Field(8000, ge=1, le=65535)

    inference_concurrency: int = Field(
        2, ge=1, description="Requests computing at once (decode + inference); more wait, so threads are not oversubscribed"
    )
    max_upload_bytes: int = Field(256 * 1024 * 1024, ge=1, description="Largest request body (all files together)")
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
    # Annotation (docs/annotation.md): POST /annotations writes studies in the course-dataset layout here.
    annotations_dir: Path | None = Field(
        None, description="Folder of annotated studies (<class>/<study id>/<AP|LAT>/...); unset: /annotations answers 404"
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

    @field_validator("api_keys", "scoped_api_keys", "auth_exempt_paths", "cors_allow_origins", mode="before")
    @classmethod
    def _split_service_csv(cls, value: object) -> object:
        return split_csv(value)


@lru_cache
def get_settings() -> Settings:
    return Settings()
