"""The errors a caller of the inference layer can act on (the HTTP layer maps them to 4xx/503)."""

from __future__ import annotations

from collections.abc import Mapping


class InferenceError(Exception):
    """Base class of the errors a caller can act on."""


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
