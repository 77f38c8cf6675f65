"""The errors a caller of the inference layer can act on (the HTTP layer maps them to 4xx/503)."""

from __future__ import annotations

from collections.abc import Mapping


class InferenceError(Exception):
    """Base class of the errors a caller can act on; each says its HTTP status and stable error code."""

    status_code = 422
    code = "invalid_request"


class UnknownViewError(InferenceError, ValueError):
    code = "unknown_view"


class UnknownStructureError(InferenceError, ValueError):
    code = "unknown_structure"


class UnknownModelError(InferenceError, KeyError):
    status_code, code = 404, "unknown_model"

    def __str__(self) -> str:  # KeyError quotes its message otherwise
        return str(self.args[0]) if self.args else "unknown model"


class InvalidInputError(InferenceError, ValueError):
    status_code, code = 400, "invalid_input"


class ModelUnavailableError(InferenceError):
    """A model the request needs is listed but not servable (missing, corrupt, sha mismatch, no GPU...)."""

    status_code, code = 503, "model_unavailable"

    def __init__(self, problems: Mapping[str, str]):
        self.problems = dict(problems)
        super().__init__("; ".join(f"{name}: {why}" for name, why in self.problems.items()))


class NoValidatedModelError(InferenceError, ValueError):
    """The request would be answered by demonstration models only (e.g. a LAT-only study)."""

    code = "no_validated_model"


class NoSpineFoundError(InferenceError, ValueError):
    """The input is not a readable AP spine radiograph: no label rather than a confident wrong one."""

    code = "no_spine_found"

    def __init__(self, reason: str, features: Mapping[str, float] | None = None, failed: list[str] | None = None):
        self.features = dict(features or {})
        self.failed = list(failed or [])  # the signals that refused it
        super().__init__(reason)


class NoMeasurementError(InferenceError, ValueError):
    """A rule that needs the Cobb angle was asked for, and the film's vertebrae could not all be found."""

    code = "no_measurement"
