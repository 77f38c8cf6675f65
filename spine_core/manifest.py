"""The manifest: the contract between training (which writes it) and serving (which reads it)."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field

MANIFEST_FILE = "manifest.json"
PRECISIONS = ("fp32", "int8")  # fp32: the exported graph; int8: its quantized variant, where one exists


class ModelVariant(BaseModel):
    """Another file of the same model (same weights, other arithmetic), chosen by the service's precision setting."""

    precision: Literal["int8"]
    file: str = Field(description="Path of the ONNX file relative to the models directory")
    sha256: str
    method: str = Field(description="How the file was made from the fp32 graph")
    calibration_data: str = Field(description="Images the activation ranges were calibrated on")
    agreement: dict[str, Any] = Field(
        default_factory=dict, description="Outputs of this file vs the fp32 file on images not used for calibration"
    )
    metrics: dict[str, Any] = Field(default_factory=dict, description="The fp32 entry's metrics, re-measured on this file")


class Calibration(BaseModel):
    """A classifier's calibration map, fitted on held-out films (training/calibrate.py, spine_core.calibration)."""

    method: Literal["temperature", "platt"]
    temperature: float | None = Field(None, description="temperature: p' = sigmoid(logit(p) / T)")
    slope: float | None = Field(None, description="platt: p' = sigmoid(slope * logit(p) + intercept)")
    intercept: float | None = None
    logit_clip: float = Field(description="p is clipped to [logit_clip, 1 - logit_clip] before its logit is taken")
    fitted_on: str
    threshold_rule: str = Field(description="How decision_threshold was chosen")
    ece_bins: int = Field(description="ECE: equal-width bins of [0, 1]")
    ece_before: float
    ece_after: float
    nll_before: float
    nll_after: float
    metrics: dict[str, Any] = Field(default_factory=dict, description="In-sample and cross-validated figures")


class ModelEntry(BaseModel):
    name: str = Field(description="Triton-style model name; the file is <name>/<version>/model.onnx")
    kind: Literal["segmentation", "classification", "refinement", "landmarks", "tilt", "ends"]
    structure: str | None = Field(None, description="Segmented structure (segmentation and refinement models)")
    refines: str | None = Field(
        None,
        description=(
            "Refinement models: the segmentation model whose mask places this model's window; the service "
            "re-segments that window at a higher resolution and serves the result as that structure's mask"
        ),
    )
    combine: Literal["replace", "mean"] = Field(
        "replace",
        description=(
            "Refinement models: how the window's probabilities are formed; replace = this model's alone, "
            "mean = the average of this model's and the first stage's (resampled into the window)"
        ),
    )
    view: Literal["AP", "LAT"] | None = None
    version: str = "1"
    file: str = Field(description="Path of the ONNX file relative to the models directory")
    sha256: str
    input_name: str
    output_name: str
    input_shape: list[int | None] = Field(description="NHWC; None marks the dynamic batch dimension")
    output_shape: list[int | None]
    preprocessing: dict[str, Any]
    threshold: float | None = Field(None, description="Probability threshold for a mask pixel")
    classes: list[str] | None = None
    architecture: str
    architecture_config: dict[str, Any] = Field(default_factory=dict, description="Arguments that rebuild the Keras model")
    parameters: int
    opset: int
    training_data: str
    split: str
    epochs: int
    training_time_s: float | None = None
    trained_on: str | None = Field(None, description="Hardware the weights were trained on")
    metrics: dict[str, Any] = Field(default_factory=dict)
    parity_max_abs_diff: float | None = Field(None, description="Max |Keras - ONNX| on real inputs at export")
    validated: bool = Field(description="False for demonstration models trained on too little data")
    notes: str = ""
    variants: dict[str, ModelVariant] = Field(default_factory=dict, description="Keyed by precision (e.g. int8)")
    calibration: Calibration | None = Field(None, description="Classification models: the map applied to p_damaged")
    serves_mask: bool = Field(
        False,
        description=(
            "Landmark models: the served Ap_Vertebra mask is filled from this model's corners (chosen when its validation "
            "Dice beats the U-Net's); the U-Net's mask still feeds the spine check"
        ),
    )
    decision_threshold: float | None = Field(
        None, description="Classification models: Damaged when the calibrated p_damaged is at least this"
    )


class Manifest(BaseModel):
    schema_version: int = 1
    created: str
    models: list[ModelEntry]

    def by_name(self) -> dict[str, ModelEntry]:
        return {m.name: m for m in self.models}

    def segmentation_models(self) -> list[ModelEntry]:
        return [m for m in self.models if m.kind == "segmentation"]

    def refinement_models(self) -> list[ModelEntry]:
        return [m for m in self.models if m.kind == "refinement"]

    def landmark_models(self) -> list[ModelEntry]:
        return [m for m in self.models if m.kind == "landmarks"]

    def classifier(self) -> ModelEntry | None:
        return next((m for m in self.models if m.kind == "classification"), None)


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def load_manifest(models_dir: Path) -> Manifest:
    return Manifest.model_validate_json((Path(models_dir) / MANIFEST_FILE).read_text())


def save_manifest(manifest: Manifest, models_dir: Path) -> Path:
    path = Path(models_dir) / MANIFEST_FILE
    path.write_text(manifest.model_dump_json(indent=2) + "\n")
    return path


def upsert_model(models_dir: Path, entry: ModelEntry, created: str) -> Manifest:
    """Add or replace one model's entry in the manifest (created if absent)."""
    path = Path(models_dir) / MANIFEST_FILE
    manifest = load_manifest(models_dir) if path.exists() else Manifest(created=created, models=[])
    models = [m for m in manifest.models if m.name != entry.name] + [entry]
    manifest = Manifest(created=created, models=sorted(models, key=lambda m: m.name))
    save_manifest(manifest, models_dir)
    return manifest
